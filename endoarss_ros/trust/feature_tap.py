"""Pooled backbone features of the forward pass that is running anyway, and their fit.

The tap is a forward hook on the ViT block whose output the heads read last
(``backbone.vit.blocks[levels[-1]]`` of :class:`~endoarss_ros.model.endoarss.EndoARSS`,
``vit.blocks[-1]`` of the official network). Its output is the shared trunk's tokens: after
the shared LoRA (merged or not, the same numbers) and before TESLA's per-task deltas, so one
vector serves both heads. The hook pools them into the final-normed CLS token and the
final-normed mean patch token (``cls_mean``): two LayerNorms of one token each and a mean over
the tokens, microseconds beside the backbone, and no second pass.

Register the tap before ``torch.compile`` wraps the model (Dynamo traces hooks that exist when
it compiles; one added later is not seen by the compiled graph).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from endoarss_ros.data.preprocessing import Preprocessing

from .ood import FeatureAccumulator, FeatureStatistics, pooled_dim


def trunk_of(model: nn.Module) -> tuple[nn.Module, nn.LayerNorm, int]:
    """``(block, final norm, prefix tokens)``: where the tap hooks into ``model`` (the ViT's
    final norm is a LayerNorm, whose width :func:`feature_dim` reads)."""
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "vit") and hasattr(backbone, "levels"):
        vit = backbone.vit
        return vit.blocks[backbone.levels[-1]], vit.norm, int(backbone.num_prefix_tokens)
    vit = getattr(model, "vit", None)
    if vit is not None and hasattr(vit, "blocks") and hasattr(vit, "norm"):
        return vit.blocks[-1], vit.norm, int(getattr(vit, "num_prefix_tokens", 1))
    raise TypeError(f"{type(model).__name__} has no ViT trunk to tap (backbone.vit or vit)")


def feature_dim(model: nn.Module) -> int:
    """Length of the pooled vector (``cls_mean``: twice the token width)."""
    _, norm, _ = trunk_of(model)
    return pooled_dim("cls_mean", int(norm.normalized_shape[0]))


class FeatureTap:
    """Keeps the pooled features (B x 2D float32, on the model's device) of the last forward
    pass of ``model``. Not thread-safe: one thread runs the model and takes the features."""

    def __init__(self, model: nn.Module) -> None:
        block, self._norm, self._prefix = trunk_of(model)
        self.dim = feature_dim(model)
        self._features: torch.Tensor | None = None
        self._handle = block.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: object, output: torch.Tensor) -> None:
        with torch.no_grad():
            cls = self._norm(output[:, 0])
            mean = self._norm(output[:, self._prefix :].mean(dim=1))
            self._features = torch.cat([cls, mean], dim=1).float()

    def take(self) -> torch.Tensor | None:
        """The features of the last forward pass, once (None when none ran since)."""
        features, self._features = self._features, None
        return features

    def remove(self) -> None:
        self._handle.remove()
        self._features = None

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _batches(frames: Iterable[np.ndarray], size: int) -> Iterable[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    frames: Iterable[np.ndarray],
    *,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 16,
) -> Iterable[np.ndarray]:
    """Pooled features (B x D float32 numpy) of batches of uint8 RGB frames of any size,
    preprocessed exactly as the Predictor does."""
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    preprocessing = Preprocessing(input_size, mean, std, device)
    model.eval()
    with FeatureTap(model) as tap:
        for batch in _batches(frames, batch_size):
            pixels = [
                preprocessing(torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None])
                for f in batch
            ]
            model(torch.cat([p.to(device) for p in pixels]).to(dtype))
            features = tap.take()
            assert features is not None
            yield features.cpu().numpy()


def fit_feature_statistics(
    model: nn.Module,
    frames: Iterable[np.ndarray],
    *,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    labels: Iterable[int] | None = None,
    num_classes: int | None = None,
    batch_size: int = 16,
    rank: int = 256,
    quantile: float = 0.99,
    holdout_every: int = 5,
) -> FeatureStatistics:
    """:class:`FeatureStatistics` of ``model``'s pooled features over training ``frames``
    (uint8 RGB, any size; preprocessed as the Predictor does, with the checkpoint's
    ``input_size``, ``mean`` and ``std``). With ``labels`` (activity ids, one per frame) the
    means are per class with one shared covariance; ``num_classes`` defaults to the largest
    label + 1 then. Every ``holdout_every``-th frame is held out to set the reference.

    Runs wherever the model's parameters are, in their dtype; ROS-free and training-side."""
    label_list = None if labels is None else [int(v) for v in labels]
    classes = 1
    if label_list is not None:
        classes = num_classes if num_classes is not None else max(label_list, default=0) + 1
    accumulator = FeatureAccumulator(feature_dim(model), classes, holdout_every=holdout_every)
    features = extract_features(
        model, frames, input_size=input_size, mean=mean, std=std, batch_size=batch_size
    )
    start = 0
    for batch in features:
        batch_labels = None
        if label_list is not None:
            batch_labels = np.asarray(label_list[start : start + len(batch)])
            if len(batch_labels) != len(batch):
                raise ValueError("fewer labels than frames")
        accumulator.add(batch, batch_labels)
        start += len(batch)
    if label_list is not None and start != len(label_list):
        raise ValueError(f"{len(label_list)} labels for {start} frames")
    return accumulator.finish(rank=rank, quantile=quantile)
