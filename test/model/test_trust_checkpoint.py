"""Feature statistics stored in a checkpoint: a round trip keeps them exactly, the weight loader
leaves their tensors alone, and every malformed part is refused in one line naming the field."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from endoarss_ros.inference.random_checkpoint import write_random_checkpoint
from endoarss_ros.model.checkpoint import (
    METADATA_KEY,
    OOD_TENSORS,
    CheckpointError,
    Trust,
    load_checkpoint,
    load_feature_statistics,
    read_metadata,
    save_checkpoint,
)
from endoarss_ros.trust.ood import FeatureAccumulator

MEANS, COMPONENTS, VARIANCES = OOD_TENSORS


@pytest.fixture(scope="module")
def with_statistics(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trust")
    return write_random_checkpoint(
        folder / "stats.safetensors", input_size=(56, 70), feature_statistics=True
    )


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("plain") / "plain.safetensors")


def _parts(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(path, framework="pt") as f:
        document = json.loads(f.metadata()[METADATA_KEY])
    return load_file(path), document


def _write(path: Path, tensors: dict[str, torch.Tensor], document: dict) -> Path:
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps(document)})
    return path


def test_statistics_survive_a_round_trip_exactly(with_statistics: Path, tmp_path: Path) -> None:
    _, meta = read_metadata(with_statistics)
    stats = meta.feature_statistics
    assert stats is not None and meta.trust is not None
    assert stats.dim == 128 and stats.rank == 16  # the tiny preset: 2 x 64-wide tokens
    assert meta.trust.ood_fit["data"] == "random smooth frames"
    assert load_feature_statistics(with_statistics).to_metadata() == stats.to_metadata()

    model, loaded = load_checkpoint(with_statistics)  # no "unexpected weights"
    assert not any(name.startswith("trust.") for name in model.state_dict())
    again = save_checkpoint(tmp_path / "again.safetensors", model, loaded)
    restored = load_feature_statistics(again)
    assert restored is not None
    for name, array in stats.to_arrays().items():
        np.testing.assert_array_equal(restored.to_arrays()[name], array)
    assert restored.to_metadata() == stats.to_metadata()
    tensors, document = _parts(again)
    assert {k for k in tensors if k.startswith("trust.")} == set(OOD_TENSORS)
    assert all(tensors[k].dtype == torch.float32 for k in OOD_TENSORS)
    assert document["trust"] == {"ood": {**stats.to_metadata(), "fit": dict(meta.trust.ood_fit)}}
    probe = np.random.default_rng(0).normal(size=(3, stats.dim))
    np.testing.assert_array_equal(restored.scores(probe), stats.scores(probe))


def test_a_checkpoint_without_statistics_is_unchanged(plain: Path, tmp_path: Path) -> None:
    tensors, document = _parts(plain)
    assert "trust" not in document
    assert not any(k.startswith("trust.") for k in tensors)
    _, meta = read_metadata(plain)
    assert meta.trust is None and meta.feature_statistics is None
    assert load_feature_statistics(plain) is None
    assert "trust" not in meta.to_dict()


def test_statistics_can_be_added_to_and_removed_from_a_checkpoint(
    plain: Path, with_statistics: Path, tmp_path: Path
) -> None:
    trust = read_metadata(with_statistics)[1].trust
    model, meta = load_checkpoint(plain)
    added = save_checkpoint(tmp_path / "added.safetensors", model, replace(meta, trust=trust))
    assert load_feature_statistics(added).to_metadata() == trust.ood.to_metadata()
    model, meta = load_checkpoint(added)
    removed = save_checkpoint(tmp_path / "removed.safetensors", model, replace(meta, trust=None))
    assert load_feature_statistics(removed) is None
    assert not any(k.startswith("trust.") for k in load_file(removed))


def _other_width_statistics(dim: int):
    rng = np.random.default_rng(1)
    accumulator = FeatureAccumulator(dim)
    accumulator.add(rng.normal(size=(60, dim)))
    return accumulator.finish(rank=4)


def test_statistics_of_another_width_are_refused_on_save_and_load(
    plain: Path, tmp_path: Path
) -> None:
    model, meta = load_checkpoint(plain)
    wrong = replace(meta, trust=Trust(_other_width_statistics(96)))
    with pytest.raises(CheckpointError, match=r"^trust\.ood\.dim is 96 but the model pools"):
        save_checkpoint(tmp_path / "wrong.safetensors", model, wrong)
    # A file written by another tool: the loader refuses it the same way.
    tensors, document = _parts(plain)
    tensors.update(wrong.trust.tensors())
    document["trust"] = wrong.trust.to_dict()
    bad = _write(tmp_path / "wrong_width.safetensors", tensors, document)
    for read in (read_metadata, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            read(bad)
        assert info.value.field == "trust.ood.dim"
        assert "the model pools cls_mean features of 128 values" in str(info.value)


def _nan_means(t: dict, d: dict) -> None:
    t[MEANS] = t[MEANS].clone()
    t[MEANS][0, 0] = float("nan")


def _set_ood(key: str, value) -> object:
    def change(t: dict, d: dict) -> None:
        d["trust"]["ood"][key] = value

    return change


CASES = [
    ("tensor missing", lambda t, d: t.pop(COMPONENTS), "trust.ood.components", "is missing"),
    ("entry missing", lambda t, d: d.pop("trust"), "trust", "is missing but the file stores"),
    (
        "entry without ood",
        lambda t, d: d["trust"].pop("ood"),
        "trust.ood",
        "is missing",
    ),
    (
        "entry not a mapping",
        lambda t, d: d.update(trust=[1]),
        "trust",
        "must be a mapping, got list",
    ),
    (
        "unknown entry field",
        lambda t, d: d["trust"].update(other={}),
        "trust.other",
        "is not a known field",
    ),
    (
        "unknown statistics field",
        _set_ood("bogus", 1),
        "trust.ood.bogus",
        "is not a known field",
    ),
    (
        "unknown tensor",
        lambda t, d: t.update({"trust.ood.extra": torch.zeros(3)}),
        "trust.ood.extra",
        "is not a trust tensor",
    ),
    (
        "shape",
        lambda t, d: t.update({COMPONENTS: torch.zeros(129, 16)}),
        "trust.ood.components",
        "must be 128 x K",
    ),
    (
        "rank",
        lambda t, d: t.update({VARIANCES: torch.ones(15)}),
        "trust.ood.variances",
        "must hold 16 values",
    ),
    (
        "dtype float16",
        lambda t, d: t.update({VARIANCES: t[VARIANCES].half()}),
        "trust.ood.variances",
        "float32 array, got float16",
    ),
    (
        "dtype bfloat16",
        lambda t, d: t.update({MEANS: t[MEANS].bfloat16()}),
        "trust.ood.means",
        "float32 array, got bfloat16",
    ),
    (
        "dtype int",
        lambda t, d: t.update({MEANS: t[MEANS].int()}),
        "trust.ood.means",
        "float32 array, got int32",
    ),
    ("NaN", _nan_means, "trust.ood.means", "holds NaN or infinite values"),
    (
        "negative reference",
        _set_ood("reference", -1.0),
        "trust.ood.reference",
        "must be a number in (0",
    ),
    (
        "reference as text",
        _set_ood("reference", "2.5"),
        "trust.ood.reference",
        "must be a number",
    ),
    ("quantile", _set_ood("quantile", 2), "trust.ood.quantile", "must be a number in (0, 1]"),
    ("dim", _set_ood("dim", 64), "trust.ood.dim", "says 64, the arrays hold 128"),
    ("frames", _set_ood("fitted_frames", -3), "trust.ood.fitted_frames", "non-negative integer"),
    ("version", _set_ood("format_version", 9), "trust.ood.format_version", "must be 1"),
    ("fit", _set_ood("fit", [1]), "trust.ood.fit", "must be"),
]


@pytest.mark.parametrize(
    ("change", "field", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_statistics_are_refused_naming_the_field(
    with_statistics: Path, tmp_path: Path, change, field: str, message: str
) -> None:
    tensors, document = _parts(with_statistics)
    change(tensors, document)
    bad = _write(tmp_path / "bad.safetensors", tensors, document)
    for read in (read_metadata, load_checkpoint, load_feature_statistics):
        with pytest.raises(CheckpointError) as info:
            read(bad)
        text = str(info.value)
        assert info.value.field == field, text
        assert text.startswith(f"{bad}: {field} "), text
        assert message in text and "\n" not in text


def test_statistics_tensors_are_not_taken_for_weights(
    with_statistics: Path, tmp_path: Path
) -> None:
    tensors, document = _parts(with_statistics)
    model, _ = load_checkpoint(with_statistics)
    assert set(tensors) == set(model.state_dict()) | set(OOD_TENSORS)
    # Skipping them does not hide a weight that is missing.
    weight = next(k for k in tensors if not k.startswith("trust."))
    del tensors[weight]
    bad = _write(tmp_path / "no_weight.safetensors", tensors, document)
    with pytest.raises(CheckpointError, match=f"missing weight\\(s\\): {weight}"):
        load_checkpoint(bad)
    # A weight under the statistics' prefix could not be told from them: refused on save.
    model.trust = torch.nn.Linear(1, 1)
    with pytest.raises(CheckpointError, match=r"trust\.bias, trust\.weight are reserved"):
        save_checkpoint(tmp_path / "x.safetensors", model, read_metadata(with_statistics)[1])


def test_the_official_network_stores_and_returns_statistics_of_its_own_width(
    tmp_path: Path,
) -> None:
    from test_official_checkpoint import SMALL

    from endoarss_ros.inference import Predictor
    from endoarss_ros.model.official import OfficialEndoARSS
    from endoarss_ros.model.official_convert import release_metadata
    from endoarss_ros.trust.feature_tap import extract_features, fit_feature_statistics

    config = dataclasses.replace(SMALL, num_activities=3, num_seg_classes=7)
    model = OfficialEndoARSS(config).eval()
    meta = release_metadata("mtlesd")
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(30)]
    preprocessing = {"input_size": meta.input_size, "mean": meta.mean, "std": meta.std}
    stats = fit_feature_statistics(model, frames, rank=8, **preprocessing)
    assert stats.dim == 128
    path = save_checkpoint(
        tmp_path / "official.safetensors", model, replace(meta, trust=Trust(stats))
    )
    predictor = Predictor(path, device="cpu")
    assert predictor.info.feature_statistics
    (prediction,) = predictor.predict(frames[:1])
    expected = next(iter(extract_features(predictor.model, frames[:1], **preprocessing)))[0]
    np.testing.assert_array_equal(prediction.features, expected)
