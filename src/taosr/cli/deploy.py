"""`taosr calibrate | score | serve`: tuning beta, batch scoring a file, and the relevance service."""

from __future__ import annotations

from pathlib import Path

import typer

from ..deploy.configs import CalibrateConfig, ScoreConfig, ServeSettings
from ..runtime import DeviceConfig
from .inputs import console, load_input, model_option, warn_think_first
from .options import config_command


def register(app: typer.Typer) -> None:
    @config_command(app, "calibrate", CalibrateConfig, device=(DeviceConfig, set()), flat={"device"})
    def calibrate(
        cfg: CalibrateConfig, device_cfg: DeviceConfig,
        model: Path = model_option("Model folder; taosr_serving.json (beta, label ids, prompt) is written into it."),
        data: Path = typer.Option(..., "--data", help="Labelled dev file (JSONL/CSV/Parquet)."),
        json_out: bool = typer.Option(False, "--json", help="Print the calibration as JSON (for machines)."),
    ):
        """Choose the CumPT threshold beta (and CumPT or argmax) on labelled dev data; store it with the model."""
        from ..deploy.calibrate import calibrate_model
        from ..modelcard import write_card
        from ..prompts import model_prompt

        warn_think_first(model)
        records = load_input(data, require_label=True)
        out = calibrate_model(model, records, model_prompt(model), cfg.objective, cfg.batch_size, device_cfg.device,
                              device_cfg.dtype, cfg.rule)
        write_card(model)
        shown = {k: v for k, v in out.items() if k not in ("prompt", "curve")}
        if json_out:
            console.print_json(data=shown)
        else:
            score = out.get("dev_score")
            typer.echo(f"calibrate: rule {out.get('rule')}, beta {out.get('beta')}, dev {out.get('objective')} "
                       f"{'-' if score is None else f'{100 * score:.2f}'} on {out.get('n_dev')} pairs -> "
                       f"{model}/taosr_serving.json")

    @config_command(app, "score", ScoreConfig, device=(DeviceConfig, set()), flat={"device"})
    def score(
        cfg: ScoreConfig, device_cfg: DeviceConfig,
        model: Path = model_option("Model folder (calibrated with `taosr calibrate`, else beta = 0.5)."),
        data: Path = typer.Option(..., "--data", help="Pairs to score (JSONL/CSV/Parquet)."),
        out: Path = typer.Option(..., "--out", help="Output Parquet; rejected rows -> OUT.rejects.jsonl."),
        json_out: bool = typer.Option(False, "--json", help="Print the run's counts as JSON (for machines)."),
    ):
        """Batch-score a file: P(1..4), CumPT level and tier per row; streaming, resumable output."""
        from ..deploy.batch_score import check_paths
        from ..io import check_writable

        check_paths(data, out)
        check_writable(out)
        warn_think_first(model)
        if cfg.engine == "ray":
            from ..deploy.ray_score import score_file_ray
            from ..runtime import resolve_engine

            info = score_file_ray(model, data, out, cfg.actors, cfg.batch_size, address=cfg.ray_address,
                                  engine=resolve_engine("auto"), gpus_per_actor=cfg.ray_gpus, dtype=device_cfg.dtype)
        else:
            from ..deploy.batch_score import NoUsableRows, score_file

            try:
                info = score_file(model, data, out, cfg.batch_queries, cfg.prefix_sharing, cfg.batch_size, cfg.fresh,
                                  cfg.engine, device_cfg.device, device_cfg.dtype)
            except NoUsableRows as e:  # the count line first, then the error
                typer.echo(f"{data}: {e.counts['rejects']} rows, 0 scored, {e.counts['rejects']} rejected -> "
                           f"{e.counts['rejects_path']}", err=True)
                raise
        if json_out:
            console.print_json(data=info)
        else:
            typer.echo(f"score: {info['rows']} pairs scored -> {out}")
        typer.echo(f"{data}: {info['rows'] + info['rejects']} rows, {info['rows']} scored, {info['rejects']} "
                   f"rejected -> {info['rejects_path']}", err=True)

    @config_command(app, "serve", ServeSettings)
    def serve(cfg: ServeSettings, model: Path = model_option("Model folder.")):
        """Run the relevance service: POST /v1/relevance, /healthz, /readyz, /metrics, /docs."""
        from ..deploy.serve import run

        warn_think_first(model)
        run(model, cfg)
