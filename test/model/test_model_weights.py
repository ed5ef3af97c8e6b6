"""Pretrained weight files in the timm, Meta, Hugging Face and Depth-Anything key layouts.

Each file is written from a random timm ViT by the inverse of the mapping under test (written
out here independently), loaded into a fresh model, and checked tensor by tensor and by the
features it produces.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from endoarss_ros.model.backbone import build_vit
from endoarss_ros.model.config import EndoARSSConfig
from endoarss_ros.model.endoarss import EndoARSS, create_model
from endoarss_ros.model.weights import (
    PretrainedWeightsError,
    detect_layout,
    load_pretrained,
    read_state_dict,
)

VARIANTS = {
    "plain": {},
    "reg4": {"reg_tokens": 4},
    "swiglu": {"ffn": "swiglu", "mlp_ratio": 5.0},
}


def _source(config: EndoARSSConfig, variant: str, seed: int = 123):
    backbone = dataclasses.replace(config.backbone, **VARIANTS[variant])
    torch.manual_seed(seed)
    vit = build_vit(backbone)
    with torch.no_grad():  # LayerScale starts at 1e-5; make the blocks matter in the comparison
        for name, param in vit.named_parameters():
            if name.endswith("gamma"):
                param.uniform_(0.5, 1.5)
    return config.replace(backbone=backbone), vit


def timm_to_meta(state: dict[str, torch.Tensor], chunk: int = 0) -> dict[str, torch.Tensor]:
    """Meta's layout: cls position inside pos_embed, register_tokens, SwiGLU w12/w3, mask_token.

    ``chunk`` > 0 groups the blocks as DINOv2's FSDP training checkpoints do.
    """
    # A packed SwiGLU's fc1 is twice as wide as fc2's input; Meta names those w12 and w3.
    swiglu = (
        state["blocks.0.mlp.fc1.weight"].shape[0] == 2 * state["blocks.0.mlp.fc2.weight"].shape[1]
    )
    out = {}
    for key, value in state.items():
        if swiglu:
            key = key.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3.")
        if chunk:
            key = re.sub(
                r"^blocks\.(\d+)\.",
                lambda m: f"blocks.{int(m.group(1)) // chunk}.{m.group(1)}.",
                key,
            )
        out[key] = value.clone()
    dim = state["cls_token"].shape[-1]
    out["mask_token"] = torch.randn(1, dim)
    if "reg_token" in state:
        cls_position = torch.randn(1, 1, dim)
        out["register_tokens"] = out.pop("reg_token")
        out["cls_token"] = state["cls_token"] - cls_position
        out["pos_embed"] = torch.cat([cls_position, state["pos_embed"]], dim=1)
    return out


def meta_to_hf(meta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' Dinov2Model names, with separate query/key/value projections."""
    top = {
        "cls_token": "embeddings.cls_token",
        "mask_token": "embeddings.mask_token",
        "register_tokens": "embeddings.register_tokens",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    block = {
        "norm1": "norm1",
        "norm2": "norm2",
        "attn.proj": "attention.output.dense",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "mlp.w12": "mlp.weights_in",
        "mlp.w3": "mlp.weights_out",
    }
    out = {}
    for key, value in meta.items():
        if key in top:
            out[top[key]] = value
            continue
        index, rest = re.match(r"^blocks\.(\d+)\.(.+)$", key).groups()
        prefix = f"encoder.layer.{index}."
        if rest in ("ls1.gamma", "ls2.gamma"):
            out[prefix + f"layer_scale{rest[2]}.lambda1"] = value
        elif rest.startswith("attn.qkv."):
            leaf = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[prefix + f"attention.attention.{name}.{leaf}"] = part.clone()
        else:
            module, leaf = rest.rsplit(".", 1)
            out[prefix + f"{block[module]}.{leaf}"] = value
    return out


def meta_to_depth_anything(meta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {f"pretrained.{k}": v for k, v in meta.items()}
    out["depth_head.projects.0.weight"] = torch.randn(8, 64, 1, 1)
    out["depth_head.scratch.output_conv2.2.bias"] = torch.randn(1)
    return out


def write(tmp_path: Path, layout: str, vit, chunk: int = 0) -> Path:
    state = vit.state_dict()
    if layout == "timm":
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif layout == "meta":
        path = tmp_path / "dinov2_vits14_pretrain.pth"
        torch.save(timm_to_meta(state, chunk), path)
    elif layout == "hf":
        path = tmp_path / "hf_model.safetensors"
        save_file({k: v.contiguous() for k, v in meta_to_hf(timm_to_meta(state)).items()}, path)
    elif layout == "depth_anything":
        path = tmp_path / "depth_anything_vits14.pth"
        torch.save(meta_to_depth_anything(timm_to_meta(state)), path)
    else:
        raise AssertionError(layout)
    return path


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("layout", ["timm", "meta", "hf", "depth_anything"])
def test_loads_every_layout_exactly(
    tmp_path: Path, tiny_config: EndoARSSConfig, layout: str, variant: str
) -> None:
    config, source = _source(tiny_config, variant)
    path = write(tmp_path, layout, source)
    markers = {  # a key only this layout (and variant) has: the file is what it claims to be
        ("meta", "reg4"): "register_tokens",
        ("meta", "swiglu"): "blocks.0.mlp.w12.weight",
        ("hf", "reg4"): "embeddings.register_tokens",
        ("hf", "swiglu"): "encoder.layer.0.mlp.weights_in.weight",
        ("depth_anything", "swiglu"): "pretrained.blocks.0.mlp.w3.weight",
        ("timm", "reg4"): "reg_token",
    }
    if (layout, variant) in markers:
        assert markers[layout, variant] in read_state_dict(path)
    torch.manual_seed(7)
    model = EndoARSS(config).eval()
    report = load_pretrained(model, path)
    assert report.layout == layout
    assert report.loaded == len(source.state_dict())
    if layout in ("meta", "hf", "depth_anything"):
        assert "mask_token" in report.ignored
    if layout == "depth_anything":
        assert "depth_head.projects.0.weight" in report.ignored

    loaded = model.backbone.frozen_state_dict()
    assert loaded.keys() == source.state_dict().keys()
    for key, value in source.state_dict().items():
        # Meta's register layout stores cls - pos[0]; timm adds it back: one float rounding.
        tol = 1e-6 if key == "cls_token" and variant == "reg4" else 0.0
        torch.testing.assert_close(loaded[key], value, atol=tol, rtol=0, msg=key)

    # At the stored grid no interpolation happens, so timm's own forward is the reference
    # (other sizes: test_model_dinov2_positions.py compares with Meta's interpolation).
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        ours = model.backbone(x)["segmentation"][-1].patches
        theirs = source.forward_intermediates(x, indices=[3], norm=True, intermediates_only=True)
    torch.testing.assert_close(ours, theirs[0], atol=1e-5, rtol=1e-5)


def test_meta_checkpoint_with_chunked_blocks(tmp_path: Path, tiny_config: EndoARSSConfig) -> None:
    config, source = _source(tiny_config, "plain")
    path = write(tmp_path, "meta", source, chunk=2)
    state = torch.load(path, weights_only=True)
    assert "blocks.1.3.attn.qkv.weight" in state
    model = EndoARSS(config)
    load_pretrained(model, path)
    torch.testing.assert_close(
        model.backbone.vit.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight
    )


@pytest.mark.parametrize("layout", ["meta", "timm"])
@pytest.mark.parametrize("variant", ["plain", "reg4"])
def test_position_embedding_of_another_grid_is_refused(
    tmp_path: Path, tiny_config: EndoARSSConfig, layout: str, variant: str
) -> None:
    config, _ = _source(tiny_config, variant)
    _, larger = _source(
        tiny_config.replace(backbone=dataclasses.replace(tiny_config.backbone, img_size=84)),
        variant,
    )
    model = EndoARSS(config)
    before = model.backbone.vit.pos_embed.detach().clone()
    message = _error(model, write(tmp_path, layout, larger))
    assert "pos_embed" in message and "6x6 grid" in message
    assert "backbone.img_size 56 declares 4x4" in message
    torch.testing.assert_close(model.backbone.vit.pos_embed, before)


def test_position_embedding_of_another_width_names_the_key(
    tmp_path: Path, tiny_config: EndoARSSConfig
) -> None:
    config, source = _source(tiny_config, "plain")
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["pos_embed"] = torch.zeros(1, 17, 32)
    path = tmp_path / "narrow.safetensors"
    save_file(state, str(path))
    message = _error(EndoARSS(config), path)
    assert "pos_embed is (1, 17, 32) in the file, (1, 17, 64) in the model" in message


def test_create_model_loads_pretrained(tmp_path: Path, tiny_config: EndoARSSConfig) -> None:
    config, source = _source(tiny_config, "plain")
    model = create_model(config, pretrained=write(tmp_path, "timm", source))
    torch.testing.assert_close(model.backbone.vit.norm.weight, source.norm.weight)
    assert not model.backbone.vit.norm.weight.requires_grad


def test_detect_layout() -> None:
    t = torch.zeros(1)
    assert detect_layout({"patch_embed.proj.weight": t}) == "timm"
    assert detect_layout({"patch_embed.proj.weight": t, "mask_token": t}) == "meta"
    assert detect_layout({"embeddings.patch_embeddings.projection.weight": t}) == "hf"
    assert detect_layout({"pretrained.cls_token": t, "depth_head.x": t}) == "depth_anything"
    assert detect_layout({"model.fc.weight": t}) is None


def _error(model, path: Path) -> str:
    with pytest.raises(PretrainedWeightsError) as info:
        load_pretrained(model, path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_key_is_named(tmp_path: Path, tiny_config: EndoARSSConfig) -> None:
    config, source = _source(tiny_config, "plain")
    state = timm_to_meta(source.state_dict())
    del state["blocks.1.attn.qkv.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    message = _error(EndoARSS(config), path)
    assert "missing key(s): blocks.1.attn.qkv.weight" in message


def test_unexpected_key_is_named(tmp_path: Path, tiny_config: EndoARSSConfig) -> None:
    config, source = _source(tiny_config, "plain")
    state = dict(source.state_dict())
    state["head.weight"] = torch.zeros(10, 64)
    path = tmp_path / "extra.safetensors"
    save_file(state, path)
    assert "unexpected key(s): head.weight" in _error(EndoARSS(config), path)


def test_deeper_model_fails_naming_the_extra_blocks(
    tmp_path: Path, tiny_config: EndoARSSConfig
) -> None:
    config, _ = _source(tiny_config, "plain")
    deeper = tiny_config.replace(
        backbone=dataclasses.replace(tiny_config.backbone, depth=5, feature_levels=(1, 4))
    )
    _, source = _source(deeper, "plain")
    message = _error(EndoARSS(config), write(tmp_path, "hf", source))
    assert "unexpected key(s): blocks.4." in message


def test_shape_mismatch_is_named(tmp_path: Path, tiny_config: EndoARSSConfig) -> None:
    config, source = _source(tiny_config, "plain")
    state = dict(source.state_dict())
    state["blocks.0.norm1.weight"] = torch.ones(65)
    path = tmp_path / "shape.safetensors"
    save_file(state, path)
    message = _error(EndoARSS(config), path)
    assert "shape mismatch: blocks.0.norm1.weight (file (65,), model (64,))" in message


def test_other_model_width_is_rejected_before_conversion(
    tmp_path: Path, tiny_config: EndoARSSConfig
) -> None:
    config, _ = _source(tiny_config, "plain")
    wider = tiny_config.replace(
        backbone=dataclasses.replace(tiny_config.backbone, embed_dim=96, num_heads=3)
    )
    _, source = _source(wider, "plain")
    message = _error(EndoARSS(config), write(tmp_path, "meta", source))
    assert "shape mismatch: patch_embed.proj.weight is (96, 3, 14, 14) in the file" in message


def test_register_count_must_match(tmp_path: Path, tiny_config: EndoARSSConfig) -> None:
    plain_config, plain = _source(tiny_config, "plain")
    reg_config, registers = _source(tiny_config, "reg4")
    for layout in ("meta", "timm"):
        message = _error(EndoARSS(plain_config), write(tmp_path, layout, registers))
        assert "register tokens differ: the file has 4" in message
        assert "the model 0" in message
    message = _error(EndoARSS(reg_config), write(tmp_path, "hf", plain))
    assert "the file has 0 (register_tokens), the model 4" in message


def test_incomplete_hf_attention_names_the_original_keys(
    tmp_path: Path, tiny_config: EndoARSSConfig
) -> None:
    config, source = _source(tiny_config, "plain")
    state = meta_to_hf(timm_to_meta(source.state_dict()))
    del state["encoder.layer.2.attention.attention.value.weight"]
    path = tmp_path / "hf.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    message = _error(EndoARSS(config), path)
    assert "missing key(s): blocks.2.attn.qkv.weight" in message
    assert "encoder.layer.2.attention.attention.key.weight" in message
    assert "encoder.layer.2.attention.attention.query.weight" in message


def test_depth_anything_stray_keys_are_named(tmp_path: Path, tiny_config: EndoARSSConfig) -> None:
    config, source = _source(tiny_config, "plain")
    state = meta_to_depth_anything(timm_to_meta(source.state_dict()))
    state["optimizer_step"] = torch.tensor(3)
    path = tmp_path / "da.pth"
    torch.save(state, path)
    assert "optimizer_step" in _error(EndoARSS(config), path)


def test_unreadable_and_unsafe_files(tmp_path: Path, tiny_config: EndoARSSConfig) -> None:
    model = EndoARSS(tiny_config)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 not a checkpoint" * 10)
    assert "not a safetensors file or a tensors-only torch file" in _error(model, garbage)

    code = tmp_path / "object.pth"  # a pickle that would build an arbitrary object
    torch.save({"args": argparse.Namespace(lr=1.0)}, code)
    assert "not a safetensors file or a tensors-only torch file" in _error(model, code)

    nested = tmp_path / "nested.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "epoch": 3}, nested)
    assert "non-tensor entries: epoch, model" in _error(model, nested)

    unknown = tmp_path / "unknown.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, unknown)
    assert "not a DINOv2 state dict in a known layout" in _error(model, unknown)

    assert "no such file" in _error(model, tmp_path / "absent.pth")


def test_refuses_a_merged_model(tmp_path: Path, tiny_config: EndoARSSConfig) -> None:
    config, source = _source(tiny_config, "plain")
    model = EndoARSS(config).merge()
    with pytest.raises(ValueError, match="merged"):
        load_pretrained(model, write(tmp_path, "timm", source))
