"""Errors of the Predictor, each with a message that says what to change."""

from __future__ import annotations


class PredictorError(RuntimeError):
    """The Predictor cannot be built as asked (checkpoint, device, precision, compilation)."""


class CheckpointLoadError(PredictorError):
    """The checkpoint file is missing or is not a usable EndoARSS checkpoint."""


class DeviceError(PredictorError):
    """A device or precision that does not exist or cannot work on this machine."""


class OutOfMemory(PredictorError):
    """The device ran out of memory on one batch. The Predictor has released its cached blocks,
    so the next batch may fit; the caller drops this one."""


class NonFiniteOutput(PredictorError):
    """The model produced NaN or infinite activity logits or segmentation logits for a batch.
    Nothing of the batch is returned (a NaN must never be published as a confidence); the
    caller drops it as an inference fault. Usually the weights or the precision: a model that
    overflows in fp16 may work in bf16 or fp32."""


class FrameError(ValueError):
    """A frame that is not an H x W x 3 uint8 RGB image."""
