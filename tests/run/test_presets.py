"""The demo's budgets are YAML presets (configs/demo/*.yaml), validated into `DemoConfig`."""

from __future__ import annotations

import pytest

from taosr.run.presets import PRESET_DIR, load_preset, merge
from taosr.train.configs import DPOStageConfig, SFTStageConfig


def test_presets_are_found():
    assert {p.stem for p in PRESET_DIR.glob("*.yaml")} >= {"default", "tiny"}
    with pytest.raises(ValueError, match="unknown preset"):
        load_preset("no-such-preset", "t")


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_per_order_overrides_are_valid_settings(name):
    """The overrides are applied with model_copy (not validated), so a YAML typo such as 2e-3 (text) would slip by."""
    cfg = load_preset(name, "t")
    assert cfg.run.name == "t"
    for over in cfg.sft_by_order.values():
        assert SFTStageConfig.model_validate(over).model_dump(exclude_unset=True) == over
    for over in cfg.dpo_by_order.values():
        assert DPOStageConfig.model_validate(over).model_dump(exclude_unset=True) == over


def test_overrides_merge_into_the_preset():
    cfg = load_preset("tiny", "t", {"run": {"sft": {"max_steps": 7}}, "dev_checks": 0})
    base = load_preset("tiny", "t")
    assert cfg.run.sft.max_steps == 7 and cfg.run.sft.batch_size == base.run.sft.batch_size == 8
    assert cfg.dev_checks == 0 and cfg.run.synth == base.run.synth
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}
