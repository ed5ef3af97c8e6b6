"""Position embeddings interpolated exactly as Meta's DINOv2 code does, at every input size.

The reference below is written from Meta's ``DinoVisionTransformer.interpolate_pos_encoding``
and ``prepare_tokens_with_masks`` (``dinov2/models/vision_transformer.py``) with the settings of
the hub entry points (``dinov2/hub/backbones.py``): without registers a bicubic resize driven
by the scale factors ``(h0 + 0.1) / M``, ``(w0 + 0.1) / M`` and no anti-aliasing; the ``_reg``
models resize to the exact grid with anti-aliasing and insert the registers after the
position embedding is added. Meta keeps the CLS position as the first row of ``pos_embed``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from endoarss_ros.model.backbone import DinoV2Backbone
from endoarss_ros.model.config import BackboneConfig, EndoARSSConfig, LoRAConfig, TeslaConfig

SIZES = [(224, 224), (266, 364), (448, 448), (518, 518)]


def _backbone(reg_tokens: int, resize: str = "meta") -> DinoV2Backbone:
    cfg = BackboneConfig(
        embed_dim=32,
        depth=2,
        num_heads=2,
        img_size=518,
        reg_tokens=reg_tokens,
        feature_levels=(1,),
        pos_embed_resize=resize,
    )
    torch.manual_seed(7)
    backbone = DinoV2Backbone(cfg, LoRAConfig(enabled=False), TeslaConfig(enabled=False))
    with torch.no_grad():
        for name, param in backbone.vit.named_parameters():
            if name.endswith("gamma"):
                param.uniform_(0.5, 1.5)
        backbone.vit.pos_embed.normal_(0.0, 1.0)  # positions that matter in the output
        # Multiples of 1/64, so unfolding the CLS position (below) is exact in float32.
        backbone.vit.cls_token.copy_(torch.randint(-64, 64, (1, 1, 32)) / 64)
    return backbone.eval()


def _meta_state(backbone: DinoV2Backbone) -> dict[str, torch.Tensor]:
    """Meta's tensors: ``pos_embed`` with the CLS row, ``cls_token`` without its position."""
    vit = backbone.vit
    if vit.no_embed_class:  # timm folded the CLS position into cls_token; unfold it
        cls_position = torch.randint(-64, 64, (1, 1, vit.embed_dim)) / 64
        return {
            "cls_token": vit.cls_token - cls_position,
            "pos_embed": torch.cat([cls_position, vit.pos_embed], dim=1),
            "register_tokens": vit.reg_token,
        }
    return {"cls_token": vit.cls_token, "pos_embed": vit.pos_embed, "register_tokens": None}


def _meta_tokens(backbone: DinoV2Backbone, x: torch.Tensor) -> torch.Tensor:
    """Meta's ``prepare_tokens_with_masks`` + blocks + final norm, positions by its formula."""
    vit = backbone.vit
    state = _meta_state(backbone)
    registers = state["register_tokens"]
    offset, antialias = (0.0, True) if registers is not None else (0.1, False)
    batch, _, w, h = x.shape  # Meta's names: w is the height, h the width
    patches = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([state["cls_token"].expand(batch, -1, -1), patches], dim=1)
    npatch = tokens.shape[1] - 1
    pos_embed = state["pos_embed"]
    n = pos_embed.shape[1] - 1
    if npatch == n and w == h:
        pos = pos_embed
    else:
        table = pos_embed.float()
        dim = tokens.shape[-1]
        w0, h0 = w // 14, h // 14
        m = int(math.sqrt(n))
        grid = table[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
        if offset:
            kwargs = {"scale_factor": (float(w0 + offset) / m, float(h0 + offset) / m)}
        else:
            kwargs = {"size": (w0, h0)}
        grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **kwargs)
        assert (w0, h0) == grid.shape[-2:]
        grid = grid.permute(0, 2, 3, 1).view(1, -1, dim)
        pos = torch.cat((table[:, 0].unsqueeze(0), grid), dim=1).to(tokens.dtype)
    tokens = tokens + pos
    if registers is not None:
        tokens = torch.cat([tokens[:, :1], registers.expand(batch, -1, -1), tokens[:, 1:]], 1)
    for block in vit.blocks:
        tokens = block(tokens)
    return vit.norm(tokens)


def _ours(backbone: DinoV2Backbone, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    level = backbone(x)["activity"][-1]
    return level.cls, level.patches.flatten(2).transpose(1, 2)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("reg_tokens", [0, 4], ids=["plain", "reg4"])
@torch.no_grad()
def test_features_equal_meta_reference(size: tuple[int, int], reg_tokens: int) -> None:
    backbone = _backbone(reg_tokens)
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size)
    reference = _meta_tokens(backbone, x)
    cls, patches = _ours(backbone, x)
    torch.testing.assert_close(cls, reference[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(patches, reference[:, 1 + reg_tokens :], rtol=0, atol=1e-5)


@torch.no_grad()
def test_timm_resize_differs_without_registers() -> None:
    """The reference separates the two interpolations, so the test above can fail."""
    meta, timm = _backbone(0, "meta"), _backbone(0, "timm")
    timm.load_state_dict(meta.state_dict())
    x = torch.randn(1, 3, 224, 224)
    reference = _meta_tokens(meta, x)
    _, timm_patches = _ours(timm, x)
    assert (timm_patches - reference[:, 1:]).abs().max() > 1e-2


def test_stored_config_without_the_field_keeps_timm_resize() -> None:
    data = EndoARSSConfig().to_dict()
    assert data["backbone"]["pos_embed_resize"] == "meta"
    del data["backbone"]["pos_embed_resize"]
    assert EndoARSSConfig.from_dict(data).backbone.pos_embed_resize == "timm"
    assert EndoARSSConfig.from_dict({}).backbone.pos_embed_resize == "meta"


def test_pos_embed_resize_is_validated() -> None:
    with pytest.raises(ValueError, match=r"backbone\.pos_embed_resize"):
        BackboneConfig(pos_embed_resize="nearest")
