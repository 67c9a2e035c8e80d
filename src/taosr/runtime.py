"""Scale-out switches shared by every training stage and scorer.

- `LoraSwitch`: a config block every trainer carries; `r = 0` is full fine-tuning, `r > 0` trains
  LoRA adapters through peft (TRL's `peft_config`) and merges them into the saved model, so the
  next stage, `taosr score` and vLLM load a plain model folder.
- `is_main_process`: under `accelerate launch` / `torchrun` every process runs the same command;
  only rank 0 writes summaries, rejects and metrics (the trainers already save once).
- `resolve_engine`: rollouts and scoring run on vLLM when it is importable and a GPU is present,
  else on transformers; `--engine` forces one.

Which accelerate config to use for which model size is in docs/scale-out.md; the configs are in
configs/accelerate/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

ENGINES = ("auto", "transformers", "vllm")
DEVICE_HELP = "auto (the CUDA GPU of this process when there is one, else the CPU) | cpu | cuda | cuda:N."
DTYPE_HELP = ("float32 | bfloat16 | float16: the model's weights (the label softmax is fp32 either way); calibrate "
              "and serve in the same one, since beta is tuned on these probabilities.")


class LoraSwitch(BaseModel):
    """LoRA adapters (peft) instead of full fine-tuning, for models that do not fit."""

    r: int = Field(0, ge=0, description="LoRA rank; 0 trains every weight (full fine-tuning).")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (update scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get adapters: 'all-linear' or names such as q_proj, v_proj.")

    def peft_config(self, model=None, tokenizer=None):
        """A peft LoraConfig, or None for full fine-tuning.

        With the tokenizer, the rows of the label and tag tokens (`labels.SPECIAL_TOKENS`) in the input
        embedding and the LM head train too (peft's `trainable_token_indices`): a pretrained model gets them
        as new rows, which adapters on the linear layers never reach, so they would stay at their
        initialisation. Only those rows train; `merge_and_unload` folds them into the saved weights. With
        the model, an LM head not tied to the embedding gets its own trainable rows (a tied one shares them).
        """
        if self.r == 0:
            return None
        from peft import LoraConfig

        rows = None if tokenizer is None else token_rows(model, tokenizer)
        if rows is not None:
            _expose_head_bias()
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM", trainable_token_indices=rows)


def token_rows(model, tokenizer) -> list[int] | dict[str, list[int]] | None:
    """peft `trainable_token_indices` for the label and tag tokens: a list (the input embedding, and a head
    tied to it), or {embedding: ids, head: ids} for a model whose LM head has its own weight."""
    from .labels import SPECIAL_TOKENS

    ids = sorted({i for i in tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
                  if i is not None and i != tokenizer.unk_token_id})
    if not ids:
        return None
    if not hasattr(model, "get_input_embeddings"):  # a model name (the trainer loads it): the embedding only
        return ids
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or head.weight is emb.weight:
        return ids
    names = {m: n for n, m in model.named_modules()}
    return {names[emb]: ids, names[head]: ids}


def _expose_head_bias() -> None:
    """TRL's fused LM head (SFT, DPO, GRPO) reads `lm_head.weight` and `lm_head.bias`; peft's trainable-tokens
    wrapper answers `weight` (the base rows with the trained ones in, so they get gradients) but not `bias`.
    Let it answer `bias` from the layer it wraps (None for an embedding or a bias-free head)."""
    from peft.utils.other import TrainableTokensWrapper

    if getattr(TrainableTokensWrapper, "_taosr_bias", False):
        return
    has, get = TrainableTokensWrapper._hasattr_wrapped, TrainableTokensWrapper._getattr_wrapped

    def _has(self, name, modules):
        return name == "bias" or has(self, name, modules)

    def _get(self, name, modules):
        return getattr(modules["token_adapter"].base_layer, "bias", None) if name == "bias" else get(self, name, modules)

    TrainableTokensWrapper._hasattr_wrapped, TrainableTokensWrapper._getattr_wrapped = _has, _get
    TrainableTokensWrapper._taosr_bias = True


def is_main_process() -> bool:
    """True on rank 0 of a multi-process launch, and in a plain single-process run."""
    return int(os.environ.get("RANK", "0")) == 0


def write_summary(out_dir: Path, summary: dict) -> None:
    """summary.json of a stage, written once (rank 0) under a multi-process launch."""
    if is_main_process():
        (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=1))


def main_process_first():
    """Context manager: rank 0 runs the block first, the other ranks after it (a no-op in one process)."""
    import contextlib

    if world_size() == 1:
        return contextlib.nullcontext()
    from accelerate import PartialState

    return PartialState(cpu=not gpu_available()).main_process_first()


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


BF16_HELP = ("bf16 autocast; unset = where the hardware runs bf16 natively (a CUDA GPU with bf16, or a CPU with "
             "AVX512_BF16 or AMX), fp32 elsewhere (bf16 on an AVX2-only CPU is ~20x slower than fp32).")


def bf16_native(cpuinfo: str | None = None) -> bool:
    """True on a CUDA GPU with bf16, or a CPU whose flags include avx512_bf16 or amx_bf16.

    `cpuinfo`: the text of /proc/cpuinfo (read from the machine when None).
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[-1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_bf16(bf16: bool | None) -> bool:
    """The precision a stage trains in: the explicit choice, else what the hardware runs natively."""
    return bf16_native() if bf16 is None else bool(bf16)


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def vllm_available() -> bool:
    """vLLM is the GPU path: a CUDA device present *and* vLLM importable (the cheap check first)."""
    if not gpu_available():
        return False
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def resolve_engine(engine: str) -> str:
    """auto -> vllm when available, else transformers; an explicit vllm without vLLM is an error."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "vllm" if vllm_available() else "transformers"
    if engine == "vllm" and not vllm_available():
        raise RuntimeError("engine 'vllm' needs `pip install vllm` and a CUDA GPU; use --engine transformers")
    return engine


def trainable_params(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
