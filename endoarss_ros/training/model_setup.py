"""Building the network a training config describes, and sorting its trainable parameters.

*Shared* parameters receive gradient from both tasks: the backbone's LoRA adapters. Everything
else that trains is *task-specific*: a head, its SMA, and (TESLA) the task's own low-rank
adapters. Gradient balancing and the gradient-conflict measurement act on the shared set.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from endoarss_ros.data.classes import ClassInfo
from endoarss_ros.model.checkpoint import CheckpointMetadata
from endoarss_ros.model.config import IMAGENET_MEAN, IMAGENET_STD, ConfigError, EndoARSSConfig
from endoarss_ros.model.endoarss import EndoARSS, create_model, get_preset
from endoarss_ros.training.config import ModelSection, TrainConfigError, deep_merge

TASK_ADAPTERS = "backbone.task_adapters."


def model_config(section: ModelSection, class_info: ClassInfo) -> EndoARSSConfig:
    """The preset, edited by ``model.overrides``, with the dataset's class counts."""
    try:
        preset = get_preset(section.preset)
    except KeyError as exc:
        raise TrainConfigError(f"model.preset: {exc.args[0]}") from None
    data = deep_merge(preset.to_dict(), section.overrides)
    data["num_activities"] = class_info.num_activities
    data["num_seg_classes"] = class_info.num_segmentation_classes
    try:
        return EndoARSSConfig.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise TrainConfigError(f"model.overrides: {exc}") from exc


def build_model(section: ModelSection, class_info: ClassInfo) -> EndoARSS:
    model = create_model(model_config(section, class_info), pretrained=section.pretrained)
    if section.train_backbone:
        model.backbone.vit.requires_grad_(True)
    return model


def freeze_untrained_tasks(model: EndoARSS, tasks: tuple[str, ...]) -> None:
    """Single-task training: the other task's head and adapters get no update at all."""
    heads = {"activity": model.activity_head, "segmentation": model.seg_head}
    for task, head in heads.items():
        if task in tasks:
            continue
        head.requires_grad_(False)
        adapters = model.backbone.task_adapters
        if adapters is not None:
            adapters[task].requires_grad_(False)


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Trainable backbone parameters outside the TESLA task adapters."""
    return [
        p
        for name, p in model.named_parameters()
        if p.requires_grad and name.startswith("backbone.") and not name.startswith(TASK_ADAPTERS)
    ]


def checkpoint_metadata(
    class_info: ClassInfo, input_size: tuple[int, int], training: dict[str, Any]
) -> CheckpointMetadata:
    """Metadata for a model trained on ``class_info`` at ``input_size`` (ImageNet normalisation)."""
    return CheckpointMetadata(
        activity_classes=class_info.activities,
        segmentation_classes=class_info.segmentation,
        segmentation_colors=class_info.colors,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        training=training,
    )
