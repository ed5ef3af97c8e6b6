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
from typing import Any, ClassVar, Self

import yaml

from endoarss_ros.model.config import is_finite_number, is_integer

TASK_NAMES = ("activity", "segmentation")
WEIGHTINGS = ("equal", "uncertainty", "dbmtl", "stch")
SEGMENTATION_LOSSES = ("ce", "ce_dice")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
DATA_SOURCES = ("synthetic", "generic", "official")
OFFICIAL_CLASS_SETS = ("mtlesd", "mtlendovis")
MASK_MAPPINGS = ("official", "identity")
SELECTION_METRICS = ("auto", "activity_accuracy", "activity_macro_f1", "segmentation_miou")


class TrainConfigError(ValueError):
    """A training configuration value is invalid; the message names the field."""


class _Checks:
    """Field checks that report ``section.field``."""

    def __init__(self, section: str) -> None:
        self.section = section

    def fail(self, name: str, expectation: str, value: object) -> None:
        raise TrainConfigError(f"{self.section}.{name} must be {expectation}, got {value!r}")

    def positive_int(self, name: str, value: object) -> None:
        if not is_integer(value) or value <= 0:  # type: ignore[operator]
            self.fail(name, "a positive integer", value)

    def non_negative_int(self, name: str, value: object) -> None:
        if not is_integer(value) or value < 0:  # type: ignore[operator]
            self.fail(name, "a non-negative integer", value)

    def positive_number(self, name: str, value: object) -> None:
        if not is_finite_number(value) or value <= 0:  # type: ignore[operator]
            self.fail(name, "a positive number", value)

    def non_negative_number(self, name: str, value: object) -> None:
        if not is_finite_number(value) or value < 0:  # type: ignore[operator]
            self.fail(name, "a non-negative number", value)

    def fraction(self, name: str, value: object) -> None:
        if not is_finite_number(value) or not 0.0 <= value < 1.0:  # type: ignore[operator]
            self.fail(name, "a number in [0, 1)", value)

    def boolean(self, name: str, value: object) -> None:
        if not isinstance(value, bool):
            self.fail(name, "true or false", value)

    def choice(self, name: str, value: object, choices: Sequence[str]) -> None:
        if value not in choices:
            self.fail(name, f"one of {', '.join(choices)}", value)

    def optional_str(self, name: str, value: object) -> None:
        if value is not None and (not isinstance(value, str) or not value):
            self.fail(name, "a non-empty string or null", value)

    def size(self, name: str, value: object) -> None:
        if (
            not isinstance(value, tuple)
            or len(value) != 2
            or not all(is_integer(v) and v > 0 for v in value)
        ):
            self.fail(name, "two positive integers [height, width]", value)


class _Section:
    """``from_dict`` that rejects unknown keys and names the section in every error."""

    SECTION: ClassVar[str]
    NESTED: ClassVar[dict[str, type[_Section]]] = {}

    @classmethod
    def from_dict(cls, data: object, prefix: str = "") -> Self:
        where = f"{prefix}{cls.SECTION}" if cls.SECTION else prefix.rstrip(".")
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise TrainConfigError(
                f"{where or 'the configuration'} must be a mapping, got {type(data).__name__}"
            )
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise TrainConfigError(
                f"unknown field(s) in {where or 'the configuration'}: {', '.join(unknown)} "
                f"(known: {', '.join(names)})"
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            nested = cls.NESTED.get(key)
            if nested is not None:
                kwargs[key] = nested.from_dict(value, f"{where}." if where else "")
            elif isinstance(value, list):
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelSection(_Section):
    """Which network: a registered preset, edited by ``overrides`` (same keys as the model's
    config, e.g. ``{tesla: {enabled: false}}``), optionally with local DINOv2 weights.

    ``train_backbone`` also trains the ViT's own weights, which the model otherwise freezes:
    meant for random-init backbones (CPU demos, synthetic benchmarks) that have no pretrained
    features to preserve."""

    SECTION: ClassVar[str] = "model"

    preset: str = "vit_tiny_patch14"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    input_size: tuple[int, int] = (112, 112)
    train_backbone: bool = False

    def __post_init__(self) -> None:
        c = _Checks(self.SECTION)
        c.boolean("train_backbone", self.train_backbone)
        if not isinstance(self.preset, str) or not self.preset:
            c.fail("preset", "a preset name", self.preset)
        if not isinstance(self.overrides, Mapping):
            c.fail("overrides", "a mapping of model config sections", self.overrides)
        object.__setattr__(self, "overrides", dict(self.overrides))
        c.optional_str("pretrained", self.pretrained)
        c.size("input_size", self.input_size)
        if any(v % 14 for v in self.input_size):
            c.fail("input_size", "multiples of 14 (the ViT patch size)", list(self.input_size))


@dataclass(frozen=True)
class SyntheticSection(_Section):
    """In-memory procedural scenes: frame counts per split, render size and generator seed.
    The three splits use disjoint seeds, so validation and test frames are never trained on."""

    SECTION: ClassVar[str] = "synthetic"

    train_frames: int = 512
    val_frames: int = 128
    test_frames: int = 256
    image_size: tuple[int, int] = (112, 112)
    seed: int = 0

    def __post_init__(self) -> None:
        c = _Checks("data.synthetic")
        c.positive_int("train_frames", self.train_frames)
        c.positive_int("val_frames", self.val_frames)
        c.positive_int("test_frames", self.test_frames)
        c.size("image_size", self.image_size)
        c.non_negative_int("seed", self.seed)


@dataclass(frozen=True)
class DataSection(_Section):
    """Where frames come from and how the validation split is made.

    ``val_split: null`` carves ``val_fraction`` of the training split (stratified by activity,
    seeded) for model selection; the test split is only read by ``endoarss eval``. ``cache``
    keeps every frame decoded and resized to ``model.input_size`` in memory.
    """

    SECTION: ClassVar[str] = "data"
    NESTED: ClassVar[dict[str, type[_Section]]] = {"synthetic": SyntheticSection}

    source: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    val_split: str | None = None
    val_fraction: float = 0.15
    test_split: str = "test"
    official_classes: str = "mtlesd"
    mask_mapping: str = "official"
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)
    augment: bool = True
    cache: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        c = _Checks(self.SECTION)
        c.choice("source", self.source, DATA_SOURCES)
        c.optional_str("root", self.root)
        if self.source != "synthetic" and self.root is None:
            c.fail("root", f"the dataset folder when data.source is {self.source}", self.root)
        for name in ("train_split", "test_split"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                c.fail(name, "a split name", getattr(self, name))
        c.optional_str("val_split", self.val_split)
        if self.val_split is None and (
            not is_finite_number(self.val_fraction) or not 0.0 < self.val_fraction < 1.0
        ):
            c.fail("val_fraction", "a number in (0, 1)", self.val_fraction)
        c.choice("official_classes", self.official_classes, OFFICIAL_CLASS_SETS)
        c.choice("mask_mapping", self.mask_mapping, MASK_MAPPINGS)
        c.boolean("augment", self.augment)
        c.boolean("cache", self.cache)
        c.non_negative_int("num_workers", self.num_workers)


@dataclass(frozen=True)
class OptimSection(_Section):
    """Optimiser, schedule and batch geometry. ``batch_size`` is per process; one optimiser
    step sees ``batch_size * accumulation_steps * world_size`` frames."""

    SECTION: ClassVar[str] = "optim"

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    batch_size: int = 16
    accumulation_steps: int = 1
    epochs: int = 10
    scheduler: str = "cosine"
    warmup_steps: int = 0
    step_epochs: int = 100
    step_gamma: float = 0.5
    min_lr_ratio: float = 0.0
    grad_clip_norm: float | None = None

    def __post_init__(self) -> None:
        c = _Checks(self.SECTION)
        c.choice("optimizer", self.optimizer, OPTIMIZERS)
        c.positive_number("lr", self.lr)
        c.non_negative_number("weight_decay", self.weight_decay)
        c.fraction("momentum", self.momentum)
        c.positive_int("batch_size", self.batch_size)
        c.positive_int("accumulation_steps", self.accumulation_steps)
        c.positive_int("epochs", self.epochs)
        c.choice("scheduler", self.scheduler, SCHEDULERS)
        c.non_negative_int("warmup_steps", self.warmup_steps)
        c.positive_int("step_epochs", self.step_epochs)
        c.positive_number("step_gamma", self.step_gamma)
        if not is_finite_number(self.min_lr_ratio) or not 0.0 <= self.min_lr_ratio <= 1.0:
            c.fail("min_lr_ratio", "a number in [0, 1]", self.min_lr_ratio)
        if self.grad_clip_norm is not None:
            c.positive_number("grad_clip_norm", self.grad_clip_norm)


@dataclass(frozen=True)
class LossSection(_Section):
    """Which tasks are trained and how their losses are combined.

    ``tasks`` with one entry trains a single-task model (the other head stays frozen).
    ``task_weights`` scale the losses under ``equal`` weighting. DB-MTL's ``dbmtl_beta`` is
    the EMA factor of the task gradients; STCH minimises the sum of log-losses for
    ``stch_warmup_epochs`` epochs, records the mean losses of the last warm-up epoch as the
    nadir point, then minimises the smooth Tchebycheff scalarisation with smoothing ``stch_mu``.
    """

    SECTION: ClassVar[str] = "loss"

    tasks: tuple[str, ...] = TASK_NAMES
    segmentation: str = "ce_dice"
    dice_weight: float = 1.0
    label_smoothing: float = 0.0
    weighting: str = "equal"
    task_weights: Mapping[str, float] = field(
        default_factory=lambda: {"activity": 1.0, "segmentation": 1.0}
    )
    dbmtl_beta: float = 0.9
    stch_mu: float = 1.0
    stch_warmup_epochs: int = 1

    def __post_init__(self) -> None:
        c = _Checks(self.SECTION)
        tasks = self.tasks
        if (
            not isinstance(tasks, tuple)
            or not tasks
            or any(t not in TASK_NAMES for t in tasks)
            or len(set(tasks)) != len(tasks)
        ):
            c.fail("tasks", f"a non-empty list of distinct names from {list(TASK_NAMES)}", tasks)
        object.__setattr__(self, "tasks", tuple(t for t in TASK_NAMES if t in tasks))
        c.choice("segmentation", self.segmentation, SEGMENTATION_LOSSES)
        c.non_negative_number("dice_weight", self.dice_weight)
        c.fraction("label_smoothing", self.label_smoothing)
        c.choice("weighting", self.weighting, WEIGHTINGS)
        weights = self.task_weights
        if not isinstance(weights, Mapping) or set(weights) - set(TASK_NAMES):
            c.fail("task_weights", f"a mapping with keys from {list(TASK_NAMES)}", weights)
        for task, value in weights.items():
            if not is_finite_number(value) or value <= 0:
                c.fail(f"task_weights.{task}", "a positive number", value)
        merged = {"activity": 1.0, "segmentation": 1.0, **weights}
        object.__setattr__(self, "task_weights", {k: float(v) for k, v in merged.items()})
        c.fraction("dbmtl_beta", self.dbmtl_beta)
        c.positive_number("stch_mu", self.stch_mu)
        c.positive_int("stch_warmup_epochs", self.stch_warmup_epochs)


@dataclass(frozen=True)
class LoggingSection(_Section):
    """What a run reports while it trains. ``grad_conflict_every`` (optimiser steps, 0 = off)
    costs one extra backward pass per task on the steps where it is measured."""

    SECTION: ClassVar[str] = "logging"

    progress: bool = True
    tensorboard: bool = True
    log_every: int = 10
    grad_conflict_every: int = 10

    def __post_init__(self) -> None:
        c = _Checks(self.SECTION)
        c.boolean("progress", self.progress)
        c.boolean("tensorboard", self.tensorboard)
        c.positive_int("log_every", self.log_every)
        c.non_negative_int("grad_conflict_every", self.grad_conflict_every)


@dataclass(frozen=True)
class TrainConfig(_Section):
    """A whole training run. ``output_dir`` receives the checkpoints (``best.safetensors``,
    ``last.safetensors`` + ``last.state.*``), ``history.jsonl``, ``summary.json`` and the
    TensorBoard events."""

    SECTION: ClassVar[str] = ""
    NESTED: ClassVar[dict[str, type[_Section]]] = {
        "model": ModelSection,
        "data": DataSection,
        "optim": OptimSection,
        "loss": LossSection,
        "logging": LoggingSection,
    }

    output_dir: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    threads: int | None = None
    deterministic: bool = True
    eval_every: int = 1
    selection_metric: str = "auto"
    resume: str | None = None
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def __post_init__(self) -> None:
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise TrainConfigError(f"output_dir must be a folder path, got {self.output_dir!r}")
        if not is_integer(self.seed) or self.seed < 0:
            raise TrainConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.device not in DEVICES:
            raise TrainConfigError(
                f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"
            )
        if self.amp not in AMP_MODES:
            raise TrainConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.threads is not None and (not is_integer(self.threads) or self.threads <= 0):
            raise TrainConfigError(
                f"threads must be a positive integer or null, got {self.threads!r}"
            )
        if not isinstance(self.deterministic, bool):
            raise TrainConfigError(
                f"deterministic must be true or false, got {self.deterministic!r}"
            )
        if not is_integer(self.eval_every) or self.eval_every <= 0:
            raise TrainConfigError(
                f"eval_every must be a positive integer, got {self.eval_every!r}"
            )
        if self.selection_metric not in SELECTION_METRICS:
            raise TrainConfigError(
                f"selection_metric must be one of {', '.join(SELECTION_METRICS)}, "
                f"got {self.selection_metric!r}"
            )
        wanted = {"activity_accuracy": "activity", "activity_macro_f1": "activity"}
        task = wanted.get(self.selection_metric, "segmentation")
        if self.selection_metric != "auto" and task not in self.loss.tasks:
            raise TrainConfigError(
                f"selection_metric {self.selection_metric} needs the {task} task in loss.tasks"
            )
        if self.resume is not None and (not isinstance(self.resume, str) or not self.resume):
            raise TrainConfigError(f"resume must be a checkpoint path or null, got {self.resume!r}")

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
            raise TrainConfigError(f"{path}: cannot read the configuration ({exc})") from exc
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise TrainConfigError(f"{path}: the configuration must be a mapping")
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
            raise TrainConfigError(f"cannot set {key}: {where} is not a section")
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
