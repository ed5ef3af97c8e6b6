"""ROS-free inference: an EndoARSS checkpoint on a device, frames in, activity and masks out.

The public names below are imported lazily, so configuration code can use the device and
precision checks without paying for the PyTorch import.
"""

from __future__ import annotations

from endoarss_ros.lazy_exports import lazy_exports

_EXPORTS = {
    "Predictor": "predictor",
    "Prediction": "predictor",
    "ModelInfo": "predictor",
    "checkpoint_hash": "predictor",
    "PredictorError": "errors",
    "CheckpointLoadError": "errors",
    "DeviceError": "errors",
    "FrameError": "errors",
    "FramePipeline": "pipeline",
    "FrameResult": "pipeline",
    "load_predictor": "pipeline",
    "OutOfMemory": "errors",
    "NonFiniteOutput": "errors",
    "resolve_device": "devices",
    "resolve_precision": "devices",
    "check_device_spec": "devices",
    "check_precision_spec": "devices",
    "UNLABELED": "overlay",
    "palette": "overlay",
    "render_overlay": "overlay",
    "write_random_checkpoint": "random_checkpoint",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
