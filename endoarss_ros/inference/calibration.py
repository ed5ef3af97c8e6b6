"""Temperature scaling at inference: where logits become calibrated probabilities.

The Predictor (the node) and ``endoarss eval`` both turn logits into probabilities here, so
the confidences eval scores after scaling are the ones the node publishes. Dividing by a
positive temperature leaves every argmax where it was: class ids and activity labels do not
change, only how confident they are said to be. The temperatures come from the checkpoint's
``calibration`` metadata (`endoarss_ros.model.checkpoint.Calibration`), fitted by
``endoarss calibrate`` (`endoarss_ros.training.calibration`); 1 means no scaling.
"""

from __future__ import annotations

import torch


def scale_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` in float32 (the logits themselves when it is 1)."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def calibrated_softmax(logits: torch.Tensor, temperature: float, dim: int = 1) -> torch.Tensor:
    """Probabilities over ``dim`` of ``logits`` scaled by ``temperature``, in float32."""
    return torch.softmax(scale_logits(logits, temperature), dim=dim)
