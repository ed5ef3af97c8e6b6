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
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from endoarss_ros.validation import (
    Choice,
    Integer,
    ListOf,
    MappingOf,
    Number,
    Section,
    Text,
    ValidationError,
    check,
    setting,
)

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


class CheckpointError(ValidationError):
    """The file is not a readable EndoARSS checkpoint, or does not fit the model it describes.

    A metadata error names the field; errors found while reading a file also name the file
    (``source``)."""


def _keys(keys: Sequence[str] | set[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


_CLASS_NAMES = ListOf(Text(non_empty=True), min_length=1, unique=True)


@dataclass(frozen=True)
class CheckpointMetadata(Section):
    """Everything besides weights and architecture that a deployed model needs.

    ``segmentation_colors`` are RGB triples (0-255), one per segmentation class. ``mean``/``std``
    normalise ``[0, 1]`` RGB input. ``input_size`` is the (H, W) the model was trained at
    (multiples of 14 for ``endoarss``; the ``official`` network resizes internally, so any size).
    ``training`` is free-form JSON (epochs, metrics, dataset, ...). ``architecture`` names the
    network (a key of :data:`ARCHITECTURES`).
    """

    ERROR: ClassVar[type[ValidationError]] = CheckpointError

    activity_classes: tuple[str, ...] = setting(
        rule=_CLASS_NAMES, doc="activity class names, in the order of the logits"
    )
    segmentation_classes: tuple[str, ...] = setting(
        rule=_CLASS_NAMES, doc="segmentation class names, by label id"
    )
    segmentation_colors: tuple[tuple[int, int, int], ...] = setting(
        rule=ListOf(
            ListOf(Integer(0, 255), length=3), what="a list of RGB triples of integers 0-255"
        ),
        doc="overlay colour of each segmentation class",
    )
    input_size: tuple[int, int] = setting(
        rule=ListOf(Integer(1), length=2, what="two positive integers (H, W)"),
        doc="input height and width the model was trained at",
    )
    mean: tuple[float, float, float] = setting(
        IMAGENET_MEAN,
        ListOf(Number(), length=3, what="3 finite numbers"),
        doc="per-channel mean subtracted from [0, 1] RGB input",
    )
    std: tuple[float, float, float] = setting(
        IMAGENET_STD,
        ListOf(Number(0, low_open=True), length=3, what="3 positive numbers"),
        doc="per-channel divisor of [0, 1] RGB input",
    )
    training: Mapping[str, Any] = setting(
        rule=MappingOf(), default_factory=dict, doc="free-form JSON about the training run"
    )
    format_version: int = setting(FORMAT_VERSION, Integer(), doc="checkpoint format version")
    architecture: str = setting(
        DEFAULT_ARCHITECTURE, Choice(tuple(ARCHITECTURES)), doc="network the config describes"
    )

    def validate(self) -> None:
        colors, classes = len(self.segmentation_colors), len(self.segmentation_classes)
        if colors != classes:
            self.fail(
                "segmentation_colors", f"has {colors} colours for {classes} segmentation classes"
            )
        if self.architecture != "official":  # the official network resizes to its own size
            try:
                check_input_size(*self.input_size)
            except ValueError as exc:
                self.fail("input_size", f"does not fit the {self.architecture} network: {exc}")
        try:
            json.dumps(self.training, allow_nan=False)
        except (TypeError, ValueError) as exc:
            self.fail("training", f"must be JSON-serialisable: {exc}")

    def to_dict(self) -> dict[str, Any]:
        """The header fields (``format_version`` is written by :func:`save_checkpoint`)."""
        data = super().to_dict()
        del data["format_version"]
        return data


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
    source = str(path)
    if not path.is_file():
        raise CheckpointError("no such file", source=source)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            header = f.metadata()
    except Exception as exc:
        raise CheckpointError(f"not a safetensors file ({exc})", source=source) from exc
    if not header or METADATA_KEY not in header:
        raise CheckpointError(
            "a safetensors file without EndoARSS metadata "
            f"(no '{METADATA_KEY}' entry in its header); not an EndoARSS checkpoint",
            source=source,
        )
    try:
        document = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"EndoARSS metadata is not valid JSON ({exc})", source=source
        ) from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"metadata does not declare format '{FORMAT_NAME}'; not an EndoARSS checkpoint",
            source=source,
        )
    try:
        version = check(
            "format_version", document.get("format_version"), Integer(), CheckpointError
        )
    except CheckpointError as exc:
        raise exc.located(source) from None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version} cannot be read; this reader reads "
            f"version {FORMAT_VERSION}",
            source=source,
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
    source = str(path)
    missing = [k for k in fields if k not in document]
    if missing:
        raise CheckpointError(f"metadata lacks field(s): {', '.join(missing)}", source=source)
    unknown = sorted(set(document) - {*fields, "format", "format_version", "architecture"})
    if unknown:
        raise CheckpointError(f"metadata has unknown field(s): {', '.join(unknown)}", source=source)
    architecture = document.get("architecture", DEFAULT_ARCHITECTURE)
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"unknown architecture {architecture!r}; this reader knows {', '.join(ARCHITECTURES)}",
            source=source,
        )
    try:
        config = ARCHITECTURES[architecture][0].from_dict(document["config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"invalid model config: {exc}", source=source) from exc
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
        raise exc.located(source) from None
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
                raise CheckpointError("; ".join(problems), source=str(path))
            mismatched = []
            for key in sorted(stored):
                shape = tuple(f.get_slice(key).get_shape())
                if shape != tuple(expected[key].shape):
                    mismatched.append(f"{key} (file {shape}, config {tuple(expected[key].shape)})")
            if mismatched:
                raise CheckpointError(
                    "weight shapes do not fit the stored config (class counts "
                    f"{config.num_activities} activities / {config.num_seg_classes} "
                    f"segmentation classes): {_keys(mismatched)}",
                    source=str(path),
                )
            state = {key: f.get_tensor(key) for key in stored}
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read the weights ({exc})", source=str(path)) from exc
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"tensors left unloaded: {_keys(leftover)}", source=str(path))
    return model.eval(), meta
