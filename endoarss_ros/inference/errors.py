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


class FrameError(ValueError):
    """A frame that is not an H x W x 3 uint8 RGB image."""
