"""Every config refuses unknown keys and booleans as numbers, ranges its numbers, and reads back what it writes."""

from __future__ import annotations

import json
import typing

import pytest
from pydantic import ValidationError

from taosr.data.splits import SplitConfig
from taosr.data.synth import SynthConfig
from taosr.deploy.configs import CalibrateConfig, ScoreConfig, ServeSettings
from taosr.evaluation.configs import BaselineConfig, EvalConfig
from taosr.modeling import ModelConfig
from taosr.prompts import PromptConfig
from taosr.run.presets import DemoConfig, load_preset
from taosr.run.rundir import RunConfig
from taosr.runtime import DeviceConfig
from taosr.settings import StrictConfig, bool_problem, is_number
from taosr.teacher.cot import TeacherConfig
from taosr.train.configs import DPOStageConfig, GRPOStageConfig, PretrainConfig, SampleConfig, SFTStageConfig
from taosr.train.lora import LoraSwitch
from taosr.train.pairs import PairPolicy

CONFIGS = [SplitConfig, SynthConfig, CalibrateConfig, ScoreConfig, ServeSettings, BaselineConfig, EvalConfig,
           ModelConfig, PromptConfig, DemoConfig, RunConfig, DeviceConfig, TeacherConfig, DPOStageConfig,
           GRPOStageConfig, PretrainConfig, SampleConfig, SFTStageConfig, LoraSwitch, PairPolicy]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_unknown_keys_and_booleans_as_numbers_are_refused(config):
    assert issubclass(config, StrictConfig)
    with pytest.raises(ValidationError, match="extra_forbidden"):
        config.model_validate({"no_such_setting": 1})
    numbers = [n for n, f in config.model_fields.items() if is_number(f.annotation) and bool_problem(f.annotation, True)]
    for name in numbers:
        with pytest.raises(ValidationError, match="expected a number, got true"):
            config.model_validate({name: True})
    assert config.model_validate(json.loads(config().model_dump_json())) == config()  # reads back what it writes


@pytest.mark.parametrize("config, field, value", [
    (SFTStageConfig, "max_steps", -5), (SFTStageConfig, "max_steps", 0), (SFTStageConfig, "batch_size", 0),
    (DPOStageConfig, "batch_size", 0), (GRPOStageConfig, "max_steps", -1), (SampleConfig, "shard_prompts", 0),
    (BaselineConfig, "max_steps", -5), (BaselineConfig, "max_steps", 0), (PretrainConfig, "max_steps", -1),
    (ModelConfig, "num_heads", 3), (DeviceConfig, "device", "gpu"), (DeviceConfig, "dtype", "fp8"),
    (SplitConfig, "dev_frac", 0.9), (RunConfig, "eval_batch_size", 0), (SFTStageConfig, "seed", -1),
])
def test_numbers_out_of_range_are_refused(config, field, value):
    with pytest.raises(ValidationError):
        config.model_validate({field: value})


def test_minus_one_means_epochs_where_epochs_apply_and_zero_skips_pretraining():
    assert BaselineConfig(max_steps=-1).max_steps == -1 and PretrainConfig(max_steps=0).max_steps == 0


def test_booleans_inside_mappings_are_refused():
    with pytest.raises(ValidationError, match="expected a number"):
        SynthConfig.model_validate({"label_mix": {4: True, 3: 0.5}})
    with pytest.raises(ValidationError, match="expected a number"):
        DemoConfig.model_validate({"sample_prompts": {"answer_first": True}})
    assert DemoConfig.model_validate({"sample_prompts": {"answer_first": None}}).sample_prompts == {"answer_first": None}


@pytest.mark.parametrize("override, where", [
    ({"sft_by_order": {"answer_first": {"max_stepz": 3}}}, "sft_by_order.answer_first.max_stepz"),
    ({"sft_by_order": {"answer_first": {"max_steps": True}}}, "sft_by_order.answer_first.max_steps"),
    ({"sft_by_order": {"answer_firsst": {"max_steps": 3}}}, "answer_firsst"),
    ({"dpo_by_order": {"think_first": {"pairs": {"chosenn": "teacher"}}}}, "dpo_by_order.think_first.pairs.chosenn"),
    ({"dpo_by_order": {"think_first": {"beta": -1}}}, "dpo_by_order.think_first.beta"),
])
def test_per_order_overrides_are_checked_against_their_stage(override, where):
    with pytest.raises(ValueError, match=where.replace(".", r"\.")):
        load_preset("tiny", "x", override)


def test_every_preset_and_its_written_config_validate():
    for preset in ("default", "tiny", "smollm2"):
        cfg = load_preset(preset, "x")
        assert DemoConfig.model_validate(json.loads(cfg.model_dump_json())) == cfg  # demo_config.json reads back
        assert RunConfig.model_validate_json(cfg.run.model_dump_json()) == cfg.run  # config.json too


def test_annotations_used_by_configs_are_understood():
    assert is_number(int) and is_number(float | None) and not is_number(bool) and not is_number(str)
    assert bool_problem(typing.Optional[int], True) and not bool_problem(bool | None, True)
    assert bool_problem(dict[str, int | None], {"a": False}) and not bool_problem(str | list[str], ["a"])
