"""Every command says how many rows it rejected and where; input errors are one line and a non-zero exit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from taosr.cli import app
from taosr.modeling import build_model, save
from taosr.teacher.chat_server import free_port

runner = CliRunner()
BAD = ['{"query": "q", "title": ""}', '{"query": "q", "title": "t", "attributes": ["ab", "cd"]}',
       '{"query": "q", "title": "t", "price": NaN}', "not json"]


@pytest.fixture(scope="module")
def files(tiny_tokenizer, tiny_config, tiny_splits, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    save(build_model(tiny_tokenizer, tiny_config), tiny_tokenizer, root / "stage" / "model")
    (root / "stage" / "metrics.json").write_text('{"own": true}')
    good = [r.model_dump_json() for r in tiny_splits["test"][:18]]
    (root / "mixed.jsonl").write_text("\n".join(good + BAD) + "\n")  # 22 rows, 18 good
    (root / "allbad.jsonl").write_text("\n".join(BAD) + "\n")
    (root / "binary.jsonl").write_bytes(b"\x00\x01\x02" * 10)
    return root


def _one_line_error(r, text: str, code: int = 2) -> None:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], r.output


def test_eval_reports_rejects_and_keeps_the_stage_metrics(files):
    r = runner.invoke(app, ["eval", "--model", str(files / "stage/model"), "--data", str(files / "mixed.jsonl"),
                            "--order", "answer_first"])
    assert r.exit_code == 0, r.output
    assert f"22 rows, 18 loaded, 4 rejected -> {files / 'mixed.rejects.jsonl'}" in r.output
    assert len((files / "mixed.rejects.jsonl").read_text().splitlines()) == 4
    assert json.loads((files / "stage/metrics.json").read_text()) == {"own": True}
    assert json.loads((files / "stage/eval-mixed.json").read_text())["n"] == 18


@pytest.mark.parametrize("command", [
    ["eval", "--model", "{root}/stage/model", "--data", "{data}"],
    ["calibrate", "--model", "{root}/stage/model", "--data", "{data}"],
    ["score", "--model", "{root}/stage/model", "--data", "{data}", "--out", "{root}/out.parquet"],
    ["cot", "{data}", "--out", "{root}/cot.jsonl"],
    ["data", "inspect", "{data}", "--rejects", "{root}/r.jsonl"],
    ["sft", "--data", "{root}/sftdata", "--out", "{root}/sftout", "--max-steps", "1"],
    ["sample", "--model", "{root}/stage/model", "--data", "{data}", "--out", "{root}/samples", "--n", "1"],
    ["dpo", "--model", "{root}/stage/model", "--data", "{data}", "--samples", "{root}/samples", "--out", "{root}/dpo"],
    ["grpo", "--model", "{root}/stage/model", "--data", "{data}", "--out", "{root}/grpo", "--max-steps", "1"],
])
@pytest.mark.parametrize("name, text", [("allbad.jsonl", "no usable row"), ("binary.jsonl", "binary"),
                                        ("missing.jsonl", "no such file")])
def test_input_errors_are_one_line(files, command, name, text):
    sft = files / "sftdata"
    sft.mkdir(exist_ok=True)
    if (sft / "train.jsonl").exists() or (sft / "train.jsonl").is_symlink():
        (sft / "train.jsonl").unlink()
    if name != "missing.jsonl":
        (sft / "train.jsonl").write_bytes((files / name).read_bytes())
    args = [a.format(root=files, data=files / name) for a in command]
    _one_line_error(runner.invoke(app, args), text)


def test_score_reports_rejects_ignores_labels_and_refuses_its_input_as_output(files):
    rows = (files / "mixed.jsonl").read_text().splitlines()
    rows[0] = json.dumps(json.loads(rows[0]) | {"label": "bogus"})
    (files / "score_in.jsonl").write_text("\n".join(rows) + "\n")
    r = runner.invoke(app, ["score", "--model", str(files / "stage/model"), "--data", str(files / "score_in.jsonl"),
                            "--out", str(files / "scores.parquet"), "--engine", "transformers"])
    assert r.exit_code == 0, r.output
    assert f"22 rows, 18 scored, 4 rejected -> {files / 'scores.rejects.jsonl'}" in r.output
    before = (files / "score_in.jsonl").read_bytes()
    r = runner.invoke(app, ["score", "--model", str(files / "stage/model"), "--data", str(files / "score_in.jsonl"),
                            "--out", str(files / "score_in.jsonl")])
    _one_line_error(r, "is the input file")
    assert (files / "score_in.jsonl").read_bytes() == before


def test_cot_reports_rejects_and_fails_when_every_pair_fails(files):
    r = runner.invoke(app, ["cot", str(files / "mixed.jsonl"), "--out", str(files / "cot_ok.jsonl")])
    assert r.exit_code == 0, r.output
    assert "22 rows, 18 loaded, 4 rejected" in r.output
    dead = f"http://127.0.0.1:{free_port()}"
    r = runner.invoke(app, ["cot", str(files / "mixed.jsonl"), "--out", str(files / "cot_dead.jsonl"), "--teacher",
                            "openai", "--base-url", dead, "--max-retries", "0", "--timeout-s", "1"])
    _one_line_error(r, "every pair failed (18)", code=1)


def test_reasoning_file_lines_that_cannot_be_used_are_listed_not_fatal(tmp_path):
    from taosr.teacher.reasoning import FileTeacher

    rows = ['{"id": "a", "status": "ok", "reasoning": "fine.", "label": 4}', "not json",
            '{"id": "b", "status": "ok", "reasoning": "' + "x" * 5000 + '", "label": 2}',
            '{"id": "c", "status": "ok", "reasoning": "r", "label": "seven"}', "[1, 2]",
            '{"id": "d", "status": "failed"}', ""]
    path = tmp_path / "cot.jsonl"
    path.write_text("\n".join(rows) + "\n")
    t = FileTeacher(path, max_chars=4000)
    assert list(t.by_id) == ["a"] and t.by_id["a"].level == 4
    assert [(r["row"], r["reason"][:20]) for r in t.rejects] == [
        (2, "Expecting value: lin"), (3, "reasoning of 5000 ch"), (4, "not a relevance labe"), (5, "not a JSON object")]


@pytest.mark.parametrize("span, cut", [("answer", True), ("full", False)])
def test_dpo_command_builds_the_pairs_its_span_asks_for(files, tmp_path, span, cut):
    samples = tmp_path / "samples"
    r = runner.invoke(app, ["sample", "--model", str(files / "stage/model"), "--data", str(files / "mixed.jsonl"),
                            "--out", str(samples), "--n", "2", "--max-new-tokens", "12"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["dpo", "--model", str(files / "stage/model"), "--data", str(files / "mixed.jsonl"),
                            "--samples", str(samples), "--out", str(tmp_path / "dpo"), "--span", span,
                            "--max-steps", "1", "--order", "answer_first"])
    pairs = [json.loads(line) for line in (tmp_path / "dpo" / "pairs.jsonl").read_text().splitlines()]
    assert pairs, r.output
    assert all(p["chosen"].endswith("</answer>") == cut for p in pairs)
    if cut:
        assert json.loads((tmp_path / "dpo" / "summary.json").read_text())["sft_weight"] == 0.0
