"""Offline batch scoring: equals the offline scorer row for row; a killed run resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import taosr.deploy.batch_score as bs
from taosr.deploy.cumpt import cumpt_levels, tiers_of
from taosr.deploy.schema import SERVING_FILE, ServingConfig
from taosr.infer.scoring import score_records
from taosr.modeling import build_model, save
from taosr.prompts import PromptConfig

BETA = 0.6


@pytest.fixture(scope="module")
def setup(tiny_tokenizer, tiny_config, tiny_splits, tmp_path_factory):
    """A saved tiny model with a serving config, and a JSONL input with one bad row."""
    root = tmp_path_factory.mktemp("batch")
    model = build_model(tiny_tokenizer, tiny_config)
    save(model, tiny_tokenizer, root / "model")
    (root / "model" / SERVING_FILE).write_text(ServingConfig(beta=BETA).model_dump_json())
    recs = tiny_splits["test"]
    rows = [json.loads(r.model_dump_json(exclude={"label"})) for r in recs]
    rows.insert(5, {"id": "broken", "query": "no title here"})
    (root / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = score_records(model.eval(), tiny_tokenizer, recs, PromptConfig(), batch_size=16)
    return root, recs, expected


def test_equals_offline_scoring_row_for_row(setup):
    root, recs, expected = setup
    out = root / "shared" / "scores.parquet"
    info = bs.score_file(root / "model", root / "in.jsonl", out, batch_queries=4)
    df = pd.read_parquet(out)
    assert list(df.columns) == ["id", "query", "title", "p1", "p2", "p3", "p4", "level", "tier"]
    assert df["id"].tolist() == [r.id for r in recs] and df["title"].tolist() == [r.title for r in recs]
    probs = df[["p1", "p2", "p3", "p4"]].to_numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert df["level"].tolist() == cumpt_levels(probs, BETA).tolist()
    assert df["tier"].tolist() == tiers_of(df["level"].to_numpy()).tolist()
    rejects = (root / "shared" / "scores.rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1 and json.loads(rejects[0])["field"] == "title"
    assert info["rows"] == len(recs) and info["rejects"] == 1 and info["scored_rows"] == len(recs)
    assert info["queries"] == len({r.query for r in recs}) and info["beta"] == BETA
    assert not bs.parts_dir_of(out).exists()

    # the unshared scorer, from CSV input, writes the same numbers
    csv_in = root / "in.csv"
    rows = [r.model_dump(exclude={"label"}) | {"attributes": json.dumps(r.attributes)} for r in recs]
    pd.DataFrame(rows).to_csv(csv_in, index=False)
    out2 = root / "unshared" / "scores.parquet"
    bs.score_file(root / "model", csv_in, out2, batch_queries=100, prefix_sharing=False)
    np.testing.assert_allclose(pd.read_parquet(out2)[["p1", "p2", "p3", "p4"]].to_numpy(), expected, atol=1e-5)


def test_killed_run_resumes_without_duplicates_or_losses(setup, monkeypatch):
    root, recs, _ = setup
    full = root / "full" / "scores.parquet"
    bs.score_file(root / "model", root / "in.jsonl", full, batch_queries=3)

    out = root / "killed" / "scores.parquet"
    real_write, written = bs._write_part, []

    def crash_after_two(parts, number, table):
        if len(written) == 2:  # die while writing the third part: only a .tmp is left behind
            (parts / f"part-{number:05d}.parquet.tmp").write_bytes(b"half a file")
            raise KeyboardInterrupt("killed")
        written.append(real_write(parts, number, table))
        return written[-1]

    monkeypatch.setattr(bs, "_write_part", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        bs.score_file(root / "model", root / "in.jsonl", out, batch_queries=3)
    parts = bs.parts_dir_of(out)
    assert len(list(parts.glob("part-*.parquet"))) == 2 and not out.exists()
    done = sum(pq.read_metadata(p).num_rows for p in written)

    monkeypatch.setattr(bs, "_write_part", real_write)
    info = bs.score_file(root / "model", root / "in.jsonl", out, batch_queries=3)
    assert info["resumed_rows"] == done > 0 and info["scored_rows"] == len(recs) - done
    resumed, reference = pq.read_table(out), pq.read_table(full)
    assert resumed.equals(reference)
    assert resumed.num_rows == len(recs) and len(set(resumed["id"].to_pylist())) == len(recs)
    assert not parts.exists()


def test_refuses_to_mix_runs(setup, tiny_splits):
    root, recs, _ = setup
    out = root / "mixed" / "scores.parquet"
    parts = bs.parts_dir_of(out)
    parts.mkdir(parents=True)
    (parts / "manifest.json").write_text(json.dumps({"input": "elsewhere", "fingerprint": "x", "rows": 1,
                                                     "model": "m", "beta": 0.5}))
    with pytest.raises(ValueError, match="different"):
        bs.score_file(root / "model", root / "in.jsonl", out)
    info = bs.score_file(root / "model", root / "in.jsonl", out, fresh=True)
    assert info["rows"] == len(recs) and pq.read_metadata(out).num_rows == len(recs)
