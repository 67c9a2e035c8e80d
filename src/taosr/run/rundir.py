"""The run directory and the glue between stages (used by the CLI and the demo).

Everything a run produces lives under one folder:

    runs/<name>/
      config.json              resolved RunConfig
      data/{train,dev,test}.jsonl, data/stats.json
      tokenizer/               the run's tokenizer (fresh BPE, or the loaded model's)
      <stage>/model/           safetensors checkpoint of each stage
      <stage>/summary.json     training summary (losses, wall time)
      <stage>/metrics.json     test metrics of that stage
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

from .loaders import load_records
from .modeling import ModelConfig, build_model, load_model, train_tokenizer
from .prompts import PromptConfig, item_segment, query_segment
from .records import Record
from .sft import SFTStageConfig
from .synth import SynthConfig, generate, write_splits
from .teacher import RuleTeacher


class RunConfig(BaseModel):
    """Everything that defines a run; written to `runs/<name>/config.json`."""

    name: str = Field("demo", description="Run name: the folder under runs/.")
    runs_dir: str = Field("runs", description="Parent folder of all runs.")
    synth: SynthConfig = Field(default_factory=SynthConfig, description="Synthetic benchmark (when no data is given).")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt layout.")
    sft: SFTStageConfig = Field(default_factory=SFTStageConfig, description="Stage 1 budget.")
    eval_batch_size: int = Field(64, description="Batch size for scoring and generation.")
    max_new_tokens: int = Field(128, description="Generation budget for think-first outputs.")

    @property
    def dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def save_config(cfg: RunConfig) -> None:
    cfg.dir.mkdir(parents=True, exist_ok=True)
    (cfg.dir / "config.json").write_text(cfg.model_dump_json(indent=1))


def read_split(path: Path) -> list[Record]:
    return load_records([path], require_label=True, rejects_path=path.with_suffix(".rejects.jsonl")).records


def prepare_data(cfg: RunConfig) -> dict[str, list[Record]]:
    """Generate (or reuse) the benchmark splits of this run."""
    data = cfg.dir / "data"
    if not all((data / f"{s}.jsonl").exists() for s in ("train", "dev", "test")):
        stats = write_splits(generate(cfg.synth), data)
        (data / "stats.json").write_text(json.dumps(stats, indent=1))
    return {s: read_split(data / f"{s}.jsonl") for s in ("train", "dev", "test")}


def corpus(records: list[Record], prompt_cfg: PromptConfig) -> list[str]:
    """Texts the fresh tokenizer is trained on: prompts and teacher reasoning."""
    teacher = RuleTeacher()
    out = [prompt_cfg.instructions]
    for r in records:
        reasoning = teacher.reason(r)
        out.append(query_segment(r) + item_segment(r, prompt_cfg) + (reasoning.text if reasoning else ""))
    return out


def fresh_model(cfg: RunConfig, train: list[Record]):
    """(model, tokenizer) for the start of stage 1: a local checkpoint, or a new small model."""
    if cfg.model.name_or_path:
        return load_model(cfg.model.name_or_path)
    from transformers import AutoTokenizer

    from .scale import main_process_first

    tok_dir = cfg.dir / "tokenizer"
    with main_process_first():  # under `accelerate launch`: rank 0 trains and saves it, the others load it
        if (tok_dir / "tokenizer.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        else:
            tokenizer = train_tokenizer(corpus(train, cfg.prompt), cfg.model.vocab_size)
            tokenizer.save_pretrained(tok_dir)
    return build_model(tokenizer, cfg.model), tokenizer


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=_np))


def _np(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
