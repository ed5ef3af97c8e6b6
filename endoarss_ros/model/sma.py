"""SMA: spatially-aware multi-scale attention, after EMA (Ouyang et al., ICASSP 2023).

Channels are split into ``groups`` sub-features of ``c = C / groups`` channels each, and every
group is re-weighted by one spatial map:

1. 1x1 branch: average-pool along W and along H, one shared 1x1 conv over both directional
   descriptors, sigmoid gates along H and W, then a per-channel GroupNorm;
2. 3x3 branch: a 3x3 conv (a second receptive-field scale);
3. cross-spatial learning: each branch's globally pooled channel descriptor, softmax-normalised,
   weights the other branch's feature map; the sum is a 1 x H x W map per group;
4. output = input * sigmoid(map).

Parameters per module: ``10 c^2 + 4 c``. It runs on the heads' feature maps at stride 14
(not on the image), where it is cheap and its global context matters.
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialMultiScaleAttention(nn.Module):
    """Grouped multi-scale attention with cross-spatial weighting; output shape = input shape."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        if channels <= 0 or groups <= 0 or channels % groups:
            raise ValueError(
                f"SMA groups ({groups}) must be positive and divide channels ({channels})"
            )
        self.channels = channels
        self.groups = groups
        c = channels // groups
        self.conv1x1 = nn.Conv2d(c, c, kernel_size=1)
        self.conv3x3 = nn.Conv2d(c, c, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        g = x.reshape(batch * self.groups, channels // self.groups, height, width)
        along_h = g.mean(dim=3, keepdim=True)  # n, c, H, 1
        along_w = g.mean(dim=2, keepdim=True).transpose(2, 3)  # n, c, W, 1
        gates = self.conv1x1(torch.cat([along_h, along_w], dim=2)).sigmoid()
        gate_h, gate_w = gates.split([height, width], dim=2)
        local = self.norm(g * gate_h * gate_w.transpose(2, 3))
        context = self.conv3x3(g)
        weight_local = local.mean(dim=(2, 3)).softmax(dim=1)  # n, c
        weight_context = context.mean(dim=(2, 3)).softmax(dim=1)
        spatial = torch.einsum("nc,nchw->nhw", weight_local, context) + torch.einsum(
            "nc,nchw->nhw", weight_context, local
        )
        return (g * spatial.unsqueeze(1).sigmoid()).reshape(batch, channels, height, width)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}"


def build_sma(channels: int, groups: int, enabled: bool) -> nn.Module:
    """SMA, or an identity when the ablation switch removes it."""
    return SpatialMultiScaleAttention(channels, groups) if enabled else nn.Identity()
