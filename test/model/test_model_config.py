"""Config validation, serialisation, presets and the registry."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch
import yaml

from endoarss_ros.model.backbone import build_vit
from endoarss_ros.model.config import (
    ActivityHeadConfig,
    BackboneConfig,
    ConfigError,
    EndoARSSConfig,
    LoRAConfig,
    SegHeadConfig,
    SMAConfig,
)
from endoarss_ros.model.endoarss import (
    EndoARSS,
    create_model,
    get_preset,
    list_presets,
    register_preset,
)
from endoarss_ros.validation import ValidationError, flat_fields, from_flat, to_flat

DINOV2_PRESETS = [
    f"vit_{size}_patch14{reg}_dinov2"
    for size in ("small", "base", "large", "giant")
    for reg in ("", "_reg4")
]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LoRAConfig(rank=0), "lora.rank must be a positive integer, got 0"),
        (lambda: LoRAConfig(rank=True), "lora.rank must be a positive integer, got True"),
        (lambda: LoRAConfig(alpha=-1.0), "lora.alpha must be a positive number, got -1.0"),
        (lambda: LoRAConfig(dropout=1.0), "lora.dropout must be a number in [0, 1), got 1.0"),
        (
            lambda: LoRAConfig(targets=("qkv", "out")),
            "lora.targets must be a non-empty list, each one of qkv, proj, fc1, fc2, no repeats, "
            "got ('qkv', 'out')",
        ),
        (lambda: LoRAConfig(targets=("qkv", "qkv")), "got ('qkv', 'qkv') (repeated: ['qkv'])"),
        (lambda: LoRAConfig(targets=()), "lora.targets must be a non-empty list"),
        (lambda: LoRAConfig(dropout=float("nan")), "lora.dropout must be a number in [0, 1)"),
        (lambda: LoRAConfig(enabled=1), "lora.enabled must be true or false, got 1"),
        (lambda: BackboneConfig(embed_dim=100, num_heads=3), "backbone.embed_dim (100)"),
        (lambda: BackboneConfig(img_size=500), "backbone.img_size must be a multiple of 14"),
        (lambda: BackboneConfig(ffn="geglu"), "backbone.ffn must be one of"),
        (lambda: BackboneConfig(feature_levels=(2, 12)), "backbone.feature_levels must lie"),
        (lambda: BackboneConfig(feature_levels=(5, 2)), "must be strictly increasing"),
        (lambda: BackboneConfig(feature_levels=()), "must be a non-empty list"),
        (lambda: BackboneConfig(feature_levels=(-1, 2)), "backbone.feature_levels must lie"),
        (lambda: BackboneConfig(ffn="swiglu", mlp_ratio=2.5, embed_dim=3, num_heads=1), "even"),
        (lambda: ActivityHeadConfig(channels=130), "activity_head.channels must be a multiple"),
        (lambda: EndoARSSConfig(name=""), "name must be a non-empty string, got ''"),
        (lambda: EndoARSSConfig(lora={}), "lora must be a LoRAConfig, got dict"),
        (lambda: SegHeadConfig(channels=40), "seg_head.channels must be a multiple of 16"),
        (lambda: SMAConfig(groups=0), "sma.groups must be a positive integer, got 0"),
        (lambda: EndoARSSConfig(num_activities=0), "num_activities must be a positive integer"),
        (
            lambda: EndoARSSConfig(sma=SMAConfig(groups=48)),
            "sma.groups (48) must divide seg_head.channels (128)",
        ),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(build, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert message in str(info.value)


def test_config_errors_are_validation_errors_naming_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        EndoARSSConfig.from_dict({"tesla": {"rank": 0}})
    assert isinstance(info.value, ConfigError)
    assert info.value.field == "tesla.rank"
    assert info.value.detail == "must be a positive integer, got 0"


def test_every_field_carries_a_rule_and_a_doc() -> None:
    fields = flat_fields(EndoARSSConfig)
    assert {f.name for f in fields} >= {"name", "lora.rank", "backbone.feature_levels"}
    assert all(f.doc for f in fields)
    assert from_flat(EndoARSSConfig, to_flat(EndoARSSConfig())) == EndoARSSConfig()


def test_to_dict_round_trips_through_json_and_yaml(tiny_config: EndoARSSConfig) -> None:
    data = tiny_config.to_dict()
    assert EndoARSSConfig.from_dict(json.loads(json.dumps(data))) == tiny_config
    assert EndoARSSConfig.from_dict(yaml.safe_load(yaml.safe_dump(data))) == tiny_config


def test_from_dict_rejects_unknown_fields_and_bad_values(tiny_config: EndoARSSConfig) -> None:
    data = tiny_config.to_dict()
    data["lora"]["rnak"] = 4
    with pytest.raises(ConfigError, match=r"unknown field.*lora: rnak"):
        EndoARSSConfig.from_dict(data)
    data = tiny_config.to_dict()
    data["extra"] = 1
    with pytest.raises(ConfigError, match=r"unknown field\(s\) in the configuration: extra"):
        EndoARSSConfig.from_dict(data)
    data = tiny_config.to_dict()
    data["tesla"]["rank"] = 0
    with pytest.raises(ConfigError, match=r"tesla\.rank must be a positive integer, got 0"):
        EndoARSSConfig.from_dict(data)
    data = tiny_config.to_dict()
    data["sma"] = [1, 2]
    with pytest.raises(ConfigError, match="sma must be a mapping"):
        EndoARSSConfig.from_dict(data)


def test_partial_dict_takes_defaults() -> None:
    config = EndoARSSConfig.from_dict({"num_activities": 12, "lora": {"rank": 16}})
    assert config.num_activities == 12
    assert config.lora.rank == 16
    assert config.lora.targets == ("qkv", "proj", "fc1", "fc2")
    assert config.backbone == BackboneConfig()


def test_registry_lists_every_backbone_and_the_tiny_preset() -> None:
    assert set(list_presets()) >= {*DINOV2_PRESETS, "vit_tiny_patch14"}
    with pytest.raises(KeyError, match=r"unknown preset 'vit_huge'.*vit_base_patch14_dinov2"):
        get_preset("vit_huge")
    with pytest.raises(ValueError, match="already registered"):
        register_preset("vit_tiny_patch14")(lambda: EndoARSSConfig())


@pytest.mark.parametrize("name", DINOV2_PRESETS)
def test_preset_backbone_is_timms_dinov2_architecture(name: str) -> None:
    """Same keys, shapes and modules as timm's registered model, so its weights fit."""
    config = get_preset(name)
    assert config.name == name
    assert EndoARSSConfig.from_dict(config.to_dict()) == config
    assert config.backbone.feature_levels[-1] == config.backbone.depth - 1
    with torch.device("meta"):
        ours = build_vit(config.backbone)
        reference = timm.create_model(name, pretrained=False, num_classes=0)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    reference_shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert ours_shapes == reference_shapes
    assert str(ours.blocks[0]) == str(reference.blocks[0])
    assert ours.patch_embed.grid_size == reference.patch_embed.grid_size == (37, 37)
    assert ours.num_prefix_tokens == reference.num_prefix_tokens


def test_create_model_accepts_name_config_and_dict(tiny_config: EndoARSSConfig) -> None:
    by_name = create_model("vit_tiny_patch14", num_activities=5, num_seg_classes=2)
    assert isinstance(by_name, EndoARSS)
    assert by_name.config.num_activities == 5
    assert by_name.config.num_seg_classes == 2
    assert by_name.activity_head.fc2.out_features == 5
    assert by_name.seg_head.classifier.out_channels == 2
    assert create_model(tiny_config).config == tiny_config
    assert create_model(tiny_config.to_dict()).config == tiny_config
    with pytest.raises(ConfigError, match="num_activities must be a positive integer"):
        create_model("vit_tiny_patch14", num_activities=0)
    with pytest.raises(ConfigError, match="expects a preset name"):
        create_model(42)  # type: ignore[arg-type]


def test_package_import_is_light_and_exports_lazily() -> None:
    code = (
        "import sys, endoarss_ros.model as m\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules\n"
        "assert m.create_model.__module__ == 'endoarss_ros.model.endoarss'\n"
        "assert m.load_checkpoint.__module__ == 'endoarss_ros.model.checkpoint'\n"
        "print(sorted(m.__all__))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "EndoARSS" in result.stdout and "save_checkpoint" in result.stdout
