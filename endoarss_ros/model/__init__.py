"""The EndoARSS network: DINOv2 backbone, LoRA/TESLA adapters, SMA, heads, checkpoints.

The public names below are imported lazily, so ``import endoarss_ros.model`` stays cheap
until one of them (and with it torch and timm) is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EndoARSS": "endoarss",
    "create_model": "endoarss",
    "get_preset": "endoarss",
    "list_presets": "endoarss",
    "register_preset": "endoarss",
    "EndoARSSConfig": "config",
    "BackboneConfig": "config",
    "LoRAConfig": "config",
    "TeslaConfig": "config",
    "SMAConfig": "config",
    "SegHeadConfig": "config",
    "ActivityHeadConfig": "config",
    "ConfigError": "config",
    "TASKS": "config",
    "load_pretrained": "weights",
    "PretrainedWeightsError": "weights",
    "CheckpointMetadata": "checkpoint",
    "CheckpointError": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "parameter_summary": "summary",
    "OfficialEndoARSS": "official",
    "OfficialConfig": "official",
    "convert_release": "official_convert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
