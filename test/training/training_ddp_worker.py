"""Run by `torchrun` in test_distributed.py: trains a tiny model, then every process writes
its final trainable weights, so the test can check that all processes agree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from endoarss_ros.training.config import load_train_config
from endoarss_ros.training.distributed import shutdown_process
from endoarss_ros.training.trainer import Trainer


def main(out_dir: str, *overrides: str) -> None:
    torch.set_num_threads(1)
    config = load_train_config(None, [f"output_dir={out_dir}", *overrides])
    trainer = Trainer(config)
    initial = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad
    }
    trainer.fit()
    rank = int(os.environ["RANK"])
    final = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    save_file(final, str(Path(out_dir) / f"rank{rank}.safetensors"))
    if rank == 0:
        save_file(initial, str(Path(out_dir) / "initial.safetensors"))
    shutdown_process()


if __name__ == "__main__":
    main(*sys.argv[1:])
