"""How far a training stage moved a model: weights, label probabilities and predicted levels against its parent.

A stage whose dev score did not change at all either did not train or moved the label probabilities too
little to change any pair's most likely level; this tells the two apart.

    python bench/model_shift.py runs/method-smollm2/seed0/sft_answer_first/model \\
        runs/method-smollm2/seed0/dpo_answer_first/checkpoints/checkpoint-30 \\
        --data runs/method-smollm2/seed0/data/dev.jsonl --limit 64
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parent", type=Path, help="Model folder the stage started from.")
    ap.add_argument("child", type=Path, help="Model or checkpoint folder the stage wrote.")
    ap.add_argument("--data", type=Path, required=True, help="Pairs to score (a dev split).")
    ap.add_argument("--limit", type=int, default=64, help="Only the first N pairs.")
    args = ap.parse_args()

    from safetensors.torch import load_file

    from taosr.data.splits import read_split
    from taosr.infer.scoring import score_records
    from taosr.modeling import load_model
    from taosr.prompts import model_prompt

    a, b = load_file(str(args.parent / "model.safetensors")), load_file(str(args.child / "model.safetensors"))
    rel = max(((b[k].float() - a[k].float()).norm() / (a[k].float().norm() + 1e-12)).item() for k in b if k in a)
    pairs = read_split(args.data)[: args.limit]
    prompt = model_prompt(args.parent)
    m0, tok = load_model(args.parent)
    p0 = score_records(m0, tok, pairs, prompt)  # (n, 4) P(level 1..4)
    m1, _ = load_model(args.child)
    p1 = score_records(m1, tok, pairs, prompt)
    print(f"largest relative weight change of a tensor: {rel:.2e}")
    print(f"mean |P(level) change|: {abs(p1 - p0).mean():.2e} over {len(pairs)} pairs")
    print(f"pairs whose most likely level changed: {int((p1.argmax(1) != p0.argmax(1)).sum())} of {len(pairs)}")


if __name__ == "__main__":
    main()
