"""The training configuration: one YAML file, validated into frozen dataclasses.

Every value is checked when the file is read, and an error names the field as it is written
in the file (``optim.lr must be a positive number, got -0.1``), so a typo fails before any
data is read or any tensor is allocated. ``--set section.field=value`` on the command line
overrides single values (the value is parsed as YAML).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from endoarss_ros.validation import (
    Boolean,
    Choice,
    Integer,
    ListOf,
    MappingOf,
    Number,
    Section,
    Text,
    ValidationError,
    setting,
)

TASK_NAMES = ("activity", "segmentation")
WEIGHTINGS = ("equal", "uncertainty", "dbmtl", "stch")
SEGMENTATION_LOSSES = ("ce", "ce_dice")
OPTIMIZERS = ("adamw", "adam", "sgd")
WEIGHT_DECAY_SCOPES = ("matrices", "all")
ARCHITECTURES = ("endoarss", "official")
NORMALIZATIONS = ("imagenet", "none")
IMAGE_RESIZES = ("area", "pil_bicubic")
SCHEDULERS = ("cosine", "step", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
DATA_SOURCES = ("synthetic", "generic", "official")
OFFICIAL_CLASS_SETS = ("mtlesd", "mtlendovis")
MASK_MAPPINGS = ("official", "identity")
SELECTION_METRICS = ("auto", "activity_accuracy", "activity_macro_f1", "segmentation_miou")

_POSITIVE_INT = Integer(1)
_NON_NEGATIVE_INT = Integer(0)
_POSITIVE_NUMBER = Number(0, low_open=True)
_NON_NEGATIVE_NUMBER = Number(0)
_FRACTION = Number(0, 1, high_open=True)
_NAME = Text(non_empty=True)
_OPTIONAL_NAME = Text(non_empty=True, optional=True)
_SIZE = ListOf(_POSITIVE_INT, length=2, what="two positive integers [height, width]")


class TrainConfigError(ValidationError):
    """A training configuration value is invalid; the message names the field."""


class TrainSection(Section):
    """A section of the training configuration: its errors are :class:`TrainConfigError`."""

    ERROR: ClassVar[type[ValidationError]] = TrainConfigError


@dataclass(frozen=True)
class ModelSection(TrainSection):
    """Which network: a registered preset, edited by ``overrides`` (same keys as the model's
    config, e.g. ``{tesla: {enabled: false}}``), optionally with local DINOv2 weights.

    ``architecture: official`` trains the authors' released network
    (:mod:`endoarss_ros.model.official`) instead of the project's: ``preset`` then names one of
    its presets (``endoarss_official_vitb14``, ``endoarss_official_tiny``) and ``overrides``
    edits its flat config (e.g. ``{lora_rank: 8}``); it resizes its input internally, so
    ``input_size`` need not be a multiple of 14 (the release feeds 244 x 244).
    ``normalization: none`` feeds RGB scaled to [0, 1] only, as the release does.

    ``train_backbone`` also trains the ViT's own weights, which the model otherwise freezes:
    meant for random-init backbones (CPU demos, synthetic benchmarks) that have no pretrained
    features to preserve."""

    SECTION: ClassVar[str] = "model"

    architecture: str = setting(
        "endoarss",
        Choice(ARCHITECTURES),
        doc="endoarss (this project's network) | official (the authors' released network)",
    )
    preset: str = setting("vit_tiny_patch14", _NAME, doc="registered model preset")
    overrides: Mapping[str, Any] = setting(
        rule=MappingOf(what="a mapping of model config sections"),
        default_factory=dict,
        doc="model config values laid over the preset, e.g. {tesla: {enabled: false}}",
    )
    pretrained: str | None = setting(
        None, _OPTIONAL_NAME, doc="local DINOv2 weight file for the frozen backbone"
    )
    input_size: tuple[int, int] = setting(
        (112, 112),
        _SIZE,
        doc="[height, width] frames are resized to; multiples of 14 (architecture endoarss)",
    )
    normalization: str = setting(
        "imagenet",
        Choice(NORMALIZATIONS),
        doc="imagenet (mean/std) | none (RGB scaled to [0, 1] only, as the release)",
    )
    train_backbone: bool = setting(
        False, Boolean(), doc="also train the ViT's own weights (random-init backbones)"
    )

    def validate(self) -> None:
        # The released network resizes every input to its own size; any size feeds it.
        if self.architecture == "endoarss" and any(v % 14 for v in self.input_size):
            self.fail(
                "input_size",
                f"must be multiples of 14 (the ViT patch size), got {list(self.input_size)}",
            )


@dataclass(frozen=True)
class SyntheticSection(TrainSection):
    """In-memory procedural scenes: frame counts per split, render size and generator seed.
    The three splits use disjoint seeds, so validation and test frames are never trained on."""

    SECTION: ClassVar[str] = "data.synthetic"

    train_frames: int = setting(512, _POSITIVE_INT, doc="frames of the training split")
    val_frames: int = setting(128, _POSITIVE_INT, doc="frames of the validation split")
    test_frames: int = setting(256, _POSITIVE_INT, doc="frames of the test split")
    image_size: tuple[int, int] = setting((112, 112), _SIZE, doc="[height, width] rendered")
    seed: int = setting(0, _NON_NEGATIVE_INT, doc="generator seed")


@dataclass(frozen=True)
class DataSection(TrainSection):
    """Where frames come from and how the validation split is made.

    ``val_split: null`` carves ``val_fraction`` of the training split (stratified by activity,
    seeded) for model selection; the test split is only read by ``endoarss eval``. ``cache``
    keeps every frame decoded and resized to ``model.input_size`` in memory.
    """

    SECTION: ClassVar[str] = "data"
    NESTED: ClassVar = {"synthetic": SyntheticSection}

    source: str = setting("synthetic", Choice(DATA_SOURCES), doc=" | ".join(DATA_SOURCES))
    root: str | None = setting(
        None, _OPTIONAL_NAME, doc="dataset folder; required unless source is synthetic"
    )
    train_split: str = setting("train", _NAME, doc="split trained on")
    val_split: str | None = setting(
        None, _OPTIONAL_NAME, doc="split for model selection; null carves val_fraction"
    )
    val_fraction: float = setting(
        0.15,
        Number(0, 1, low_open=True, high_open=True),
        doc="part of the training split held out when val_split is null",
    )
    test_split: str = setting("test", _NAME, doc="split read by endoarss eval")
    official_classes: str = setting(
        "mtlesd", Choice(OFFICIAL_CLASS_SETS), doc="class set of the official datasets"
    )
    mask_mapping: str = setting(
        "official", Choice(MASK_MAPPINGS), doc="how stored mask values map to class ids"
    )
    image_resize: str = setting(
        "area",
        Choice(IMAGE_RESIZES),
        doc="filter resizing frames to model.input_size: area (OpenCV area when shrinking, "
        "else bilinear) | pil_bicubic (Pillow's bicubic, as the release); masks always use "
        "pixel-centre nearest",
    )
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)
    augment: bool = setting(True, Boolean(), doc="random augmentation of training frames")
    cache: bool = setting(True, Boolean(), doc="keep decoded, resized frames in memory")
    num_workers: int = setting(0, _NON_NEGATIVE_INT, doc="data loader worker processes")

    def validate(self) -> None:
        if self.source != "synthetic" and self.root is None:
            self.fail(
                "root",
                f"must be the dataset folder when data.source is {self.source}, got None",
            )


@dataclass(frozen=True)
class OptimSection(TrainSection):
    """Optimiser, schedule and batch geometry. ``batch_size`` is per process; one optimiser
    step sees ``batch_size * accumulation_steps * world_size`` frames."""

    SECTION: ClassVar[str] = "optim"

    optimizer: str = setting("adamw", Choice(OPTIMIZERS), doc=" | ".join(OPTIMIZERS))
    lr: float = setting(1e-3, _POSITIVE_NUMBER, doc="peak learning rate")
    weight_decay: float = setting(
        1e-4, _NON_NEGATIVE_NUMBER, doc="weight decay (decoupled for adamw, L2 for adam/sgd)"
    )
    weight_decay_on: str = setting(
        "matrices",
        Choice(WEIGHT_DECAY_SCOPES),
        doc="matrices (tensors of 2+ dims; norms and biases exempt) | all (every trainable "
        "tensor, as the release)",
    )
    momentum: float = setting(0.9, _FRACTION, doc="SGD momentum, [0, 1)")
    batch_size: int = setting(16, _POSITIVE_INT, doc="frames per process and step")
    accumulation_steps: int = setting(1, _POSITIVE_INT, doc="batches per optimiser step")
    epochs: int = setting(10, _POSITIVE_INT, doc="passes over the training split")
    scheduler: str = setting("cosine", Choice(SCHEDULERS), doc=" | ".join(SCHEDULERS))
    warmup_steps: int = setting(0, _NON_NEGATIVE_INT, doc="linear warm-up, optimiser steps")
    step_epochs: int = setting(100, _POSITIVE_INT, doc="epochs between decays (step)")
    step_gamma: float = setting(0.5, _POSITIVE_NUMBER, doc="decay factor (step)")
    min_lr_ratio: float = setting(0.0, Number(0, 1), doc="final / peak learning rate, [0, 1]")
    grad_clip_norm: float | None = setting(
        None, Number(0, low_open=True, optional=True), doc="gradient norm clip; null = off"
    )


@dataclass(frozen=True)
class LossSection(TrainSection):
    """Which tasks are trained and how their losses are combined.

    ``tasks`` with one entry trains a single-task model (the other head stays frozen).
    ``task_weights`` scale the losses under ``equal`` weighting. DB-MTL's ``dbmtl_beta`` is
    the EMA factor of the task gradients; STCH minimises the sum of log-losses for
    ``stch_warmup_epochs`` epochs, records the mean losses of the last warm-up epoch as the
    nadir point, then minimises the smooth Tchebycheff scalarisation with smoothing ``stch_mu``.
    """

    SECTION: ClassVar[str] = "loss"

    tasks: tuple[str, ...] = setting(
        TASK_NAMES,
        ListOf(Choice(TASK_NAMES), min_length=1, unique=True),
        doc="tasks trained (kept in the order activity, segmentation)",
    )
    segmentation: str = setting(
        "ce_dice", Choice(SEGMENTATION_LOSSES), doc=" | ".join(SEGMENTATION_LOSSES)
    )
    dice_weight: float = setting(1.0, _NON_NEGATIVE_NUMBER, doc="weight of Dice in ce_dice")
    class_weight_power: float = setting(
        0.0,
        Number(0, 1),
        doc="segmentation class weights frequency^-power from the training masks, [0, 1]; "
        "0 = unweighted, 0.5 = inverse square root",
    )
    focal_gamma: float = setting(
        0.0, Number(0, 5), doc="focal exponent of the pixel cross-entropy, [0, 5]; 0 = plain"
    )
    label_smoothing: float = setting(0.0, _FRACTION, doc="activity label smoothing, [0, 1)")
    weighting: str = setting("equal", Choice(WEIGHTINGS), doc=" | ".join(WEIGHTINGS))
    task_weights: Mapping[str, float] = setting(
        rule=MappingOf(TASK_NAMES, _POSITIVE_NUMBER),
        default_factory=lambda: {"activity": 1.0, "segmentation": 1.0},
        doc="loss scale per task under equal weighting; missing tasks weigh 1",
    )
    dbmtl_beta: float = setting(0.9, _FRACTION, doc="EMA factor of DB-MTL, [0, 1)")
    stch_mu: float = setting(1.0, _POSITIVE_NUMBER, doc="STCH smoothing")
    stch_warmup_epochs: int = setting(1, _POSITIVE_INT, doc="STCH epochs before the nadir")

    def __post_init__(self) -> None:
        super().__post_init__()
        # Canonical forms, so equal configs compare equal: task order, every task weighted.
        object.__setattr__(self, "tasks", tuple(t for t in TASK_NAMES if t in self.tasks))
        weights = {"activity": 1.0, "segmentation": 1.0, **self.task_weights}
        object.__setattr__(self, "task_weights", weights)


@dataclass(frozen=True)
class LoggingSection(TrainSection):
    """What a run reports while it trains. ``grad_conflict_every`` (optimiser steps, 0 = off)
    costs one extra backward pass per task on the steps where it is measured."""

    SECTION: ClassVar[str] = "logging"

    progress: bool = setting(True, Boolean(), doc="progress bars (on a terminal)")
    tensorboard: bool = setting(True, Boolean(), doc="write TensorBoard events")
    log_every: int = setting(10, _POSITIVE_INT, doc="optimiser steps between log lines")
    grad_conflict_every: int = setting(
        10, _NON_NEGATIVE_INT, doc="optimiser steps between gradient-conflict probes; 0 = off"
    )


@dataclass(frozen=True)
class TrainConfig(TrainSection):
    """A whole training run. ``output_dir`` receives the checkpoints (``best.safetensors``,
    ``last.safetensors`` + ``last.state.*``), ``history.jsonl``, ``summary.json`` and the
    TensorBoard events."""

    NESTED: ClassVar = {
        "model": ModelSection,
        "data": DataSection,
        "optim": OptimSection,
        "loss": LossSection,
        "logging": LoggingSection,
    }

    output_dir: str = setting("runs/train", _NAME, doc="folder of checkpoints and reports")
    seed: int = setting(0, _NON_NEGATIVE_INT, doc="seed of every random generator")
    device: str = setting("auto", Choice(DEVICES), doc=" | ".join(DEVICES))
    amp: str = setting("auto", Choice(AMP_MODES), doc=" | ".join(AMP_MODES))
    threads: int | None = setting(
        None, Integer(1, optional=True), doc="PyTorch CPU threads; null = its default"
    )
    deterministic: bool = setting(True, Boolean(), doc="deterministic kernels")
    eval_every: int = setting(1, _POSITIVE_INT, doc="epochs between validations")
    selection_metric: str = setting(
        "auto", Choice(SELECTION_METRICS), doc="validation metric that picks best.safetensors"
    )
    resume: str | None = setting(None, _OPTIONAL_NAME, doc="checkpoint to resume from")
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def validate(self) -> None:
        if self.data.augment and any(v % 14 for v in self.model.input_size):
            self.fail(
                "data.augment",
                "must be false when model.input_size is not a multiple of 14 "
                f"({list(self.model.input_size)}): the training augmentation takes "
                "multiples of 14 only",
            )
        wanted = {"activity_accuracy": "activity", "activity_macro_f1": "activity"}
        task = wanted.get(self.selection_metric, "segmentation")
        if self.selection_metric != "auto" and task not in self.loss.tasks:
            self.fail(
                "selection_metric",
                f"{self.selection_metric} needs the {task} task in loss.tasks",
            )

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def load_train_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Read a YAML file (or start from ``base``), apply ``key.path=value`` overrides, validate."""
    data: dict[str, Any] = copy.deepcopy(dict(base or {}))
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TrainConfigError(
                f"cannot read the configuration ({exc})", source=str(path)
            ) from exc
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"not valid YAML ({exc})", source=str(path)) from exc
        except UnicodeDecodeError as exc:
            raise TrainConfigError(f"not a YAML text file ({exc})", source=str(path)) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise TrainConfigError("the configuration must be a mapping", source=str(path))
        data = deep_merge(data, loaded)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    try:
        return TrainConfig.from_dict(data)
    except TypeError as exc:  # a nested section given where a value was expected, and so on
        raise TrainConfigError(str(exc)) from exc


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> ``("optim.lr", 0.0003)``; the value is read as YAML."""
    if "=" not in item:
        raise TrainConfigError(f"override {item!r} must look like section.field=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise TrainConfigError(f"override {item!r} has an empty field name")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way."""
    parts = key.split(".")
    node = data
    for index, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: index + 1])
            raise TrainConfigError(where, f"is not a section, so {key} cannot be set")
        node = child
    node[parts[-1]] = value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base``; mappings merge key by key, everything else replaces."""
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
