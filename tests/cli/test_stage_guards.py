"""What the training and evaluation commands check so that real pairs never end in a traceback or an empty run:
the stored output order, usable reasoning, GRPO's prompt selection and masking, whose samples GRPO reads; and the
model card, the version, plain progress lines."""

import json

import pytest
import typer
from typer.testing import CliRunner

from taosr.cli import app
from taosr.cli.checks import (
    check_reasoning,
    check_report_to,
    check_samples_origin,
    check_selection,
    check_trained,
    record_sampler,
)
from taosr.cli.inputs import resolve_order
from taosr.data.result import DataError
from taosr.modelcard import record_stage, write_card
from taosr.prompts import PROMPT_FILE, PromptConfig, model_order, model_prompt, write_prompt
from taosr.records import Record
from taosr.teacher.fields import AutoTeacher
from taosr.teacher.reasoning import RuleTeacher


def test_the_order_travels_with_the_model_and_a_contradiction_is_refused(tmp_path):
    cfg = PromptConfig(max_query_tokens=40)
    write_prompt(cfg, tmp_path, "answer_only")
    assert model_order(tmp_path) == "answer_only" and model_prompt(tmp_path) == cfg  # the layout reads back whole
    assert resolve_order(tmp_path, None) == "answer_only"
    assert resolve_order(tmp_path, "answer_only") == "answer_only"
    with pytest.raises(DataError, match=r"--order think_first contradicts .*taosr_prompt.json: the model was trained "
                                        r"in answer_only order; drop --order .* or pass --order answer_only"):
        resolve_order(tmp_path, "think_first")
    empty = tmp_path / "other"
    empty.mkdir()
    assert resolve_order(empty, None) == "answer_first" and resolve_order(empty, "think_first") == "think_first"
    (tmp_path / PROMPT_FILE).write_text(json.dumps(cfg.model_dump()))  # a folder from before the order was stored
    assert model_order(tmp_path) is None


def test_eval_refuses_an_order_the_model_was_not_trained_in(tmp_path):
    (tmp_path / "model").mkdir()
    write_prompt(PromptConfig(), tmp_path / "model", "answer_only")
    data = tmp_path / "t.jsonl"
    data.write_text(Record(query="q", title="t", label=4).model_dump_json() + "\n")
    r = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "model"), "--data", str(data), "--order",
                                 "think_first"])
    assert r.exit_code == 2 and "error: --order think_first contradicts" in r.output
    assert "Traceback" not in r.output


def test_sft_needs_usable_reasoning():
    outside = [Record(id=str(i), query="a cat that sings", title="karaoke cat toy", label=1) for i in range(3)]
    with pytest.raises(DataError, match=r"no training pair has usable reasoning \(the default teacher: 0 of 3\).*"
                                        r"taosr cot .*--order answer_only"):
        check_reasoning(outside, RuleTeacher(), "answer_first", None)
    assert check_reasoning(outside, AutoTeacher(), "answer_first", None) == 3
    assert check_reasoning(outside, RuleTeacher(), "answer_only", None) == 3


def test_grpo_selection_that_leaves_nothing_or_a_handful_is_refused():
    with pytest.raises(DataError, match=r"no GRPO prompt left of 150 \(too hard 150\).*--no-offline-filter"):
        check_selection({"prompts_in": 150, "prompts_out": 0, "dropped_too_hard": 150, "dropped_too_easy": 0}, 4)
    with pytest.raises(DataError, match=r"class balancing left 4 of 150 GRPO prompts .*--no-balance-classes"):
        check_selection({"prompts_in": 150, "prompts_out": 4, "dropped_balance": 146, "labels_out": {1: 1}}, 4)
    check_selection({"prompts_in": 150, "prompts_out": 40, "dropped_balance": 110}, 4)  # enough: no error
    check_selection({"prompts_in": 5, "prompts_out": 5}, 4)  # a small set, not cut by balancing: no error


def test_grpo_that_masked_every_group_warns_and_exits_non_zero(capsys):
    with pytest.raises(typer.Exit) as e:
        check_trained({"groups_masked": 4, "groups_total": 4})
    assert e.value.exit_code == 1 and "GRPO trained nothing: all 4 rollout groups" in capsys.readouterr().err
    check_trained({"groups_masked": 3, "groups_total": 4})


def test_grpo_reads_samples_of_its_own_policy_only(tmp_path):
    (tmp_path / "sft").mkdir()
    (tmp_path / "samples").mkdir()
    record_sampler(tmp_path / "samples", tmp_path / "sft")
    check_samples_origin(tmp_path / "samples", tmp_path / "sft")
    with pytest.raises(DataError, match=r"holds samples of .*sft, not of the policy .*dpo; .*taosr sample --model"):
        check_samples_origin(tmp_path / "samples", tmp_path / "dpo")


def test_report_to_needs_the_tracker_installed():
    check_report_to("none")
    with pytest.raises(DataError, match="pip install"):
        check_report_to("no_such_tracker_pkg")


def test_the_model_card_shows_what_is_known(tmp_path):
    model = tmp_path / "grpo" / "model"
    model.mkdir(parents=True)
    (tmp_path / "grpo" / "summary.json").write_text(json.dumps({"steps": 7, "loss_last": 0.123456}))
    card = record_stage(model, "grpo (answer_first)", "runs/me/dpo/model", "data/me/train.jsonl", "answer_first",
                        PromptConfig())
    text = card.read_text()
    assert "| stage | grpo (answer_first) |" in text and "| started from | runs/me/dpo/model |" in text
    assert "| output order | answer_first (taosr_prompt.json) |" in text and "| loss_last | 0.1235 |" in text
    assert "Not calibrated yet" in text and "## Evaluation" not in text
    (tmp_path / "grpo" / "eval-test.json").write_text(json.dumps(
        {"n": 30, "macro_f1": 0.2115, "macro_f1_present": 0.2821, "accuracy": 0.7333,
         "ranking": {"ndcg@10": 0.9, "mrr": None}}))
    (model / "taosr_serving.json").write_text(json.dumps({"rule": "argmax", "beta": 0.4, "n_dev": 20}))
    text = write_card(model).read_text()
    assert "| eval-test | 30 | 21.15 | 28.21 | 73.33 | 90.00 | - |" in text
    assert "Served rule: argmax, beta 0.4, chosen on 20 dev pairs" in text


def test_version():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("taosr ")


def test_plain_progress_lines_outside_a_terminal(capsys):
    from taosr.progress import PlainProgress

    p = PlainProgress("sample", 10, every=0.0)
    p.update(5, "loss 1.5")
    err = capsys.readouterr().err
    assert err.startswith("sample: 5/10 (0:00:00 elapsed, eta 0:00:00) loss 1.5")
    quiet = PlainProgress("sample", 10, every=3600.0)
    quiet.update(5)
    assert capsys.readouterr().err == ""
