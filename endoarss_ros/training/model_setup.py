"""Building the network a training config describes, and sorting its trainable parameters.

``model.architecture`` picks the network: ``endoarss`` (this project's,
:class:`~endoarss_ros.model.endoarss.EndoARSS`) or ``official`` (the authors' released one,
:class:`~endoarss_ros.model.official.OfficialEndoARSS`, trained as released: DV-LoRA ``A``/``B``
and both heads; the ViT, DV-LoRA's ``u``/``v`` and the SMA front end stay frozen).

*Shared* parameters receive gradient from both tasks: every trainable parameter outside the
two heads and the TESLA task adapters (the backbone's LoRA adapters; in the released network,
the DV-LoRA ``A``/``B`` of its ViT). Everything else that trains is *task-specific*: a head
(with its SMA in the project's network) and the task's own low-rank adapters. Gradient
balancing and the gradient-conflict measurement act on the shared set.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from endoarss_ros.data.classes import ClassInfo
from endoarss_ros.model.checkpoint import CheckpointMetadata
from endoarss_ros.model.config import IMAGENET_MEAN, IMAGENET_STD, ConfigError, EndoARSSConfig
from endoarss_ros.model.endoarss import EndoARSS, create_model, get_preset
from endoarss_ros.model.official import OfficialConfig, OfficialEndoARSS, get_official_preset
from endoarss_ros.training.config import ModelSection, TrainConfigError, deep_merge

TASK_ADAPTERS = "backbone.task_adapters."
HEADS = ("seg_head.", "activity_head.")
"""Name prefixes of the task heads, in both architectures."""

NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
"""``model.normalization`` -> (mean, std) applied to RGB scaled to [0, 1]."""

Model = EndoARSS | OfficialEndoARSS


def model_config(section: ModelSection, class_info: ClassInfo) -> EndoARSSConfig | OfficialConfig:
    """The preset, edited by ``model.overrides``, with the dataset's class counts."""
    official = section.architecture == "official"
    try:
        preset = get_official_preset(section.preset) if official else get_preset(section.preset)
    except KeyError as exc:
        raise TrainConfigError(f"model.preset: {exc.args[0]}") from None
    data = deep_merge(preset.to_dict(), section.overrides)
    data["num_activities"] = class_info.num_activities
    data["num_seg_classes"] = class_info.num_segmentation_classes
    config_cls = OfficialConfig if official else EndoARSSConfig
    try:
        return config_cls.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise TrainConfigError(f"model.overrides: {exc}") from exc


def build_model(section: ModelSection, class_info: ClassInfo) -> Model:
    config = model_config(section, class_info)
    if isinstance(config, OfficialConfig):
        return _build_official(section, config)
    model = create_model(config, pretrained=section.pretrained)
    if section.train_backbone:
        model.backbone.vit.requires_grad_(True)
    return model


def _build_official(section: ModelSection, config: OfficialConfig) -> OfficialEndoARSS:
    """The released network with the released trainable set (its constructor's): DV-LoRA
    ``A``/``B`` and both heads. ``model.pretrained`` loads a DINOv2 / Depth-Anything ViT/14
    encoder (the release uses Depth-Anything's ViT-B/14) into its frozen ViT."""
    model = OfficialEndoARSS(config)
    if section.pretrained is not None:
        from endoarss_ros.model.weights import load_pretrained

        load_pretrained(model.vit, section.pretrained)
    if section.train_backbone:
        model.vit.requires_grad_(True)
        for module in model.dv_lora_modules():  # DV-LoRA's u, v stay at their random init
            module.lora_U.requires_grad_(False)
            module.lora_V.requires_grad_(False)
    return model


def _task_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    heads: dict[str, list[nn.Module]] = {
        "activity": [model.activity_head],  # type: ignore[list-item]
        "segmentation": [model.seg_head],  # type: ignore[list-item]
    }
    backbone = getattr(model, "backbone", None)
    adapters = getattr(backbone, "task_adapters", None)
    if adapters is not None:
        for task, parts in heads.items():
            parts.append(adapters[task])
    return heads


def freeze_untrained_tasks(model: nn.Module, tasks: tuple[str, ...]) -> None:
    """Single-task training: the other task's head and adapters get no update at all."""
    for task, parts in _task_parts(model).items():
        if task not in tasks:
            for part in parts:
                part.requires_grad_(False)


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters outside the heads and the TESLA task adapters."""
    return [
        p
        for name, p in model.named_parameters()
        if p.requires_grad and not name.startswith((*HEADS, TASK_ADAPTERS))
    ]


def input_normalization(
    section: ModelSection,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) of ``model.normalization``."""
    return NORMALIZATION[section.normalization]


def checkpoint_metadata(
    class_info: ClassInfo,
    input_size: tuple[int, int],
    training: dict[str, Any],
    *,
    normalization: str = "imagenet",
    architecture: str = "endoarss",
) -> CheckpointMetadata:
    """Metadata for a model trained on ``class_info`` at ``input_size`` with
    ``normalization`` (a ``model.normalization`` value)."""
    mean, std = NORMALIZATION[normalization]
    return CheckpointMetadata(
        activity_classes=class_info.activities,
        segmentation_classes=class_info.segmentation,
        segmentation_colors=class_info.colors,
        input_size=input_size,
        mean=mean,
        std=std,
        training=training,
        architecture=architecture,
    )
