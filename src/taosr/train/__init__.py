"""The training stages, in pipeline order: `base` (stage 0), `sft` (stage 1), `sample` and `pairs` and `dpo`
(stage 2), `grpo` (stage 3); `common` holds what their trainers share, `lora` the LoRA switch."""
