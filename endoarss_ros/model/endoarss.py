"""The EndoARSS network and its preset registry.

``EndoARSS(x)`` maps a normalised float batch ``B x 3 x H x W`` (H, W multiples of 14) to
``{"activity": B x A logits, "segmentation": B x S x H x W logits}``. Only the adapters, SMA
and the heads are trainable; the DINOv2 weights stay frozen. ``merge()`` folds the shared LoRA
into the frozen weights for inference (see :mod:`endoarss_ros.model.lora` for what happens to
TESLA's task adapters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backbone import DinoV2Backbone
from .config import (
    TASKS,
    ActivityHeadConfig,
    BackboneConfig,
    ConfigError,
    EndoARSSConfig,
    LoRAConfig,
    SegHeadConfig,
    SMAConfig,
    TeslaConfig,
)
from .heads import ActivityHead, SegmentationHead


class EndoARSS(nn.Module):
    """DINOv2 + shared LoRA + TESLA task adapters + SMA + activity and segmentation heads."""

    def __init__(self, config: EndoARSSConfig) -> None:
        super().__init__()
        self.config = config
        self.tasks = TASKS
        self.backbone = DinoV2Backbone(config.backbone, config.lora, config.tesla, TASKS)
        dim, levels = config.backbone.embed_dim, len(config.backbone.feature_levels)
        self.seg_head = SegmentationHead(
            dim, levels, config.num_seg_classes, config.seg_head, config.sma
        )
        self.activity_head = ActivityHead(
            dim, levels, config.num_activities, config.activity_head, config.sma
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {
            "activity": self.activity_head(features["activity"], x),
            "segmentation": self.seg_head(features["segmentation"], tuple(x.shape[-2:]), x),
        }

    @property
    def merged(self) -> bool:
        return self.backbone.merged

    def merge(self) -> EndoARSS:
        """Fold the shared LoRA into the frozen weights (inference); returns ``self``."""
        self.backbone.merge()
        return self

    def unmerge(self) -> EndoARSS:
        """Undo :meth:`merge` to continue training or to save a checkpoint."""
        self.backbone.unmerge()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


_PRESETS: dict[str, Callable[[], EndoARSSConfig]] = {}


def register_preset(
    name: str,
) -> Callable[[Callable[[], EndoARSSConfig]], Callable[[], EndoARSSConfig]]:
    """Decorator adding a config factory to the registry under ``name``."""

    def add(fn: Callable[[], EndoARSSConfig]) -> Callable[[], EndoARSSConfig]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is already registered")
        _PRESETS[name] = fn
        return fn

    return add


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> EndoARSSConfig:
    """A fresh config for a registered preset."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(list_presets())}") from None


def create_model(
    preset_or_config: str | EndoARSSConfig | Mapping[str, Any],
    *,
    num_activities: int | None = None,
    num_seg_classes: int | None = None,
    pretrained: str | Path | None = None,
) -> EndoARSS:
    """Build a model from a preset name, a config or a config dict.

    ``num_activities``/``num_seg_classes`` override the config's class counts. ``pretrained``
    names a local DINOv2 weight file (Meta ``.pth``, timm or Hugging Face safetensors, or a
    Depth-Anything checkpoint) loaded into the frozen backbone; every key must match.
    """
    if isinstance(preset_or_config, str):
        config = get_preset(preset_or_config)
    elif isinstance(preset_or_config, EndoARSSConfig):
        config = preset_or_config
    elif isinstance(preset_or_config, Mapping):
        config = EndoARSSConfig.from_dict(preset_or_config)
    else:
        raise ConfigError(
            "create_model expects a preset name, an EndoARSSConfig or a mapping, "
            f"got {type(preset_or_config).__name__}"
        )
    changes: dict[str, Any] = {}
    if num_activities is not None:
        changes["num_activities"] = num_activities
    if num_seg_classes is not None:
        changes["num_seg_classes"] = num_seg_classes
    if changes:
        config = config.replace(**changes)
    model = EndoARSS(config)
    if pretrained is not None:
        from .weights import load_pretrained

        load_pretrained(model, pretrained)
    return model


def _dinov2_preset(
    name: str,
    embed_dim: int,
    depth: int,
    num_heads: int,
    *,
    reg_tokens: int = 0,
    ffn: str = "mlp",
    mlp_ratio: float = 4.0,
    head_channels: int = 256,
    sma_groups: int = 32,
) -> EndoARSSConfig:
    step = depth // 4
    return EndoARSSConfig(
        name=name,
        backbone=BackboneConfig(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            ffn=ffn,
            reg_tokens=reg_tokens,
            img_size=518,
            feature_levels=(step - 1, 2 * step - 1, 3 * step - 1, depth - 1),
        ),
        lora=LoRAConfig(rank=8, alpha=8.0),
        tesla=TeslaConfig(rank=4, alpha=4.0),
        sma=SMAConfig(groups=sma_groups),
        seg_head=SegHeadConfig(channels=head_channels),
        activity_head=ActivityHeadConfig(channels=head_channels, hidden=256),
    )


_GIANT_MLP_RATIO = 2.66667 * 2  # packed SwiGLU: fc1 1536 -> 8192, fc2 4096 -> 1536 (as timm)

_DINOV2 = {
    # name stem: (embed_dim, depth, heads, extra)
    "vit_small_patch14": (384, 12, 6, {"head_channels": 128, "sma_groups": 16}),
    "vit_base_patch14": (768, 12, 12, {}),
    "vit_large_patch14": (1024, 24, 16, {}),
    "vit_giant_patch14": (1536, 40, 24, {"ffn": "swiglu", "mlp_ratio": _GIANT_MLP_RATIO}),
}


def _register_dinov2() -> None:
    for stem, (dim, depth, heads, extra) in _DINOV2.items():
        for suffix, regs in (("_dinov2", 0), ("_reg4_dinov2", 4)):
            name = stem + suffix
            factory = partial(_dinov2_preset, name, dim, depth, heads, reg_tokens=regs, **extra)
            register_preset(name)(factory)


_register_dinov2()


@register_preset("vit_tiny_patch14")
def _vit_tiny_patch14() -> EndoARSSConfig:
    """Same architecture, 4 narrow blocks: for tests and CPU demos (random weights).

    Both heads' image stems are on: at the demo's 112 px the 8 x 8 token grid alone cannot
    outline anything thinner than a 14-pixel cell, nor keep a cue a few pixels across from being
    averaged away."""
    return EndoARSSConfig(
        name="vit_tiny_patch14",
        backbone=BackboneConfig(
            embed_dim=64,
            depth=4,
            num_heads=2,
            img_size=56,
            feature_levels=(1, 3),
        ),
        lora=LoRAConfig(rank=4, alpha=4.0),
        tesla=TeslaConfig(rank=2, alpha=2.0),
        sma=SMAConfig(groups=8),
        seg_head=SegHeadConfig(channels=32, hires=True, hires_channels=16),
        activity_head=ActivityHeadConfig(channels=64, hidden=64, hires=True, hires_channels=24),
    )
