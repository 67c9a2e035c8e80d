"""The `taosr` command line (typer). Each stage is one command; `taosr demo` runs them all."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="taosr: train, evaluate and serve TaoSR1-style thinking relevance judges.")
console = Console(width=None if os.isatty(1) else 140)

from .cli_data import data_app, input_errors, load_input  # noqa: E402  (`taosr data inspect | split`)
from .cli_serve import ITEMS_PER_FORWARD, register  # noqa: E402  (`taosr score | serve | cot | chat-serve`)
from .scale import BF16_HELP, DEVICE_HELP, DTYPE_HELP  # noqa: E402  (no torch import: the CLI starts fast)

app.add_typer(data_app, name="data")
register(app)


@app.command()
def synth(
    out: Path = typer.Option(Path("data/synth"), help="Output folder for train/dev/test.jsonl."),
    n_queries: int = typer.Option(3000, help="Queries to generate."),
    items_per_query: int = typer.Option(4, help="Items per query."),
    seed: int = typer.Option(0, help="Random seed."),
):
    """Generate the synthetic benchmark (splits share no query)."""
    from .synth import SynthConfig, generate, write_splits

    stats = write_splits(generate(SynthConfig(n_queries=n_queries, items_per_query=items_per_query, seed=seed)), out)
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    console.print_json(data=stats)


@app.command()
@input_errors
def sft(
    data: Path = typer.Option(..., help="Folder with train.jsonl (e.g. from `taosr synth`)."),
    out: Path = typer.Option(..., help="Output folder (model in OUT/model)."),
    order: str = typer.Option("answer_first", help="answer_only | think_first | answer_first."),
    model: Optional[str] = typer.Option(None, help="Local HF model dir or 'smollm2-135m'; default: a fresh small model."),
    max_steps: int = typer.Option(600, help="Optimiser steps."),
    batch_size: int = typer.Option(32, help="Sequences per step."),
    learning_rate: float = typer.Option(2e-3, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed."),
    cot: Optional[Path] = typer.Option(None, help="Reasoning from `taosr cot` (JSONL); default: the rule-based teacher."),
    label_weight: float = typer.Option(1.0, help="Loss weight of the label token (1 = plain next-token loss)."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help=BF16_HELP),
    gradient_checkpointing: bool = typer.Option(False, help="Trade compute for memory (large models)."),
    lora_r: int = typer.Option(0, help="LoRA rank (0 = full fine-tuning)."),
    lora_alpha: int = typer.Option(32, help="LoRA alpha."),
):
    """Stage 1: SFT on teacher CoT in one output order. Runs unchanged under `accelerate launch -m taosr.cli sft ...`."""
    from .modeling import ModelConfig
    from .pipeline import RunConfig, fresh_model
    from .scale import LoraSwitch
    from .sft import SFTStageConfig, run_sft
    from .teacher import RuleTeacher

    cfg = RunConfig(name=out.name, runs_dir=str(out.parent), model=ModelConfig(name_or_path=model, seed=seed),
                    sft=SFTStageConfig(order=order, max_steps=max_steps, batch_size=batch_size,
                                       learning_rate=learning_rate, seed=seed, label_weight=label_weight, bf16=bf16,
                                       gradient_checkpointing=gradient_checkpointing,
                                       lora=LoraSwitch(r=lora_r, alpha=lora_alpha)))
    train = load_input(data / "train.jsonl", rejects=data / "train.rejects.jsonl", require_label=True)
    m, tok = fresh_model(cfg, train)
    from .teacher import FileTeacher

    teacher = FileTeacher(cot) if cot else RuleTeacher()
    if cot:
        typer.echo(f"{cot}: {len(teacher.by_id)} reasoning rows used, {len(teacher.rejects)} unusable lines "
                   f"(first: {teacher.rejects[0] if teacher.rejects else '-'})", err=True)
    summary = run_sft(m, tok, train, cfg.sft, out, teacher, cfg.prompt)
    console.print({k: v for k, v in summary.items() if k != "loss_curve"})


@app.command("eval")
@input_errors
def eval_cmd(
    model: Path = typer.Option(..., help="Model folder (e.g. runs/demo/sft_answer_first/model)."),
    data: Path = typer.Option(..., help="Labelled file to evaluate on (JSONL/CSV/Parquet)."),
    order: str = typer.Option("answer_first", help="How the model answers: answer_only | think_first | answer_first."),
    out: Optional[Path] = typer.Option(None, help="Metrics JSON path (default: eval-DATA_STEM.json next to the model "
                                       "folder, so the stage's own metrics.json is kept)."),
    batch_size: int = typer.Option(64, help="Scoring / generation batch size."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
):
    """Macro-F1, per-class F1, accuracy, confusion matrix and per-query-type scores."""
    from .evaluate import evaluate, query_type_table, stage_table
    from .modeling import load_model
    from .pipeline import write_json
    from .prompts import PromptConfig

    records = load_input(data, rejects=data.with_suffix(".rejects.jsonl"), require_label=True)
    m, tok = load_model(model, dtype, device)
    metrics, _ = evaluate(m, tok, records, order, PromptConfig(), batch_size=batch_size)
    out = out or model.parent / f"eval-{data.stem}.json"
    write_json(out, metrics)
    typer.echo(f"metrics -> {out}", err=True)
    console.print(stage_table([(f"{model} ({order})", metrics)], title=f"eval on {data}"))
    console.print(query_type_table([(str(model), metrics)]))


@app.command()
@input_errors
def sample(
    model: Path = typer.Option(..., help="Model folder to sample from (e.g. runs/demo/sft_think_first/model)."),
    data: Path = typer.Option(..., help="Labelled prompts (train split)."),
    out: Path = typer.Option(..., help="Folder for samples-*.parquet shards (rerun to resume)."),
    n: int = typer.Option(4, help="Samples per prompt (the N of pass@N)."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    top_p: float = typer.Option(1.0, help="Nucleus mass."),
    max_new_tokens: int = typer.Option(128, help="Longest response."),
    limit: Optional[int] = typer.Option(None, help="Only the first N prompts."),
    seed: int = typer.Option(0, help="Base seed."),
    engine: str = typer.Option("auto", help="auto (vLLM when it and a GPU are present) | transformers | vllm."),
    device: str = typer.Option("auto", help="--engine transformers: " + DEVICE_HELP),
    dtype: str = typer.Option("float32", help="--engine transformers: " + DTYPE_HELP),
):
    """Stage 2a: pass@N offline sampling; prints the pass@k curve (unbiased estimator)."""
    from .modeling import load_model
    from .prompts import PromptConfig
    from .sample import SampleConfig, pass_at_k_report, run_sampling
    from .scale import resolve_engine

    engine = resolve_engine(engine)  # vLLM takes the GPU itself: the transformers copy (its tokenizer) stays on the CPU
    m, tok = load_model(model, dtype, device if engine == "transformers" else None)
    records = load_input(data, rejects=data.with_suffix(".rejects.jsonl"), require_label=True)[:limit]
    cfg = SampleConfig(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, engine=engine)
    df = run_sampling(m, tok, records, cfg, out, PromptConfig(), model_dir=model)
    passk = pass_at_k_report(df)
    (out / "pass_at_k.json").write_text(json.dumps(passk, indent=1))
    console.print("pass@k: " + ", ".join(f"@{k} {100 * v:.1f}%" for k, v in passk.items()))
    console.print(f"unparseable responses: {int(df['parsed'].isna().sum())} of {len(df)}")


@app.command()
@input_errors
def dpo(
    model: Path = typer.Option(..., help="SFT model folder (also the frozen reference)."),
    data: Path = typer.Option(..., help="The labelled prompts that were sampled."),
    samples: Path = typer.Option(..., help="Folder written by `taosr sample`."),
    out: Path = typer.Option(..., help="Output folder (model in OUT/model, pairs in OUT/pairs.jsonl)."),
    order: str = typer.Option("answer_first", help="Output order of the model (for the teacher's oracle responses)."),
    beta: float = typer.Option(0.1, help="DPO beta."),
    learning_rate: float = typer.Option(5e-5, help="Peak learning rate."),
    span: str = typer.Option("answer", help="answer: answer-first responses cut after </answer> (the preference on "
                             "the label alone) | full: whole responses."),
    chosen: str = typer.Option("sample", help="sample: a correct sample is the chosen response | teacher: the "
                               "teacher's verified response."),
    sft_weight: Optional[float] = typer.Option(None, help="NLL term on the chosen response (0 = plain DPO); default 1 "
                                               "on whole responses, 0 on answer spans."),
    max_steps: int = typer.Option(120, help="Optimiser steps."),
    pairs_per_prompt: int = typer.Option(1, help="Self-correction pairs per prompt."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help=BF16_HELP),
    lora_r: int = typer.Option(0, help="LoRA rank (0 = full fine-tuning)."),
):
    """Stage 2b: preference pairs (self-correction + oracle) and DPO against the SFT reference."""
    from .dpo import DPOStageConfig, make_pairs, run_dpo
    from .modeling import load_model
    from .pairs import PairPolicy
    from .prompts import PromptConfig
    from .sample import read_samples
    from .scale import LoraSwitch, is_main_process
    from .teacher import RuleTeacher

    cfg = DPOStageConfig(beta=beta, learning_rate=learning_rate, max_steps=max_steps, sft_weight=sft_weight, span=span,
                         pairs=PairPolicy(pairs_per_prompt=pairs_per_prompt, chosen=chosen), bf16=bf16,
                         lora=LoraSwitch(r=lora_r))
    records = load_input(data, rejects=data.with_suffix(".rejects.jsonl"), require_label=True)
    pairs, counts = make_pairs(read_samples(samples), records, RuleTeacher(), order, PromptConfig(), cfg.pairs, cfg.span)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        with (out / "pairs.jsonl").open("w") as f:
            f.writelines(json.dumps(p) + "\n" for p in pairs)
    console.print(f"pairs: {counts}")
    m, tok = load_model(model)
    summary = run_dpo(m, tok, pairs, cfg, out, order)
    console.print({k: v for k, v in summary.items() if not k.endswith("curve")})


@app.command()
@input_errors
def grpo(
    model: Path = typer.Option(..., help="Policy to start from (DPO or SFT model folder)."),
    data: Path = typer.Option(..., help="Labelled RL prompts."),
    out: Path = typer.Option(..., help="Output folder."),
    samples: Optional[Path] = typer.Option(None, help="pass@N samples of THIS policy for the difficulty filter."),
    max_steps: int = typer.Option(60, help="Optimiser steps."),
    order: str = typer.Option("answer_first", help="Output order of the policy (answer-first rolls out the answer "
                              "span alone unless --no-label-only)."),
    num_generations: int = typer.Option(8, help="Group size G."),
    loss_type: str = typer.Option("grpo", help="grpo (each rollout averaged over its own tokens) | dapo | dr_grpo | bnpo."),
    label_only: bool = typer.Option(True, help="Answer-first: roll out <answer>label</answer> only."),
    gamma: Optional[int] = typer.Option(None, help="Keep prompts with 0 < correct < gamma (default N)."),
    online_mask: bool = typer.Option(True, help="Mask zero-spread groups."),
    balance: bool = typer.Option(True, help="Balance the label mix of the RL prompts."),
    limit: Optional[int] = typer.Option(None, help="Only the first N prompts."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help=BF16_HELP),
    lora_r: int = typer.Option(0, help="LoRA rank (0 = full fine-tuning)."),
    vllm: Optional[bool] = typer.Option(None, "--vllm/--no-vllm", help="Rollouts on vLLM (colocate); default: when available."),
):
    """Stage 3: GRPO with accuracy reward and difficulty-based dynamic sampling."""
    from .grpo import GRPOStageConfig, run_grpo, select_prompts
    from .modeling import load_model
    from .prompts import PromptConfig
    from .sample import read_samples
    from .scale import LoraSwitch

    cfg = GRPOStageConfig(max_steps=max_steps, num_generations=num_generations, gamma=gamma, loss_type=loss_type,
                          label_only=label_only,
                          online_mask=online_mask, balance_classes=balance, offline_filter=samples is not None,
                          bf16=bf16, lora=LoraSwitch(r=lora_r), use_vllm=vllm)
    prompts, stats = select_prompts(load_input(data, rejects=data.with_suffix(".rejects.jsonl"), require_label=True)[:limit], read_samples(samples) if samples else None, cfg)
    console.print(f"prompt selection: {stats}")
    m, tok = load_model(model)
    summary = run_grpo(m, tok, prompts, cfg, out, PromptConfig(), order)
    console.print({k: v for k, v in summary.items() if not k.endswith("curve")})


@app.command()
@input_errors
def calibrate(
    model: Path = typer.Option(..., help="Model folder; taosr_serving.json (beta, label ids, prompt) is written into it."),
    data: Path = typer.Option(..., help="Labelled dev file (JSONL/CSV/Parquet)."),
    objective: str = typer.Option("macro_f1", help="What beta maximises: macro_f1 | accuracy."),
    batch_size: int = typer.Option(32, help=ITEMS_PER_FORWARD),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
):
    """Choose the CumPT threshold beta on labelled dev data and store it with the model."""
    from .calibrate import calibrate_model
    from .prompts import PromptConfig

    records = load_input(data, rejects=data.with_suffix(".rejects.jsonl"), require_label=True)
    out = calibrate_model(model, records, PromptConfig(), objective, batch_size, device, dtype)
    console.print_json(data={k: v for k, v in out.items() if k not in ("prompt", "curve")})


@app.command()
@input_errors
def baseline(
    data: Path = typer.Option(..., help="Folder with train.jsonl and test.jsonl (e.g. runs/demo/data)."),
    out: Path = typer.Option(..., help="Output folder (OUT/model, summary/metrics/samples.json)."),
    epochs: float = typer.Option(1.0, help="Passes over the training pairs."),
    max_steps: int = typer.Option(-1, help="Optimiser steps (> 0 overrides --epochs)."),
    lr: float = typer.Option(1e-4, help="Peak learning rate."),
    model_dir: Optional[str] = typer.Option(None, help="Encoder folder (default: the bundled all-MiniLM-L6-v2)."),
):
    """The paper's BERT row: a 4-class cross-encoder fine-tuned from all-MiniLM-L6-v2."""
    from .baseline import BaselineConfig, run_baseline
    from .evaluate import majority_baseline, query_type_table, stage_table

    train = load_input(data / "train.jsonl", rejects=data / "train.rejects.jsonl", require_label=True)
    test = load_input(data / "test.jsonl", rejects=data / "test.rejects.jsonl", require_label=True)
    cfg = BaselineConfig(epochs=epochs, max_steps=max_steps, lr=lr, **({"model_dir": model_dir} if model_dir else {}))
    rows = [("majority class", majority_baseline(train, test)),
            ("BERT-style cross-encoder (MiniLM-L6)", run_baseline(train, test, cfg, out))]
    console.print(stage_table(rows, title=f"baseline on {data}/test.jsonl"))
    console.print(query_type_table(rows))


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder, e.g. runs/demo."),
    out: Optional[Path] = typer.Option(None, help="HTML path (default RUN/report.html)."),
    samples: int = typer.Option(20, help="Sample pairs shown per stage."),
):
    """One self-contained HTML page: stage table, confusions, per-type bars, curves, pass@k, CumPT, samples."""
    from .report import build_report

    console.print(f"report: {build_report(run, out, max_samples=samples)}")


@app.command()
def demo(
    name: str = typer.Option("demo", help="Run name (folder under runs/)."),
    preset: str = typer.Option("default", help="default (the full demo, ~17 min on 2 cores) | tiny (a 1-minute smoke run)."),
    fresh: bool = typer.Option(False, help="Delete the run folder first instead of resuming it."),
):
    """Generate the benchmark, run every stage, print the TaoSR1-shaped table."""
    from .demo import run_demo

    run_demo(name=name, preset=preset, fresh=fresh, console=console)


def main() -> None:
    from .progress import quiet_libraries

    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    app()


if __name__ == "__main__":
    main()
