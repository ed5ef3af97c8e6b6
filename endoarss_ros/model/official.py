"""The network of the authors' released EndoARSS checkpoints, reproduced layer by layer.

Used only to run those checkpoints (convert them with ``endoarss convert-official``); the
project's own model is :class:`~endoarss_ros.model.endoarss.EndoARSS`. The released weights
fix the following facts, which this module reproduces rather than corrects:

* Input: RGB in ``[0, 1]``, **no mean/std normalisation**, at 244 x 244 (the release's data
  loader resizes to 244 with PIL's default filter, bicubic). The network itself resizes to
  224 x 224 (bilinear, ``align_corners=True``) before anything else. A converted checkpoint
  stores input size 244 and mean 0 / std 1, so the Predictor and ``endoarss eval`` feed the
  same kind of tensor; their own resize filters (antialiased bilinear, OpenCV area) differ
  slightly from PIL's bicubic, so outputs are close to, not bit-identical with, the release's.
* SMA front-end on the raw 3-channel image, before the patch embedding: a MobileViT-style
  block (3x3 conv, 1x1 conv to 512 channels, unfold into 7x7 patches, fold back, 1x1 conv to 3
  channels, 3x3 fusion conv with the input) whose global stage is EMA with ``channels = 49``
  (the positions inside a 7 x 7 patch) and one group; EMA sees the unfolded tensor
  ``B x 49 x 1024 x 512`` as 49 channels of a 1024 x 512 map. The block also holds a
  MobileViT transformer (``trans``, dim 512, depth 3, 8 heads of 64, MLP 1024) that the forward
  pass never calls; its 6,303,744 parameters are in every released checkpoint. All SMA
  parameters are frozen in the release (they keep their random initialisation).
* Backbone: DINOv2 ViT-B/14 (Depth-Anything weights in the release), position embedding
  stored for 518 x 518 (37 x 37) and resized to the token grid with DINOv2's bicubic
  interpolation by scale factor ``(n + 0.1) / 37`` without anti-aliasing. ``mask_token`` is
  stored but unused. Only ``mlp.fc1`` and ``mlp.fc2`` of every block carry adapters.
* DV-LoRA (rank 4, alpha 4, scaling 1): ``y = W x + b + s (B * v)(A * u) x`` with ``u`` (r x 1)
  scaling the rows of ``A`` and ``v`` (out x 1) scaling the rows of ``B``; ``A`` and ``B`` are
  trained, ``u`` and ``v`` stay at their random initialisation.
* Only the last block's tokens are used: final LayerNorm, CLS dropped, then the raw memory
  view ``B x 256 x 768 -> B x 256 x 16 x 48``: the 256 token positions become channels and the
  768-d embedding becomes a 16 x 48 "image".
* Heads on that map: a DeepLabV3 head (ASPP with rates 12/24/36 and image pooling, 256
  channels, BatchNorm, dropout 0.5) whose 16 x 48 logits are resized to the input size
  (bilinear, ``align_corners=True``), and a classification head (3x3 conv, BatchNorm, ReLU,
  global average pool, linear).

Trainable in the release: the DV-LoRA ``A``/``B`` and the two heads (3,783,178 parameters for
7 segmentation classes and 3 activities, of 96,741,620). :class:`OfficialConfig` defaults to
that network; smaller values exist for tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from endoarss_ros.validation import Integer, ListOf, Number, Text, setting

from .config import (
    MAX_ACTIVITIES,
    MAX_DEPTH,
    MAX_HEADS,
    MAX_IMAGE_SIDE,
    MAX_RANK,
    MAX_RATIO,
    MAX_SEG_CLASSES,
    MAX_WIDTH,
    PATCH_SIZE,
    TASKS,
    Capped,
    ConfigSection,
)
from .lora import LoRALinear, _init_low_rank
from .sma import SpatialMultiScaleAttention

ARCHITECTURE = "official"

# Bounded like EndoARSSConfig (see the MAX_* constants), so a checkpoint cannot describe a
# network that takes hours to build.
_COUNT = Capped(Integer(1), MAX_WIDTH)
_SCALE = Capped(Number(0, low_open=True), MAX_RATIO)
_BLOCKS = Capped(Integer(1), MAX_DEPTH)
_HEADS = Capped(Integer(1), MAX_HEADS)
_SIDE = Capped(Integer(1), MAX_IMAGE_SIDE)


@dataclass(frozen=True)
class OfficialConfig(ConfigSection):
    """The released network's dimensions (defaults: the released ViT-B/14 model).

    ``image_size`` is the square size the network resizes every input to; ``feature_shape``
    is the (h, w) that the last block's ``D``-dim tokens are viewed as (``h * w = embed_dim``).
    """

    SECTION: ClassVar[str] = "official"

    name: str = setting("endoarss_official_vitb14", Text(non_empty=True), doc="model name")
    num_activities: int = setting(3, Capped(Integer(1), MAX_ACTIVITIES), doc="activity classes")
    num_seg_classes: int = setting(
        7, Capped(Integer(1), MAX_SEG_CLASSES), doc="segmentation classes"
    )
    embed_dim: int = setting(768, _COUNT, doc="ViT token width")
    depth: int = setting(12, _BLOCKS, doc="ViT blocks")
    num_heads: int = setting(12, _HEADS, doc="ViT attention heads; must divide embed_dim")
    mlp_ratio: float = setting(4.0, _SCALE, doc="ViT FFN hidden width / embed_dim")
    pos_embed_size: int = setting(518, _SIDE, doc="side the position embedding is stored for")
    image_size: int = setting(224, _SIDE, doc="side every input is resized to")
    lora_rank: int = setting(4, Capped(Integer(1), MAX_RANK), doc="DV-LoRA rank")
    lora_alpha: float = setting(
        4.0,
        Capped(Number(0, low_open=True), MAX_RANK * MAX_RATIO),
        doc="DV-LoRA scale is alpha / rank",
    )
    sma_dim: int = setting(512, _COUNT, doc="SMA front-end width")
    sma_patch: int = setting(7, _COUNT, doc="SMA unfold patch side; must divide image_size")
    sma_kernel: int = setting(3, _COUNT, doc="SMA convolution kernel (odd)")
    trans_depth: int = setting(3, _BLOCKS, doc="blocks of the unused MobileViT transformer")
    trans_heads: int = setting(8, _HEADS, doc="its attention heads")
    trans_head_dim: int = setting(64, _COUNT, doc="its head width")
    trans_mlp_dim: int = setting(1024, _COUNT, doc="its MLP width")
    feature_shape: tuple[int, int] = setting(
        (16, 48),
        ListOf(_COUNT, length=2, what="two positive integers"),
        doc="(h, w) the last block's tokens are viewed as; h * w = embed_dim",
    )
    head_channels: int = setting(256, _COUNT, doc="width of both DeepLab heads")
    aspp_rates: tuple[int, int, int] = setting(
        (12, 24, 36),
        ListOf(_COUNT, length=3, what="three positive integers"),
        doc="dilations of the ASPP branches",
    )

    def validate(self) -> None:
        if self.embed_dim % self.num_heads:
            self.fail(
                "embed_dim",
                f"({self.embed_dim}) must be divisible by "
                f"{self.path('num_heads')} ({self.num_heads})",
            )
        for key in ("pos_embed_size", "image_size"):
            if getattr(self, key) % PATCH_SIZE:
                self.fail(key, f"must be a multiple of {PATCH_SIZE}, got {getattr(self, key)}")
        if self.image_size % self.sma_patch:
            self.fail(
                "image_size",
                f"({self.image_size}) must be a multiple of "
                f"{self.path('sma_patch')} ({self.sma_patch})",
            )
        if self.sma_kernel % 2 == 0:
            self.fail("sma_kernel", f"must be odd, got {self.sma_kernel}")
        height, width = self.feature_shape
        if height * width != self.embed_dim:
            self.fail(
                "feature_shape",
                "must be two positive integers whose product is "
                f"embed_dim ({self.embed_dim}), got {self.feature_shape!r}",
            )

    @property
    def num_tokens(self) -> int:
        """Patch tokens of the ViT input, i.e. the channels of the viewed feature map."""
        return (self.image_size // PATCH_SIZE) ** 2


def _frozen_uniform(
    rows: int, device: torch.device | str | None, dtype: torch.dtype | None
) -> nn.Parameter:
    # The release initialises u and v Kaiming-uniform (a = sqrt(5)) on shape (rows, 1): fan-in
    # 1, so U(-1, 1); they are never trained.
    values = torch.empty(rows, 1, device=device, dtype=dtype).uniform_(-1.0, 1.0)
    return nn.Parameter(values, requires_grad=False)


class DVLoRALinear(LoRALinear):
    """DV-LoRA: ``y = W x + b + s (B * v)(A * u) x``; ``A``, ``B`` trainable, ``u``, ``v``
    frozen random vectors (``lora_U``: r x 1, ``lora_V``: out x 1) as in the release."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rank: int,
        alpha: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_features, out_features, bias, rank=rank, alpha=alpha, device=device, dtype=dtype
        )
        self.lora_U = _frozen_uniform(rank, device, dtype)
        self.lora_V = _frozen_uniform(out_features, device, dtype)

    @classmethod
    def replace(cls, linear: nn.Linear, *, rank: int, alpha: float) -> DVLoRALinear:
        """A DV-LoRA linear that reuses ``linear``'s weight and bias (frozen)."""
        weight = linear.weight
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            rank=rank,
            alpha=alpha,
            device="meta",  # the frozen weight is reused, not allocated twice
            dtype=weight.dtype,
        )
        module.weight = weight
        module.bias = linear.bias
        module.lora_U = _frozen_uniform(rank, weight.device, weight.dtype)
        module.lora_V = _frozen_uniform(linear.out_features, weight.device, weight.dtype)
        module.lora_A = nn.Parameter(torch.empty_like(module.lora_A, device=weight.device))
        module.lora_B = nn.Parameter(torch.empty_like(module.lora_B, device=weight.device))
        _init_low_rank(module.lora_A, module.lora_B)
        module.weight.requires_grad_(False)
        if module.bias is not None:
            module.bias.requires_grad_(False)
        return module

    def delta_weight(self) -> torch.Tensor:
        a = self.lora_A.float() * self.lora_U.float()
        b = self.lora_B.float() * self.lora_V.float()
        return (b @ a) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        low = F.linear(F.linear(x, self.lora_A * self.lora_U), self.lora_B * self.lora_V)
        return out + low * self.scaling


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.ln(x))


class _PatchAttention(nn.Module):
    """Multi-head self-attention over the patches sharing a within-patch position."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.scale = head_dim**-0.5
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out: nn.Module = (
            nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))
            if heads != 1 or head_dim != dim
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x P x N x dim
        b, p, n, _ = x.shape
        q, k, v = (
            t.reshape(b, p, n, self.heads, -1).transpose(2, 3)
            for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(2, 3).reshape(b, p, n, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.SiLU(), nn.Dropout(0.0), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MobileViTTransformer(nn.Module):
    """MobileViT's global stage (pre-norm attention + SiLU MLP on ``B x P x N x dim``).

    Part of the released SMA block's state but never called by it (see the module docstring).
    """

    def __init__(self, dim: int, depth: int, heads: int, head_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    _PreNorm(dim, _PatchAttention(dim, heads, head_dim)),
                    _PreNorm(dim, _FeedForward(dim, mlp_dim)),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, feed_forward in self.layers:
            x = x + attention(x)
            x = x + feed_forward(x)
        return x


class OfficialSMA(nn.Module):
    """The release's SMA: MobileViT local-global-fusion with EMA as the global stage.

    EMA is :class:`~endoarss_ros.model.sma.SpatialMultiScaleAttention` with ``patch**2``
    channels and one group (the same computation as the release's EMA; its GroupNorm is
    called ``norm`` here and ``gn`` in the release).
    """

    def __init__(self, cfg: OfficialConfig, in_channels: int = 3) -> None:
        super().__init__()
        k, dim = cfg.sma_kernel, cfg.sma_dim
        self.patch = cfg.sma_patch
        self.conv1 = nn.Conv2d(in_channels, in_channels, k, padding=k // 2)
        self.conv2 = nn.Conv2d(in_channels, dim, 1)
        self.trans = MobileViTTransformer(
            dim, cfg.trans_depth, cfg.trans_heads, cfg.trans_head_dim, cfg.trans_mlp_dim
        )
        self.ema = SpatialMultiScaleAttention(self.patch**2, 1)
        self.conv3 = nn.Conv2d(dim, in_channels, 1)
        self.conv4 = nn.Conv2d(2 * in_channels, in_channels, k, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        b, d, h, w = y.shape
        p, nh, nw = self.patch, h // self.patch, w // self.patch
        # b d (nh p) (nw p) -> b (p p) (nh nw) d: within-patch positions become channels
        y = y.reshape(b, d, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b, p * p, nh * nw, d)
        y = self.ema(y)
        y = y.reshape(b, p, p, nh, nw, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.conv4(torch.cat([x, self.conv3(y)], dim=1))


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1
) -> list[nn.Module]:
    padding = dilation * (kernel_size // 2)
    return [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class _ImagePooling(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(
            super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False
        )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 and an image-pooling branch."""

    def __init__(self, in_channels: int, channels: int, rates: tuple[int, int, int]) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(in_channels, channels, 1))]
        branches += [nn.Sequential(*_conv_bn_relu(in_channels, channels, 3, r)) for r in rates]
        branches.append(
            _ImagePooling(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, channels, 1))
        )
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *_conv_bn_relu(len(branches) * channels, channels, 1), nn.Dropout(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """DeepLabV3 segmentation head (output at the input map's resolution)."""

    def __init__(
        self, in_channels: int, num_classes: int, channels: int, rates: tuple[int, int, int]
    ) -> None:
        super().__init__(
            ASPP(in_channels, channels, rates),
            *_conv_bn_relu(channels, channels, 3),
            nn.Conv2d(channels, num_classes, 1),
        )


class DeepLabClassHead(nn.Sequential):
    """3x3 conv + BN + ReLU, global average pool, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, channels: int) -> None:
        super().__init__(
            *_conv_bn_relu(in_channels, channels, 3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, num_classes),
        )


def build_official_vit(cfg: OfficialConfig) -> VisionTransformer:
    """The DINOv2 ViT/14 (timm module names) with DV-LoRA on every block's fc1 and fc2."""
    vit = VisionTransformer(
        img_size=cfg.pos_embed_size,
        patch_size=PATCH_SIZE,
        num_classes=0,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        init_values=1e-5,
    )
    vit.requires_grad_(False)
    for block in vit.blocks:
        for name in ("fc1", "fc2"):
            linear = getattr(block.mlp, name)
            setattr(
                block.mlp,
                name,
                DVLoRALinear.replace(linear, rank=cfg.lora_rank, alpha=cfg.lora_alpha),
            )
    return vit


class OfficialEndoARSS(nn.Module):
    """The released EndoARSS network: ``B x 3 x H x W`` in ``[0, 1]`` (any H, W) ->
    ``{"activity": B x A logits, "segmentation": B x S x H x W logits}``."""

    def __init__(self, config: OfficialConfig) -> None:
        super().__init__()
        self.config = config
        self.tasks = TASKS
        self.sma = OfficialSMA(config)
        self.sma.requires_grad_(False)
        self.vit = build_official_vit(config)
        # DINOv2's masked-token embedding: unused here, kept so the weights round-trip.
        self.mask_token = nn.Parameter(torch.zeros(1, config.embed_dim), requires_grad=False)
        channels = config.num_tokens
        self.seg_head = DeepLabHead(
            channels, config.num_seg_classes, config.head_channels, config.aspp_rates
        )
        self.activity_head = DeepLabClassHead(channels, config.num_activities, config.head_channels)

    def _pos_embed(self, grid: int) -> torch.Tensor:
        # DINOv2's interpolation: bicubic by scale factor (grid + 0.1) / stored, no anti-aliasing.
        pos = self.vit.pos_embed.float()
        stored = math.isqrt(pos.shape[1] - 1)
        if stored == grid:
            return self.vit.pos_embed
        patch = pos[:, 1:].reshape(1, stored, stored, -1).permute(0, 3, 1, 2)
        scale = (grid + 0.1) / stored
        patch = F.interpolate(patch, scale_factor=(scale, scale), mode="bicubic")
        patch = patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
        return torch.cat([pos[:, :1], patch], dim=1).to(self.vit.pos_embed.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The decoders' input: ``B x tokens x h x w`` (last block, token-as-channel view)."""
        size = self.config.image_size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)
        x = self.sma(x)
        vit = self.vit
        tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([vit.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self._pos_embed(size // PATCH_SIZE)
        for block in vit.blocks:
            tokens = block(tokens)
        patches = vit.norm(tokens)[:, 1:]
        return patches.reshape(patches.shape[0], patches.shape[1], *self.config.feature_shape)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(x)
        seg = self.seg_head(features)
        seg = F.interpolate(seg, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return {"activity": self.activity_head(features), "segmentation": seg}

    def dv_lora_modules(self) -> list[DVLoRALinear]:
        return [m for m in self.vit.modules() if isinstance(m, DVLoRALinear)]

    @property
    def merged(self) -> bool:
        return any(m.merged for m in self.dv_lora_modules())

    def merge(self) -> OfficialEndoARSS:
        """Fold DV-LoRA into the frozen weights (inference); returns ``self``."""
        for module in self.dv_lora_modules():
            module.merge()
        return self

    def unmerge(self) -> OfficialEndoARSS:
        for module in self.dv_lora_modules():
            module.unmerge()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def _official_tiny() -> OfficialConfig:
    """The released structure at toy width (4 blocks of 64, a 112 x 112 network input, an
    8 x 8 token-as-channel view, narrow SMA and heads): CPU tests and the synthetic ablation."""
    return OfficialConfig(
        name="endoarss_official_tiny",
        embed_dim=64,
        depth=4,
        num_heads=2,
        pos_embed_size=56,
        image_size=112,
        sma_dim=16,
        trans_depth=1,
        trans_heads=2,
        trans_head_dim=8,
        trans_mlp_dim=32,
        feature_shape=(8, 8),
        head_channels=32,
        aspp_rates=(6, 12, 18),
    )


OFFICIAL_PRESETS: dict[str, Callable[[], OfficialConfig]] = {
    "endoarss_official_vitb14": OfficialConfig,
    "endoarss_official_tiny": _official_tiny,
}
"""Presets of the released network, by name (``model.preset`` with ``model.architecture:
official``): the released ViT-B/14 model and a toy-sized one."""


def get_official_preset(name: str) -> OfficialConfig:
    """A fresh :class:`OfficialConfig` for a name in :data:`OFFICIAL_PRESETS`."""
    try:
        return OFFICIAL_PRESETS[name]()
    except KeyError:
        raise KeyError(
            f"unknown preset {name!r} of the official architecture; available: "
            f"{', '.join(sorted(OFFICIAL_PRESETS))}"
        ) from None
