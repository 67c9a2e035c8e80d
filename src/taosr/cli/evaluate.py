"""`taosr eval | baseline | report`: measuring a trained judge, the BERT-style comparison row, the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..evaluation.configs import BaselineConfig, EvalConfig
from ..runtime import DeviceConfig
from .inputs import (
    ORDER_HELP,
    claim_out,
    console,
    load_input,
    model_option,
    overwrite_option,
    resolve_order,
)
from .options import config_command


def register(app: typer.Typer) -> None:
    @config_command(app, "eval", EvalConfig, device=(DeviceConfig, set()), flat={"device"})
    def eval_cmd(
        cfg: EvalConfig, device_cfg: DeviceConfig,
        model: Path = model_option("Model folder (e.g. runs/demo/sft_answer_first/model)."),
        data: Path = typer.Option(..., "--data", help="Labelled file to evaluate on (JSONL/CSV/Parquet)."),
        order: Optional[str] = typer.Option(None, help=ORDER_HELP),
        out: Optional[Path] = typer.Option(None, "--out", help="Metrics JSON path (default: eval-DATA_STEM.json next "
                                           "to the model folder, so the stage's own metrics.json is kept)."),
        json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON (for machines)."),
    ):
        """Macro-F1 (over all four levels and over the levels present), per-class F1, accuracy, confusion matrix,
        per-query-type scores, and nDCG@10 / MRR per query."""
        from ..evaluation.evaluate import evaluate, query_type_table, stage_table
        from ..evaluation.ranking import ranking_note
        from ..io import check_writable, write_json
        from ..labels import LEVEL_NAMES
        from ..modelcard import write_card
        from ..modeling import check_model_dir, load_model
        from ..prompts import model_prompt

        order = resolve_order(model, order)
        check_model_dir(model)
        out = check_writable(out or model.parent / f"eval-{data.stem}.json")  # before the work, not after it
        records = load_input(data, require_label=True)
        m, tok = load_model(model, device_cfg.dtype, device_cfg.device)
        metrics, _ = evaluate(m, tok, records, order, model_prompt(model), batch_size=cfg.batch_size,
                              max_new_tokens=cfg.max_new_tokens)
        write_json(out, metrics)
        write_card(model)
        typer.echo(f"metrics -> {out}", err=True)
        if absent := metrics["levels_absent"]:
            names = ", ".join(f"{lv} {LEVEL_NAMES[lv]}" for lv in absent)
            typer.echo(f"warning: {data} has no pair of level(s) {names}: macro-F1 over all four levels "
                       f"{100 * metrics['macro_f1']:.2f} counts them as 0; over the {4 - len(absent)} present it is "
                       f"{100 * metrics['macro_f1_present']:.2f}", err=True)
        if json_out:
            console.print_json(data=metrics)
            return
        console.print(stage_table([(f"{model} ({order})", metrics)], title=f"eval on {data}"))
        console.print(query_type_table([(str(model), metrics)]))
        typer.echo(ranking_note(metrics["ranking"]))

    @config_command(app, "baseline", BaselineConfig)
    def baseline(
        cfg: BaselineConfig,
        data: Path = typer.Option(..., "--data", help="Folder with train.jsonl and test.jsonl (e.g. runs/demo/data)."),
        out: Path = typer.Option(..., "--out", help="Output folder (OUT/model, summary/metrics/samples.json)."),
        overwrite: bool = overwrite_option(),
    ):
        """The paper's BERT row: a 4-class cross-encoder fine-tuned from all-MiniLM-L6-v2."""
        from ..evaluation.baseline import run_baseline
        from ..evaluation.evaluate import majority_baseline, query_type_table, stage_table

        claim_out(out, "baseline", {"baseline": cfg.model_dump(), "data": data}, overwrite)
        train = load_input(data / "train.jsonl", require_label=True)
        test = load_input(data / "test.jsonl", require_label=True)
        rows = [("majority class", majority_baseline(train, test)),
                ("BERT-style cross-encoder (MiniLM-L6)", run_baseline(train, test, cfg, out))]
        console.print(stage_table(rows, title=f"baseline on {data}/test.jsonl"))
        console.print(query_type_table(rows))

    @app.command()
    def report(
        run: Path = typer.Argument(..., help="Run folder, e.g. runs/demo."),
        out: Optional[Path] = typer.Option(None, "--out", help="HTML path (default RUN/report.html)."),
        samples: int = typer.Option(20, help="Sample pairs shown per stage."),
    ):
        """One self-contained HTML page: stage table, confusions, per-type bars, curves, pass@k, CumPT, samples."""
        from ..errors import InputError
        from ..evaluation.report import build_report

        if not run.is_dir():
            raise InputError(f"{run}: no such run folder; pass a run folder such as runs/demo")
        console.print(f"report: {build_report(run, out, max_samples=samples)}")
