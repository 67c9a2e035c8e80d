"""(e) of `bench/serving.py`: the relevance service under concurrent load from a second process.

`bench_service` starts `taosr.deploy.serve` under uvicorn in a subprocess (127.0.0.1, a free port), runs this
file as the load generator (`python bench/service_load.py URL PAYLOADS OUT CONCURRENCY`: httpx, N
requests in flight) and checks every answer against the offline scores.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


async def _fire(url: str, payloads: list[dict], concurrency: int, timeout: float) -> dict:
    import httpx

    sem = asyncio.Semaphore(concurrency)

    async def one(client, p):
        async with sem:
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json=p)
                status, body = r.status_code, r.json()
            except Exception as e:  # a failure is reported, never hidden
                status, body = None, repr(e)
            return {"status": status, "latency_s": time.perf_counter() - t0, "body": body}

    async with httpx.AsyncClient(timeout=timeout) as client:
        t0 = time.perf_counter()
        res = await asyncio.gather(*(one(client, p) for p in payloads))
        return {"wall_s": time.perf_counter() - t0, "responses": res}


def client_main(url: str, payloads_path: str, out_path: str, concurrency: int, budget_s: float = 240) -> None:
    """The load generator: POST every payload, `concurrency` at a time, within `budget_s`; write the answers."""
    payloads = json.loads(Path(payloads_path).read_text())
    out = asyncio.run(asyncio.wait_for(_fire(url, payloads, concurrency, 60.0), budget_s))
    Path(out_path).write_text(json.dumps(out))


def bench_service(model_dir: Path, groups, offline: list, concurrency: int, work: Path, threads: int,
                  device: str) -> dict:
    """Serve `model_dir` in a subprocess, load it from a second one; latencies and checks of every answer."""
    import httpx

    from taosr.deploy.cumpt import cumpt_levels

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (f"import torch; torch.set_num_threads({threads}); from taosr.deploy.serve import run, ServeSettings; "
            f"run({str(model_dir)!r}, ServeSettings(port={port}, log_level='warning', device={device!r}))")
    log = (work / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready; see {work / 'server.log'}")
            time.sleep(0.25)
        payloads = [{"query": q, "items": [{"id": r.id, "title": r.title, "category": r.category, "brand": r.brand,
                                            "attributes": r.attributes, "price": r.price} for r in recs]}
                    for q, recs in groups]
        (work / "payloads.json").write_text(json.dumps(payloads))
        subprocess.run([sys.executable, __file__, f"http://127.0.0.1:{port}/v1/relevance", str(work / "payloads.json"),
                        str(work / "client.json"), str(concurrency)], check=True, timeout=300)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    out = json.loads((work / "client.json").read_text())
    ok, worst, levels_ok = 0, 0.0, True
    for (_, recs), want, res in zip(groups, offline, out["responses"]):
        if res["status"] != 200:
            continue
        ok += 1
        got = np.array([[x["probs"][k] for k in "1234"] for x in res["body"]["results"]])
        worst = max(worst, float(np.abs(got - want).max()))
        levels_ok &= [x["level"] for x in res["body"]["results"]] == cumpt_levels(got, res["body"]["beta"]).tolist()
        levels_ok &= [x["id"] for x in res["body"]["results"]] == [r.id for r in recs]
    batches = [line for line in metrics.splitlines() if line.startswith("taosr_batch_requests_")]
    n_b = float(next(x for x in batches if x.startswith("taosr_batch_requests_count")).split()[-1])
    s_b = float(next(x for x in batches if x.startswith("taosr_batch_requests_sum")).split()[-1])
    return {"latencies": [r["latency_s"] for r in out["responses"]], "wall_s": out["wall_s"], "status_200": ok,
            "requests": len(groups), "max_abs_diff_vs_offline": worst, "ids_and_levels_ok": bool(levels_ok),
            "mean_requests_per_batch": round(s_b / max(n_b, 1), 2)}


if __name__ == "__main__":
    client_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
