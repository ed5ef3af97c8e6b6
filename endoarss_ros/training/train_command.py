"""``endoarss train CONFIG.yaml``: train a model as the YAML describes.

Under ``torchrun --nproc-per-node N -m endoarss_ros.cli train ...`` each process trains on
its shard of every batch and gradients are averaged across processes; only rank 0 writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="training configuration (YAML)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config value, e.g. --set optim.epochs=3 (repeatable; YAML value)",
    )
    parser.add_argument("--resume", type=Path, help="continue from a run's last.safetensors")
    parser.add_argument("--output-dir", type=Path, help="overrides output_dir")


def run(args: argparse.Namespace) -> int:
    from endoarss_ros.training.config import load_train_config
    from endoarss_ros.training.distributed import shutdown_process
    from endoarss_ros.training.trainer import Trainer

    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"resume={args.resume}")
    if args.output_dir is not None:
        overrides.append(f"output_dir={args.output_dir}")
    # Bad input (TrainConfigError: status 2; a dataset, checkpoint or training state that
    # cannot be used: 1) is reported in one line by endoarss_ros.cli.
    try:
        config = load_train_config(args.config, overrides)
        trainer = Trainer(config)
        result = trainer.fit()
    finally:
        shutdown_process()
    if trainer.process.is_main:
        print(
            f"best epoch {result.best_epoch + 1} (selection score {result.best_score:.4f}); "
            f"{result.train_images_per_second:.1f} training images/s; "
            f"checkpoints in {result.run_dir}"
        )
    return 0
