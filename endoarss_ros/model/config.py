"""Validated configuration of the EndoARSS network.

Every section is a frozen dataclass that checks itself on construction and names the offending
field (``lora.rank must be a positive integer, got 0``), so a bad YAML file fails before any
tensor is allocated. ``to_dict``/``from_dict`` round-trip through plain JSON/YAML types; the
checkpoint stores ``to_dict()`` verbatim.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

PATCH_SIZE = 14
"""All DINOv2 backbones patchify with 14 x 14 pixels; inputs must be multiples of it."""

TASKS = ("activity", "segmentation")
"""Task names, in the order used everywhere (adapters, outputs, checkpoints)."""

LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")
"""Linears of a ViT block that may carry a LoRA adapter."""

FFN_TYPES = ("mlp", "swiglu")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def is_integer(value: object) -> bool:
    """An int that is not a bool (YAML `true` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(section: str, name: str, value: object) -> None:
    if not is_integer(value) or value <= 0:  # type: ignore[operator]
        raise ConfigError(f"{section}.{name} must be a positive integer, got {value!r}")


def _non_negative_int(section: str, name: str, value: object) -> None:
    if not is_integer(value) or value < 0:  # type: ignore[operator]
        raise ConfigError(f"{section}.{name} must be a non-negative integer, got {value!r}")


def _positive_number(section: str, name: str, value: object) -> None:
    if not is_finite_number(value) or value <= 0:  # type: ignore[operator]
        raise ConfigError(f"{section}.{name} must be a positive number, got {value!r}")


def _probability(section: str, name: str, value: object) -> None:
    if not is_finite_number(value) or not 0.0 <= value < 1.0:  # type: ignore[operator]
        raise ConfigError(f"{section}.{name} must be a number in [0, 1), got {value!r}")


def _boolean(section: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{section}.{name} must be true or false, got {value!r}")


class _Section:
    """Shared ``from_dict``/``to_dict`` for the config dataclasses."""

    SECTION: ClassVar[str]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.SECTION} must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown field(s) in {cls.SECTION}: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(names))})"
            )
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                continue
            value = data[f.name]
            if isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class BackboneConfig(_Section):
    """DINOv2 ViT/14 architecture (explicit, so a checkpoint describes itself without timm's
    registry). ``img_size`` fixes the grid of the stored position embedding (518 -> 37 x 37 for
    the released weights); other input sizes interpolate it on the fly."""

    SECTION: ClassVar[str] = "backbone"

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    ffn: str = "mlp"
    reg_tokens: int = 0
    img_size: int = 518
    feature_levels: tuple[int, ...] = (2, 5, 8, 11)

    def __post_init__(self) -> None:
        s = self.SECTION
        _positive_int(s, "embed_dim", self.embed_dim)
        _positive_int(s, "depth", self.depth)
        _positive_int(s, "num_heads", self.num_heads)
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"{s}.embed_dim ({self.embed_dim}) must be divisible by "
                f"{s}.num_heads ({self.num_heads})"
            )
        _positive_number(s, "mlp_ratio", self.mlp_ratio)
        if self.ffn not in FFN_TYPES:
            raise ConfigError(f"{s}.ffn must be one of {FFN_TYPES}, got {self.ffn!r}")
        if self.ffn == "swiglu" and int(self.embed_dim * self.mlp_ratio) % 2:
            raise ConfigError(
                f"{s}.mlp_ratio must give an even hidden width for a packed SwiGLU, "
                f"got {int(self.embed_dim * self.mlp_ratio)}"
            )
        _non_negative_int(s, "reg_tokens", self.reg_tokens)
        _positive_int(s, "img_size", self.img_size)
        if self.img_size % PATCH_SIZE:
            raise ConfigError(
                f"{s}.img_size must be a multiple of {PATCH_SIZE}, got {self.img_size}"
            )
        levels = self.feature_levels
        if not isinstance(levels, tuple) or not levels or not all(is_integer(i) for i in levels):
            raise ConfigError(
                f"{s}.feature_levels must be a non-empty list of block indices, got {levels!r}"
            )
        if any(i < 0 or i >= self.depth for i in levels):
            raise ConfigError(
                f"{s}.feature_levels must lie in [0, {self.depth - 1}] (depth {self.depth}), "
                f"got {list(levels)}"
            )
        if list(levels) != sorted(set(levels)):
            raise ConfigError(f"{s}.feature_levels must be strictly increasing, got {list(levels)}")

    @property
    def mlp_hidden(self) -> int:
        """Width of the FFN hidden layer, i.e. the input width of ``fc2``."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        return hidden // 2 if self.ffn == "swiglu" else hidden


@dataclass(frozen=True)
class LoRAConfig(_Section):
    """Adapters shared by both tasks, on the chosen linears of every block."""

    SECTION: ClassVar[str] = "lora"

    enabled: bool = True
    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        s = self.SECTION
        _boolean(s, "enabled", self.enabled)
        _positive_int(s, "rank", self.rank)
        _positive_number(s, "alpha", self.alpha)
        _probability(s, "dropout", self.dropout)
        targets = self.targets
        if not isinstance(targets, tuple) or not targets:
            raise ConfigError(f"{s}.targets must be a non-empty list, got {targets!r}")
        bad = [t for t in targets if t not in LORA_TARGETS]
        if bad:
            raise ConfigError(f"{s}.targets may only name {LORA_TARGETS}, got {bad}")
        if len(set(targets)) != len(targets):
            raise ConfigError(f"{s}.targets has duplicates: {list(targets)}")


@dataclass(frozen=True)
class TeslaConfig(_Section):
    """Task-specific low-rank adapters at the feature levels (``enabled=False`` leaves the
    shared-only LoRA model, the ablation)."""

    SECTION: ClassVar[str] = "tesla"

    enabled: bool = True
    rank: int = 4
    alpha: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        s = self.SECTION
        _boolean(s, "enabled", self.enabled)
        _positive_int(s, "rank", self.rank)
        _positive_number(s, "alpha", self.alpha)
        _probability(s, "dropout", self.dropout)


@dataclass(frozen=True)
class SMAConfig(_Section):
    """Spatially-aware multi-scale attention on the heads' feature maps."""

    SECTION: ClassVar[str] = "sma"

    enabled: bool = True
    groups: int = 16

    def __post_init__(self) -> None:
        _boolean(self.SECTION, "enabled", self.enabled)
        _positive_int(self.SECTION, "groups", self.groups)


@dataclass(frozen=True)
class SegHeadConfig(_Section):
    """Multi-level fusion decoder; ``channels`` at stride 14, halved at each x2 upsampling."""

    SECTION: ClassVar[str] = "seg_head"

    channels: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _positive_int(self.SECTION, "channels", self.channels)
        if self.channels % 16:
            raise ConfigError(
                f"{self.SECTION}.channels must be a multiple of 16, got {self.channels}"
            )
        _probability(self.SECTION, "dropout", self.dropout)


@dataclass(frozen=True)
class ActivityHeadConfig(_Section):
    """CLS tokens of every level + attention-pooled patch features -> MLP classifier."""

    SECTION: ClassVar[str] = "activity_head"

    channels: int = 128
    hidden: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _positive_int(self.SECTION, "channels", self.channels)
        if self.channels % 4:
            raise ConfigError(
                f"{self.SECTION}.channels must be a multiple of 4, got {self.channels}"
            )
        _positive_int(self.SECTION, "hidden", self.hidden)
        _probability(self.SECTION, "dropout", self.dropout)


_SECTIONS: dict[str, type[_Section]] = {
    "backbone": BackboneConfig,
    "lora": LoRAConfig,
    "tesla": TeslaConfig,
    "sma": SMAConfig,
    "seg_head": SegHeadConfig,
    "activity_head": ActivityHeadConfig,
}


@dataclass(frozen=True)
class EndoARSSConfig:
    """The whole network. ``name`` records the preset it came from (free text otherwise)."""

    name: str = "custom"
    num_activities: int = 3
    num_seg_classes: int = 7
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    tesla: TeslaConfig = field(default_factory=TeslaConfig)
    sma: SMAConfig = field(default_factory=SMAConfig)
    seg_head: SegHeadConfig = field(default_factory=SegHeadConfig)
    activity_head: ActivityHeadConfig = field(default_factory=ActivityHeadConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        for key in ("num_activities", "num_seg_classes"):
            value = getattr(self, key)
            if not is_integer(value) or value <= 0:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        for key, cls in _SECTIONS.items():
            if not isinstance(getattr(self, key), cls):
                raise ConfigError(
                    f"{key} must be a {cls.__name__}, got {type(getattr(self, key)).__name__}"
                )
        if self.sma.enabled:
            for section in (self.seg_head, self.activity_head):
                if section.channels % self.sma.groups:
                    raise ConfigError(
                        f"sma.groups ({self.sma.groups}) must divide "
                        f"{section.SECTION}.channels ({section.channels})"
                    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EndoARSSConfig:
        """Build from plain data (parsed JSON/YAML); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            section = _SECTIONS.get(key)
            kwargs[key] = section.from_dict(value) if section is not None else value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-serialisable form; ``from_dict(to_dict())`` gives an equal config."""
        out: dict[str, Any] = {
            "name": self.name,
            "num_activities": self.num_activities,
            "num_seg_classes": self.num_seg_classes,
        }
        for key in _SECTIONS:
            out[key] = getattr(self, key).to_dict()
        return out

    def replace(self, **changes: Any) -> EndoARSSConfig:
        """A copy with top-level fields or whole sections replaced (validated again)."""
        return dataclasses.replace(self, **changes)
