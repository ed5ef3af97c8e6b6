"""Which torch device and dtype the Predictor runs on, from the strings a user writes.

An explicit request that cannot be honoured is an error, never a silent fallback: a user who
asked for ``cuda:0`` and got the CPU would see a node that is twenty times slower for no
stated reason. Only ``auto`` chooses.

The spelling checks (:func:`check_device_spec`, :func:`check_precision_spec`) need no torch,
so configuration can be validated before the slow import.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from .errors import DeviceError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES: Final = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS: Final = ("auto", "fp32", "fp16", "bf16")

_CUDA_PATTERN: Final = re.compile(r"cuda(?::(\d+))?")


def check_device_spec(spec: str) -> str:
    """Normalise a device string, or fail naming the accepted forms."""
    text = spec.strip().lower() if isinstance(spec, str) else ""
    if text in ("auto", "cpu") or _CUDA_PATTERN.fullmatch(text):
        return text
    raise DeviceError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {spec!r}")


def check_precision_spec(spec: str) -> str:
    text = spec.strip().lower() if isinstance(spec, str) else ""
    if text in PRECISIONS:
        return text
    raise DeviceError(f"precision must be one of {', '.join(PRECISIONS)}, got {spec!r}")


def resolve_device(spec: str) -> torch.device:
    """``auto`` (the first CUDA device when there is one, else the CPU), ``cpu``, ``cuda[:N]``."""
    import torch

    text = check_device_spec(spec)
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA_PATTERN.fullmatch(text)
    assert match is not None
    index = int(match.group(1) or 0)
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {spec!r} requested but CUDA is not available to this PyTorch "
            f"(torch {torch.__version__}); use 'cpu' or 'auto'"
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {spec!r} requested but only {count} CUDA device(s) are visible")
    return torch.device("cuda", index)


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on CUDA devices that support it, fp16 on older ones, fp32 on the CPU.

    fp16 on the CPU is refused: most CPU kernels lack it and the rest run slower than fp32.
    """
    import torch

    text = check_precision_spec(spec)
    if text == "auto":
        if device.type != "cuda":
            return torch.float32
        with torch.cuda.device(device):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if text == "fp16" and device.type == "cpu":
        raise DeviceError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[text]


def precision_name(dtype: torch.dtype) -> str:
    import torch

    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    return names[dtype]
