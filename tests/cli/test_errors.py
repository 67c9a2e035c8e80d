"""Every failure of input or environment, in every command, ends in exactly one `error:` line and exit status 2,
never a traceback (typer's runner, in-process): missing and damaged model folders, bad YAML and settings,
out-of-range numbers, unusable reasoning files, unwritable outputs and a full disk."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
from typer.testing import CliRunner

from taosr.cli import app
from taosr.deploy.schema import SERVING_FILE
from taosr.modeling import build_model, save
from taosr.prompts import PROMPT_FILE

runner = CliRunner()


@pytest.fixture(scope="module")
def root(tiny_tokenizer, tiny_config, tiny_splits, tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    save(build_model(tiny_tokenizer, tiny_config), tiny_tokenizer, root / "good")
    for broken in ("noconfig", "badconfig", "notok", "badweights", "badserving", "badprompt"):
        shutil.copytree(root / "good", root / broken)
    (root / "noconfig/config.json").unlink()
    (root / "badconfig/config.json").write_text('{"model_type": "qwen3", "hidden_size": ')
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (root / "notok" / f).unlink()
    (root / "badweights/model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not a header")
    (root / "badserving" / SERVING_FILE).write_text('{"beta": 7}')
    (root / "badprompt" / PROMPT_FILE).write_text("{]")
    (root / "data.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in tiny_splits["test"][:6]))
    (root / "sft").mkdir()
    (root / "sft/train.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in tiny_splits["train"][:8]))
    (root / "bad.yaml").write_text("max_steps: [1, 2\n")
    (root / "typo.yaml").write_text("pairs: {chosenn: teacher}\n")
    (root / "true.yaml").write_text("max_steps: true\n")
    (root / "demo_typo.yaml").write_text("dpo: {betaa: 3}\n")
    (root / "demo_nested.yaml").write_text("sft_by_order: {answer_first: {max_stepz: 3}}\n")
    (root / "demo_type.yaml").write_text("grpo: {max_steps: true}\n")
    (root / "binary.cot").write_bytes(b"\xff\xfe garbage \x01\x02\n" * 4)
    (root / "a_file").write_text("not a folder")
    return root


MODEL_COMMANDS = {
    "eval": ["eval", "--model", "{m}", "--data", "{root}/data.jsonl", "--out", "{tmp}/m.json"],
    "score": ["score", "--model", "{m}", "--data", "{root}/data.jsonl", "--out", "{tmp}/s.parquet"],
    "calibrate": ["calibrate", "--model", "{m}", "--data", "{root}/data.jsonl"],
    "serve": ["serve", "--model", "{m}", "--port", "0"],
    "sample": ["sample", "--model", "{m}", "--data", "{root}/data.jsonl", "--out", "{tmp}/samples", "--n", "1"],
    "grpo": ["grpo", "--model", "{m}", "--data", "{root}/data.jsonl", "--out", "{tmp}/grpo", "--max-steps", "1"],
    "sft": ["sft", "--model", "{m}", "--data", "{root}/sft", "--out", "{tmp}/sft", "--max-steps", "1"],
}
BROKEN = [("missing", "no such model folder"), ("noconfig", "no config.json"),
          ("badconfig", "cannot be loaded"), ("notok", "no tokenizer.json"),
          ("badweights", "cannot be loaded")]
CASES = [pytest.param(MODEL_COMMANDS[c], {"m": "{root}/" + m}, text, id=f"{c}-{m}")
         for c in MODEL_COMMANDS for m, text in BROKEN]
CASES += [pytest.param(MODEL_COMMANDS[c], {"m": "{root}/badserving"}, "not a valid serving export", id=f"{c}-serving")
          for c in ("score", "serve")]
CASES += [pytest.param(MODEL_COMMANDS[c], {"m": "{root}/badprompt"}, "not a valid prompt layout", id=f"{c}-prompt")
          for c in ("eval", "score", "calibrate", "sample")]
CASES += [
    pytest.param(["sft", "--data", "{root}/sft", "--out", "{tmp}/s", "--config", "{root}/bad.yaml"], {},
                 "not valid YAML", id="sft-bad-yaml"),
    pytest.param(["eval", "--model", "{root}/good", "--data", "{root}/data.jsonl", "--config", "{root}/nope.yaml"], {},
                 "nope.yaml: no such file", id="eval-missing-config"),
    pytest.param(["dpo", "--model", "{root}/good", "--data", "{root}/data.jsonl", "--samples", "{tmp}", "--out",
                  "{tmp}/d", "--config", "{root}/typo.yaml"], {}, "pairs.chosenn: unknown setting", id="dpo-nested-typo"),
    pytest.param(["sft", "--data", "{root}/sft", "--out", "{tmp}/s", "--config", "{root}/true.yaml"], {},
                 "max_steps: expected a number, got true", id="sft-bool-steps"),
    pytest.param(["sft", "--data", "{root}/sft", "--out", "{tmp}/s", "--max-steps", "-5"], {},
                 "max_steps: Input should be greater than or equal to 1", id="sft-negative-steps"),
    pytest.param(["eval", "--model", "{root}/good", "--data", "{root}/data.jsonl", "--batch-size", "0"], {},
                 "batch_size: Input should be greater than or equal to 1", id="eval-batch-0"),
    pytest.param(["score", "--model", "{root}/good", "--data", "{root}/data.jsonl", "--out", "{tmp}/x.parquet",
                  "--batch-size", "0"], {}, "batch_size", id="score-batch-0"),
    pytest.param(["sample", "--model", "{root}/good", "--data", "{root}/data.jsonl", "--out", "{tmp}/x",
                  "--device", "gpu7"], {}, "device 'gpu7'", id="sample-bad-device"),
    pytest.param(["demo", "--preset", "tiny", "--config", "{root}/bad.yaml"], {}, "not valid YAML", id="demo-bad-yaml"),
    pytest.param(["demo", "--preset", "tiny", "--config", "{root}/demo_typo.yaml"], {}, "dpo.betaa: unknown setting",
                 id="demo-typo"),
    pytest.param(["demo", "--preset", "tiny", "--config", "{root}/demo_nested.yaml"], {},
                 "sft_by_order.answer_first.max_stepz: unknown setting", id="demo-by-order-typo"),
    pytest.param(["demo", "--preset", "tiny", "--config", "{root}/demo_type.yaml"], {},
                 "grpo.max_steps: expected a number, got true", id="demo-wrong-type"),
    pytest.param(["demo", "--preset", "nosuch"], {}, "unknown preset", id="demo-unknown-preset"),
    pytest.param(["bench", "method", "--preset", "nosuch", "--seeds", "0"], {}, "unknown preset",
                 id="bench-unknown-preset"),
    pytest.param(["bench", "method", "--preset", "tiny", "--config", "{root}/demo_typo.yaml"], {},
                 "dpo.betaa: unknown setting", id="bench-typo"),
    pytest.param(["bench", "seed", "--preset", "nosuch", "--name", "x", "--seed", "0", "--first", "0"], {},
                 "unknown preset", id="bench-seed-unknown-preset"),
    pytest.param(["sft", "--data", "{root}/sft", "--out", "{tmp}/s", "--cot", "{root}/nope.jsonl",
                  "--order", "think_first"], {}, "nope.jsonl: No such file", id="sft-missing-cot"),
    pytest.param(["sft", "--data", "{root}/sft", "--out", "{tmp}/s", "--cot", "{root}/binary.cot",
                  "--order", "think_first"], {}, "no training pair has usable reasoning", id="sft-corrupt-cot"),
    pytest.param(["score", "--model", "{root}/good", "--data", "{root}/data.jsonl", "--out",
                  "{root}/a_file/s.parquet"], {}, "a_file", id="score-unwritable-out"),
    pytest.param(["cot", "{root}/data.jsonl", "--out", "{root}/a_file/cot.jsonl"], {}, "a_file", id="cot-unwritable"),
    pytest.param(["eval", "--model", "{root}/good", "--data", "{root}/data.jsonl", "--out", "{root}/a_file/m.json"],
                 {}, "a_file", id="eval-unwritable-out"),
    pytest.param(["sft", "--data", "{root}/sft", "--out", "{root}/a_file", "--max-steps", "1"], {},
                 "is a file, not a folder", id="sft-out-is-a-file"),
    pytest.param(["synth", "--out", "{tmp}/s", "--n-queries", "0"], {}, "n_queries", id="synth-range"),
    pytest.param(["data", "split", "{root}/data.jsonl", "--out", "{tmp}/d", "--dev-frac", "0.6", "--test-frac", "0.5"],
                 {}, "leaves no training split", id="split-fractions"),
    pytest.param(["data", "inspect", "{root}/nope.jsonl"], {}, "no such file", id="inspect-missing"),
    pytest.param(["baseline", "--data", "{root}/nope", "--out", "{tmp}/b"], {}, "no such file", id="baseline-missing"),
    pytest.param(["report", "{root}/nope"], {}, "no such run folder", id="report-missing"),
    pytest.param(["chat-serve", "--backend", "transformers", "--model", "{root}/noconfig"], {}, "no config.json",
                 id="chat-serve-broken-model"),
    pytest.param(["chat-serve", "--backend", "transformers"], {}, "needs the model folder", id="chat-serve-no-model"),
]


def _commands(typer_app, prefix=()) -> set[tuple[str, ...]]:
    out = {(*prefix, c.name or c.callback.__name__) for c in typer_app.registered_commands}
    for group in typer_app.registered_groups:
        out |= _commands(group.typer_instance, (*prefix, group.name))
    return out


def test_the_cases_walk_every_command():
    covered = {tuple(p.values[0][:2]) if p.values[0][0] in ("data", "bench") else (p.values[0][0],) for p in CASES}
    assert _commands(app) <= covered, sorted(_commands(app) - covered)


def one_error_line(r, text: str) -> str:
    """Exit status 2, no traceback, exactly one `error:` line, holding `text`; returns that line."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], r.output
    return errors[0]


@pytest.mark.parametrize("command, names, text", CASES)
def test_failures_are_one_error_line(root, tmp_path, monkeypatch, command, names, text):
    monkeypatch.chdir(tmp_path)
    fill = {k: v.format(root=root) for k, v in names.items()} | {"root": root, "tmp": tmp_path}
    args = [a.format(**fill) for a in command]
    one_error_line(runner.invoke(app, args), text)


def test_a_full_disk_is_one_error_line_naming_the_file(root, tmp_path, monkeypatch):
    import os

    real = os.replace

    def full(src, dst):  # the disk fills up as the metrics are written, after the work
        if str(dst).endswith("m.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    line = one_error_line(runner.invoke(app, ["eval", "--model", str(root / "good"), "--data",
                                              str(root / "data.jsonl"), "--out", str(tmp_path / "m.json")]),
                          "No space left on device")
    assert "m.json" in line and "free some disk space" in line


def test_score_on_an_all_bad_file_prints_the_count_line(root, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"query": "q", "title": ""}\nnot json\n')
    r = runner.invoke(app, ["score", "--model", str(root / "good"), "--data", str(tmp_path / "bad.jsonl"), "--out",
                            str(tmp_path / "s.parquet")])
    one_error_line(r, "no usable row")
    assert f"2 rows, 0 scored, 2 rejected -> {tmp_path / 's.rejects.jsonl'}" in r.output


def test_a_model_without_its_prompt_layout_is_said(root, tmp_path, caplog):
    from taosr.prompts import PromptConfig, model_prompt

    shutil.copytree(root / "good", tmp_path / "m")
    assert model_prompt(tmp_path / "m") == PromptConfig()
    assert f"{tmp_path / 'm'} has no {PROMPT_FILE}" in caplog.text


def test_a_retrained_model_is_not_mixed_into_a_resumed_score(root, tmp_path, tiny_tokenizer, tiny_config,
                                                           score_killed_after_one_part):
    shutil.copytree(root / "good", tmp_path / "m")
    score_killed_after_one_part(tmp_path / "m", root / "data.jsonl", tmp_path / "s.parquet", batch_queries=1)
    save(build_model(tiny_tokenizer, tiny_config.model_copy(update={"seed": 5})), tiny_tokenizer, tmp_path / "m")
    r = runner.invoke(app, ["score", "--model", str(tmp_path / "m"), "--data", str(root / "data.jsonl"), "--out",
                            str(tmp_path / "s.parquet"), "--batch-queries", "1"])
    one_error_line(r, "model_fingerprint")
    r = runner.invoke(app, ["score", "--model", str(tmp_path / "m"), "--data", str(root / "data.jsonl"), "--out",
                            str(tmp_path / "s.parquet"), "--batch-queries", "1", "--fresh", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):r.output.index("}") + 1])["resumed_rows"] == 0
