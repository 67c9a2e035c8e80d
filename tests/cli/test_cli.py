"""The command line end to end on tiny settings (typer's runner, in-process)."""

import json

from typer.testing import CliRunner

from taosr.cli import app

runner = CliRunner()


def test_synth_and_inspect(tmp_path):
    out = tmp_path / "synth"
    r = runner.invoke(app, ["synth", "--out", str(out), "--n-queries", "40", "--items-per-query", "2"])
    assert r.exit_code == 0, r.output
    stats = json.loads((out / "stats.json").read_text())
    assert sum(s["pairs"] for s in stats.values()) == 80
    bad = tmp_path / "bad.jsonl"
    bad.write_text((out / "train.jsonl").read_text() + '{"query": "x", "title": "", "label": 9}\n')
    r = runner.invoke(app, ["data", "inspect", str(bad), "--rejects", str(tmp_path / "rej.jsonl")])
    assert r.exit_code == 0, r.output
    rejects = [json.loads(l) for l in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["row"] == stats["train"]["pairs"] + 1


def test_demo_tiny_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["demo", "--preset", "tiny", "--name", "t"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "runs/t/results.json").read_text())
    names = [row["name"] for row in res["rows"]]
    assert names[0] == "majority class" and "post-CoT + DPO + GRPO (full)" in names and len(names) == 12
    assert "post-CoT + DPO + GRPO (reasoning arm)" in names and "think-first + DPO + GRPO (think_first arm)" in names
    for row in res["rows"]:
        assert 0.0 <= row["macro_f1"] <= 1.0 and row["n"] == res["rows"][0]["n"]
    assert (tmp_path / "runs/t/grpo/model/model.safetensors").exists()
    assert (tmp_path / "runs/t/grpo_reasoning/model/model.safetensors").exists()
    assert (tmp_path / "runs/t/grpo_think_first/model/model.safetensors").exists()
    rows = {row["name"]: row for row in res["rows"]}
    assert rows["post-CoT + DPO + GRPO (reasoning arm)"]["hallucination"]["judged"] >= 0
    # the tiny preset's teacher errs (rate 0.3, kept as written): think-first SFT trained on some wrong labels
    teacher = rows["CoT think-first SFT"]["train"]["teacher"]
    assert teacher["kept_teacher_label"] == teacher["teacher_disagrees"] > 0
    assert (tmp_path / "runs/t/calibration.json").exists()
    # a second run resumes: every stage is read back, nothing is retrained
    r2 = runner.invoke(app, ["demo", "--preset", "tiny", "--name", "t"])
    assert r2.exit_code == 0 and r2.output.count("done before") == 11, r2.output


def test_data_split_by_query(tmp_path):
    from taosr.data.splits import write_splits
    from taosr.data.synth import SynthConfig, generate

    src = tmp_path / "src"
    recs = [r for v in generate(SynthConfig(n_queries=60, items_per_query=2)).values() for r in v]
    write_splits({"all": recs}, src)
    r = runner.invoke(app, ["data", "split", str(src / "all.jsonl"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    assert sum(stats[s]["pairs"] for s in ("train", "dev", "test")) == len(recs)
    queries = {s: {json.loads(l)["query"] for l in (tmp_path / f"out/{s}.jsonl").read_text().splitlines()}
               for s in ("train", "dev", "test")}
    assert not (queries["train"] & queries["test"]) and not (queries["dev"] & queries["test"])


def test_demo_controls_continue_sft_at_the_stage_learning_rate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "over.yaml").write_text("controls: true\ndpo: {learning_rate: 1.0e-4}\ngrpo: {learning_rate: 3.0e-4}\n")
    r = runner.invoke(app, ["demo", "--preset", "tiny", "--name", "c", "--config", "over.yaml"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs/c"
    lr = {name: json.loads((run / name / "stage_config.json").read_text())["learning_rate"]
          for name in ("control_dpo_answer_first", "control_dpo_think_first", "control_grpo")}
    assert lr == {"control_dpo_answer_first": 1e-4, "control_dpo_think_first": 1e-4, "control_grpo": 3e-4}
    names = [row["name"] for row in json.loads((run / "results.json").read_text())["rows"]]
    assert "post-CoT + DPO + continued SFT (GRPO control)" in names


def test_data_split_warns_when_dev_or_test_lack_a_level(tmp_path):
    from taosr.records import Record

    rows = [Record(id=str(i), query=f"q{i}", title="t", label=4 if i else 2) for i in range(40)]
    (tmp_path / "all.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    r = runner.invoke(app, ["data", "split", str(tmp_path / "all.jsonl"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    for split in ("dev", "test"):
        assert ("2" in stats[split]["labels"]) != (f"warning: {split} has no pair of level(s) 2 Mismatch" in r.output)
    assert "splits -> " in r.output and "train " in r.output
