"""Model factory: a small Qwen3-architecture LM built from a config, or any local HF causal LM.

Either way the four label strings and the think/answer tags are single tokens: a fresh byte-level
BPE tokenizer is trained on the run's own text with them as special tokens, and a loaded tokenizer
gets them added (embeddings resized). Checkpoints are safetensors only. torch, tokenizers and
transformers load inside the functions, so `ModelConfig` (a CLI option group) imports fast.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from .errors import InputError
from .io import atomic_dir
from .labels import LABEL_TOKENS, SPECIAL_TOKENS
from .settings import Count, Seed, StrictConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

log = logging.getLogger(__name__)
PAD, EOS = "<pad>", "<eos>"


NewTokenInit = Literal["words", "mean"]  # how a pretrained model's new label/tag rows start (ensure_special_tokens)


class ModelConfig(StrictConfig):
    """A small decoder-only LM (Qwen3 architecture) trained from scratch, or a local checkpoint."""

    name_or_path: str | None = Field(
        None, description="Local HF model directory (or 'smollm2-135m', the pretrained weights of taosr.pretrained). "
        "None: build a fresh small model."
    )
    vocab_size: Count = Field(1024, description="BPE vocabulary size of the fresh tokenizer (ignored when loading).")
    hidden_size: Count = Field(256, description="Hidden size of the fresh model.")
    num_layers: Count = Field(4, description="Transformer layers of the fresh model.")
    num_heads: Count = Field(4, description="Attention heads.")
    num_kv_heads: Count = Field(2, description="Key/value heads (grouped-query attention).")
    intermediate_size: Count = Field(768, description="MLP width.")
    max_positions: Count = Field(512, description="Longest sequence the model accepts.")
    seed: Seed = Field(0, description="Initialisation seed.")
    new_token_init: NewTokenInit = Field(
        "words", description="A pretrained model's new label/tag token rows start at the embeddings of the words they "
        "stand for ('<excellent>' at ' excellent'), or at the mean of all rows ('mean', the same for every new token)."
    )

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelConfig:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size}), and "
                             f"num_kv_heads ({self.num_kv_heads}) must divide num_heads")
        return self


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`; labels, tags, <pad> and <eos> are single special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, *SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # padding_side must go to the constructor to be saved (see docs/toolchain-notes).
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, padding_side="left",
        additional_special_tokens=list(SPECIAL_TOKENS),
    )


def build_model(tokenizer, cfg: ModelConfig) -> Qwen3ForCausalLM:
    """A fresh Qwen3-architecture model of `cfg`'s size over `tokenizer`'s vocabulary, seeded by `cfg.seed`."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(cfg.seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def token_words(token: str) -> str:
    """The plain words a tag or label token stands for ("<excellent>" -> " excellent", "</answer>" -> " end answer")."""
    return (" end " if token.startswith("</") else " ") + token.strip("</>")


def init_from_words(model, tokenizer, tokens: list[str]) -> None:
    """Start each new token's embedding row (and output row, when untied) at the mean of the rows of the words it
    stands for, so a pretrained model reads `<excellent>` near " excellent" instead of all new tokens alike."""
    import torch

    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    untied = head is not None and head.weight.data_ptr() != emb.data_ptr()
    with torch.no_grad():
        for tok in tokens:
            row = tokenizer.convert_tokens_to_ids(tok)
            words = tokenizer(token_words(tok), add_special_tokens=False)["input_ids"]
            emb[row] = emb[words].mean(0)
            if untied:
                head.weight[row] = head.weight[words].mean(0)


def ensure_special_tokens(model, tokenizer, new_token_init: NewTokenInit = "words") -> None:
    """Add the label/tag tokens (and a pad token) to a pretrained tokenizer and resize the embeddings.

    `new_token_init`: "words" starts the new rows at the embeddings of the words they stand for
    (`init_from_words`); "mean" leaves transformers' mean-of-all-rows start, the same for every new token.
    """
    if new_token_init not in ("words", "mean"):
        raise ValueError(f"new_token_init {new_token_init!r}: expected 'words' or 'mean'")
    missing = [t for t in SPECIAL_TOKENS if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if missing and new_token_init == "words":  # also where spare (untrained) rows made a resize unnecessary
        init_from_words(model, tokenizer, missing)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id


def pick_device(device: str = "auto") -> torch.device:
    """'auto': the CUDA GPU of this process (LOCAL_RANK under torchrun / accelerate) when there is one, else the CPU."""
    import torch

    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # modulo: a launcher that binds one GPU per rank leaves each rank only cuda:0
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    try:
        out = torch.device(device)
    except RuntimeError:
        raise InputError(f"device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if out.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: this machine has no CUDA GPU (torch {torch.__version__}); "
                         "use auto or cpu")
    if out.type == "cuda" and (out.index or 0) >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return out


DTYPES = ("float32", "bfloat16", "float16")  # names of the torch dtypes a model loads in


def load_model(path: str | Path, dtype: torch.dtype | str = "float32", device: str | None = None,
               new_token_init: NewTokenInit = "words"):
    """Load a local checkpoint (safetensors only) and its tokenizer, with the label tokens in place.

    `dtype`: a torch dtype or one of `DTYPES`' names. `device` (see `pick_device`) is for inference;
    None leaves the model on the CPU, where the trainers (TRL / accelerate, DeepSpeed, FSDP) pick it up
    and place it themselves. `new_token_init`: how a pretrained model's new label/tag rows start (see
    `ensure_special_tokens`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        dtype = getattr(torch, dtype)
    path = check_model_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
    except Exception as e:  # a damaged folder fails in many ways (JSON, safetensors header, tokenizer files)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise InputError(f"{path}: the model folder cannot be loaded ({type(e).__name__}: {first}); it is damaged or "
                         "incomplete: train it again, or pass another --model") from None
    ensure_special_tokens(model, tokenizer, new_token_init)
    if device is not None:
        model.to(pick_device(device))
    return model, tokenizer


def label_token_ids(tokenizer) -> list[int]:
    """Ids of the label tokens for levels 1, 2, 3, 4 (in that order); each must be one token."""
    ids = []
    for level in (1, 2, 3, 4):
        enc = tokenizer(LABEL_TOKENS[level], add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise ValueError(f"label {LABEL_TOKENS[level]!r} is {len(enc)} tokens; it must be one")
        ids.append(enc[0])
    return ids


def save(model, tokenizer, out_dir: Path) -> None:
    """Save model (safetensors) and tokenizer to `out_dir`, whole or not at all (`io.atomic_dir`)."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def check_model_dir(path: str | Path) -> Path:
    """The model folder `path` ('smollm2-135m': the pretrained weights' folder), checked for what loading needs:
    config.json, safetensors weights and a tokenizer; anything missing is an `InputError` saying so."""
    if str(path) == "smollm2-135m":
        from .pretrained import smollm2_dir

        return smollm2_dir()
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such model folder; pass a stage's OUT/model folder or smollm2-135m")
    missing = [f for f in ("config.json",) if not (path / f).is_file()]
    missing += [] if any(path.glob("*.safetensors")) else ["model.safetensors (the weights)"]
    missing += [] if any((path / f).is_file() for f in TOKENIZER_FILES) else ["tokenizer.json (the tokenizer)"]
    if missing:
        raise InputError(f"{path}: not a complete model folder (no {', '.join(missing)}); pass a stage's "
                         "OUT/model folder, or train it again")
    return path


FINGERPRINT_FILES = ("*.safetensors", "*.safetensors.index.json", "tokenizer.json", "taosr_prompt.json")


def model_fingerprint(model_dir: str | Path) -> str:
    """A hash of what a model folder scores with: its weights (every safetensors file, size and sha256, read in
    chunks), its tokenizer and its prompt layout (`prompts.PROMPT_FILE`). Retraining in place changes it; moving
    or copying the folder does not. Resumable outputs record it, so they never mix two models' results."""
    folder = check_model_dir(model_dir)
    h = hashlib.sha256()
    files = sorted({f for pattern in FINGERPRINT_FILES for f in folder.glob(pattern) if f.is_file()})
    for f in files:
        file_hash = hashlib.sha256()
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                file_hash.update(chunk)
        h.update(f"{f.name}\0{f.stat().st_size}\0{file_hash.hexdigest()}\n".encode())
    return h.hexdigest()[:32]


def weights_fingerprint(model) -> str:
    """A hash of an in-memory model's weights (every parameter and buffer, by name): `model_fingerprint` for a
    model that has no folder yet."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}\0{tuple(tensor.shape)}\0{tensor.dtype}\n".encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]
