"""Task heads over the backbone's per-level features.

Segmentation: the patch tokens of every level are spatial maps ``B x D x H/14 x W/14`` (token
``(i, j)`` stays at grid position ``(i, j)``; the official code's ``view(B, 256, 16, 48)``
token-as-channel reinterpretation is not reproduced). They are concatenated, fused by a 1x1
and a 3x3 convolution, refined by SMA, upsampled twice by 2 with 3x3 convolutions, classified
by a 1x1 convolution and resized bilinearly to the input size. With ``seg_head.hires`` a
small convolutional stem on the image (two stride-2 stages) provides features at 1/2 and 1/4
of the input resolution; each upsampling step resizes to the matching stem stage and
concatenates it before its 3x3 convolution (a U-Net/ViT-Adapter-style skip path), so edges
finer than a 14-pixel token come from the image itself.

Activity: the CLS tokens of all levels (global, image-level) together with the last level's
patch map projected by a 1x1 convolution, refined by SMA and average-pooled (spatially aware
evidence such as where an instrument is), then an MLP. With ``activity_head.hires`` an image
stem of the head's own adds max-pooled local evidence at 1/8 resolution (see `ActivityHead`).

GroupNorm rather than BatchNorm: training batches at 448 px are small, and the eval-time output
does not depend on running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import LevelFeatures
from .config import ActivityHeadConfig, SegHeadConfig, SMAConfig
from .sma import build_sma


def _conv_norm_act(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=False,
        ),
        nn.GroupNorm(min(32, out_channels // 4), out_channels),
        nn.GELU(),
    )


class ImageStem(nn.Module):
    """Two stride-2 conv stages on the image: ``channels`` at 1/2, ``2 x channels`` at 1/4."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_norm_act(3, channels, 3, stride=2), _conv_norm_act(channels, channels, 3)
        )
        self.stage2 = nn.Sequential(
            _conv_norm_act(channels, 2 * channels, 3, stride=2),
            _conv_norm_act(2 * channels, 2 * channels, 3),
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.stage1(image)
        return half, self.stage2(half)


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SegmentationHead(nn.Module):
    """Multi-level fusion decoder producing ``B x S x H x W`` logits at the input size."""

    def __init__(
        self,
        embed_dim: int,
        num_levels: int,
        num_classes: int,
        cfg: SegHeadConfig,
        sma: SMAConfig,
    ) -> None:
        super().__init__()
        c = cfg.channels
        self.fuse = nn.Sequential(
            _conv_norm_act(embed_dim * num_levels, c, 1),
            _conv_norm_act(c, c, 3),
        )
        self.sma = build_sma(c, sma.groups, sma.enabled)
        s = cfg.hires_channels
        self.stem = ImageStem(s) if cfg.hires else None
        skip_quarter, skip_half = (2 * s, s) if cfg.hires else (0, 0)
        self.up1 = _conv_norm_act(c + skip_quarter, c // 2, 3)
        self.up2 = _conv_norm_act(c // 2 + skip_half, c // 4, 3)
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = nn.Conv2d(c // 4, num_classes, kernel_size=1)

    def forward(
        self,
        levels: Sequence[LevelFeatures],
        size: tuple[int, int],
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``image`` (the network input) is needed only with the high-resolution stem."""
        x = self.fuse(torch.cat([level.patches for level in levels], dim=1))
        x = self.sma(x)
        if self.stem is None:
            x = self.up1(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
            x = self.up2(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        else:
            if image is None:
                raise ValueError("the high-resolution segmentation head needs the input image")
            half, quarter = self.stem(image)
            x = self.up1(torch.cat([_resize(x, quarter), quarter], dim=1))
            x = self.up2(torch.cat([_resize(x, half), half], dim=1))
        x = self.classifier(self.dropout(x))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ActivityHead(nn.Module):
    """Image-level classifier over CLS tokens and SMA-pooled patch features: ``B x A`` logits.

    With ``hires`` an image stem of its own adds local evidence: its 1/8-resolution features,
    joined with the projected patch map, are max-pooled, so a mark a few pixels across (a
    tip pressing the tissue, a glowing jaw) can decide the class instead of being averaged
    away over the frame."""

    def __init__(
        self,
        embed_dim: int,
        num_levels: int,
        num_classes: int,
        cfg: ActivityHeadConfig,
        sma: SMAConfig,
    ) -> None:
        super().__init__()
        c = cfg.channels
        self.project = _conv_norm_act(embed_dim, c, 1)
        self.sma = build_sma(c, sma.groups, sma.enabled)
        features = embed_dim * num_levels + c
        self.stem: ImageStem | None = None
        if cfg.hires:
            s = cfg.hires_channels
            self.stem = ImageStem(s)
            self.local = _conv_norm_act(2 * s, c, 3, stride=2)
            self.mix = _conv_norm_act(2 * c, c, 3)
            features += c
        self.norm = nn.LayerNorm(features)
        self.fc1 = nn.Linear(features, cfg.hidden)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc2 = nn.Linear(cfg.hidden, num_classes)

    def forward(
        self, levels: Sequence[LevelFeatures], image: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``image`` (the network input) is needed only with the high-resolution stem."""
        cls = torch.cat([level.cls for level in levels], dim=1)
        patches = self.sma(self.project(levels[-1].patches))
        parts = [cls, patches.mean(dim=(2, 3))]
        if self.stem is not None:
            if image is None:
                raise ValueError("the high-resolution activity head needs the input image")
            local = self.local(self.stem(image)[1])
            local = self.mix(torch.cat([local, _resize(patches, local)], dim=1))
            parts.append(local.amax(dim=(2, 3)))
        x = self.norm(torch.cat(parts, dim=1))
        return self.fc2(self.dropout(self.act(self.fc1(x))))
