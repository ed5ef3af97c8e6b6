"""The EndoARSS network: DINOv2 backbone, LoRA/TESLA adapters, SMA, heads, checkpoints.

The public names below are imported lazily, so ``import endoarss_ros.model`` stays cheap
until one of them (and with it torch and timm) is used.
"""

from __future__ import annotations

from endoarss_ros.lazy_exports import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
