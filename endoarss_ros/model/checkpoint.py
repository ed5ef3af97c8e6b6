"""EndoARSS checkpoints: one ``.safetensors`` file, weights plus JSON metadata in its header.

The safetensors header's ``metadata`` (a ``str -> str`` map) holds one key, ``endoarss``,
whose value is a JSON document::

    {"format": "endoarss-checkpoint", "format_version": 1,
     "architecture": "endoarss" | "official",
     "config": {...EndoARSSConfig.to_dict() or OfficialConfig.to_dict()...},
     "activity_classes": [...], "segmentation_classes": [...],
     "segmentation_colors": [[r, g, b], ...], "mean": [...], "std": [...],
     "input_size": [H, W], "training": {...}}

The tensors are the model's full state dict, frozen DINOv2 weights included (each once), so a
checkpoint needs no other file. Loading parses only the safetensors header and raw tensor
data: nothing is unpickled. Every inconsistency is a :class:`CheckpointError` that says what.

``architecture`` names the network the config describes: ``endoarss`` (this project's model;
the default, so files written before the field existed read unchanged) or ``official`` (the
authors' released network, :mod:`endoarss_ros.model.official`, for converted release weights).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .backbone import check_input_size
from .config import IMAGENET_MEAN, IMAGENET_STD, ConfigError, EndoARSSConfig
from .endoarss import EndoARSS
from .official import OfficialConfig, OfficialEndoARSS

FORMAT_NAME = "endoarss-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "endoarss"

_SHOW = 12

Model = EndoARSS | OfficialEndoARSS
ModelConfig = EndoARSSConfig | OfficialConfig

ARCHITECTURES: dict[str, tuple[type[EndoARSSConfig] | type[OfficialConfig], type[Model]]] = {
    "endoarss": (EndoARSSConfig, EndoARSS),
    "official": (OfficialConfig, OfficialEndoARSS),
}
"""Architecture name -> (config class, model class); ``endoarss`` when a file names none."""
DEFAULT_ARCHITECTURE = "endoarss"


def architecture_of(model: Model) -> str:
    """The :data:`ARCHITECTURES` name of a model instance."""
    for name, (_, cls) in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise CheckpointError(f"not a checkpointable model: {type(model).__name__}")


class CheckpointError(ValueError):
    """The file is not a readable EndoARSS checkpoint, or does not fit the model it describes."""


def _keys(keys: Sequence[str] | set[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def _class_names(name: str, values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise CheckpointError(f"{name} must be a list of strings, got {values!r}")
    names = tuple(values)
    if not names or not all(isinstance(v, str) and v for v in names):
        raise CheckpointError(f"{name} must be a non-empty list of non-empty strings")
    duplicates = sorted({v for v in names if names.count(v) > 1})
    if duplicates:
        raise CheckpointError(f"{name} has duplicate names: {duplicates}")
    return names


def _numbers(name: str, values: object, count: int) -> tuple[float, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != count:
        raise CheckpointError(f"{name} must be {count} numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise CheckpointError(f"{name} must be {count} finite numbers, got {values!r}")
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True)
class CheckpointMetadata:
    """Everything besides weights and architecture that a deployed model needs.

    ``segmentation_colors`` are RGB triples (0-255), one per segmentation class. ``mean``/``std``
    normalise ``[0, 1]`` RGB input. ``input_size`` is the (H, W) the model was trained at
    (multiples of 14 for ``endoarss``; the ``official`` network resizes internally, so any size).
    ``training`` is free-form JSON (epochs, metrics, dataset, ...). ``architecture`` names the
    network (a key of :data:`ARCHITECTURES`).
    """

    activity_classes: tuple[str, ...]
    segmentation_classes: tuple[str, ...]
    segmentation_colors: tuple[tuple[int, int, int], ...]
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    training: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    architecture: str = DEFAULT_ARCHITECTURE

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise lists from JSON into the declared tuples
        if not isinstance(self.architecture, str) or self.architecture not in ARCHITECTURES:
            raise CheckpointError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}"
            )
        set_(self, "activity_classes", _class_names("activity_classes", self.activity_classes))
        set_(
            self,
            "segmentation_classes",
            _class_names("segmentation_classes", self.segmentation_classes),
        )
        colors = self.segmentation_colors
        if isinstance(colors, str) or not isinstance(colors, Sequence):
            raise CheckpointError(
                f"segmentation_colors must be a list of RGB triples, got {colors!r}"
            )
        parsed = []
        for color in colors:
            if (
                isinstance(color, str)
                or not isinstance(color, Sequence)
                or len(color) != 3
                or not all(
                    isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
                )
            ):
                raise CheckpointError(
                    f"segmentation_colors must hold RGB triples of integers 0-255, got {color!r}"
                )
            parsed.append(tuple(color))
        if len(parsed) != len(self.segmentation_classes):
            raise CheckpointError(
                f"segmentation_colors has {len(parsed)} colours for "
                f"{len(self.segmentation_classes)} segmentation classes"
            )
        set_(self, "segmentation_colors", tuple(parsed))
        size = self.input_size
        if (
            isinstance(size, str)
            or not isinstance(size, Sequence)
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)
        ):
            raise CheckpointError(f"input_size must be two integers (H, W), got {size!r}")
        if self.architecture == "official":  # the network resizes to its own input size
            if min(size) <= 0:
                raise CheckpointError(f"input_size must be positive, got {list(size)}")
        else:
            try:
                check_input_size(*size)
            except ValueError as exc:
                raise CheckpointError(f"input_size: {exc}") from None
        set_(self, "input_size", tuple(size))
        set_(self, "mean", _numbers("mean", self.mean, 3))
        std = _numbers("std", self.std, 3)
        if any(s <= 0 for s in std):
            raise CheckpointError(f"std must be positive, got {list(std)}")
        set_(self, "std", std)
        if not isinstance(self.training, Mapping):
            raise CheckpointError(f"training must be a mapping, got {type(self.training).__name__}")
        try:
            json.dumps(dict(self.training), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"training must be JSON-serialisable: {exc}") from None
        if not isinstance(self.format_version, int) or isinstance(self.format_version, bool):
            raise CheckpointError(f"format_version must be an integer, got {self.format_version!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "activity_classes": list(self.activity_classes),
            "segmentation_classes": list(self.segmentation_classes),
            "segmentation_colors": [list(c) for c in self.segmentation_colors],
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": list(self.input_size),
            "training": dict(self.training),
        }


def _check_fits(config: ModelConfig, meta: CheckpointMetadata) -> None:
    config_cls = ARCHITECTURES[meta.architecture][0]
    if not isinstance(config, config_cls):
        raise CheckpointError(
            f"architecture {meta.architecture!r} needs a {config_cls.__name__}, "
            f"got a {type(config).__name__}"
        )
    if len(meta.activity_classes) != config.num_activities:
        raise CheckpointError(
            f"{len(meta.activity_classes)} activity class names for a model with "
            f"{config.num_activities} activities"
        )
    if len(meta.segmentation_classes) != config.num_seg_classes:
        raise CheckpointError(
            f"{len(meta.segmentation_classes)} segmentation class names for a model with "
            f"{config.num_seg_classes} segmentation classes"
        )


def save_checkpoint(path: str | Path, model: Model, metadata: CheckpointMetadata) -> Path:
    """Write ``model`` and ``metadata`` to ``path`` (atomically: a temporary file, then rename).

    The model must be unmerged: a merged model's frozen weights already contain the LoRA
    update, which the stored adapters would then add a second time.
    """
    path = Path(path)
    if model.merged:
        raise CheckpointError("cannot save a merged model; call model.unmerge() first")
    architecture = architecture_of(model)
    if architecture != metadata.architecture:
        raise CheckpointError(
            f"metadata.architecture is {metadata.architecture!r} but the model is {architecture!r}"
        )
    _check_fits(model.config, metadata)
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        **metadata.to_dict(),
    }
    header = {METADATA_KEY: json.dumps(document, allow_nan=False)}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | Path) -> tuple[ModelConfig, CheckpointMetadata]:
    """Parse and validate a checkpoint's header without reading its tensors."""
    path = Path(path)
    document = _read_document(path)
    return _parse_document(document, path)


def _read_document(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            header = f.metadata()
    except Exception as exc:
        raise CheckpointError(f"{path}: not a safetensors file ({exc})") from exc
    if not header or METADATA_KEY not in header:
        raise CheckpointError(
            f"{path}: a safetensors file without EndoARSS metadata "
            f"(no '{METADATA_KEY}' entry in its header); not an EndoARSS checkpoint"
        )
    try:
        document = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: EndoARSS metadata is not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: metadata does not declare format '{FORMAT_NAME}'; not an EndoARSS checkpoint"
        )
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: format_version must be an integer, got {version!r}")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} cannot be read; this reader reads "
            f"version {FORMAT_VERSION}"
        )
    return document


def _parse_document(document: dict[str, Any], path: Path) -> tuple[ModelConfig, CheckpointMetadata]:
    fields = (
        "config",
        "activity_classes",
        "segmentation_classes",
        "segmentation_colors",
        "mean",
        "std",
        "input_size",
        "training",
    )
    missing = [k for k in fields if k not in document]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks field(s): {', '.join(missing)}")
    unknown = sorted(set(document) - {*fields, "format", "format_version", "architecture"})
    if unknown:
        raise CheckpointError(f"{path}: metadata has unknown field(s): {', '.join(unknown)}")
    architecture = document.get("architecture", DEFAULT_ARCHITECTURE)
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"{path}: unknown architecture {architecture!r}; this reader knows "
            f"{', '.join(ARCHITECTURES)}"
        )
    try:
        config = ARCHITECTURES[architecture][0].from_dict(document["config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc
    try:
        meta = CheckpointMetadata(
            activity_classes=document["activity_classes"],
            segmentation_classes=document["segmentation_classes"],
            segmentation_colors=document["segmentation_colors"],
            input_size=document["input_size"],
            mean=document["mean"],
            std=document["std"],
            training=document["training"],
            format_version=document["format_version"],
            architecture=architecture,
        )
        _check_fits(config, meta)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return config, meta


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Model, CheckpointMetadata]:
    """Rebuild the model a checkpoint describes and load its weights onto ``map_location``.

    The model comes back unmerged and in eval mode. Missing or unexpected tensors, or tensors
    whose shapes do not fit the stored config (e.g. a head for another class count), are errors.
    """
    path = Path(path)
    config, meta = read_metadata(path)
    device = torch.device(map_location)
    model_cls = ARCHITECTURES[meta.architecture][1]
    with torch.device("meta"):
        model = model_cls(config)
    expected = model.state_dict()
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            stored = set(f.keys())
            missing = set(expected) - stored
            unexpected = stored - set(expected)
            problems = []
            if missing:
                problems.append(f"missing weight(s): {_keys(missing)}")
            if unexpected:
                problems.append(f"unexpected weight(s): {_keys(unexpected)}")
            if problems:
                raise CheckpointError(f"{path}: " + "; ".join(problems))
            mismatched = []
            for key in sorted(stored):
                shape = tuple(f.get_slice(key).get_shape())
                if shape != tuple(expected[key].shape):
                    mismatched.append(f"{key} (file {shape}, config {tuple(expected[key].shape)})")
            if mismatched:
                raise CheckpointError(
                    f"{path}: weight shapes do not fit the stored config (class counts "
                    f"{config.num_activities} activities / {config.num_seg_classes} "
                    f"segmentation classes): {_keys(mismatched)}"
                )
            state = {key: f.get_tensor(key) for key in stored}
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the weights ({exc})") from exc
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"{path}: tensors left unloaded: {_keys(leftover)}")
    return model.eval(), meta
