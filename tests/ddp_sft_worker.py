"""Helper for test_scale: SFT a saved tiny model, logging which examples each process trained on.

Run plainly (one process) or under `accelerate launch --num_processes 2` (gloo on CPU):
    python ddp_sft_worker.py BASE_DIR TRAIN.jsonl OUT_DIR PER_DEVICE_BATCH
Writes OUT_DIR/model, OUT_DIR/summary.json and OUT_DIR/batches-rank<r>.json (one list of example keys per step).
"""

import json
import os
import sys
from pathlib import Path

import torch
from trl import SFTTrainer

from taosr.data.splits import read_split
from taosr.modeling import load_model
from taosr.prompts import PromptConfig
from taosr.teacher.reasoning import RuleTeacher
from taosr.train.configs import SFTStageConfig
from taosr.train.sft import run_sft

torch.set_num_threads(1)
base, data, out, per_device = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
rank = int(os.environ.get("RANK", "0"))
seen: list[list[str]] = []
_step = SFTTrainer.training_step


def recording_step(self, model, inputs, *args, **kwargs):
    keys = []
    for ids in inputs["input_ids"]:
        keep = ids[inputs["attention_mask"][len(keys)].bool()]  # the example without padding
        keys.append(" ".join(map(str, keep.tolist())))
    seen.append(keys)
    return _step(self, model, inputs, *args, **kwargs)


SFTTrainer.training_step = recording_step
model, tok = load_model(base)
cfg = SFTStageConfig(order="answer_only", max_steps=6, batch_size=per_device, learning_rate=5e-3, save_steps=1000)
run_sft(model, tok, read_split(data), cfg, out, RuleTeacher(), PromptConfig())
(out / f"batches-rank{rank}.json").write_text(json.dumps(seen))
