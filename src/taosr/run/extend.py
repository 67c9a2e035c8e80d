"""SFT until dev stops rising: extensions of one output order's SFT stage, each in its own stage folder.

After `sft_<order>` ran its preset budget, the within-run rule (`still_rising`) reads its dev curve; while it says
the curve was still rising and the order has trained fewer than `sft_extend.max_epochs` epochs, a stage
`sft_<order>_ext<k>` trains `sft_extend.epochs` more from the previous stage's saved model (a fresh warmup and
cosine schedule at the order's rate), with that model as a dev candidate at step 0, so the dev-best weights of
the whole run are handed on. Each extension is an ordinary stage: it resumes, refuses other settings, and its
children record its settings' hash. The table keeps one row per order, keyed `sft_<order>`, read on the final
model, with the dev curve of every part joined (steps counted from the start of the order's training).
"""

from __future__ import annotations

from ..evaluation.devselect import still_rising


def joined_train(parts: list[dict]) -> dict:
    """One training summary for stages trained one after another: steps and epochs summed, dev curves joined
    (each extension's step-0 point, its start model, is the previous part's last check and is dropped), and the
    epochs trained at the dev-best check (`dev_best_epochs`: the kept model's budget)."""
    out, curve, at_epoch, offset, epochs = dict(parts[-1]), [], {}, 0, 0.0
    for i, p in enumerate(parts):
        per_step = p.get("epochs", 0) / p["steps"] if p.get("steps") else 0.0
        for s, f in p.get("dev_curve", []):
            if not (i and s == 0):
                curve.append((offset + s, f))
                at_epoch[offset + s] = round(epochs + s * per_step, 3)
        offset, epochs = offset + p.get("steps", 0), epochs + p.get("epochs", 0)
    best = max(curve, key=lambda x: x[1], default=None)
    out.update(steps=offset, epochs=round(epochs, 3), dev_curve=curve, extensions=len(parts) - 1)
    if best:
        out.update(dev_best_step=best[0], dev_best_macro_f1=best[1], dev_best_epochs=at_epoch[best[0]])
    return out


def extend_sft(d, order: str, m: dict) -> tuple[str, dict]:
    """(name of the stage whose model the order hands on, its metrics with the joined training summary); `d` is
    the Demo, `m` the metrics of `sft_<order>`. An extension whose dev-best is its start model saved that same
    model, so the stage it started from is handed on and the stages trained on that one stay valid."""
    ext, kept, parts = d.cfg.sft_extend, f"sft_{order}", [m.get("train") or {}]
    while (ext.epochs and still_rising((j := joined_train(parts))["dev_curve"], d.cfg.converged_within)
           and j["epochs"] < ext.max_epochs):
        name = f"sft_{order}_ext{len(parts)}"
        m = extension(d, order, kept, name, len(parts))
        parts.append(m["train"])
        if m["train"].get("dev_best_step") != 0:
            kept = name
    return kept, {**m, "train": joined_train(parts)}


def extension(d, order: str, prev: str, name: str, k: int) -> dict:
    """Stage `name`: `sft_extend.epochs` more of SFT on `order` from stage `prev`'s model."""
    ext = d.cfg.sft_extend
    cfg = d.sft_config(order).model_copy(update={"epochs": ext.epochs, "seed": d.cfg.seed + k})
    return d.sft_part(order, name, prev, cfg, ext.checks, True,
                      {"dev": {**d.dev_settings(), "checks": ext.checks, "start": True},
                       "extension": {"of": f"sft_{order}", "k": k, "within": d.cfg.converged_within,
                                     "max_epochs": ext.max_epochs},
                       "test_limit": d.cfg.test_limit}, parent=prev)
