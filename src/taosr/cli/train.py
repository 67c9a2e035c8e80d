"""`taosr sft | sample | dpo | grpo`: the training stages, each run unchanged under `accelerate launch -m taosr.cli`.

Every setting of a stage is a field of its config (`SFTStageConfig`, `SampleConfig`, `DPOStageConfig`,
`GRPOStageConfig`), offered as a flag and in `--config FILE.yaml`; the options written here are the
stage's inputs and outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from ..modeling import ModelConfig
from ..prompts import OutputOrder
from ..runtime import DeviceConfig
from ..train.configs import DPOStageConfig, GRPOStageConfig, SampleConfig, SFTStageConfig
from .inputs import claim_out, console, load_input, model_option, overwrite_option

ORDER_HELP = "Output order the model was trained in: answer_only | think_first | answer_first."


def register(app: typer.Typer) -> None:
    from .options import config_command

    @config_command(app, "sft", SFTStageConfig, model=(ModelConfig, {"name_or_path", "seed"}))
    def sft(
        cfg: SFTStageConfig, model_cfg: ModelConfig,
        data: Path = typer.Option(..., "--data", help="Folder with train.jsonl (e.g. from `taosr synth`)."),
        out: Path = typer.Option(..., "--out", help="Output folder (model in OUT/model)."),
        model: Optional[str] = model_option("Model folder or 'smollm2-135m' (pretrained weights) to start from; "
                                            "default: a fresh small model (the --model-* settings, seeded by --seed).",
                                            None),
        cot: Optional[Path] = typer.Option(None, help="Reasoning from `taosr cot` (JSONL); default: the rule-based "
                                           "teacher."),
        chat_template: bool = typer.Option(False, "--chat-template", help="Lay the prompt out in the model's chat "
                                           "template (instruct models). The layout is stored with the trained model "
                                           "(taosr_prompt.json) and every later command uses it."),
        overwrite: bool = overwrite_option(),
    ):
        """Stage 1: SFT on teacher CoT in one output order."""
        from ..prompts import chat_prompt_config, model_prompt
        from ..run.rundir import RunConfig, fresh_model
        from ..teacher.reasoning import FileTeacher, RuleTeacher
        from ..train.sft import run_sft

        run = RunConfig(name=out.name, runs_dir=str(out.parent), sft=cfg,
                        model=model_cfg.model_copy(update={"name_or_path": model, "seed": cfg.seed}))
        train = load_input(data / "train.jsonl", require_label=True)
        teacher = FileTeacher(cot) if cot else RuleTeacher()
        if cot:
            typer.echo(f"{cot}: {len(teacher.by_id)} reasoning rows used, {len(teacher.rejects)} unusable lines "
                       f"(first: {teacher.rejects[0] if teacher.rejects else '-'})", err=True)
            if not teacher.by_id and cfg.order != "answer_only":
                raise InputError(f"{cot}: no usable reasoning row ({len(teacher.rejects)} unusable lines); pass the "
                                 "output of `taosr cot` (JSON Lines with id, status, reasoning, label)")
        claim_out(out, "sft", {"sft": cfg.model_dump(), "model_cfg": model_cfg.model_dump(), "model": model,
                               "data": data, "cot": cot, "chat_template": chat_template}, overwrite)
        m, tok = fresh_model(run, train)
        prompt = model_prompt(model, run.prompt)  # a taosr model folder keeps its layout
        if chat_template and not prompt.prompt_suffix:
            prompt = chat_prompt_config(tok, prompt)
        summary = run_sft(m, tok, train, cfg, out, teacher, prompt)
        console.print({k: v for k, v in summary.items() if k != "loss_curve"})

    @config_command(app, "sample", SampleConfig, device=(DeviceConfig, set()), flat={"device"})
    def sample(
        cfg: SampleConfig, device_cfg: DeviceConfig,
        model: Path = model_option("Model folder to sample from (e.g. runs/demo/sft_think_first/model)."),
        data: Path = typer.Option(..., "--data", help="Labelled prompts (train split)."),
        out: Path = typer.Option(..., "--out", help="Folder for samples-*.parquet shards and pass_at_k.json (rerun "
                                 "to resume)."),
        limit: Optional[int] = typer.Option(None, min=1, help="Only the first N prompts."),
        overwrite: bool = overwrite_option(),
    ):
        """Stage 2a: pass@N offline sampling; prints the pass@k curve (unbiased estimator)."""
        from ..modeling import load_model
        from ..prompts import model_prompt
        from ..runtime import resolve_engine
        from ..train.sample import pass_at_k_report, run_sampling

        cfg = cfg.model_copy(update={"engine": resolve_engine(cfg.engine)})
        # vLLM takes the GPU itself: the transformers copy (its tokenizer) stays on the CPU
        m, tok = load_model(model, device_cfg.dtype, device_cfg.device if cfg.engine == "transformers" else None)
        records = load_input(data, require_label=True)[:limit]
        claim_out(out, "sample", {"sample": cfg.model_dump(exclude={"batch_size"}), "model": model, "data": data,
                                  "limit": limit}, overwrite)
        df = run_sampling(m, tok, records, cfg, out, model_prompt(model), model_dir=model)
        passk = pass_at_k_report(df)
        console.print("pass@k: " + ", ".join(f"@{k} {100 * v:.1f}%" for k, v in passk.items()))
        console.print(f"unparseable responses: {int(df['parsed'].isna().sum())} of {len(df)}")

    @config_command(app, "dpo", DPOStageConfig)
    def dpo(
        cfg: DPOStageConfig,
        model: Path = model_option("SFT model folder (also the frozen reference)."),
        data: Path = typer.Option(..., "--data", help="The labelled prompts that were sampled."),
        samples: Path = typer.Option(..., help="Folder written by `taosr sample`."),
        out: Path = typer.Option(..., "--out", help="Output folder (model in OUT/model, pairs in OUT/pairs.jsonl)."),
        order: OutputOrder = typer.Option("answer_first", help=ORDER_HELP + " (the teacher's oracle responses, the "
                                          "span)"),
        overwrite: bool = overwrite_option(),
    ):
        """Stage 2b: preference pairs (self-correction + oracle) and DPO against the SFT reference."""
        from ..modeling import load_model
        from ..prompts import model_prompt
        from ..teacher.reasoning import RuleTeacher
        from ..train.dpo import run_dpo_stage
        from ..train.sample import read_samples

        records = load_input(data, require_label=True)
        claim_out(out, "dpo", {"dpo": cfg.model_dump(), "model": model, "data": data, "samples": samples,
                               "order": order}, overwrite)
        m, tok = load_model(model)
        summary, counts = run_dpo_stage(m, tok, read_samples(samples), records, RuleTeacher(), cfg, out, order,
                                        model_prompt(model))
        console.print(f"pairs: {counts}")
        console.print({k: v for k, v in summary.items() if not k.endswith("curve")})

    @config_command(app, "grpo", GRPOStageConfig)
    def grpo(
        cfg: GRPOStageConfig,
        model: Path = model_option("Policy to start from (DPO or SFT model folder)."),
        data: Path = typer.Option(..., "--data", help="Labelled RL prompts."),
        out: Path = typer.Option(..., "--out",
                                 help="Output folder (model in OUT/model, prompts in OUT/selection.json)."),
        samples: Optional[Path] = typer.Option(None, help="pass@N samples of THIS policy for the difficulty filter "
                                               "(without them there is no offline filter)."),
        order: OutputOrder = typer.Option("answer_first", help=ORDER_HELP + " (answer-first rolls out the answer span "
                                          "alone unless --no-label-only)"),
        limit: Optional[int] = typer.Option(None, min=1, help="Only the first N prompts."),
        overwrite: bool = overwrite_option(),
    ):
        """Stage 3: GRPO with accuracy reward and difficulty-based dynamic sampling."""
        from ..modeling import load_model
        from ..prompts import model_prompt
        from ..train.grpo import run_grpo_stage
        from ..train.sample import read_samples

        cfg = cfg.model_copy(update={"offline_filter": cfg.offline_filter and samples is not None})
        candidates = load_input(data, require_label=True)[:limit]
        claim_out(out, "grpo", {"grpo": cfg.model_dump(), "model": model, "data": data, "samples": samples,
                                "order": order, "limit": limit}, overwrite)
        m, tok = load_model(model)
        summary, selection = run_grpo_stage(m, tok, candidates, read_samples(samples) if samples else None, cfg, out,
                                            model_prompt(model), order)
        console.print(f"prompt selection: {selection}")
        console.print({k: v for k, v in summary.items() if not k.endswith("curve")})
