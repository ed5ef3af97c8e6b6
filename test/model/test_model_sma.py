"""SMA: structure, parameter count, a direct re-statement of the computation, the switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from endoarss_ros.model.config import EndoARSSConfig, SMAConfig
from endoarss_ros.model.endoarss import EndoARSS
from endoarss_ros.model.sma import SpatialMultiScaleAttention, build_sma


def _reference(module: SpatialMultiScaleAttention, x: torch.Tensor) -> torch.Tensor:
    """The EMA computation written out group by group, with explicit loops and pooling layers."""
    b, c, h, w = x.shape
    cg = c // module.groups
    out = torch.empty_like(x)
    for n in range(b):
        for g in range(module.groups):
            xg = x[n : n + 1, g * cg : (g + 1) * cg]
            pooled_h = nn.functional.adaptive_avg_pool2d(xg, (h, 1))
            pooled_w = nn.functional.adaptive_avg_pool2d(xg, (1, w)).permute(0, 1, 3, 2)
            both = module.conv1x1(torch.cat([pooled_h, pooled_w], dim=2))
            gate_h, gate_w = both[:, :, :h], both[:, :, h:].permute(0, 1, 3, 2)
            x1 = module.norm(xg * gate_h.sigmoid() * gate_w.sigmoid())
            x2 = module.conv3x3(xg)
            a1 = torch.softmax(x1.mean(dim=(2, 3)), dim=1)  # 1 x cg
            a2 = torch.softmax(x2.mean(dim=(2, 3)), dim=1)
            spatial = a1 @ x2.reshape(cg, h * w) + a2 @ x1.reshape(cg, h * w)
            out[n, g * cg : (g + 1) * cg] = xg[0] * spatial.reshape(1, h, w).sigmoid()
    return out


def test_output_matches_the_written_out_computation() -> None:
    module = SpatialMultiScaleAttention(12, groups=3)
    with torch.no_grad():
        module.norm.weight.normal_()
        module.norm.bias.normal_()
    x = torch.randn(2, 12, 5, 7)
    out = module(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _reference(module, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("channels", "groups"), [(64, 32), (32, 8), (49, 1), (256, 32)])
def test_parameter_count_is_10c2_plus_4c(channels: int, groups: int) -> None:
    c = channels // groups
    module = SpatialMultiScaleAttention(channels, groups)
    assert sum(p.numel() for p in module.parameters()) == 10 * c * c + 4 * c


def test_zero_branches_give_a_constant_half_gate() -> None:
    """With both convs and the norm's affine at zero the spatial map is 0: output = x * 0.5."""
    module = SpatialMultiScaleAttention(16, groups=4)
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    x = torch.randn(3, 16, 6, 4)
    torch.testing.assert_close(module(x), x * 0.5)


def test_groups_must_divide_channels() -> None:
    with pytest.raises(ValueError, match=r"SMA groups \(5\) must be positive and divide"):
        SpatialMultiScaleAttention(16, groups=5)


def test_is_trainable_and_passes_gradient() -> None:
    module = SpatialMultiScaleAttention(8, groups=2)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    module(x).square().sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    for param in module.parameters():
        assert param.grad is not None and torch.count_nonzero(param.grad) > 0


def test_switch_removes_sma_from_the_model(tiny_config: EndoARSSConfig) -> None:
    assert isinstance(build_sma(8, 2, enabled=False), nn.Identity)
    with_sma = EndoARSS(tiny_config)
    without = EndoARSS(tiny_config.replace(sma=SMAConfig(enabled=False)))
    assert isinstance(with_sma.seg_head.sma, SpatialMultiScaleAttention)
    assert isinstance(with_sma.activity_head.sma, SpatialMultiScaleAttention)
    assert isinstance(without.seg_head.sma, nn.Identity)
    assert isinstance(without.activity_head.sma, nn.Identity)
    assert not any(".sma." in n for n, _ in without.named_parameters())
    out = without.eval()(torch.randn(1, 3, 56, 56))
    assert out["segmentation"].shape == (1, 7, 56, 56)
