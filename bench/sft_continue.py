"""Is an SFT order converged? Train it on from a stage's last checkpoint, in parts, and read dev.

The method bench's stop rule hands on an extension's start model when the extension does not beat it; this
check asks what the model would have done had training gone on from where the extension ended. Each part is
an ordinary extension stage of the seed's run (`sft_extend.epochs` more, a fresh warmup and cosine at the
order's rate, dev checks, the dev-best kept and test scored), started from the previous part's last checkpoint
(copied to `<part>_last/model`), never from its dev-best model. Stages are named `continue_<order>_<k>`, so the
bench's own stages are not touched; finished parts are read back.

    python bench/sft_continue.py --preset regime-noisy-30 --name regime_noisy_30 --seed 0 --order think_first \\
        --start sft_think_first_ext1 --parts 4 --out docs/results/sft_continue_noisy30_seed0.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def last_checkpoint(stage_dir: Path) -> Path:
    """The stage's checkpoint of its final step (its highest-numbered one)."""
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(stage_dir / "checkpoints")) if (stage_dir / "checkpoints").is_dir() else None
    if not found:
        raise SystemExit(f"{stage_dir}: no checkpoints/checkpoint-* to continue from")
    return Path(found)


def last_stage(run_dir: Path, stage: str) -> str:
    """A stage folder `<stage>_last` whose model is `stage`'s last checkpoint; its settings name that checkpoint."""
    ckpt = last_checkpoint(run_dir / stage)
    name, out = f"{stage}_last", run_dir / f"{stage}_last"
    if not (out / "model" / "model.safetensors").exists():
        (out / "model").mkdir(parents=True, exist_ok=True)
        for f in MODEL_FILES:
            if (ckpt / f).exists():
                shutil.copy2(ckpt / f, out / "model" / f)
        (out / "settings.json").write_text(json.dumps({"last_checkpoint_of": stage, "checkpoint": ckpt.name}) + "\n")
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", required=True, help="the method bench's preset")
    ap.add_argument("--name", required=True, help="the method bench's run name (runs/<name>/seed<k>)")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--first-seed", type=int, default=0, help="the bench's first seed (its data and base are shared)")
    ap.add_argument("--order", required=True, choices=("answer_only", "think_first", "answer_first"))
    ap.add_argument("--start", required=True, help="the stage whose last checkpoint the first part starts from")
    ap.add_argument("--parts", type=int, default=4, help="parts of sft_extend.epochs each")
    ap.add_argument("--first-k", type=int, default=2, help="the first part's extension index (its seed offset)")
    ap.add_argument("--out", type=Path, required=True, help="summary JSON")
    args = ap.parse_args()

    from rich.console import Console

    from taosr.io import write_json
    from taosr.run.bench import git_commit, seed_demo
    from taosr.run.extend import extension

    console = Console()
    d = seed_demo(args.preset, args.name, args.seed, args.first_seed, None, console)
    prev, parts = args.start, []
    for i in range(args.parts):
        k = args.first_k + i
        name = f"continue_{args.order}_{k}"
        start = last_stage(d.run.dir, prev)
        m = extension(d, args.order, start, name, k)
        t = m["train"]
        parts.append({"stage": name, "from": start, "dev_curve": t.get("dev_curve"), "dev_best_step": t.get("dev_best_step"),
                      "test_macro_f1": m["macro_f1"], "stage_wall_s": m.get("stage_wall_s")})
        console.print(f"{name} (from {start}): dev {t.get('dev_curve')}")
        write_json(args.out, {"command": "python bench/sft_continue.py " + " ".join(sys.argv[1:]),
                              "commit": git_commit(), "preset": args.preset, "seed": args.seed, "order": args.order, "start": args.start,
                              "epochs_per_part": d.cfg.sft_extend.epochs, "parts": parts})
        prev = name


if __name__ == "__main__":
    main()
