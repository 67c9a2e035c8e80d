"""Latency of small requests while large ones arrive: p99 of 1-item requests with and without 20-item requests.

The service (`taosr.deploy.serve`, a fresh demo-size model, CPU) runs in a subprocess on 127.0.0.1. The load
generator sends 1-item requests one after another (each waits for its answer), first alone, then
while two streams send requests of 20 items whose titles are 2,000 emoji each, different per item
(cut to the prompt's token budget by the server), each stream pausing 50 ms between its requests. Every loop is bounded by a request count and a time budget,
and the server is stopped at the end. Writes `bench/results/service_latency.json`:

    .venv/bin/python bench/service_latency.py [--small 200] [--budget-s 240] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from service_load import server_counters  # bench/ is this script's folder, so on sys.path

EMOJI = "\U0001F600"
RESULTS = Path(__file__).resolve().parent / "results"


def _model(folder: Path) -> None:
    """A demo-size fresh model (weights do not change latency) saved to `folder`."""
    from taosr.data.synth import SynthConfig, generate
    from taosr.modeling import ModelConfig, build_model, save, train_tokenizer
    from taosr.prompts import PromptConfig
    from taosr.train.base import corpus

    train = generate(SynthConfig(n_queries=200, items_per_query=4, seed=0))["train"]
    cfg = ModelConfig()
    tok = train_tokenizer(corpus(train, PromptConfig()), vocab_size=cfg.vocab_size)
    save(build_model(tok, cfg), tok, folder)


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def _stats(latencies: list[float]) -> dict:
    a = np.array(latencies) * 1000
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1), "p90_ms": round(float(np.percentile(a, 90)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)} if len(a) else {"n": 0}


async def _stream(client, url: str, body: dict, n: int, stop_at: float, gap_s: float = 0.0,
                  stop: asyncio.Event | None = None) -> list[tuple[int, float]]:
    """Send `body` n times one after another (until `stop_at` or `stop`); (status, seconds) of each."""
    out = []
    for _ in range(n):
        if time.monotonic() > stop_at or (stop is not None and stop.is_set()):
            break
        t0 = time.perf_counter()
        try:
            status = (await client.post(url, json=body)).status_code
        except Exception:  # noqa: BLE001 -- counted as a failure, never hidden
            status = -1
        out.append((status, time.perf_counter() - t0))
        if gap_s:
            await asyncio.sleep(gap_s)
    return out


async def _phase(url: str, n_small: int, big_streams: int, budget_s: float) -> dict:
    import httpx

    small = {"query": "red shoes", "items": [{"title": "red running shoes", "brand": "acme"}]}
    big = {"query": "smile", "items": [{"id": str(i), "title": "".join(chr(ord(EMOJI) + (7 * i + j) % 64)
                                                                       for j in range(2000))} for i in range(20)]}
    stop_at = time.monotonic() + budget_s
    async with httpx.AsyncClient(timeout=120) as client:
        await _stream(client, url, small, 5, stop_at)  # warm up
        t0 = time.perf_counter()
        stop = asyncio.Event()  # the large streams stop after their request in flight
        bigs = [asyncio.create_task(_stream(client, url, big, 10_000, stop_at, 0.05, stop)) for _ in range(big_streams)]
        await asyncio.sleep(0.5 if big_streams else 0)  # the large requests are arriving before the first small one
        smalls = await _stream(client, url, small, n_small, stop_at)
        stop.set()
        big_res = [x for res in await asyncio.gather(*bigs) for x in res]
        wall = time.perf_counter() - t0
    ok = [s for s, _ in smalls if s == 200]
    return {"small": _stats([t for s, t in smalls if s == 200]), "small_errors": len(smalls) - len(ok),
            "large": _stats([t for s, t in big_res if s == 200]),
            "large_statuses": {str(s): sum(1 for x, _ in big_res if x == s) for s in {x for x, _ in big_res}},
            "wall_s": round(wall, 1)}


def _batches(d: dict) -> dict:
    """The server's micro-batches over a phase, from the differences of its counters."""
    n = max(d["taosr_batch_requests_count"], 1)
    return {"batches": int(d["taosr_batch_requests_count"]), "tokens_per_batch": round(d["taosr_batch_tokens_sum"] / n, 1),
            "ms_per_batch": round(1e3 * d["taosr_batch_seconds_sum"] / n, 1),
            "scoring_s": round(d["taosr_batch_seconds_sum"], 2), "cpu_s": round(d["process_cpu_seconds_total"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=200, help="1-item requests per phase")
    ap.add_argument("--big-streams", type=int, default=2, help="streams of 20-item requests in the loaded phase")
    ap.add_argument("--budget-s", type=float, default=240, help="time limit of each phase")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="the server's max_batch_tokens (default: its own)")
    ap.add_argument("--batch-ms", type=float, default=None, help="the server's batch_ms (default: its own)")
    ap.add_argument("--out", type=Path, default=RESULTS / "service_latency.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        _model(Path(tmp) / "model")
        extra = {k: v for k, v in (("max_batch_tokens", args.max_batch_tokens), ("batch_ms", args.batch_ms))
                 if v is not None}
        settings = {"port": port, "log_level": "warning", "device": "cpu"} | extra
        code = (f"import torch; torch.set_num_threads({args.threads}); from taosr.deploy.serve import run, ServeSettings; "
                f"run({str(Path(tmp) / 'model')!r}, ServeSettings(**{settings!r}))")
        server = subprocess.Popen([sys.executable, "-c", code], env=os.environ | {"TAOSR_PROGRESS": "0"})
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                raise SystemExit("server not ready within 120 s")
            alone, loaded = ({"server": server_counters(url)} | asyncio.run(_phase(url + "/v1/relevance", args.small, n,
                                                                                     args.budget_s))
                             for n in (0, args.big_streams))
            for phase, after in ((alone, loaded["server"]), (loaded, server_counters(url))):
                phase["server"] = _batches({k: after[k] - phase["server"][k] for k in after})
        finally:
            server.terminate()
            server.wait(30)

    import torch

    from taosr.deploy.configs import ServeSettings
    from taosr.prompts import PromptConfig

    result = {"date": time.strftime("%Y-%m-%d"), "cpu": _cpu_name(), "affinity": len(os.sched_getaffinity(0)),
              "cores": os.cpu_count(), "torch_threads": args.threads, "torch": torch.__version__,
              "prompt_budgets": PromptConfig().model_dump(include={"max_query_tokens", "max_item_tokens", "max_prompt_tokens"}),
              "settings": ServeSettings(**extra).model_dump(include={"max_batch_items", "max_batch_tokens", "batch_ms",
                                                                               "max_wait_ms"}),
              "small_alone": alone, "small_with_large": loaded,
              "p99_ratio": round(loaded["small"]["p99_ms"] / alone["small"]["p99_ms"], 2)
              if alone["small"].get("p99_ms") and loaded["small"].get("p99_ms") else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
