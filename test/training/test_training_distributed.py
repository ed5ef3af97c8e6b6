"""Two CPU processes under torchrun (gloo) train a few steps and end with equal weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from training_tiny_runs import TINY_RUN

from endoarss_ros.model.checkpoint import load_checkpoint


def test_two_process_torchrun_training_keeps_processes_in_step(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("training_ddp_worker.py")
    overrides = [
        *TINY_RUN,
        "optim.epochs=2",
        "loss.weighting=dbmtl",
        "optim.accumulation_steps=2",
        "optim.batch_size=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(worker),
            str(tmp_path),
            *overrides,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    rank0 = load_file(tmp_path / "rank0.safetensors")
    rank1 = load_file(tmp_path / "rank1.safetensors")
    initial = load_file(tmp_path / "initial.safetensors")
    assert rank0.keys() == rank1.keys() == initial.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0)
    # 16 frames / (2 processes x batch 2 x 2 accumulation) = 2 steps per epoch.
    model, meta = load_checkpoint(tmp_path / "last.safetensors")
    assert meta.training["global_step"] == 4
    assert torch.equal(
        model.state_dict()["seg_head.classifier.weight"], rank0["seg_head.classifier.weight"]
    )
