"""Command options come from the stage configs: every field is a flag (or a `--config` setting), YAML first,
flags on top, defaults from the config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from taosr.cli import app
from taosr.cli.inputs import guard_commands
from taosr.cli.options import cli_type, config_command, config_flags, flag_name
from taosr.train.configs import DPOStageConfig, GRPOStageConfig, SFTStageConfig

runner = CliRunner()


def test_flag_names_follow_the_fields():
    assert flag_name((), "max_steps") == "max_steps"
    assert flag_name(("lora",), "r") == "lora_r"
    assert flag_name(("pairs",), "pairs_per_prompt") == "pairs_per_prompt"  # the nested name is not repeated
    names = {f.param.name: f.path for f in config_flags(DPOStageConfig)}
    assert names["pairs_chosen"] == ("pairs", "chosen") and names["lora_r"] == ("lora", "r")
    assert "lora_target_modules" not in names  # str | list[str]: through --config only


@pytest.mark.parametrize("config", [SFTStageConfig, DPOStageConfig, GRPOStageConfig])
def test_every_field_a_flag_can_carry_is_a_flag(config):
    flags = {f.path for f in config_flags(config)}

    def fields(model, path=()):
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields"):
                yield from fields(field.annotation, (*path, name))
            elif cli_type(field.annotation) is not None:
                yield (*path, name)

    assert flags == set(fields(config))


def _probe():
    """A typer app with one config command that prints the config it received."""
    probe = typer.Typer()

    @config_command(probe, "dpo", DPOStageConfig)
    def dpo(cfg: DPOStageConfig, out: Path = typer.Option(Path("x"), "--out")):
        typer.echo(cfg.model_dump_json())

    @config_command(probe, "other", GRPOStageConfig)
    def other(cfg: GRPOStageConfig):
        typer.echo(cfg.model_dump_json())

    guard_commands(probe)  # as `taosr` does: a refused setting is one `error:` line
    return probe


def test_yaml_settings_with_flags_on_top(tmp_path):
    path = tmp_path / "dpo.yaml"
    path.write_text("beta: 0.3\nmax_steps: 7\npairs: {chosen: teacher, seed: 4}\nlora: {r: 8}\n")
    r = runner.invoke(_probe(), ["dpo", "--config", str(path), "--max-steps", "9", "--pairs-per-prompt", "2",
                                 "--no-bf16"])
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output)
    assert (cfg["beta"], cfg["max_steps"], cfg["bf16"]) == (0.3, 9, False)  # YAML, flag over YAML, flag
    assert cfg["pairs"] == {**DPOStageConfig().pairs.model_dump(), "chosen": "teacher", "seed": 4, "pairs_per_prompt": 2}
    assert cfg["lora"]["r"] == 8 and cfg["learning_rate"] == DPOStageConfig().learning_rate  # untouched: default


def test_bad_settings_are_usage_errors(tmp_path):
    (tmp_path / "typo.yaml").write_text("max_stepz: 3\n")
    r = runner.invoke(_probe(), ["dpo", "--config", str(tmp_path / "typo.yaml")])
    assert r.exit_code == 2 and "max_stepz" in r.output and str(tmp_path / "typo.yaml") in r.output
    r = runner.invoke(_probe(), ["other", "--num-generations", "1"])  # ge=2 in GRPOStageConfig
    assert r.exit_code == 2 and "num_generations" in r.output
    r = runner.invoke(_probe(), ["other", "--loss-type", "nope"])
    assert r.exit_code == 2


def test_every_stage_command_takes_a_config_file():
    for command in ("synth", "sft", "sample", "dpo", "grpo", "eval", "baseline", "calibrate", "score", "serve", "cot",
                    "demo"):
        r = runner.invoke(app, [command, "--help"])
        assert r.exit_code == 0 and "--config" in r.output, command


def test_synth_reads_its_config_file(tmp_path):
    (tmp_path / "synth.yaml").write_text("n_queries: 30\nitems_per_query: 3\n")
    r = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--config", str(tmp_path / "synth.yaml"),
                            "--items-per-query", "2"])
    assert r.exit_code == 0, r.output
    stats = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert sum(s["pairs"] for s in stats.values()) == 60
