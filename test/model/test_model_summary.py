"""Parameter table per component and the summary entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from endoarss_ros.model.config import EndoARSSConfig, SMAConfig, TeslaConfig
from endoarss_ros.model.endoarss import EndoARSS
from endoarss_ros.model.summary import (
    COMPONENTS,
    component_of,
    main,
    parameter_summary,
    time_forward,
)


def test_components_partition_the_parameters(tiny_config: EndoARSSConfig) -> None:
    model = EndoARSS(tiny_config)
    rows = {row.name: row for row in parameter_summary(model)}
    assert tuple(rows) == COMPONENTS
    assert sum(r.total for r in rows.values()) == sum(p.numel() for p in model.parameters())
    assert sum(r.trainable for r in rows.values()) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    assert rows["backbone"].trainable == 0
    assert rows["backbone"].total == sum(
        v.numel() for v in model.backbone.frozen_state_dict().values()
    )
    for name in ("shared adapters", "task adapters", "SMA", "seg head", "activity head"):
        assert rows[name].total == rows[name].trainable > 0

    backbone = tiny_config.backbone
    rank, levels = tiny_config.tesla.rank, len(backbone.feature_levels)
    assert rows["task adapters"].total == 2 * levels * rank * (
        backbone.mlp_hidden + backbone.embed_dim
    )
    d, h, r = backbone.embed_dim, backbone.mlp_hidden, tiny_config.lora.rank
    per_block = r * ((d + 3 * d) + (d + d) + (d + h) + (h + d))  # qkv, proj, fc1, fc2
    assert rows["shared adapters"].total == backbone.depth * per_block
    widths = (tiny_config.seg_head.channels, tiny_config.activity_head.channels)
    per_group = [width // tiny_config.sma.groups for width in widths]
    assert rows["SMA"].total == sum(10 * c * c + 4 * c for c in per_group)


def test_switches_empty_their_components(tiny_config: EndoARSSConfig) -> None:
    config = tiny_config.replace(tesla=TeslaConfig(enabled=False), sma=SMAConfig(enabled=False))
    rows = {row.name: row for row in parameter_summary(EndoARSS(config))}
    assert rows["task adapters"].total == 0
    assert rows["SMA"].total == 0


def test_unknown_parameter_names_are_refused() -> None:
    with pytest.raises(ValueError, match="no known component"):
        component_of("decoder.weight")


def test_time_forward_merges_and_times(tiny_config: EndoARSSConfig) -> None:
    model = EndoARSS(tiny_config)
    timing = time_forward(model, 56, 84, repeats=2)
    assert model.merged and not model.training
    assert timing.repeats == 2 and 0 < timing.best_ms <= timing.median_ms


def test_main_prints_table_and_timing(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    assert main(["vit_tiny_patch14", "--height", "56", "--width", "70", "--repeats", "1"]) == 0
    torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "preset vit_tiny_patch14, input 56x70" in out
    for component in COMPONENTS:
        assert component in out
    assert "CPU forward (batch 1" in out and "median" in out


def test_main_rejects_an_unknown_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vit_nonexistent", "--no-timing"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_module_entry_point_lists_presets() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "endoarss_ros.model.summary", "--list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "vit_base_patch14_reg4_dinov2" in result.stdout.split()
    assert "vit_tiny_patch14" in result.stdout.split()
