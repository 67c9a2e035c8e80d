"""Prefix-shared scoring layouts side by side: packed (cascade attention) vs batched vs unshared.

One fresh Qwen3-architecture model (sizes below), the method's prompt layout with ~160 tokens of rules,
queries x items from the synthetic benchmark; for each dtype: pairs/s per request (one query and its
items; packed also with every layer on every row, i.e. without the last layer trimmed to the answer
rows), pairs/s with every query of the set packed together, and the largest probability difference of
each layout to unshared scoring in the same dtype. Runs on CUDA when present, else CPU.

    .venv/bin/python bench/prefix_layouts.py --hidden 1024 --layers 8 --heads 16 --kv-heads 4   # ~100M
    .venv/bin/python bench/prefix_layouts.py --quick                                             # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TAOSR_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in [("hidden", 256), ("layers", 4), ("heads", 4), ("kv-heads", 2), ("queries", 32), ("items", 20)]:
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.queries, args.items, args.dtypes = 4, 6, "float32"

    import numpy as np
    import torch

    from serving import bench_pairs, rules_prompt
    from taosr.infer.prefix import PrefixScorer
    from taosr.infer.scoring import score_records
    from taosr.modeling import ModelConfig, build_model, train_tokenizer
    from taosr.prompts import PromptConfig
    from taosr.train.base import corpus

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    train, groups = bench_pairs(args.queries, args.items, 0)
    recs = [r for _, g in groups for r in g]
    tok = train_tokenizer(corpus(train, PromptConfig()), 1024)
    cfg = ModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.kv_heads,
                      intermediate_size=3 * args.hidden)
    pc = rules_prompt(tok, 200)
    report = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "model": cfg.model_dump(),
              "pairs": len(recs), "queries": len(groups), "results": {}}

    def rate(fn, n: int) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(3):
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return round(n / best, 1)

    for dtype in args.dtypes.split(","):
        model = build_model(tok, cfg).to(dev, dtype=getattr(torch, dtype)).eval()
        report["params_m"] = round(model.num_parameters() / 1e6, 1)
        packed, batched = PrefixScorer(model, tok, pc), PrefixScorer(model, tok, pc, packed=False)
        untrimmed = PrefixScorer(model, tok, pc)
        untrimmed.last_layer = -1  # the packed layout with every layer on every row (taosr.infer.packed_attention.trim_last_layer)
        plain = score_records(model, tok, recs, pc, 64)
        per_request = lambda s: np.vstack([s.score_items(g) for _, g in groups])  # noqa: E731
        r = {"packed_per_request": rate(lambda: per_request(packed), len(recs)),  # noqa: B023
             "packed_untrimmed_per_request": rate(lambda: per_request(untrimmed), len(recs)),  # noqa: B023
             "batched_per_request": rate(lambda: per_request(batched), len(recs)),  # noqa: B023
             "packed_all_queries": rate(lambda: packed.score_records(recs), len(recs)),  # noqa: B023
             "unshared": rate(lambda: score_records(model, tok, recs, pc, 64), len(recs)),  # noqa: B023
             "max_abs_diff_packed": float(np.abs(per_request(packed) - plain).max()),
             "max_abs_diff_untrimmed": float(np.abs(per_request(untrimmed) - plain).max()),
             "max_abs_diff_batched": float(np.abs(per_request(batched) - plain).max()),
             "max_abs_diff_all_queries": float(np.abs(packed.score_records(recs) - plain).max())}
        r["trimmed_over_untrimmed"] = round(r["packed_per_request"] / r["packed_untrimmed_per_request"], 2)
        report["results"][dtype] = r
        print(dtype, r, flush=True)
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
