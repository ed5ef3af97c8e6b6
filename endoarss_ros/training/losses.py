"""Per-task losses: cross-entropy for activities, cross-entropy (+ soft Dice) for segmentation.

Losses are computed in float32 whatever the autocast dtype of the logits, and pixels labelled
``IGNORE_INDEX`` (255: outside the endoscope's field of view, unlabelled) contribute nothing to
either segmentation term.

Rare classes (needles, thread, jaws: well under 1 % of the pixels) barely move a plain pixel
cross-entropy, so it can reach a low loss while never predicting them. Two options act on
that: per-class weights ``frequency ** -power`` (from the training split's pixel counts,
:func:`class_weights_from_counts`) and a focal term ``(1 - p_target) ** gamma`` that shifts
the loss to the pixels still misclassified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from endoarss_ros.data.classes import IGNORE_INDEX


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    eps: float = 1.0,
) -> torch.Tensor:
    """``1 - mean_c Dice_c`` over the classes present in the prediction or target of the batch.

    ``logits``: B x C x H x W, ``target``: B x H x W class ids. Probabilities come from a
    softmax; Dice per class is ``(2 sum p t + eps) / (sum p + sum t + eps)`` over all valid
    pixels of the batch (dataset-style pooling, so a class absent from one frame does not
    count as a perfect score there). Classes with no target pixel and (almost) no predicted
    mass are left out of the mean, so rare classes are not rewarded for being absent.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    one_hot = F.one_hot(safe_target.long(), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    weight = valid.unsqueeze(1).to(probs.dtype)
    probs = probs * weight
    one_hot = one_hot * weight
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    cardinality = probs.sum(dims) + one_hot.sum(dims)
    dice = (2.0 * intersection + eps) / (cardinality + eps)
    present = one_hot.sum(dims) > 0
    present |= probs.sum(dims) >= 0.5
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1.0 - dice[present].mean()


class ActivityLoss(nn.Module):
    """Cross-entropy over the activity logits (optionally label-smoothed)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.long(), label_smoothing=self.label_smoothing)


def class_weights_from_counts(
    counts: torch.Tensor, power: float, max_ratio: float = 50.0
) -> torch.Tensor:
    """Per-class weights ``frequency ** -power``, scaled so the pixel-weighted mean is 1.

    Classes with no pixel get the largest weight (they may appear in other data); weights are
    capped at ``max_ratio`` times the smallest, so one class seen in a handful of pixels
    cannot dominate the loss. ``power`` 0 gives all ones, 0.5 inverse square root, 1 inverse
    frequency.
    """
    counts = counts.double().clamp_min(0)
    if counts.sum() <= 0:
        raise ValueError("class weights need at least one labelled pixel")
    frequency = counts / counts.sum()
    present = frequency > 0
    weights = torch.ones_like(frequency)
    weights[present] = frequency[present] ** -power
    weights[~present] = weights[present].max()
    weights = torch.minimum(weights, weights.min() * max_ratio)
    weights = weights / (weights * frequency).sum()
    return weights.float()


class SegmentationLoss(nn.Module):
    """Pixel cross-entropy (optionally class-weighted and focal), plus ``dice_weight`` x soft
    Dice loss when ``use_dice``."""

    def __init__(
        self,
        use_dice: bool = True,
        dice_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        class_weights: torch.Tensor | None = None,
        focal_gamma: float = 0.0,
    ) -> None:
        super().__init__()
        self.use_dice = use_dice
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index
        self.focal_gamma = focal_gamma
        self.register_buffer(
            "class_weights",
            None if class_weights is None else class_weights.float(),
            persistent=False,
        )

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean of ``w[target] * (1 - p_t) ** gamma * -log p_t`` over valid pixels, divided by
        the mean weight (plain cross-entropy when unweighted and ``gamma`` is 0)."""
        logits = logits.float()
        if self.class_weights is None and self.focal_gamma == 0:
            return F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        valid = target != self.ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target))
        log_p = logits.log_softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        loss = -log_p
        if self.focal_gamma:
            loss = loss * (1.0 - log_p.exp()).clamp_min(0).pow(self.focal_gamma)
        weight = valid.to(loss.dtype)
        if self.class_weights is not None:
            weight = weight * self.class_weights.to(loss.device)[safe]
        return (loss * weight).sum() / weight.sum().clamp_min(1e-12)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        if not bool((target != self.ignore_index).any()):
            # Cross-entropy over zero valid pixels is NaN; such a batch carries no signal.
            return logits.float().sum() * 0.0
        loss = self.pixel_loss(logits, target)
        if self.use_dice and self.dice_weight > 0:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index)
        return loss


class TaskLosses(nn.Module):
    """The loss of every trained task from the model output and the batch labels."""

    def __init__(
        self,
        tasks: tuple[str, ...],
        segmentation: str = "ce_dice",
        dice_weight: float = 1.0,
        label_smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
        focal_gamma: float = 0.0,
    ) -> None:
        super().__init__()
        self.tasks = tasks
        self.activity = ActivityLoss(label_smoothing)
        self.segmentation = SegmentationLoss(
            segmentation == "ce_dice",
            dice_weight,
            class_weights=class_weights,
            focal_gamma=focal_gamma,
        )

    def forward(
        self, output: dict[str, torch.Tensor], activity: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        if "activity" in self.tasks:
            losses["activity"] = self.activity(output["activity"], activity)
        if "segmentation" in self.tasks:
            losses["segmentation"] = self.segmentation(output["segmentation"], mask)
        return losses
