"""One-GPU check of the whole method with small budgets; `bench/gpu.sh` runs it under a time limit.

SFT (post-CoT) -> pass@N sampling -> DPO -> GRPO -> CumPT calibration on the synthetic benchmark,
each stage evaluated on the test split, then the scoring benchmark on the final model: answer-first
with prefix sharing vs without (transformers), and vLLM's offline engine when it is installed
(pairs/s and the largest probability difference to transformers). Everything lands in one JSON.

    python bench/gpu_pipeline.py --model smollm2-135m --out bench/results/gpu.json
    python bench/gpu_pipeline.py --model fresh --quick        # CPU smoke run of the same code path
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TAOSR_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m | fresh | a local HF model folder.")
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--dpo-steps", type=int, default=60)
    ap.add_argument("--grpo-steps", type=int, default=30)
    ap.add_argument("--queries", type=int, default=1500, help="Synthetic queries (x4 items) before splitting.")
    ap.add_argument("--quick", action="store_true", help="Tiny budgets (a CPU smoke run).")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu.json")
    args = ap.parse_args()
    if args.quick:
        args.sft_steps, args.dpo_steps, args.grpo_steps, args.queries = 6, 2, 2, 60

    import numpy as np
    import torch

    from taosr.data.synth import SynthConfig
    from taosr.deploy.calibrate import calibrate_model
    from taosr.evaluation.evaluate import evaluate
    from taosr.infer.prefix import PrefixScorer
    from taosr.infer.scoring import score_records
    from taosr.modeling import ModelConfig, load_model
    from taosr.run.rundir import RunConfig, fresh_model, prepare_data
    from taosr.runtime import vllm_available
    from taosr.teacher.reasoning import RuleTeacher
    from taosr.train.configs import DPOStageConfig, GRPOStageConfig, SampleConfig, SFTStageConfig
    from taosr.train.dpo import make_pairs, run_dpo
    from taosr.train.grpo import run_grpo, select_prompts
    from taosr.train.sample import pass_at_k_report, run_sampling
    from taosr.train.sft import run_sft

    gpu = torch.cuda.is_available()
    t_all = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="taosr-gpu-"))
    small = ModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, vocab_size=400)
    model_cfg = (small if args.quick else ModelConfig()) if args.model == "fresh" else ModelConfig(name_or_path=args.model)
    sft_cfg = SFTStageConfig(order="answer_first", max_steps=args.sft_steps, batch_size=32, learning_rate=1e-4
                             if args.model != "fresh" else 1e-3, bf16=gpu, label_weight=10.0, save_steps=10_000)
    run = RunConfig(name="gpu", runs_dir=str(root), synth=SynthConfig(n_queries=args.queries), model=model_cfg,
                    sft=sft_cfg, max_new_tokens=96)
    splits = prepare_data(run)
    test, teacher = splits["test"], RuleTeacher()
    report: dict = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "model": args.model,
                    "vllm": vllm_available(), "pairs": {k: len(v) for k, v in splits.items()}, "stages": {}}

    def stage(name: str, model, tok, fn_wall: float) -> None:
        m, _ = evaluate(model, tok, test, "answer_first", run.prompt, batch_size=64)
        report["stages"][name] = {"macro_f1": round(100 * m["macro_f1"], 2), "accuracy": round(100 * m["accuracy"], 2),
                                  "wall_s": round(fn_wall, 1)}
        print(name, report["stages"][name], flush=True)

    t0 = time.perf_counter()
    model, tok = fresh_model(run, splits["train"])
    report["params_m"] = round(model.num_parameters() / 1e6, 1)
    run_sft(model, tok, splits["train"], sft_cfg, root / "sft", teacher, run.prompt)
    stage("sft_answer_first", model, tok, time.perf_counter() - t0)

    t0 = time.perf_counter()
    prompts = splits["train"][:256 if not args.quick else 16]
    # transformers here: a vLLM engine kept resident for sampling would hold GPU memory that DPO needs;
    # vLLM is measured in the scoring benchmark at the end, after the training models are freed
    sample_cfg = SampleConfig(n=4, max_new_tokens=96, shard_prompts=256, engine="transformers")
    samples = run_sampling(model, tok, prompts, sample_cfg, root / "samples", run.prompt)
    report["pass_at_k"] = pass_at_k_report(samples)
    dpo_cfg = DPOStageConfig(max_steps=args.dpo_steps, batch_size=16, learning_rate=5e-6 if args.model != "fresh" else 5e-5,
                             bf16=gpu)
    pairs, counts = make_pairs(samples, prompts, teacher, "answer_first", run.prompt, dpo_cfg.pairs)
    model, tok = load_model(root / "sft" / "model")
    run_dpo(model, tok, pairs, dpo_cfg, root / "dpo")
    report["pair_counts"] = counts
    stage("dpo", model, tok, time.perf_counter() - t0)

    t0 = time.perf_counter()
    grpo_cfg = GRPOStageConfig(max_steps=args.grpo_steps, offline_filter=False, bf16=gpu,
                               learning_rate=1e-6 if args.model != "fresh" else 5e-5)
    rl, _ = select_prompts(splits["train"][-512:], None, grpo_cfg)
    model, tok = load_model(root / "dpo" / "model")
    run_grpo(model, tok, rl, grpo_cfg, root / "grpo", run.prompt)
    stage("grpo", model, tok, time.perf_counter() - t0)

    t0 = time.perf_counter()
    cal = calibrate_model(root / "grpo" / "model", splits["dev"], run.prompt)
    report["cumpt"] = {"beta": cal["beta"], "dev_score": cal["dev_score"], "wall_s": round(time.perf_counter() - t0, 1)}

    # scoring benchmark on the final model: test pairs grouped by query
    model, tok = load_model(root / "grpo" / "model")
    if gpu:
        model = model.to("cuda", dtype=torch.bfloat16)
    groups: dict[str, list] = {}
    for r in test:
        groups.setdefault(r.query, []).append(r)
    scorer = PrefixScorer(model, tok, run.prompt, 64)

    def timed(fn) -> tuple[float, list]:
        if gpu:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = [fn(recs) for recs in groups.values()]
        if gpu:
            torch.cuda.synchronize()
        return len(test) / (time.perf_counter() - t), out

    batched = PrefixScorer(model, tok, run.prompt, 64, packed=False)  # the fallback layout, same model
    timed(scorer.score_items)  # warm-up
    timed(batched.score_items)
    a, pa = timed(scorer.score_items)
    a1, pa1 = timed(batched.score_items)
    b, pb = timed(lambda recs: score_records(model, tok, recs, run.prompt, 64))
    if gpu:
        torch.cuda.synchronize()
    t = time.perf_counter()
    all_queries = scorer.score_records(test)  # every query of the test split packed into shared forwards
    if gpu:
        torch.cuda.synchronize()
    bench = {"dtype": str(model.dtype), "prefix_packed_pairs_per_s": round(a, 1),
             "prefix_batched_pairs_per_s": round(a1, 1), "prefix_packed_all_queries_pairs_per_s":
             round(len(test) / (time.perf_counter() - t), 1), "unshared_pairs_per_s": round(b, 1),
             "a_over_b": round(a / b, 2), "packed_over_batched": round(a / a1, 2),
             "max_abs_diff_packed_vs_unshared": float(max(np.abs(x - y).max() for x, y in zip(pa, pb))),
             "max_abs_diff_batched_vs_unshared": float(max(np.abs(x - y).max() for x, y in zip(pa1, pb)))}
    row = {id(r): i for i, r in enumerate(test)}
    per_query = np.zeros_like(all_queries)
    for recs, p in zip(groups.values(), pa):
        per_query[[row[id(r)] for r in recs]] = p
    bench["max_abs_diff_all_queries_vs_per_query"] = float(np.abs(all_queries - per_query).max())
    if vllm_available():
        from taosr.deploy.scorer import VLLMScorer

        del model, scorer
        torch.cuda.empty_cache()
        vs = VLLMScorer(root / "grpo" / "model", gpu_memory_utilization=0.3)
        vs.score_records(test[:64])  # warm-up
        v, pv = timed(vs.score_records)
        bench.update(vllm_pairs_per_s=round(v, 1),
                     vllm_max_abs_diff_vs_transformers=float(max(np.abs(x - y).max() for x, y in zip(pv, pa))))
    report["scoring"] = bench
    report["total_s"] = round(time.perf_counter() - t_all, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
