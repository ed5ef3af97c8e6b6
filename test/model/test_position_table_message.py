"""A pretrained position table for another grid is refused with the grid it really holds: a
37 x 37 table with its class-token row (DINOv2 at 518) reads as "a 37x37 grid (+1 class
token)", whichever row the model's layout expects first, never as a count of positions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from endoarss_ros.model.backbone import build_vit, dinov2_resize_pos_embed
from endoarss_ros.model.config import EndoARSSConfig
from endoarss_ros.model.weights import (
    PretrainedWeightsError,
    describe_position_table,
    load_pretrained,
)


@pytest.mark.parametrize(
    ("rows", "class_rows", "expected"),
    [
        (1370, 1, "a 37x37 grid (+1 class token)"),
        (1370, 0, "a 37x37 grid (+1 class token)"),
        (1369, 1, "a 37x37 grid (no class token)"),
        (1369, 0, "a 37x37 grid (no class token)"),
        (257, 1, "a 16x16 grid (+1 class token)"),
        (1, 1, "a 1x1 grid (no class token)"),
        (1, 0, "a 1x1 grid (no class token)"),
        (1368, 1, "1368 rows, no square grid with or without a class token"),
    ],
)
def test_a_table_is_described_by_its_grid(rows, class_rows, expected):
    assert describe_position_table(rows, class_rows) == expected


def _file_with_table(tmp_path: Path, vit, rows: int) -> Path:
    state = {k: v.clone().contiguous() for k, v in vit.state_dict().items()}
    state["pos_embed"] = torch.zeros(1, rows, vit.embed_dim)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    return path


@pytest.mark.parametrize(
    ("reg_tokens", "rows", "found", "declared"),
    [
        # DINOv2 at 518 (1 + 37 x 37 rows) into a model whose table keeps the class row ...
        (0, 1370, "holds a 37x37 grid (+1 class token)", "declares 4x4 (+1 class token)"),
        # ... and into a register model, whose timm table holds patch positions only (it read
        # "a 1370 positions grid" before).
        (4, 1370, "holds a 37x37 grid (+1 class token)", "declares 4x4 (set backbone"),
        # A table without its class row (it read "a 1368 positions grid" before).
        (0, 1369, "holds a 37x37 grid (no class token)", "declares 4x4 (+1 class token)"),
    ],
)
def test_a_table_of_another_grid_is_refused_naming_its_grid(
    tmp_path: Path, tiny_config: EndoARSSConfig, reg_tokens, rows, found, declared
) -> None:
    backbone = dataclasses.replace(tiny_config.backbone, reg_tokens=reg_tokens)
    vit = build_vit(backbone)
    before = vit.pos_embed.detach().clone()
    with pytest.raises(PretrainedWeightsError) as info:
        load_pretrained(vit, _file_with_table(tmp_path, vit, rows))
    message = str(info.value)
    assert f"pos_embed (1, {rows}, {vit.embed_dim}) {found}" in message
    assert f"the model's backbone.img_size 56 {declared}" in message
    assert "positions grid" not in message
    torch.testing.assert_close(vit.pos_embed, before)


def test_the_right_grid_without_its_class_row_names_the_layout(
    tmp_path: Path, tiny_config: EndoARSSConfig
) -> None:
    vit = build_vit(tiny_config.backbone)  # 4 x 4 patches plus the class row
    with pytest.raises(PretrainedWeightsError) as info:
        load_pretrained(vit, _file_with_table(tmp_path, vit, 16))
    message = str(info.value)
    assert "holds a 4x4 grid (no class token)" in message
    assert "declares 4x4 (+1 class token) (a file of another layout" in message


def test_interpolating_a_table_of_another_size_names_both():
    with pytest.raises(ValueError) as info:
        dinov2_resize_pos_embed(
            torch.zeros(1, 1368, 8), (16, 16), (37, 37), offset=0.1, antialias=False
        )
    message = str(info.value)
    assert "stored grid is 37x37" in message and "holds 1368 patch positions" in message
