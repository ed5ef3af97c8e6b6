"""Validated configuration of the EndoARSS network.

Every section is a frozen :class:`~endoarss_ros.validation.Section` whose fields carry the
shared rules, so it checks itself on construction and names the offending field
(``lora.rank must be a positive integer, got 0``): a bad YAML file fails before any tensor is
allocated. ``to_dict``/``from_dict`` round-trip through plain JSON/YAML types; the checkpoint
stores ``to_dict()`` verbatim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from endoarss_ros.validation import (
    _REJECT,
    Boolean,
    Choice,
    Integer,
    ListOf,
    Number,
    Section,
    Text,
    ValidationError,
    setting,
)
from endoarss_ros.validation import is_finite_number as is_finite_number  # re-exported
from endoarss_ros.validation import is_integer as is_integer  # re-exported

PATCH_SIZE = 14
"""All DINOv2 backbones patchify with 14 x 14 pixels; inputs must be multiples of it."""

TASKS = ("activity", "segmentation")
"""Task names, in the order used everywhere (adapters, outputs, checkpoints)."""

LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")
"""Linears of a ViT block that may carry a LoRA adapter."""

FFN_TYPES = ("mlp", "swiglu")

POS_EMBED_RESIZES = ("meta", "timm")
"""How the stored position table is interpolated to another input grid (see backbone.py)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConfigError(ValidationError):
    """A model configuration value is invalid; the message names the field."""


class ConfigSection(Section):
    """A section of a model configuration: its errors are :class:`ConfigError`."""

    ERROR: ClassVar[type[ValidationError]] = ConfigError


MAX_WIDTH = 16384
"""Largest token width, channel count or hidden width (ViT-g is 1536 wide, ViT-7B 4096)."""
MAX_DEPTH = 256
"""Largest number of transformer blocks (ViT-g has 40)."""
MAX_HEADS = 256
MAX_IMAGE_SIDE = 4096
"""Largest input side in pixels (the stored position embedding's grid is side / 14)."""
MAX_RANK = 1024
"""Largest adapter rank."""
MAX_RATIO = 64.0
"""Largest FFN width ratio and adapter scale."""
MAX_TOKENS = 64
"""Largest number of register tokens (the _reg4 models have 4)."""
MAX_ACTIVITIES = 4096
MAX_SEG_CLASSES = 255
"""A uint8 mask holds class ids 0-254; 255 means unlabeled."""


@dataclass(frozen=True)
class Capped:
    """``rule`` with an upper bound ``high``. Below it the rule's own wording stands ("must be
    a positive integer, got 0"); above it the message gives the bound ("must be at most 256,
    got 200000")."""

    rule: Any
    high: float

    @property
    def expectation(self) -> str:
        return self.rule.expectation

    def convert(self, value: Any) -> Any:
        converted = self.rule.convert(value)
        if converted is _REJECT or converted > self.high:
            return _REJECT
        return converted

    def explain(self, value: Any) -> tuple[str, str] | None:
        converted = self.rule.convert(value)
        if converted is _REJECT or converted <= self.high:
            return None
        high = int(self.high) if float(self.high).is_integer() else self.high
        return "", f"must be at most {high}, got {value!r}"


# Upper bounds keep a checkpoint's config from describing a network that takes hours or
# petabytes to build before its weights are even compared with it: they are far above any
# EndoARSS/DINOv2 size, and each names its field like every other rule.
_WIDTH = Capped(Integer(1), MAX_WIDTH)
_RANK = Capped(Integer(1), MAX_RANK)
_SCALE = Capped(Number(0, low_open=True), MAX_RATIO)
_ALPHA = Capped(Number(0, low_open=True), MAX_RANK * MAX_RATIO)
_DROPOUT = Number(0, 1, high_open=True)
"""A probability that leaves something: ``[0, 1)``."""


@dataclass(frozen=True)
class BackboneConfig(ConfigSection):
    """DINOv2 ViT/14 architecture (explicit, so a checkpoint describes itself without timm's
    registry). ``img_size`` fixes the grid of the stored position embedding (518 -> 37 x 37 for
    the released weights); other input sizes interpolate it on the fly."""

    SECTION: ClassVar[str] = "backbone"

    embed_dim: int = setting(384, _WIDTH, doc="token width")
    depth: int = setting(12, Capped(Integer(1), MAX_DEPTH), doc="number of transformer blocks")
    num_heads: int = setting(
        6, Capped(Integer(1), MAX_HEADS), doc="attention heads; must divide embed_dim"
    )
    mlp_ratio: float = setting(4.0, _SCALE, doc="FFN hidden width / embed_dim")
    ffn: str = setting("mlp", Choice(FFN_TYPES), doc="mlp (ViT-S/B/L) | swiglu (ViT-g)")
    reg_tokens: int = setting(
        0, Capped(Integer(0), MAX_TOKENS), doc="register tokens (the _reg4 models)"
    )
    img_size: int = setting(
        518,
        Capped(Integer(1), MAX_IMAGE_SIDE),
        doc="input side the position embedding is stored for (x 14)",
    )
    feature_levels: tuple[int, ...] = setting(
        (2, 5, 8, 11),
        ListOf(Integer(), min_length=1, what="a non-empty list of block indices"),
        doc="blocks whose tokens feed the heads (and carry TESLA adapters), increasing",
    )
    pos_embed_resize: str = setting(
        "meta",
        Choice(POS_EMBED_RESIZES),
        doc="position-table interpolation: meta (as DINOv2's code) | timm (checkpoints "
        "stored without this field)",
    )

    @classmethod
    def from_dict(cls, data: object) -> BackboneConfig:
        """As :meth:`Section.from_dict`; a stored config without ``pos_embed_resize`` was
        trained with timm's interpolation, so it keeps it and its outputs stay the same."""
        if isinstance(data, Mapping) and "pos_embed_resize" not in data:
            data = {**data, "pos_embed_resize": "timm"}
        return super().from_dict(data)

    def validate(self) -> None:
        if self.embed_dim % self.num_heads:
            self.fail(
                "embed_dim",
                f"({self.embed_dim}) must be divisible by "
                f"{self.path('num_heads')} ({self.num_heads})",
            )
        if self.ffn == "swiglu" and int(self.embed_dim * self.mlp_ratio) % 2:
            self.fail(
                "mlp_ratio",
                "must give an even hidden width for a packed SwiGLU, "
                f"got {int(self.embed_dim * self.mlp_ratio)}",
            )
        if self.img_size % PATCH_SIZE:
            self.fail("img_size", f"must be a multiple of {PATCH_SIZE}, got {self.img_size}")
        levels = list(self.feature_levels)
        if any(i < 0 or i >= self.depth for i in levels):
            self.fail(
                "feature_levels",
                f"must lie in [0, {self.depth - 1}] (depth {self.depth}), got {levels}",
            )
        if levels != sorted(set(levels)):
            self.fail("feature_levels", f"must be strictly increasing, got {levels}")

    @property
    def mlp_hidden(self) -> int:
        """Width of the FFN hidden layer, i.e. the input width of ``fc2``."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        return hidden // 2 if self.ffn == "swiglu" else hidden


@dataclass(frozen=True)
class LoRAConfig(ConfigSection):
    """Adapters shared by both tasks, on the chosen linears of every block."""

    SECTION: ClassVar[str] = "lora"

    enabled: bool = setting(True, Boolean(), doc="add the shared adapters")
    rank: int = setting(8, _RANK, doc="rank of each adapter")
    alpha: float = setting(8.0, _ALPHA, doc="update scale is alpha / rank")
    dropout: float = setting(0.0, _DROPOUT, doc="dropout on the adapter input, [0, 1)")
    targets: tuple[str, ...] = setting(
        LORA_TARGETS,
        ListOf(Choice(LORA_TARGETS), min_length=1, unique=True),
        doc="linears of each block that carry an adapter",
    )


@dataclass(frozen=True)
class TeslaConfig(ConfigSection):
    """Task-specific low-rank adapters at the feature levels (``enabled=False`` leaves the
    shared-only LoRA model, the ablation)."""

    SECTION: ClassVar[str] = "tesla"

    enabled: bool = setting(True, Boolean(), doc="add the per-task adapters")
    rank: int = setting(4, _RANK, doc="rank of each adapter")
    alpha: float = setting(4.0, _ALPHA, doc="update scale is alpha / rank")
    dropout: float = setting(0.0, _DROPOUT, doc="dropout on the adapter input, [0, 1)")


@dataclass(frozen=True)
class SMAConfig(ConfigSection):
    """Spatially-aware multi-scale attention on the heads' feature maps."""

    SECTION: ClassVar[str] = "sma"

    enabled: bool = setting(True, Boolean(), doc="apply SMA in both heads")
    groups: int = setting(16, _WIDTH, doc="channel groups; must divide the heads' channels")


@dataclass(frozen=True)
class SegHeadConfig(ConfigSection):
    """Multi-level fusion decoder; ``channels`` at stride 14, halved at each upsampling.

    ``hires`` adds a small convolutional stem on the image whose features at 1/2 and 1/4 of
    the input resolution join the decoder as skip connections: the token grid alone cannot
    draw anything finer than a 14-pixel cell (thin instruments, needles, thread). Stored
    configs without the field load with it off, the decoder they were trained with.
    """

    SECTION: ClassVar[str] = "seg_head"

    channels: int = setting(128, _WIDTH, doc="decoder width at stride 14 (x 16)")
    dropout: float = setting(0.1, _DROPOUT, doc="dropout before the classifier, [0, 1)")
    hires: bool = setting(False, Boolean(), doc="image stem with skips at 1/2 and 1/4 resolution")
    hires_channels: int = setting(
        16, _WIDTH, doc="stem width at 1/2 resolution, doubled at 1/4 (x 4)"
    )

    def validate(self) -> None:
        if self.channels % 16:
            self.fail("channels", f"must be a multiple of 16, got {self.channels}")
        if self.hires_channels % 4:
            self.fail("hires_channels", f"must be a multiple of 4, got {self.hires_channels}")


@dataclass(frozen=True)
class ActivityHeadConfig(ConfigSection):
    """CLS tokens of every level + attention-pooled patch features -> MLP classifier.

    ``hires`` adds an image stem of the head's own whose 1/8-resolution features, joined with
    the patch map, are max-pooled: at small inputs the cue that decides an activity can be a
    few pixels inside one 14-pixel token. Stored configs without the field load with it off.
    """

    SECTION: ClassVar[str] = "activity_head"

    channels: int = setting(128, _WIDTH, doc="width of the pooled features (x 4)")
    hidden: int = setting(256, _WIDTH, doc="hidden width of the classifier MLP")
    dropout: float = setting(0.1, _DROPOUT, doc="dropout in the classifier, [0, 1)")
    hires: bool = setting(
        False, Boolean(), doc="image stem whose max-pooled 1/8-resolution features join the MLP"
    )
    hires_channels: int = setting(
        16, _WIDTH, doc="stem width at 1/2 resolution, doubled at 1/4 (x 4)"
    )

    def validate(self) -> None:
        if self.channels % 4:
            self.fail("channels", f"must be a multiple of 4, got {self.channels}")
        if self.hires_channels % 4:
            self.fail("hires_channels", f"must be a multiple of 4, got {self.hires_channels}")


@dataclass(frozen=True)
class EndoARSSConfig(ConfigSection):
    """The whole network. ``name`` records the preset it came from (free text otherwise)."""

    NESTED: ClassVar = {
        "backbone": BackboneConfig,
        "lora": LoRAConfig,
        "tesla": TeslaConfig,
        "sma": SMAConfig,
        "seg_head": SegHeadConfig,
        "activity_head": ActivityHeadConfig,
    }

    name: str = setting("custom", Text(non_empty=True), doc="preset the config came from")
    num_activities: int = setting(3, Capped(Integer(1), MAX_ACTIVITIES), doc="activity classes")
    num_seg_classes: int = setting(
        7,
        Capped(Integer(1), MAX_SEG_CLASSES),
        doc="segmentation classes (ids 0-254; 255 = unlabeled)",
    )
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    tesla: TeslaConfig = field(default_factory=TeslaConfig)
    sma: SMAConfig = field(default_factory=SMAConfig)
    seg_head: SegHeadConfig = field(default_factory=SegHeadConfig)
    activity_head: ActivityHeadConfig = field(default_factory=ActivityHeadConfig)

    def validate(self) -> None:
        if self.sma.enabled:
            for section in (self.seg_head, self.activity_head):
                if section.channels % self.sma.groups:
                    self.fail(
                        "sma.groups",
                        f"({self.sma.groups}) must divide {section.path('channels')} "
                        f"({section.channels})",
                    )

    def replace(self, **changes: Any) -> EndoARSSConfig:
        """A copy with top-level fields or whole sections replaced (validated again)."""
        return dataclasses.replace(self, **changes)
