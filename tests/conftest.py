"""Shared tiny fixtures: a small benchmark, a tokenizer trained on it, a 2-layer model. CPU, seeded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TAOSR_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))  # 2 unless the caller asks for fewer

from taosr.progress import quiet_libraries  # noqa: E402

quiet_libraries()


@pytest.fixture(scope="session")
def tiny_splits():
    from taosr.data.synth import SynthConfig, generate

    return generate(SynthConfig(n_queries=150, items_per_query=3, seed=7))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_splits):
    from taosr.modeling import train_tokenizer
    from taosr.prompts import PromptConfig
    from taosr.train.base import corpus

    return train_tokenizer(corpus(tiny_splits["train"], PromptConfig()), vocab_size=400)


@pytest.fixture(scope="session")
def tiny_config():
    """The tests' model: 2 layers, hidden 64, 2 heads over 1 key/value head (grouped-query attention)."""
    from taosr.modeling import ModelConfig

    return ModelConfig(vocab_size=400, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                       intermediate_size=128, seed=0)


@pytest.fixture()
def tiny_model(tiny_tokenizer, tiny_config):
    from taosr.modeling import build_model

    return build_model(tiny_tokenizer, tiny_config)


@pytest.fixture()
def score_killed_after_one_part(monkeypatch):
    """`score(model, data, out, **kw)`: `taosr score`'s `score_file` killed after its first part is written, as a
    crash would leave it; returns the parts folder."""
    import taosr.deploy.batch_score as bs

    def score(model, data, out, **kw):
        real = bs._write_part

        def crash(parts, number, table):
            if number >= 1:
                raise KeyboardInterrupt("killed")
            return real(parts, number, table)

        monkeypatch.setattr(bs, "_write_part", crash)
        with pytest.raises(KeyboardInterrupt):
            bs.score_file(model, data, out, **kw)
        monkeypatch.setattr(bs, "_write_part", real)
        return bs.parts_dir_of(out)

    return score
