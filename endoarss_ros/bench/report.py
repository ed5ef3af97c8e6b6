"""What every benchmark result file carries: the machine and its load, and strict JSON
(a figure that was not measured is null, not NaN, which JSON does not have)."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any


def machine_description(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load}, torch {torch.__version__}"
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(_finite(document), indent=2, allow_nan=False))
