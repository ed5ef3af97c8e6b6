"""The heads' high-resolution image stems: shapes, configuration, old checkpoints, and what the
segmentation stem is for (structures thinner than a 14-pixel token)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from endoarss_ros.model.checkpoint import (
    METADATA_KEY,
    CheckpointMetadata,
    load_checkpoint,
    save_checkpoint,
)
from endoarss_ros.model.config import (
    ActivityHeadConfig,
    ConfigError,
    EndoARSSConfig,
    SegHeadConfig,
)
from endoarss_ros.model.endoarss import EndoARSS


def _with_head(config: EndoARSSConfig, **changes) -> EndoARSSConfig:
    return config.replace(seg_head=dataclasses.replace(config.seg_head, **changes))


def _with_activity_head(config: EndoARSSConfig, **changes) -> EndoARSSConfig:
    return config.replace(activity_head=dataclasses.replace(config.activity_head, **changes))


def test_tiny_preset_has_the_stems_and_dinov2_presets_do_not(tiny_config) -> None:
    from endoarss_ros.model.endoarss import get_preset

    assert tiny_config.seg_head.hires and tiny_config.activity_head.hires
    dinov2 = get_preset("vit_small_patch14_dinov2")
    assert not dinov2.seg_head.hires and not dinov2.activity_head.hires


def test_activity_stem_needs_the_image(tiny_config) -> None:
    model = EndoARSS(tiny_config).eval()
    features = model.backbone(torch.randn(1, 3, 56, 56))["activity"]
    with pytest.raises(ValueError, match="activity head needs the input image"):
        model.activity_head(features)


@pytest.mark.parametrize("size", [(56, 56), (70, 84), (98, 126)])
def test_logits_with_and_without_each_stem(tiny_config, size) -> None:
    expected = {
        "segmentation": (2, tiny_config.num_seg_classes, *size),
        "activity": (2, tiny_config.num_activities),
    }
    for task, change in (("segmentation", _with_head), ("activity", _with_activity_head)):
        for hires in (True, False):
            model = EndoARSS(change(tiny_config, hires=hires)).eval()
            head = model.seg_head if task == "segmentation" else model.activity_head
            assert (head.stem is not None) == hires
            with torch.no_grad():
                out = model(torch.randn(2, 3, *size))
            assert out[task].shape == expected[task]


def test_stem_needs_the_image(tiny_config) -> None:
    model = EndoARSS(tiny_config).eval()
    features = model.backbone(torch.randn(1, 3, 56, 56))["segmentation"]
    with pytest.raises(ValueError, match="needs the input image"):
        model.seg_head(features, (56, 56))


def test_hires_channels_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"seg_head\.hires_channels must be a multiple of 4"):
        SegHeadConfig(hires=True, hires_channels=6)
    with pytest.raises(ConfigError, match=r"seg_head\.hires must be"):
        SegHeadConfig(hires="yes")
    with pytest.raises(ConfigError, match=r"activity_head\.hires_channels must be a multiple"):
        ActivityHeadConfig(hires=True, hires_channels=10)
    with pytest.raises(ConfigError, match=r"activity_head\.hires must be"):
        ActivityHeadConfig(hires=1.5)


def test_checkpoint_without_the_new_fields_loads_as_trained(tmp_path: Path, tiny_config) -> None:
    """A checkpoint written before the heads' ``hires`` and ``backbone.pos_embed_resize``
    existed: no stems, timm's position resize, and the same outputs as when it was saved."""
    config = _with_activity_head(_with_head(tiny_config, hires=False), hires=False)
    config = config.replace(backbone=dataclasses.replace(config.backbone, pos_embed_resize="timm"))
    torch.manual_seed(3)
    model = EndoARSS(config).eval()
    metadata = CheckpointMetadata(
        activity_classes=("a", "b", "c"),
        segmentation_classes=tuple(f"c{i}" for i in range(7)),
        segmentation_colors=tuple((i, i, i) for i in range(7)),
        input_size=(70, 84),
    )
    path = save_checkpoint(tmp_path / "new.safetensors", model, metadata)
    tensors = load_file(path)
    with safe_open(path, framework="pt") as f:
        header = dict(f.metadata())
    document = json.loads(header[METADATA_KEY])
    for section, key in (
        ("seg_head", "hires"),
        ("seg_head", "hires_channels"),
        ("activity_head", "hires"),
        ("activity_head", "hires_channels"),
        ("backbone", "pos_embed_resize"),
    ):
        del document["config"][section][key]
    header[METADATA_KEY] = json.dumps(document)
    old = tmp_path / "old.safetensors"
    save_file(tensors, old, metadata=header)

    loaded, _ = load_checkpoint(old, map_location=torch.device("cpu"))
    assert not loaded.config.seg_head.hires and loaded.seg_head.stem is None
    assert not loaded.config.activity_head.hires and loaded.activity_head.stem is None
    assert loaded.config.backbone.pos_embed_resize == "timm"
    x = torch.randn(1, 3, 70, 84)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    for key, value in expected.items():  # Meta's resize would differ by ~1e-2 here
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6)


def _stripe_iou(tiny_config, hires: bool) -> float:
    """IoU of a 2-pixel stripe class after a short fit on a fixed batch."""
    config = _with_head(tiny_config, hires=hires).replace(num_seg_classes=2)
    torch.manual_seed(0)
    model = EndoARSS(config)
    model.requires_grad_(True)
    images = torch.randn(4, 3, 56, 56) * 0.1
    masks = torch.zeros(4, 56, 56, dtype=torch.long)
    for i, column in enumerate((9, 20, 33, 45)):  # never aligned with the 14-pixel tokens
        images[i, :, :, column : column + 2] += 2.0
        masks[i, :, column : column + 2] = 1
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(40):
        loss = F.cross_entropy(
            model(images)["segmentation"], masks, weight=torch.tensor([1.0, 10.0])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(images)["segmentation"].argmax(1)
    inter = ((pred == 1) & (masks == 1)).sum().item()
    union = ((pred == 1) | (masks == 1)).sum().item()
    return inter / union


def test_stem_outlines_structures_thinner_than_a_token(tiny_config) -> None:
    with_stem, without = _stripe_iou(tiny_config, True), _stripe_iou(tiny_config, False)
    assert with_stem > without + 0.15  # measured 0.56 against 0.30
