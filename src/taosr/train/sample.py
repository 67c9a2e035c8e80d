"""Stage 2a, `taosr sample`: pass@N offline sampling of a trained model.

Draws N responses per training prompt (temperature / top-p), parses each response's label with the
evaluation parser, and records it next to the gold label. Output: Parquet shards, one row per
response (prompt_id, sample_index, text, parsed, parse_error, gold, correct). Each shard is written
atomically (temp file + rename) and seeded by its index, so a killed job resumes at the first
missing shard: no prompt is sampled twice, none is lost, and the rows equal an uninterrupted run's.
A folder remembers what it was sampled for (`sampling.json`: the prompts, the sampling settings and the
model's fingerprint, `modeling.model_fingerprint` of its folder or `weights_fingerprint` of the weights
in memory); resuming it with other prompts, settings or weights is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..generation import generate_texts
from ..io import atomic_write, record_differences, write_json
from ..labels import parse_response
from ..modeling import model_fingerprint, weights_fingerprint
from ..prompts import PromptConfig, encode_prompt
from ..records import Record
from ..runtime import resolve_engine
from .configs import SampleConfig
from .pairs import pass_at_k_curve

MANIFEST = "sampling.json"


def _shard_path(out_dir: Path, k: int) -> Path:
    return out_dir / f"samples-{k:05d}.parquet"


def sampling_manifest(records: list[Record], cfg: SampleConfig, prompt_cfg: PromptConfig, model_id: str) -> dict:
    """What a samples folder holds: the prompts (count and a hash of their ids, in order), the model (`model_id`,
    its fingerprint) and every setting that changes the samples (the generate() batch size does not)."""
    ids = hashlib.sha256("\n".join(r.id for r in records).encode()).hexdigest()
    return {"prompts": len(records), "prompt_ids_sha256": ids, "sample": cfg.model_dump(exclude={"batch_size"}),
            "prompt_layout": prompt_cfg.model_dump(), "model_fingerprint": model_id}


def check_resume(out_dir: Path, records: list[Record], cfg: SampleConfig, prompt_cfg: PromptConfig,
                 model_id: str) -> None:
    """Refuse to add to a samples folder written for other prompts, settings or weights; record them on first use.

    A folder from before the manifest existed is checked shard by shard: each shard must hold exactly the
    prompts this run would put in it."""
    path, want = out_dir / MANIFEST, sampling_manifest(records, cfg, prompt_cfg, model_id)
    if path.exists():
        diff = record_differences(path, want)
        if diff:
            raise InputError(f"{out_dir}: these samples were drawn with other settings ({'; '.join(diff[:5])}) "
                             f"({path}); use another folder or remove it to sample again")
        return
    for shard in sorted(out_dir.glob("samples-*.parquet")):
        k = int(shard.stem.split("-")[1])
        chunk = [r.id for r in records[k * cfg.shard_prompts:(k + 1) * cfg.shard_prompts]]
        got = list(dict.fromkeys(pd.read_parquet(shard, columns=["prompt_id"])["prompt_id"]))
        if got != chunk:
            raise InputError(f"{shard}: holds samples of other prompts than shard {k} of this run (first id "
                             f"{got[0] if got else None!r}, expected {chunk[0] if chunk else None!r}); use another "
                             "folder or remove it to sample again")
    write_json(path, want)


def run_sampling(model, tokenizer, records: list[Record], cfg: SampleConfig, out_dir: Path,
                 prompt_cfg: PromptConfig, after_shard: Callable[[int], None] | None = None,
                 model_dir: Path | None = None) -> pd.DataFrame:
    """Sample every record's prompt `cfg.n` times; returns all rows (existing shards are reused) and writes
    the pass@k curve to `out_dir/pass_at_k.json`.

    With `model_dir` given and the engine resolving to vLLM (`cfg.engine`), rollouts run on vLLM's
    offline engine; otherwise on transformers' `generate` with `model`.
    """
    engine = resolve_engine(cfg.engine) if model_dir is not None else "transformers"
    out_dir.mkdir(parents=True, exist_ok=True)
    check_resume(out_dir, records, cfg, prompt_cfg,
                 model_fingerprint(model_dir) if model_dir is not None else weights_fingerprint(model))
    n_shards = (len(records) + cfg.shard_prompts - 1) // cfg.shard_prompts
    for k in range(n_shards):
        path = _shard_path(out_dir, k)
        if path.exists():
            continue
        chunk = records[k * cfg.shard_prompts:(k + 1) * cfg.shard_prompts]
        prompts = [encode_prompt(tokenizer, r, prompt_cfg) for r in chunk]
        if engine == "vllm":
            from ..infer.vllm_engine import vllm_generate

            texts = vllm_generate(model_dir, prompts, cfg.n, cfg.temperature, cfg.top_p, cfg.max_new_tokens,
                                  cfg.seed + k)
        else:
            texts = generate_texts(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size, do_sample=True,
                                   temperature=cfg.temperature, top_p=cfg.top_p, num_return_sequences=cfg.n,
                                   desc=f"sampling shard {k + 1}/{n_shards}", seed=cfg.seed + k)
        rows = []
        for r, outs in zip(chunk, texts):
            for i, text in enumerate(outs):
                p = parse_response(text)
                rows.append({"prompt_id": r.id, "sample_index": i, "text": text, "parsed": p.level,
                             "parse_error": p.error, "gold": r.label, "correct": p.level == r.label})
        frame = pd.DataFrame(rows).astype({"parsed": "Int64"})
        atomic_write(path, partial(frame.to_parquet, index=False))  # a shard is either complete or absent
        if after_shard:
            after_shard(k)
    samples = read_samples(out_dir)
    write_json(out_dir / "pass_at_k.json", pass_at_k_report(samples))
    return samples


def read_samples(out_dir: Path) -> pd.DataFrame:
    shards = sorted(out_dir.glob("samples-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{out_dir}: no samples-*.parquet shards")
    return pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)


def pass_at_k_report(samples: pd.DataFrame) -> dict[int, float]:
    """Unbiased pass@k for k = 1..N, averaged over prompts."""
    counts = samples.groupby("prompt_id")["correct"].sum().astype(int).tolist()
    n = int(samples.groupby("prompt_id").size().min())
    return pass_at_k_curve(counts, n)
