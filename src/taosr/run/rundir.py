"""The run directory: where every stage of one run reads and writes, and the config that defines the run.

    runs/<name>/
      config.json              resolved RunConfig
      data/{train,dev,test}.jsonl, data/stats.json
      tokenizer/               the run's tokenizer (fresh BPE, or the loaded model's)
      <stage>/model/           safetensors checkpoint of each stage
      <stage>/summary.json     training summary (losses, wall time)
      <stage>/metrics.json     test metrics of that stage
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..data.splits import read_split, write_splits
from ..data.synth import SynthConfig, generate
from ..io import write_json, write_text
from ..modeling import ModelConfig
from ..prompts import PromptConfig
from ..records import Record
from ..settings import Count, StrictConfig
from ..train.base import start_model
from ..train.configs import SFTStageConfig

SPLITS = ("train", "dev", "test")


class RunConfig(StrictConfig):
    """Everything that defines a run; written to `runs/<name>/config.json`."""

    name: str = Field("demo", description="Run name: the folder under runs/.")
    runs_dir: str = Field("runs", description="Parent folder of all runs.")
    synth: SynthConfig = Field(default_factory=SynthConfig, description="Synthetic benchmark (when no data is given).")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt layout.")
    sft: SFTStageConfig = Field(default_factory=SFTStageConfig, description="Stage 1 budget.")
    eval_batch_size: Count = Field(64, description="Batch size for scoring and generation.")
    max_new_tokens: Count = Field(128, description="Generation budget for think-first outputs.")

    @property
    def dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def save_config(cfg: RunConfig) -> None:
    write_text(cfg.dir / "config.json", cfg.model_dump_json(indent=1))


def prepare_data(cfg: RunConfig) -> dict[str, list[Record]]:
    """Generate (or reuse) the benchmark splits of this run."""
    data = cfg.dir / "data"
    if not all((data / f"{s}.jsonl").exists() for s in SPLITS):
        write_json(data / "stats.json", write_splits(generate(cfg.synth), data))
    return {s: read_split(data / f"{s}.jsonl") for s in SPLITS}


def fresh_model(cfg: RunConfig, train: list[Record]):
    """(model, tokenizer) for the start of stage 1: the run's checkpoint, or a new small model whose tokenizer
    lives in `runs/<name>/tokenizer/` (see `train.base.start_model`)."""
    return start_model(cfg.model, cfg.prompt, cfg.dir / "tokenizer", train)
