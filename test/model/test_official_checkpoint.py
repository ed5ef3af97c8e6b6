"""The released EndoARSS network, its checkpoint conversion and its run in the Predictor."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from endoarss_ros.cli import main as cli_main
from endoarss_ros.model.checkpoint import (
    METADATA_KEY,
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from endoarss_ros.model.config import EndoARSSConfig
from endoarss_ros.model.endoarss import EndoARSS
from endoarss_ros.model.official import OfficialConfig, OfficialEndoARSS
from endoarss_ros.model.official_convert import (
    OfficialCheckpointError,
    convert_release,
    release_metadata,
    to_release_state_dict,
)

# Reduced network for fast tests: 2 blocks of width 64 (viewed as 4 x 16), 4 x 4 tokens.
SMALL = OfficialConfig(
    name="official_small",
    embed_dim=64,
    depth=2,
    num_heads=2,
    pos_embed_size=98,
    image_size=56,
    sma_dim=16,
    trans_depth=1,
    trans_heads=2,
    trans_head_dim=8,
    trans_mlp_dim=32,
    feature_shape=(4, 16),
    head_channels=32,
)


def _trained_like(model: OfficialEndoARSS) -> OfficialEndoARSS:
    """Random weights where every part matters: non-zero LoRA B, pretrained-size LayerScale,
    non-trivial BatchNorm statistics."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
            elif name.endswith(("ls1.gamma", "ls2.gamma")):
                param.uniform_(0.5, 1.5, generator=generator)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


@pytest.fixture
def release_file(tmp_path: Path) -> tuple[Path, OfficialEndoARSS]:
    """A reduced official model saved as the release does: torch.save of a plain state dict."""
    model = _trained_like(OfficialEndoARSS(SMALL))
    path = tmp_path / "mtl_MOLA_small.pt"
    torch.save(to_release_state_dict(model), path)
    return path, model


def test_parameter_counts_match_the_release() -> None:
    with torch.device("meta"):
        model = OfficialEndoARSS(OfficialConfig(num_activities=3, num_seg_classes=7))
    total = sum(p.numel() for p in model.parameters())
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert total == 96_741_620
    assert sum(trainable.values()) == 3_783_178
    assert sum(v for n, v in trainable.items() if "lora_" in n) == 368_640
    assert sum(p.numel() for p in model.sma.trans.parameters()) == 6_303_744
    assert not any(n.endswith(("lora_U", "lora_V")) or n.startswith("sma.") for n in trainable)


def test_release_key_layout() -> None:
    with torch.device("meta"):
        model = OfficialEndoARSS(OfficialConfig())
    shapes = {k: tuple(v.shape) for k, v in to_release_state_dict(model).items()}
    assert len(shapes) == 370
    expected = {
        "encoder.encoder.pos_embed": (1, 1370, 768),
        "encoder.encoder.mask_token": (1, 768),
        "encoder.encoder.cls_token": (1, 1, 768),
        "encoder.encoder.patch_embed.proj.weight": (768, 3, 14, 14),
        "encoder.encoder.blocks.11.ls2.gamma": (768,),
        "encoder.encoder.blocks.0.mlp.fc1.lora_A": (4, 768),
        "encoder.encoder.blocks.0.mlp.fc1.lora_U": (4, 1),
        "encoder.encoder.blocks.0.mlp.fc1.lora_V": (3072, 1),
        "encoder.encoder.blocks.11.mlp.fc2.lora_B": (768, 4),
        "encoder.encoder.mob.conv2.weight": (512, 3, 1, 1),
        "encoder.encoder.mob.ema.gn.weight": (49,),
        "encoder.encoder.mob.ema.conv3x3.weight": (49, 49, 3, 3),
        "encoder.encoder.mob.trans.layers.2.0.fn.to_qkv.weight": (1536, 512),
        "encoder.encoder.mob.trans.layers.2.1.fn.net.3.bias": (512,),
        "encoder.encoder.mob.conv4.weight": (3, 6, 3, 3),
        "encoder.encoder.norm.weight": (768,),
        "decoders.segmentation.0.convs.3.0.weight": (256, 256, 3, 3),
        "decoders.segmentation.0.convs.4.2.running_var": (256,),
        "decoders.segmentation.0.project.0.weight": (256, 1280, 1, 1),
        "decoders.segmentation.4.weight": (7, 256, 1, 1),
        "decoders.classification.0.weight": (256, 256, 3, 3),
        "decoders.classification.5.weight": (3, 256),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    assert all(k.startswith(("encoder.encoder.", "decoders.")) for k in shapes)


def test_conversion_gives_identical_outputs(release_file, tmp_path: Path) -> None:
    path, model = release_file
    out = convert_release(path, "mtlesd", tmp_path / "converted.safetensors", config=SMALL)
    converted, meta = load_checkpoint(out)
    assert isinstance(converted, OfficialEndoARSS) and converted.config == SMALL
    x = torch.rand(2, 3, 61, 75)
    with torch.no_grad():
        expected, actual = model(x), converted(x)
    assert expected["activity"].shape == (2, 3)
    assert expected["segmentation"].shape == (2, 7, 61, 75)
    for task in ("activity", "segmentation"):
        assert torch.equal(expected[task], actual[task]), task
    assert meta.architecture == "official"
    assert meta.input_size == (244, 244)
    assert meta.mean == (0.0, 0.0, 0.0) and meta.std == (1.0, 1.0, 1.0)
    assert meta.activity_classes == ("Marking", "Circumferential Incision", "Submucosal Dissection")
    assert len(meta.segmentation_classes) == 7
    assert meta.training["source_sha256"]


def test_merge_keeps_outputs(release_file) -> None:
    _, model = release_file
    x = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        before = model(x)["segmentation"]
        after = model.merge()(x)["segmentation"]
    assert model.merged
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_converted_checkpoint_runs_in_the_predictor(release_file, tmp_path: Path) -> None:
    from endoarss_ros.inference.predictor import Predictor

    path, _ = release_file
    out = convert_release(path, "mtlesd", tmp_path / "converted.safetensors", config=SMALL)
    predictor = Predictor(out, device="cpu", precision="fp32")
    frame = np.random.default_rng(0).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    (result,) = predictor.predict([frame])
    assert result.activity.shape == (3,)
    assert abs(float(result.activity.sum()) - 1.0) < 1e-5
    assert result.mask.shape == (100, 130) and result.mask.dtype == np.uint8
    assert int(result.mask.max()) < 7
    assert predictor.info.input_size == (244, 244)
    assert predictor.info.mean == (0.0, 0.0, 0.0) and predictor.info.std == (1.0, 1.0, 1.0)


def test_mtlendovis_metadata_says_the_names_are_unknown(tmp_path: Path) -> None:
    config = dataclasses.replace(SMALL, num_activities=12)
    path = tmp_path / "endovis.pt"
    torch.save(to_release_state_dict(OfficialEndoARSS(config)), path)
    out = convert_release(path, "mtlendovis", tmp_path / "endovis.safetensors", config=config)
    _, meta = read_metadata(out)
    assert len(meta.activity_classes) == 12 and len(meta.segmentation_classes) == 7
    assert meta.training["dataset"] == "MTLEndovis"
    assert "placeholders" in meta.training["class_names_note"]


def _edit(state: dict[str, torch.Tensor], kind: str, key: str) -> None:
    if kind == "missing":
        del state[key]
    elif kind == "extra":
        state[key] = torch.zeros(3)
    else:
        state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)


@pytest.mark.parametrize(
    ("kind", "key", "message"),
    [
        ("missing", "encoder.encoder.mob.ema.gn.weight", "missing key(s)"),
        ("missing", "encoder.encoder.mob.trans.layers.0.0.ln.bias", "missing key(s)"),
        ("missing", "encoder.encoder.blocks.1.mlp.fc2.lora_V", "missing key(s)"),
        ("missing", "encoder.encoder.mask_token", "missing key(s)"),
        ("extra", "encoder.encoder.blocks.1.mlp.fc2.lora_W", "unexpected key(s)"),
        ("extra", "decoders.depth.0.weight", "unexpected key(s)"),
        ("misshapen", "decoders.classification.5.weight", "shape mismatch"),
        ("misshapen", "encoder.encoder.pos_embed", "shape mismatch"),
        ("misshapen", "encoder.encoder.blocks.0.mlp.fc1.lora_A", "shape mismatch"),
    ],
)
def test_rejects_a_wrong_key_naming_it(
    release_file, tmp_path: Path, kind: str, key: str, message: str
) -> None:
    path, _ = release_file
    state = torch.load(path, weights_only=True)
    _edit(state, kind, key)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(OfficialCheckpointError) as info:
        convert_release(bad, "mtlesd", tmp_path / "out.safetensors", config=SMALL)
    assert message in str(info.value) and key in str(info.value)
    assert not (tmp_path / "out.safetensors").exists()


def test_reads_only_tensors_and_unwraps_a_nested_state_dict(release_file, tmp_path: Path) -> None:
    path, _ = release_file
    nested = tmp_path / "nested.pt"
    torch.save({"state_dict": torch.load(path, weights_only=True)}, nested)
    out = convert_release(nested, "mtlesd", tmp_path / "nested.safetensors", config=SMALL)
    assert (
        load_file(out).keys()
        == load_file(
            convert_release(path, "mtlesd", tmp_path / "plain.safetensors", config=SMALL)
        ).keys()
    )
    pickled = tmp_path / "object.pt"
    torch.save({"weights": Path("x")}, pickled)  # needs arbitrary unpickling
    with pytest.raises(OfficialCheckpointError, match="not a tensors-only PyTorch file"):
        convert_release(pickled, "mtlesd", tmp_path / "o.safetensors", config=SMALL)
    with pytest.raises(OfficialCheckpointError, match="unknown dataset"):
        convert_release(path, "cholec80", tmp_path / "o.safetensors", config=SMALL)


def test_cli_reports_errors(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "absent.pt"
    code = cli_main(["convert-official", str(missing), "--dataset", "mtlesd", "-o", "x"])
    assert code == 1
    assert "no such file" in capsys.readouterr().err


def test_architecture_field_is_checked_and_defaults_for_old_files(
    tmp_path: Path, tiny_config: EndoARSSConfig
) -> None:
    meta = release_metadata("mtlesd")
    assert meta.input_size == (244, 244)  # any size for the official network ...
    with pytest.raises(CheckpointError, match="input height and width must be"):
        CheckpointMetadata(**{**meta.to_dict(), "architecture": "endoarss"})  # ... not ours
    with pytest.raises(CheckpointError, match="architecture must be one of"):
        CheckpointMetadata(**{**meta.to_dict(), "architecture": "dinov3"})
    ours = EndoARSS(tiny_config)
    ours_meta = CheckpointMetadata(
        activity_classes=("a", "b", "c"),
        segmentation_classes=tuple(f"s{i}" for i in range(7)),
        segmentation_colors=((0, 0, 0),) * 7,
        input_size=(56, 56),
    )
    with pytest.raises(CheckpointError, match=r"metadata\.architecture is 'official'"):
        save_checkpoint(tmp_path / "x.safetensors", ours, meta)
    path = save_checkpoint(tmp_path / "ours.safetensors", ours, ours_meta)
    with safe_open(path, framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    document = json.loads(header[METADATA_KEY])
    assert document["architecture"] == "endoarss"
    del document["architecture"]  # as written before the field existed
    old = tmp_path / "old.safetensors"
    save_file(tensors, old, metadata={METADATA_KEY: json.dumps(document)})
    model, loaded = load_checkpoint(old)
    assert isinstance(model, EndoARSS) and loaded.architecture == "endoarss"
    document["architecture"] = "official"  # an EndoARSS config under the wrong name
    save_file(tensors, old, metadata={METADATA_KEY: json.dumps(document)})
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_checkpoint(old)


@pytest.mark.slow
def test_full_size_release_converts_through_the_cli(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _trained_like(OfficialEndoARSS(OfficialConfig()))
    release = to_release_state_dict(model)
    source = tmp_path / "mtl_MOLA_DB_MTL_best_cls_w=1_seg_w=1_dinonet.pt"
    torch.save(release, source)
    out = tmp_path / "official_mtlesd.safetensors"
    assert cli_main(["convert-official", str(source), "--dataset", "mtlesd", "-o", str(out)]) == 0
    converted, meta = load_checkpoint(out)
    assert converted.config == OfficialConfig() and meta.architecture == "official"
    assert sum(p.numel() for p in converted.parameters()) == 96_741_620
    stored = to_release_state_dict(converted)
    assert stored.keys() == release.keys()
    assert all(torch.equal(stored[k], release[k]) for k in release)
    x = torch.rand(1, 3, 244, 244)
    with torch.no_grad():
        expected, actual = model(x), converted(x)
    assert torch.equal(expected["activity"], actual["activity"])
    assert torch.equal(expected["segmentation"], actual["segmentation"])


def test_converted_checkpoint_evaluates_with_endoarss_eval(
    release_file, tmp_path: Path, capsys
) -> None:
    import cv2

    path, _ = release_file
    out = convert_release(path, "mtlesd", tmp_path / "converted.safetensors", config=SMALL)
    root = tmp_path / "MTLESD"
    rng = np.random.default_rng(0)
    for activity in (1, 2, 3):  # the release's layout: <split>/<activity>/{image,mask}/
        for folder in ("image", "mask"):
            (root / "test" / str(activity) / folder).mkdir(parents=True)
        image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        mask = rng.choice(np.array([0, 2, 3, 4, 5, 6, 7], dtype=np.uint8), (48, 64))
        cv2.imwrite(str(root / "test" / str(activity) / "image" / "f.png"), image)
        cv2.imwrite(str(root / "test" / str(activity) / "mask" / "f.png"), mask)
    report = tmp_path / "report"
    argv = ["eval", str(out), "--set", f"data.root={root}", "--out", str(report)]
    assert cli_main([*argv, "--device", "cpu", "--examples", "1", "--quiet"]) == 0
    assert "segmentation_miou" in capsys.readouterr().out
    assert (report / "metrics.json").is_file()


class _RunsCode:
    """Unpickling this would run a command that creates a file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.sentinel}",))


def test_a_pickle_of_objects_is_refused_in_one_line_without_unsafe_advice(
    tmp_path: Path, capsys
) -> None:
    objects = tmp_path / "objects.pt"
    torch.save({"weights": Path("x")}, objects)
    sentinel = tmp_path / "ran"
    code = tmp_path / "code.pt"
    torch.save({"weights": _RunsCode(sentinel)}, code)
    for path, culprit in [(objects, "pathlib"), (code, "system")]:
        with pytest.raises(OfficialCheckpointError) as info:
            convert_release(path, "mtlesd", tmp_path / "o.safetensors", config=SMALL)
        message = str(info.value)
        assert "\n" not in message
        assert str(path) in message
        assert "not a tensors-only PyTorch file" in message
        assert culprit in message
        assert "weights_only" not in message and "trust" not in message
        assert cli_main(["convert-official", str(path), "--dataset", "mtlesd", "-o", "x"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "weights_only" not in err
    assert not sentinel.exists()
