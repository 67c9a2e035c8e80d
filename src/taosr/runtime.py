"""Where a run executes: its process (rank) under `accelerate launch`, precision, and scoring engine.

- `is_main_process` / `main_process_first` / `world_size`: under `accelerate launch` / `torchrun` every
  process runs the same command; accelerate's `PartialState` says which one is the main process
  (the one that writes summaries, rejects and metrics; the trainers already save once).
- `resolve_bf16`: bf16 only where the hardware runs it natively.
- `resolve_engine`: rollouts and scoring run on vLLM when it is importable and a GPU is present,
  else on transformers; `--engine` forces one.

Which accelerate config to use for which model size is in docs/scale-out.md; the configs are in
configs/accelerate/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from .settings import StrictConfig

ENGINES = ("auto", "transformers", "vllm")
Engine = Literal["auto", "transformers", "vllm"]
DEVICE_HELP = "auto (the CUDA GPU of this process when there is one, else the CPU) | cpu | cuda | cuda:N."
DTYPE_HELP = ("float32 | bfloat16 | float16: the model's weights (the label softmax is fp32 either way); calibrate "
              "and serve in the same one, since beta is tuned on these probabilities.")
BF16_HELP = ("bf16 autocast; unset = where the hardware runs bf16 natively (a CUDA GPU with bf16, or a CPU with "
             "AVX512_BF16 or AMX), fp32 elsewhere (where bf16 is emulated and far slower than fp32).")


class DeviceConfig(StrictConfig):
    """Where a transformers model runs for inference, and in which precision."""

    device: str = Field("auto", description=DEVICE_HELP)
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description=DTYPE_HELP)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"device {v!r}: expected {DEVICE_HELP}")
        return v


def process_state():
    """accelerate's `PartialState` of this process (one shared state; the trainers' Accelerator reuses it)."""
    from accelerate import PartialState

    return PartialState(cpu=not gpu_available())


def is_main_process() -> bool:
    """True on the main process of a multi-process launch, and in a plain single-process run."""
    return process_state().is_main_process


def world_size() -> int:
    return process_state().num_processes


def main_process_first():
    """Context manager: the main process runs the block first, the others after it (a no-op in one process)."""
    return process_state().main_process_first()


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
