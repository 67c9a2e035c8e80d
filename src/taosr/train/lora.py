"""`LoraSwitch`: the config block every trainer carries to train LoRA adapters instead of every weight.

`r = 0` is full fine-tuning; `r > 0` trains LoRA adapters through peft (TRL's `peft_config`), which
`train.common.train_and_save` merges into the saved model, so the next stage, `taosr score` and vLLM
load a plain model folder.
"""

from __future__ import annotations

from pydantic import Field

from ..labels import SPECIAL_TOKENS
from ..settings import StrictConfig


class LoraSwitch(StrictConfig):
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
        return getattr(modules["token_adapter"].base_layer, "bias", None) if name == "bias" else get(self, name,
                                                                                                     modules)

    TrainableTokensWrapper._hasattr_wrapped, TrainableTokensWrapper._getattr_wrapped = _has, _get
    TrainableTokensWrapper._taosr_bias = True
