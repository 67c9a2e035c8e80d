"""`taosr score` resume: settings and every input field are in the manifest; damaged parts are redone."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import taosr.deploy.batch_score as bs
from taosr.deploy.schema import SERVING_FILE, ServingConfig
from taosr.modeling import build_model, save


@pytest.fixture(scope="module")
def setup(tiny_tokenizer, tiny_config, tiny_splits, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    save(build_model(tiny_tokenizer, tiny_config), tiny_tokenizer, root / "model")
    (root / "model" / SERVING_FILE).write_text(ServingConfig(beta=0.5).model_dump_json())
    rows = [json.loads(r.model_dump_json()) for r in tiny_splits["test"][:40]]
    rows[3]["label"] = "bogus"  # labels are not used by scoring: no reject for this
    (root / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    full = root / "full.parquet"
    bs.score_file(root / "model", root / "in.jsonl", full, batch_queries=3)
    return root, rows, pq.read_table(full)


def test_bad_label_is_not_a_reject(setup):
    root, rows, full = setup
    assert full.num_rows == len(rows) and "bogus" not in (root / "full.rejects.jsonl").read_text()


@pytest.mark.parametrize("changed, kw, message", [
    ("dtype", {"dtype": "bfloat16"}, "dtype (float32 there, bfloat16 now)"),
    ("prefix", {"prefix_sharing": False}, "prefix_sharing (true there, false now)"),
])
def test_resume_with_other_settings_is_refused(setup, tmp_path, score_killed_after_one_part, changed, kw, message):
    root, rows, full = setup
    out = tmp_path / "s.parquet"
    parts = score_killed_after_one_part(root / "model", root / "in.jsonl", out, batch_queries=3)
    manifest = json.loads((parts / "manifest.json").read_text())
    assert {"dtype", "device", "prefix_sharing", "engine", "prompt"} <= set(manifest)
    with pytest.raises(bs.ResumeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bs.score_file(root / "model", root / "in.jsonl", out, batch_queries=3, **kw)
    assert not out.exists()
    bs.score_file(root / "model", root / "in.jsonl", out, batch_queries=3)  # same settings: resumes
    assert pq.read_table(out).equals(full)


def test_edited_input_is_refused(setup, tmp_path, score_killed_after_one_part):
    root, rows, _ = setup
    src = tmp_path / "in.jsonl"
    src.write_text((root / "in.jsonl").read_text())
    out = tmp_path / "s.parquet"
    score_killed_after_one_part(root / "model", src, out, batch_queries=3)
    edited = [dict(r) for r in rows]
    edited[30]["price"] = 123.0  # only the price: id, query and title unchanged
    src.write_text("".join(json.dumps(r) + "\n" for r in edited))
    with pytest.raises(bs.ResumeError, match="fingerprint"):
        bs.score_file(root / "model", src, out, batch_queries=3)


def test_truncated_part_is_scored_again(setup, tmp_path, score_killed_after_one_part):
    root, rows, full = setup
    out = tmp_path / "s.parquet"
    parts = score_killed_after_one_part(root / "model", root / "in.jsonl", out, batch_queries=3)
    part = parts / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:100])
    info = bs.score_file(root / "model", root / "in.jsonl", out, batch_queries=3)
    assert info["resumed_rows"] == 0 and info["scored_rows"] == len(rows)
    assert pq.read_table(out).equals(full)


def test_output_equal_to_input_is_refused(setup, tmp_path):
    root, rows, _ = setup
    src = tmp_path / "in.jsonl"
    text = (root / "in.jsonl").read_text()
    src.write_text(text)
    with pytest.raises(bs.ResumeError, match="is the input file"):
        bs.score_file(root / "model", src, src)
    assert src.read_text() == text
    named = tmp_path / "in.rejects.jsonl"
    named.write_text(text)
    with pytest.raises(bs.ResumeError, match="rejects file"):
        bs.score_file(root / "model", named, tmp_path / "in.parquet")  # would write its rejects over the input
    assert named.read_text() == text


def test_a_huge_row_is_cut_not_fatal(setup, tmp_path):
    """One row with a 10 MB title is scored within the prompt budgets, like any other."""
    root, rows, full = setup
    src = tmp_path / "huge.jsonl"
    huge = dict(rows[0]) | {"id": "huge", "title": "lamp " * 2_000_000}
    src.write_text("".join(json.dumps(r) + "\n" for r in [huge] + rows[1:5]))
    out = tmp_path / "huge.parquet"
    info = bs.score_file(root / "model", src, out)
    table = pq.read_table(out)
    assert info["rows"] == 5 and table.num_rows == 5 and table["id"][0].as_py() == "huge"
    np.testing.assert_allclose(table["p1"].to_pylist()[1:], full["p1"].to_pylist()[1:5], atol=1e-5)
