"""The prompt layout travels with the model: SFT stores it, every later command and the service read it."""

from __future__ import annotations

import copy
import json

from typer.testing import CliRunner

from taosr.cli.main import app
from taosr.deploy.schema import load_serving_config
from taosr.io import write_jsonl
from taosr.modeling import save
from taosr.prompts import PROMPT_FILE, PromptConfig, model_prompt, write_prompt

CHAT = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"


def test_model_prompt_round_trip_and_default(tmp_path):
    assert model_prompt(tmp_path) == PromptConfig() and model_prompt(None) == PromptConfig()
    custom = PromptConfig(instructions="rate it:\n", prompt_suffix="</u>")
    assert model_prompt(tmp_path, custom) == custom  # no file: the caller's default
    write_prompt(custom, tmp_path)
    assert model_prompt(tmp_path) == custom and load_serving_config(tmp_path).prompt == custom


def test_sft_chat_template_is_stored_and_read_by_calibrate(tmp_path, tiny_model, tiny_tokenizer, tiny_splits):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = CHAT
    save(tiny_model, tok, tmp_path / "start")
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "train.jsonl", [r.model_dump() for r in tiny_splits["train"][:16]])
    write_jsonl(tmp_path / "dev.jsonl", [r.model_dump() for r in tiny_splits["dev"][:12]])
    r = CliRunner().invoke(app, ["sft", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "sft"),
                                 "--model", str(tmp_path / "start"), "--chat-template", "--max-steps", "1",
                                 "--batch-size", "2", "--order", "answer_only"])
    assert r.exit_code == 0, r.output
    model_dir = tmp_path / "sft" / "model"
    stored = json.loads((model_dir / PROMPT_FILE).read_text())
    assert stored["instructions"] == "<u>" + PromptConfig().instructions and stored["prompt_suffix"] == "</u><a>"
    assert load_serving_config(model_dir).prompt.prompt_suffix == "</u><a>"  # before calibration
    r = CliRunner().invoke(app, ["calibrate", "--model", str(model_dir), "--data", str(tmp_path / "dev.jsonl")])
    assert r.exit_code == 0, r.output
    assert load_serving_config(model_dir).prompt == model_prompt(model_dir)  # the serving export keeps it
    r = CliRunner().invoke(app, ["calibrate", "--model", str(model_dir), "--data", str(tmp_path / "dev.jsonl"),
                                 "--rule", "argmax"])
    assert r.exit_code == 0, r.output
    assert load_serving_config(model_dir).rule == "argmax"  # forced, whatever dev prefers
