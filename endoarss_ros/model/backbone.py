"""Frozen DINOv2 ViT/14 backbone (timm) with shared LoRA and TESLA task adapters.

The ViT is timm's ``VisionTransformer`` built from an explicit :class:`BackboneConfig` with
the DINOv2 settings (patch 14, LayerScale, optional register tokens, packed SwiGLU for ViT-g)
and ``dynamic_img_size=True``: any input whose sides are multiples of 14 works. The position
embedding, stored for ``img_size``, is interpolated to the input's grid on every forward pass
the way Meta's DINOv2 code does it (``pos_embed_resize="meta"``), so pretrained features equal
Meta's at every input size: bicubic, in float32, without anti-aliasing and with the historical
``+0.1`` scale-factor offset for the models without registers; anti-aliased to an exact target
size for the ``_reg`` models (the settings of Meta's hub entry points). timm's own resampling
(always anti-aliased, no offset) differs from both and is kept only for checkpoints trained
with it (``pos_embed_resize="timm"``).

The forward pass returns, for every task and every feature level, the final-LayerNorm-ed CLS
token and the patch tokens as a spatial map ``B x D x H/14 x W/14``. Without TESLA both tasks
receive the same tensors. See :mod:`endoarss_ros.model.lora` for the TESLA computation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .config import PATCH_SIZE, TASKS, BackboneConfig, LoRAConfig, TeslaConfig
from .lora import LoRALinear, LowRankAdapter, inject_lora, is_adapter_parameter


class LevelFeatures(NamedTuple):
    """One feature level of one task: ``cls`` is B x D, ``patches`` is B x D x h x w."""

    cls: torch.Tensor
    patches: torch.Tensor


def build_vit(cfg: BackboneConfig) -> VisionTransformer:
    """The plain timm DINOv2-style ViT for ``cfg`` (random init, no head)."""
    kwargs: dict = {}
    if cfg.ffn == "swiglu":
        kwargs.update(mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
    return VisionTransformer(
        img_size=cfg.img_size,
        patch_size=PATCH_SIZE,
        num_classes=0,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        init_values=1e-5,
        reg_tokens=cfg.reg_tokens,
        no_embed_class=cfg.reg_tokens > 0,
        dynamic_img_size=True,
        **kwargs,
    )


def dinov2_resize_pos_embed(
    patch_pos: torch.Tensor,
    grid: tuple[int, int],
    stored: tuple[int, int],
    *,
    offset: float,
    antialias: bool,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Meta's ``interpolate_pos_encoding`` for the patch positions ``1 x (M*M) x D``.

    Returns ``1 x (h*w) x D`` for ``grid = (h, w)``. The stored table is returned untouched when
    the grid equals it (Meta skips the interpolation there; with the offset it would not be an
    identity). With ``offset`` the scale factors ``(h + offset) / M`` and ``(w + offset) / M``
    drive the sampling positions, as in Meta's code; without it the output size does. The
    interpolation runs in float32 and its result is cast to ``dtype`` (the tokens' dtype).
    """
    if tuple(grid) == tuple(stored):
        return patch_pos
    side = stored[0]
    if stored[0] != stored[1] or patch_pos.shape[1] != side * side:
        raise ValueError(
            f"Meta's position interpolation needs a square stored grid and a table of its "
            f"patch positions; the stored grid is {stored[0]}x{stored[1]}, the table holds "
            f"{patch_pos.shape[1]} patch positions (a {side}x{side} grid has {side * side})"
        )
    dim = patch_pos.shape[-1]
    table = patch_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if offset:
        resize: dict = {
            "scale_factor": (float(grid[0] + offset) / side, float(grid[1] + offset) / side)
        }
    else:
        resize = {"size": tuple(grid)}
    table = F.interpolate(table, mode="bicubic", antialias=antialias, **resize)
    if tuple(table.shape[-2:]) != tuple(grid):
        raise ValueError(f"position table resized to {tuple(table.shape[-2:])}, not {grid}")
    table = table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)
    return table.to(dtype or patch_pos.dtype)


def dinov2_resize_settings(reg_tokens: int) -> tuple[float, bool]:
    """``(offset, antialias)`` of Meta's hub models: ``(0.1, False)``, ``_reg``: ``(0.0, True)``."""
    return (0.0, True) if reg_tokens else (0.1, False)


def _keep_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    # Forward pre-hook on a feature level's fc2: keeps its input (the FFN hidden activations)
    # for the TESLA task adapters. It writes to the hooked module itself, not to a closure, so
    # copies of the model (deepcopy, EMA weights) tap their own layers.
    module.tesla_input = args[0]


def check_input_size(height: int, width: int) -> None:
    """Raise unless both sides are positive multiples of the patch size."""
    if height < PATCH_SIZE or width < PATCH_SIZE or height % PATCH_SIZE or width % PATCH_SIZE:
        raise ValueError(
            f"input height and width must be positive multiples of {PATCH_SIZE}, "
            f"got {height}x{width}"
        )


class DinoV2Backbone(nn.Module):
    """Frozen ViT + shared LoRA + optional per-task low-rank adapters at the feature levels.

    ``vit`` keeps timm's module names, so its frozen parameters have the keys of a timm DINOv2
    state dict; adapters add ``lora_A``/``lora_B`` leaves next to them and, for TESLA, the
    ``task_adapters.<task>.<level>`` modules.
    """

    def __init__(
        self,
        cfg: BackboneConfig,
        lora: LoRAConfig,
        tesla: TeslaConfig,
        tasks: tuple[str, ...] = TASKS,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.tasks = tasks
        self.levels = tuple(cfg.feature_levels)
        self.vit = build_vit(cfg)
        self.vit.requires_grad_(False)
        self.num_prefix_tokens = self.vit.num_prefix_tokens
        self.pos_embed_resize = cfg.pos_embed_resize
        if lora.enabled:
            inject_lora(
                self.vit.blocks,
                lora.targets,
                rank=lora.rank,
                alpha=lora.alpha,
                dropout=lora.dropout,
            )
        self.task_adapters: nn.ModuleDict | None = None
        if tesla.enabled:
            self.task_adapters = nn.ModuleDict(
                {
                    task: nn.ModuleDict(
                        {
                            str(level): LowRankAdapter(
                                cfg.mlp_hidden,
                                cfg.embed_dim,
                                rank=tesla.rank,
                                alpha=tesla.alpha,
                                dropout=tesla.dropout,
                            )
                            for level in self.levels
                        }
                    )
                    for task in tasks
                }
            )
            for level in self.levels:
                fc2 = self.vit.blocks[level].mlp.fc2
                fc2.tesla_input = None
                fc2.register_forward_pre_hook(_keep_input)

    def lora_modules(self) -> list[LoRALinear]:
        return [m for m in self.vit.modules() if isinstance(m, LoRALinear)]

    def frozen_state_dict(self) -> dict[str, torch.Tensor]:
        """The ViT's frozen tensors under timm's keys (what a pretrained file must provide)."""
        return {k: v for k, v in self.vit.state_dict().items() if not is_adapter_parameter(k)}

    @property
    def merged(self) -> bool:
        return any(m.merged for m in self.lora_modules())

    def merge(self) -> None:
        for module in self.lora_modules():
            module.merge()

    def unmerge(self) -> None:
        for module in self.lora_modules():
            module.unmerge()

    def _split(self, tokens: torch.Tensor, grid: tuple[int, int]) -> LevelFeatures:
        batch, _, dim = tokens.shape
        patches = tokens[:, self.num_prefix_tokens :]
        patches = patches.transpose(1, 2).reshape(batch, dim, grid[0], grid[1])
        return LevelFeatures(tokens[:, 0], patches)

    def _meta_pos_embed(self, patches: torch.Tensor) -> torch.Tensor:
        """Prefix tokens + patch tokens with Meta's interpolated position embedding.

        timm keeps a ``_reg`` model's CLS position folded into ``cls_token``
        (``no_embed_class``) and its table holds patch positions only; otherwise the table's
        first row is the CLS position, never interpolated.
        """
        vit = self.vit
        batch, height, width, dim = patches.shape
        offset, antialias = dinov2_resize_settings(self.cfg.reg_tokens)
        prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        pos = vit.pos_embed
        patch_pos = dinov2_resize_pos_embed(
            pos[:, prefix:],
            (height, width),
            tuple(vit.patch_embed.grid_size),
            offset=offset,
            antialias=antialias,
            dtype=patches.dtype,
        )
        x = patches.reshape(batch, height * width, dim)
        prefix_tokens = [vit.cls_token.expand(batch, -1, -1)]
        if vit.reg_token is not None:
            prefix_tokens.append(vit.reg_token.expand(batch, -1, -1))
        if vit.no_embed_class:
            x = torch.cat([*prefix_tokens, x + patch_pos], dim=1)
        else:
            x = torch.cat([*prefix_tokens, x], dim=1) + torch.cat([pos[:, :prefix], patch_pos], 1)
        return vit.pos_drop(x)

    def forward(self, x: torch.Tensor) -> dict[str, list[LevelFeatures]]:
        height, width = x.shape[-2:]
        check_input_size(height, width)
        grid = (height // PATCH_SIZE, width // PATCH_SIZE)
        vit = self.vit
        patches = vit.patch_embed(x)  # B x h x w x D (dynamic_img_size: NHWC)
        if self.pos_embed_resize == "timm":
            tokens = vit._pos_embed(patches)
        else:
            tokens = self._meta_pos_embed(patches)
        tokens = vit.norm_pre(vit.patch_drop(tokens))
        out: dict[str, list[LevelFeatures]] = {task: [] for task in self.tasks}
        level_set = set(self.levels)
        try:
            for index, block in enumerate(vit.blocks[: self.levels[-1] + 1]):
                tokens = block(tokens)
                if index not in level_set:
                    continue
                if self.task_adapters is None:
                    shared = self._split(vit.norm(tokens), grid)
                    for task in self.tasks:
                        out[task].append(shared)
                    continue
                fc2 = block.mlp.fc2
                hidden, fc2.tesla_input = fc2.tesla_input, None
                for task in self.tasks:
                    delta = block.ls2(self.task_adapters[task][str(index)](hidden))
                    out[task].append(self._split(vit.norm(tokens + delta), grid))
        finally:  # never keep activations alive past the forward pass
            if self.task_adapters is not None:
                for level in self.levels:
                    vit.blocks[level].mlp.fc2.tesla_input = None
        return out
