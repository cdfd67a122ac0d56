"""Run by test_train.py under torchrun with 1 or 2 processes: same effective batch, same curve."""
import json
import sys
from pathlib import Path

import torch

from clearbench.config import TrainConfig
from clearbench.lora import set_trainable
from clearbench.models import load_model
from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, get_accelerator, train
from model_fixtures import sample_records

torch.set_num_threads(1)
model_dir, out = sys.argv[1], Path(sys.argv[2])
cfg = TrainConfig(lr=1e-2, max_steps=4, batch_size=4, micro_batch_size=2, warmup_steps=0, seed=1, log_every=1,
                  augment=False, mixed_precision="no")
acc = get_accelerator("no")
loaded = load_model(model_dir)
model = loaded.model.train()
set_trainable(model, cfg)
train(model, loaded.processor, loaded.family, ShuffleSampler(sample_records() * 2, 4, seed=1), example_nll_loss,
      cfg, TrainRun(out))
if acc.is_main_process:
    (out / "world.json").write_text(json.dumps({"processes": acc.num_processes}))
