"""Low-rank adapters: shared LoRA on the backbone's linears and TESLA's task-specific adapters.

LoRA (shared by both tasks)
    Each targeted ``nn.Linear`` (``qkv``, ``proj``, ``fc1``, ``fc2`` of every block) becomes a
    :class:`LoRALinear`: ``y = W x + b + (alpha / r) * B A dropout(x)`` with ``W``, ``b``
    frozen, ``A`` Kaiming-uniform and ``B = 0``, so the adapted backbone equals the frozen one
    at step 0. :meth:`LoRALinear.merge` folds ``(alpha / r) * B A`` into ``W`` for inference.

TESLA (task-efficient shared low-rank adapters)
    After MTLoRA: the trunk runs once, with the shared LoRA only. At every feature level (the
    blocks whose outputs feed the heads) each task owns a low-rank adapter on that block's
    ``fc2``, fed with the *same* ``fc2`` input the shared pass computed::

        h      = x' + ls2(fc2_shared(u))                  # shared stream, goes on to block l+1
        h_task = h  + ls2((alpha_t / r_t) * B_t A_t u)     # = the block with fc2 + task LoRA

    so ``h_task`` is exactly what block ``l`` would output if its ``fc2`` carried the shared
    plus the task's LoRA, yet nothing is recomputed: the task streams fork after the last
    linear of the block and never feed back into the trunk. A task's adapter therefore gets
    gradient from its own head only.

    Cost over plain (shared-only) LoRA, per image with ``N`` tokens, ``T`` tasks and ``L``
    levels: ``T * L * N * r_t * (H + D)`` extra MACs (``H`` = FFN hidden width, ``D`` = embed
    width), i.e. about 0.1 % of a ViT-B/14 forward for ``r_t = 4``, ``T = 2``, ``L = 4``; plus
    ``T - 1`` extra final LayerNorms per level and ``T * L`` feature maps held instead of
    ``L``. Parameters: ``T * L * r_t * (H + D)``.

    Task adapters act on a per-task branch, so they cannot be folded into the shared weights:
    the model's ``merge()`` folds the shared LoRA and keeps each task adapter as the two small
    matmuls above (it is the same computation, merged or not).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def _init_low_rank(lora_a: nn.Parameter, lora_b: nn.Parameter) -> None:
    # A as nn.Linear's default init (Kaiming-uniform, a = sqrt(5)); B = 0 so the delta starts at 0.
    nn.init.kaiming_uniform_(lora_a, a=math.sqrt(5))
    nn.init.zeros_(lora_b)


class LoRALinear(nn.Linear):
    """A frozen ``nn.Linear`` plus a trainable low-rank update, mergeable for inference.

    Subclassing ``nn.Linear`` keeps the frozen parameters under their original names
    (``weight``, ``bias``), so pretrained state dicts load unchanged and the adapter adds only
    ``lora_A`` (r x in) and ``lora_B`` (out x r).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank, device=device, dtype=dtype))
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        _init_low_rank(self.lora_A, self.lora_B)
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0
    ) -> LoRALinear:
        """Wrap an existing linear, reusing (not copying) its weight and bias."""
        weight = linear.weight
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            device="meta",
            dtype=weight.dtype,
        )
        module.weight = weight
        module.bias = linear.bias
        module.lora_A = nn.Parameter(torch.empty_like(module.lora_A, device=weight.device))
        module.lora_B = nn.Parameter(torch.empty_like(module.lora_B, device=weight.device))
        _init_low_rank(module.lora_A, module.lora_B)
        module.weight.requires_grad_(False)
        if module.bias is not None:
            module.bias.requires_grad_(False)
        return module

    def delta_weight(self) -> torch.Tensor:
        """``(alpha / r) * B A`` in float32 (the merge adds it in full precision)."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        low = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return out + low * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into ``weight``; forward then costs what the plain linear costs."""
        if self.merged:
            return
        self.weight.copy_((self.weight.float() + self.delta_weight()).to(self.weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (exact up to floating-point rounding of the weight)."""
        if not self.merged:
            return
        self.weight.copy_((self.weight.float() - self.delta_weight()).to(self.weight.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


class LowRankAdapter(nn.Module):
    """A task-specific low-rank map ``u -> (alpha / r) * B A dropout(u)`` (TESLA).

    It is the LoRA delta of a linear whose frozen weight lives elsewhere (the block's ``fc2``);
    ``B = 0`` at init so a task stream starts identical to the shared one.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank))
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        _init_low_rank(self.lora_A, self.lora_B)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(self.lora_dropout(u), self.lora_A), self.lora_B) * self.scaling

    def extra_repr(self) -> str:
        return (
            f"in_features={self.lora_A.shape[1]}, out_features={self.lora_B.shape[0]}, "
            f"rank={self.rank}, alpha={self.alpha}"
        )


def _block_linear(block: nn.Module, target: str) -> tuple[nn.Module, str]:
    if target in ("qkv", "proj"):
        return block.attn, target
    return block.mlp, target


def inject_lora(
    blocks: Iterable[nn.Module],
    targets: Iterable[str],
    *,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
) -> int:
    """Replace the target linears of every timm ViT block by :class:`LoRALinear`.

    Returns the number of wrapped linears.
    """
    count = 0
    targets = tuple(targets)
    for block in blocks:
        for target in targets:
            parent, attr = _block_linear(block, target)
            linear = getattr(parent, attr)
            if isinstance(linear, LoRALinear):
                raise ValueError(f"{attr} already carries a LoRA adapter")
            if not isinstance(linear, nn.Linear):
                raise TypeError(f"cannot adapt {attr}: {type(linear).__name__} is not nn.Linear")
            setattr(
                parent,
                attr,
                LoRALinear.from_linear(linear, rank=rank, alpha=alpha, dropout=dropout),
            )
            count += 1
    return count


def is_adapter_parameter(name: str) -> bool:
    """True for LoRA/TESLA parameters (by their names, as they appear in a state dict),
    DV-LoRA's frozen scaling vectors ``lora_U``/``lora_V`` (the released network) included:
    none of them is in a pretrained DINOv2 file."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("lora_A", "lora_B", "lora_U", "lora_V")
