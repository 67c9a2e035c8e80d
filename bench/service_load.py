"""(e) of `bench/serving.py`: the relevance service under concurrent load from a second process.

`bench_service` starts `taosr.deploy.serve` under uvicorn in a subprocess (127.0.0.1, a free port), and per
round times the offline scorer on the requests, then runs this file as the load generator
(`python bench/service_load.py URL PAYLOADS OUT CONCURRENCY`: httpx, N requests in flight) on the same
requests, checks every answer against the offline scores, and reads where the time went from the
server's /metrics (its micro-batches, its scoring seconds, its CPU seconds) and the load generator's CPU.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
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
        t0, cpu0 = time.perf_counter(), time.process_time()
        res = await asyncio.gather(*(one(client, p) for p in payloads))
        return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0, "responses": res}


def client_main(url: str, payloads_path: str, out_path: str, concurrency: int, budget_s: float = 240) -> None:
    """The load generator: POST every payload, `concurrency` at a time, within `budget_s`; write the answers."""
    payloads = json.loads(Path(payloads_path).read_text())
    out = asyncio.run(asyncio.wait_for(_fire(url, payloads, concurrency, 60.0), budget_s))
    Path(out_path).write_text(json.dumps(out))


@contextmanager
def served(model_dir: Path, work: Path, threads: int, device: str, settings: dict | None = None):
    """`taosr.deploy.serve` on `model_dir` in a subprocess on a free port, ready: yields its base URL.
    `settings`: ServeSettings fields beyond the port, log level and device."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (f"import torch; torch.set_num_threads({threads}); from taosr.deploy.serve import run, ServeSettings; "
            f"run({str(model_dir)!r}, ServeSettings(port={port}, log_level='warning', device={device!r}, "
            f"**{settings or {}!r}))")
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
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def server_counters(url: str) -> dict[str, float]:
    """The service's cumulative counters (Prometheus text of /metrics): batches, their time, CPU seconds."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    samples = {s.name: s.value for f in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=5).text)
               for s in f.samples if not s.labels}
    names = ("taosr_batch_requests_count", "taosr_batch_requests_sum", "taosr_batch_seconds_sum",
             "taosr_batch_tokens_sum", "taosr_queue_seconds_sum", "taosr_queue_seconds_count",
             "process_cpu_seconds_total")
    return {n: samples.get(n, 0.0) for n in names}


def service_round(url: str, groups, offline: list, concurrency: int, work: Path) -> dict:
    """One round of load on a running service: every request once, `concurrency` in flight; checks and timings.

    Besides latency and pairs/s: where the time went, from the server's counters over the round (its
    micro-batches, the seconds it spent scoring them, its CPU seconds) and the load generator's CPU seconds.
    """
    from taosr.deploy.cumpt import cumpt_levels

    payloads = [{"query": q, "items": [{"id": r.id, "title": r.title, "category": r.category, "brand": r.brand,
                                        "attributes": r.attributes, "price": r.price} for r in recs]}
                for q, recs in groups]
    (work / "payloads.json").write_text(json.dumps(payloads))
    before = server_counters(url)
    subprocess.run([sys.executable, __file__, f"{url}/v1/relevance", str(work / "payloads.json"),
                    str(work / "client.json"), str(concurrency)], check=True, timeout=300)
    after = server_counters(url)
    d = {k: after[k] - before[k] for k in after}
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
    n, pairs, wall, batches = len(groups), sum(len(r) for _, r in groups), out["wall_s"], max(d["taosr_batch_requests_count"], 1)
    client_cpu = out["cpu_s"]  # the load generator's, while it sent (not its start-up)
    return {"latencies": [r["latency_s"] for r in out["responses"]], "wall_s": wall, "status_200": ok,
            "requests": n, "max_abs_diff_vs_offline": worst, "ids_and_levels_ok": bool(levels_ok),
            "mean_requests_per_batch": round(d["taosr_batch_requests_sum"] / batches, 2),
            "mean_tokens_per_batch": round(d["taosr_batch_tokens_sum"] / batches, 1),
            "server_scoring_s": round(d["taosr_batch_seconds_sum"], 3),
            "server_scoring_fraction_of_wall": round(d["taosr_batch_seconds_sum"] / wall, 3),
            "server_scoring_pairs_per_s": round(pairs / max(d["taosr_batch_seconds_sum"], 1e-9), 1),
            "mean_queue_ms": round(1e3 * d["taosr_queue_seconds_sum"] / max(d["taosr_queue_seconds_count"], 1), 1),
            "server_cpu_s": round(d["process_cpu_seconds_total"], 2),
            "client_cpu_s": round(client_cpu, 2), "client_cpu_ms_per_request": round(1e3 * client_cpu / n, 2)}


def bench_service(model_dir: Path, groups, offline: list, score, concurrency: int, work: Path, threads: int,
                  device: str, rounds: int, settings: dict | None = None) -> dict:
    """(e): `rounds` rounds, each the service between two runs of the offline scorer (`score`, one request at a
    time) on the same requests, back to back; service/a per round (the service's pairs/s over the offline
    scorer's, timed before and after it, so a drift of the machine's speed cancels) and its median.

    The row's latencies and checks are those of the median round; `rounds` lists every round.
    """
    pairs, per_round = sum(len(r) for _, r in groups), []
    with served(model_dir, work, threads, device, settings) as url:
        service_round(url, groups[:concurrency], offline, concurrency, work)  # warm-up, not counted
        def offline_s() -> float:
            t0 = time.perf_counter()
            for _, recs in groups:
                score(recs)
            return time.perf_counter() - t0

        for _ in range(rounds):
            before = offline_s()
            res = service_round(url, groups, offline, concurrency, work)
            after = offline_s()
            a = 2 * pairs / (before + after)  # the machine's speed drifts: (a) brackets the service
            res["a_before_after_pairs_per_s"] = [round(pairs / before, 1), round(pairs / after, 1)]
            res["a_pairs_per_s"], res["e_pairs_per_s"] = round(a, 1), round(pairs / res["wall_s"], 1)
            res["e_over_a"] = round(res["e_pairs_per_s"] / a, 3)
            per_round.append(res)
    ratios = [r["e_over_a"] for r in per_round]
    median = sorted(per_round, key=lambda r: r["e_over_a"])[(len(per_round) - 1) // 2]
    return median | {"e_over_a_median": round(float(np.median(ratios)), 3),
                     "rounds": [{k: v for k, v in r.items() if k != "latencies"} for r in per_round]}


def round_line(r: dict) -> str:
    """One round of `bench_service` in words."""
    return (f"(a) {r['a_pairs_per_s']} pairs/s (before/after {r['a_before_after_pairs_per_s']}), service {r['e_pairs_per_s']}, service/a {r['e_over_a']}; server "
            f"scoring {r['server_scoring_fraction_of_wall']:.0%} of the wall at {r['server_scoring_pairs_per_s']} "
            f"pairs/s, {r['mean_requests_per_batch']} req and {r['mean_tokens_per_batch']:.0f} tokens/batch, queue "
            f"{r['mean_queue_ms']} ms; CPU s server {r['server_cpu_s']} / load generator {r['client_cpu_s']} in "
            f"{r['wall_s']:.1f} s")


if __name__ == "__main__":
    client_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
