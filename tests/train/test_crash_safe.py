"""Nothing mixed, nothing lost: incomplete checkpoints are skipped, output folders are owned, a kept tokenizer is
reused only for what it was trained on, and resumable outputs know their model by its weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from taosr.cli import app
from taosr.errors import InputError
from taosr.io import OWNER_FILE, atomic_dir, claim_folder
from taosr.modeling import build_model, model_fingerprint, save, weights_fingerprint
from taosr.prompts import PROMPT_FILE, PromptConfig, write_prompt
from taosr.train.common import complete_checkpoint, latest_checkpoint

runner = CliRunner()


def _checkpoint(root, step: int, complete: bool):
    ckpt = root / "checkpoints" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    if complete:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


def test_an_incomplete_checkpoint_is_removed_and_the_last_complete_one_resumes(tmp_path):
    _checkpoint(tmp_path, 2, True)
    cut = _checkpoint(tmp_path, 4, False)  # a save cut short: config files only
    torn = _checkpoint(tmp_path, 6, True)
    (torn / "trainer_state.json").write_text('{"global_st')  # killed while writing the state
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoints/checkpoint-2") and cut.exists()
    assert latest_checkpoint(tmp_path, remove_incomplete=True) == str(tmp_path / "checkpoints/checkpoint-2")
    assert not cut.exists() and not torn.exists()
    shutil.rmtree(tmp_path / "checkpoints/checkpoint-2")
    assert latest_checkpoint(tmp_path) is None


def test_atomic_dir_is_whole_or_absent(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m/old.bin").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "m") as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("killed while saving")
    assert [p.name for p in tmp_path.iterdir()] == ["m"] and (tmp_path / "m/old.bin").exists()
    with atomic_dir(tmp_path / "m") as tmp:
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["new.bin"] and len(list(tmp_path.iterdir())) == 1


def test_an_output_folder_is_owned(tmp_path):
    out = tmp_path / "o"
    claim_folder(out, "sft", {"lr": 1})
    assert json.loads((out / OWNER_FILE).read_text()) == {"command": "sft", "settings": {"lr": 1}}
    (out / "model").mkdir()
    claim_folder(out, "sft", {"lr": 1})  # the same command, the same settings: resumed
    with pytest.raises(InputError, match=r"o: was made by `taosr sft` with other settings \(lr: 1 -> 2\).*--overwrite"):
        claim_folder(out, "sft", {"lr": 2})
    with pytest.raises(InputError, match="is the output of `taosr sft`"):
        claim_folder(out, "dpo", {"lr": 1})
    claim_folder(out, "dpo", {"lr": 1}, overwrite=True)
    assert not (out / "model").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign/weights.bin").write_text("x")
    with pytest.raises(InputError, match="holds files that no taosr command here made"):
        claim_folder(tmp_path / "foreign", "sft", {})


SFT = ["sft", "--data", "{data}", "--out", "{out}", "--order", "answer_only", "--max-steps", "2", "--save-steps", "1",
       "--batch-size", "4", "--model-vocab-size", "300", "--model-hidden-size", "32", "--model-num-layers", "1",
       "--model-num-heads", "2", "--model-num-kv-heads", "1", "--model-intermediate-size", "64"]


def test_sft_owns_its_out_folder_uses_no_stale_tokenizer_and_resumes_past_a_cut_checkpoint(tmp_path, tiny_splits,
                                                                                            tiny_tokenizer):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in tiny_splits["train"][:16]))
    out.mkdir()
    (out / "model").mkdir()
    (out / "model/weights.bin").write_text("foreign")
    tiny_tokenizer.save_pretrained(out / "tokenizer")  # another run's tokenizer (vocabulary 400)
    args = [a.format(data=data, out=out) for a in SFT]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and f"error: {out}: holds files that no taosr command here made" in r.output, r.output
    r = runner.invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not (out / "model/weights.bin").exists() and (out / "model/model.safetensors").exists()
    assert json.loads((out / "tokenizer/taosr_tokenizer.json").read_text())["vocab_size"] == 300
    # a save cut short after the last complete checkpoint; the model folder was never written
    assert [c.name for c in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    _checkpoint(out, 3, False)
    shutil.rmtree(out / "model")
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (out / "model/model.safetensors").exists()  # the cut checkpoint did not block the rerun
    assert all(complete_checkpoint(c) for c in (out / "checkpoints").glob("checkpoint-*"))
    r = runner.invoke(app, [*args, "--learning-rate", "0.01"])
    assert r.exit_code == 2 and "sft.learning_rate: 0.002 -> 0.01" in r.output, r.output


def test_a_kept_tokenizer_is_reused_only_for_what_it_was_trained_on(tmp_path, tiny_splits, tiny_config):
    from taosr.train.base import start_model

    train = tiny_splits["train"][:30]
    _, tok = start_model(tiny_config, PromptConfig(), tmp_path / "tok", train)
    mtime = (tmp_path / "tok/tokenizer.json").stat().st_mtime_ns
    _, again = start_model(tiny_config, PromptConfig(), tmp_path / "tok", train)
    assert (tmp_path / "tok/tokenizer.json").stat().st_mtime_ns == mtime and len(again) == len(tok)
    small = tiny_config.model_copy(update={"vocab_size": 300})
    _, other = start_model(small, PromptConfig(), tmp_path / "tok", train)  # other vocabulary: trained again
    assert json.loads((tmp_path / "tok/taosr_tokenizer.json").read_text())["vocab_size"] == 300
    assert len(other) < len(tok)


def test_model_fingerprint_follows_the_weights_and_the_prompt_not_the_path(tmp_path, tiny_tokenizer, tiny_config):
    save(build_model(tiny_tokenizer, tiny_config), tiny_tokenizer, tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert model_fingerprint(tmp_path / "a") == model_fingerprint(tmp_path / "b")
    write_prompt(PromptConfig(instructions="other.\n"), tmp_path / "b")
    assert model_fingerprint(tmp_path / "a") != model_fingerprint(tmp_path / "b")
    assert (tmp_path / "b" / PROMPT_FILE).exists()
    before = model_fingerprint(tmp_path / "a")
    save(build_model(tiny_tokenizer, tiny_config.model_copy(update={"seed": 3})), tiny_tokenizer, tmp_path / "a")
    assert model_fingerprint(tmp_path / "a") != before


def test_sampling_refuses_to_resume_with_other_weights(tiny_model, tiny_tokenizer, tiny_splits, tmp_path):
    from taosr.train.configs import SampleConfig
    from taosr.train.sample import run_sampling

    recs, cfg = tiny_splits["train"][:4], SampleConfig(n=1, max_new_tokens=3, shard_prompts=2, batch_size=4)
    before = weights_fingerprint(tiny_model)
    run_sampling(tiny_model, tiny_tokenizer, recs, cfg, tmp_path / "s", PromptConfig())
    with torch.no_grad():
        next(tiny_model.parameters()).add_(0.01)  # the model trained further (or retrained in place)
    assert weights_fingerprint(tiny_model) != before
    with pytest.raises(InputError, match="model_fingerprint"):
        run_sampling(tiny_model, tiny_tokenizer, recs, cfg, tmp_path / "s", PromptConfig())
