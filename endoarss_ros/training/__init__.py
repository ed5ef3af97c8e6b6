"""Training and evaluation of the EndoARSS model; ROS-free.

- `config`: the training YAML as validated dataclasses (`load_train_config`).
- `data`: splits (validation carved when missing), in-memory frame cache, batches, shards.
- `losses`, `weighting`: per-task losses; equal, uncertainty, DB-MTL and STCH task weighting.
- `trainer`: the training loop (`Trainer`), AMP, accumulation, resume, torchrun processes.
- `distributed`, `state`: process group and gradient averaging; resumable state files.
- `metrics`, `evaluation`, `reports`: metrics, evaluation passes, report folders with plots.
- `ablation`: the ablation table; `train_command`, `eval_command`: the CLI subcommands.

Nothing is imported here, so that using one module does not pay for the others.
"""
