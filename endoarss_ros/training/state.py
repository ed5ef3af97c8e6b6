"""Resumable training state beside a model checkpoint, without pickle.

``<stem>.state.safetensors`` holds the tensors (optimiser moments, task-weighting buffers) and
``<stem>.state.json`` everything else (optimiser hyper-parameters, scheduler, loss scaler,
epoch and step counters, best score, the config the run was started with). The model weights
themselves stay in the model checkpoint format, so a training checkpoint is also a deployable
model. Loading reads JSON and raw tensors only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_FORMAT = "endoarss-training-state"
STATE_VERSION = 1


class TrainingStateError(ValueError):
    """A training-state file is missing, unreadable or does not fit the run."""


def state_paths(checkpoint: str | Path) -> tuple[Path, Path]:
    """The tensor and JSON files that belong to a model checkpoint path."""
    checkpoint = Path(checkpoint)
    stem = checkpoint.with_suffix("")
    return stem.with_name(stem.name + ".state.safetensors"), stem.with_name(
        stem.name + ".state.json"
    )


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class TrainingState:
    """What :func:`read_training_state` returns: tensors by key and the JSON document."""

    tensors: dict[str, torch.Tensor]
    document: dict[str, Any]


def _split_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def write_training_state(
    checkpoint: str | Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    weighting: torch.nn.Module,
    scaler: torch.amp.GradScaler | None,
    progress: dict[str, Any],
) -> tuple[Path, Path]:
    """Write the state files for ``checkpoint`` (atomically, each by temporary file + rename)."""
    tensor_path, json_path = state_paths(checkpoint)
    tensors, optimizer_doc = _split_optimizer(optimizer.state_dict())
    for key, value in weighting.state_dict().items():
        tensors[f"weighting.{key}"] = value.detach().cpu().contiguous()
    document = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "optimizer": optimizer_doc,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "progress": progress,
    }
    text = json.dumps(document, allow_nan=False, indent=1)
    _atomic_write(tensor_path, lambda tmp: save_file(tensors, tmp))
    _atomic_write(json_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return tensor_path, json_path


def read_training_state(checkpoint: str | Path) -> TrainingState:
    """Read the state files of ``checkpoint``; errors name the file."""
    tensor_path, json_path = state_paths(checkpoint)
    for path in (tensor_path, json_path):
        if not path.is_file():
            raise TrainingStateError(
                f"{path}: no training state beside {checkpoint} (only checkpoints written as "
                "'last' by `endoarss train` can be resumed)"
            )
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingStateError(f"{json_path}: unreadable training state ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        raise TrainingStateError(f"{json_path}: not an EndoARSS training state")
    if document.get("format_version") != STATE_VERSION:
        raise TrainingStateError(
            f"{json_path}: training state version {document.get('format_version')!r}; this "
            f"reader reads version {STATE_VERSION}"
        )
    try:
        tensors = load_file(tensor_path)
    except Exception as exc:
        raise TrainingStateError(f"{tensor_path}: unreadable tensors ({exc})") from exc
    return TrainingState(tensors, document)


def restore_optimizer(optimizer: torch.optim.Optimizer, state: TrainingState) -> None:
    """Load the optimiser moments and hyper-parameters saved by :func:`write_training_state`."""
    doc = state.document["optimizer"]
    entries: dict[int, dict[str, Any]] = {}
    for key, value in state.tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            entries.setdefault(int(index), {})[name] = value
    for index, values in doc["scalars"].items():
        entries.setdefault(int(index), {}).update(values)
    groups = doc["param_groups"]
    current = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current]:
        raise TrainingStateError(
            "the saved optimiser state does not fit this run's trainable parameters "
            f"(saved groups {[len(g['params']) for g in groups]}, "
            f"now {[len(g['params']) for g in current]})"
        )
    optimizer.load_state_dict({"state": entries, "param_groups": groups})


def restore_weighting(weighting: torch.nn.Module, state: TrainingState) -> None:
    prefix = "weighting."
    values = {k[len(prefix) :]: v for k, v in state.tensors.items() if k.startswith(prefix)}
    try:
        weighting.load_state_dict(values, strict=True)
    except RuntimeError as exc:
        raise TrainingStateError(f"the saved task-weighting state does not fit: {exc}") from exc
