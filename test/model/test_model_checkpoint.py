"""Checkpoint round trip and every way a file can fail to be a readable EndoARSS checkpoint."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from endoarss_ros.model.checkpoint import (
    FORMAT_VERSION,
    METADATA_KEY,
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from endoarss_ros.model.config import EndoARSSConfig, TeslaConfig
from endoarss_ros.model.endoarss import EndoARSS


def _metadata(activities: int = 3, classes: int = 7) -> CheckpointMetadata:
    return CheckpointMetadata(
        activity_classes=tuple(f"activity {i}" for i in range(activities)),
        segmentation_classes=("background", *(f"class {i}" for i in range(1, classes))),
        segmentation_colors=tuple((i * 30, 255 - i * 30, i) for i in range(classes)),
        input_size=(224, 280),
        training={"epochs": 2, "val": {"miou": 0.5}, "dataset": "synthetic"},
    )


def _trained(make_model, config: EndoARSSConfig) -> EndoARSS:
    model = make_model(config)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    for _ in range(2):
        out = model(torch.randn(2, 3, 56, 56))
        loss = (
            F.cross_entropy(out["activity"], torch.tensor([0, 2]))
            + out["segmentation"].logsumexp(1).mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture
def saved(tmp_path: Path, tiny_config: EndoARSSConfig, make_model) -> tuple[Path, EndoARSS]:
    model = _trained(make_model, tiny_config)
    path = save_checkpoint(tmp_path / "ckpt" / "model.safetensors", model, _metadata())
    return path, model


def _rewrite(src: Path, dst: Path, edit_document=None, edit_tensors=None) -> Path:
    """Copy a checkpoint, changing its JSON document and/or tensors."""
    tensors = load_file(src)
    with safe_open(src, framework="pt") as f:
        header = dict(f.metadata())
    if edit_document is not None:
        document = json.loads(header[METADATA_KEY])
        edit_document(document)
        header[METADATA_KEY] = json.dumps(document)
    if edit_tensors is not None:
        edit_tensors(tensors)
    save_file(tensors, dst, metadata=header)
    return dst


@pytest.mark.parametrize("variant", ["tesla", "shared_only"])
def test_round_trip_reproduces_outputs_exactly(
    tmp_path: Path, tiny_config: EndoARSSConfig, make_model, variant: str
) -> None:
    if variant == "shared_only":
        tiny_config = tiny_config.replace(tesla=TeslaConfig(enabled=False))
    model = _trained(make_model, tiny_config)
    metadata = _metadata()
    path = save_checkpoint(tmp_path / "model.safetensors", model, metadata)
    loaded, loaded_meta = load_checkpoint(path, map_location=torch.device("cpu"))
    assert loaded_meta == metadata
    assert loaded.config == model.config
    assert not loaded.training and not loaded.merged
    x = torch.randn(2, 3, 70, 84)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    for key in ("activity", "segmentation"):
        assert torch.equal(expected[key], got[key])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in loaded.named_parameters() if p.requires_grad}

    # The deployed path: merge, then the same outputs within merge rounding.
    loaded.merge()
    with torch.no_grad():
        merged = loaded(x)
    for key in ("activity", "segmentation"):
        torch.testing.assert_close(merged[key], expected[key], atol=1e-5, rtol=1e-4)


def test_file_is_self_contained_with_each_tensor_once(saved) -> None:
    path, model = saved
    state = model.state_dict()
    with safe_open(path, framework="pt") as f:
        keys = set(f.keys())
        document = json.loads(f.metadata()[METADATA_KEY])
    assert keys == set(state)
    assert "backbone.vit.blocks.0.attn.qkv.weight" in keys  # frozen weights are stored
    payload = sum(t.numel() * t.element_size() for t in state.values())
    assert payload < path.stat().st_size < payload + 64 * 1024
    assert document["format_version"] == FORMAT_VERSION
    assert document["config"] == model.config.to_dict()
    assert document["segmentation_colors"][1] == [30, 225, 1]
    assert document["input_size"] == [224, 280]
    assert not list(path.parent.glob("*.tmp"))


def test_read_metadata_without_tensors(saved) -> None:
    path, model = saved
    config, metadata = read_metadata(path)
    assert config == model.config
    assert metadata.activity_classes == ("activity 0", "activity 1", "activity 2")
    assert metadata.training["val"] == {"miou": 0.5}


def test_a_saved_file_is_readable_by_others_and_replacing_keeps_the_mode(saved) -> None:
    path, model = saved
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o640)
    save_checkpoint(path, model, _metadata())
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_loading_never_unpickles(saved, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling on the checkpoint loading path")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    model, _ = load_checkpoint(path)
    assert isinstance(model, EndoARSS)


def test_save_refuses_merged_model_and_class_count_mismatch(
    tmp_path: Path, tiny_config: EndoARSSConfig
) -> None:
    model = EndoARSS(tiny_config)
    with pytest.raises(CheckpointError, match="2 activity class names for a model with 3"):
        save_checkpoint(tmp_path / "a.safetensors", model, _metadata(activities=2))
    with pytest.raises(CheckpointError, match="8 segmentation class names for a model with 7"):
        save_checkpoint(tmp_path / "a.safetensors", model, _metadata(classes=8))
    model.merge()
    with pytest.raises(CheckpointError, match="merged model"):
        save_checkpoint(tmp_path / "a.safetensors", model, _metadata())
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activity_classes": ()}, "activity_classes must be a non-empty list"),
        ({"activity_classes": ("a", "a", "b")}, "got ('a', 'a', 'b') (repeated: ['a'])"),
        ({"activity_classes": ("a", "", "b")}, "activity_classes must be a non-empty list"),
        ({"segmentation_classes": "abcdefg"}, "segmentation_classes must be a non-empty list"),
        ({"segmentation_colors": ((0, 0, 0),) * 6}, "6 colours for 7 segmentation classes"),
        ({"segmentation_colors": ((0, 0, 256),) * 7}, "RGB triples of integers 0-255"),
        ({"segmentation_colors": ((0, 0, True),) * 7}, "RGB triples of integers 0-255"),
        (
            {"input_size": (224, 225)},
            "input_size does not fit the endoarss network: input height and width must be",
        ),
        ({"input_size": (224,)}, "input_size must be two positive integers (H, W), got (224,)"),
        ({"input_size": (0, 224)}, "input_size must be two positive integers (H, W)"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be 3 positive numbers, got (0.2, 0.0, 0.2)"),
        ({"mean": (0.5, 0.5)}, "mean must be 3 finite numbers, got (0.5, 0.5)"),
        ({"mean": (0.5, 0.5, float("inf"))}, "mean must be 3 finite numbers"),
        ({"training": {"loss": float("nan")}}, "training must be JSON-serialisable"),
        ({"training": [1]}, "training must be a mapping, got [1]"),
        ({"format_version": 1.0}, "format_version must be an integer, got 1.0"),
    ],
)
def test_metadata_is_validated(kwargs: dict, message: str) -> None:
    fields = {
        "activity_classes": ("a", "b", "c"),
        "segmentation_classes": tuple(f"s{i}" for i in range(7)),
        "segmentation_colors": ((0, 0, 0),) * 7,
        "input_size": (224, 224),
        **kwargs,
    }
    with pytest.raises(CheckpointError) as info:
        CheckpointMetadata(**fields)
    assert message in str(info.value)


def _load_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_rejects_a_file_that_is_not_safetensors(tmp_path: Path, saved) -> None:
    _, model = saved
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    assert "not a safetensors file" in _load_error(text)
    pickled = tmp_path / "model.pth"
    torch.save(model.state_dict(), pickled)
    assert "not a safetensors file" in _load_error(pickled)
    assert "no such file" in _load_error(tmp_path / "absent.safetensors")


def test_rejects_safetensors_without_endoarss_metadata(tmp_path: Path, saved) -> None:
    path, _ = saved
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(path), bare)
    assert "without EndoARSS metadata" in _load_error(bare)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, other, metadata={"format": "pt"})
    assert "without EndoARSS metadata" in _load_error(other)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"w": torch.zeros(2)}, wrong, metadata={METADATA_KEY: "{not json"})
    assert "not valid JSON" in _load_error(wrong)
    foreign = _rewrite(path, tmp_path / "foreign.safetensors", lambda d: d.update(format="x"))
    assert "does not declare format 'endoarss-checkpoint'" in _load_error(foreign)


@pytest.mark.parametrize(
    ("version", "message"),
    [(2, "format version 2 cannot be read"), ("1", "format_version must be an integer")],
)
def test_rejects_a_version_it_cannot_read(tmp_path: Path, saved, version, message: str) -> None:
    path, _ = saved
    newer = _rewrite(path, tmp_path / "v.safetensors", lambda d: d.update(format_version=version))
    assert message in _load_error(newer)


def test_rejects_class_names_that_do_not_match_the_config(tmp_path: Path, saved) -> None:
    path, _ = saved
    fewer = _rewrite(path, tmp_path / "names.safetensors", lambda d: d["activity_classes"].pop())
    assert "2 activity class names for a model with 3 activities" in _load_error(fewer)

    def drop_segmentation_class(document: dict) -> None:
        document["segmentation_classes"].pop()
        document["segmentation_colors"].pop()

    fewer_seg = _rewrite(path, tmp_path / "seg.safetensors", drop_segmentation_class)
    assert "6 segmentation class names for a model with 7" in _load_error(fewer_seg)


def test_rejects_head_shapes_that_do_not_match_the_stored_classes(tmp_path: Path, saved) -> None:
    path, _ = saved

    def four_activities(document: dict) -> None:
        document["config"]["num_activities"] = 4
        document["activity_classes"].append("activity 3")

    relabelled = _rewrite(path, tmp_path / "heads.safetensors", four_activities)
    message = _load_error(relabelled)
    assert "weight shapes do not fit the stored config" in message
    assert "activity_head.fc2.weight (file (3, 64), config (4, 64))" in message


def test_rejects_missing_and_unexpected_weights(tmp_path: Path, saved) -> None:
    path, _ = saved
    missing = _rewrite(
        path,
        tmp_path / "missing.safetensors",
        edit_tensors=lambda t: t.pop("backbone.task_adapters.activity.1.lora_B"),
    )
    assert "missing weight(s): backbone.task_adapters.activity.1.lora_B" in _load_error(missing)
    extra = _rewrite(
        path,
        tmp_path / "extra.safetensors",
        edit_tensors=lambda t: t.update({"seg_head.extra.weight": torch.zeros(3)}),
    )
    assert "unexpected weight(s): seg_head.extra.weight" in _load_error(extra)


def test_rejects_an_invalid_stored_config(tmp_path: Path, saved) -> None:
    path, _ = saved
    bad = _rewrite(
        path, tmp_path / "config.safetensors", lambda d: d["config"]["lora"].update(rank=0)
    )
    assert "invalid model config: lora.rank must be a positive integer, got 0" in _load_error(bad)
    lacking = _rewrite(path, tmp_path / "lacking.safetensors", lambda d: d.pop("input_size"))
    assert "metadata lacks field(s): input_size" in _load_error(lacking)


def test_a_bad_stored_field_names_the_file_and_the_field(tmp_path: Path, saved) -> None:
    path, _ = saved
    bad = _rewrite(path, tmp_path / "std.safetensors", lambda d: d.update(std=[0.2, -1, 0.2]))
    with pytest.raises(CheckpointError) as info:
        read_metadata(bad)
    assert info.value.field == "std"
    assert info.value.source == str(bad)
    assert str(info.value) == f"{bad}: std must be 3 positive numbers, got [0.2, -1, 0.2]"
