"""The checkpoint's ``calibration`` field: written only when set, read back equal, absent in
older files (temperature 1), and any malformed value refused in one line naming the field and
the file."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from endoarss_ros.inference.random_checkpoint import write_random_checkpoint
from endoarss_ros.model.checkpoint import (
    METADATA_KEY,
    Calibration,
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("plain") / "tiny.safetensors")


def _document(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(json.loads(data[8 : 8 + length])["__metadata__"][METADATA_KEY])


def _with_calibration(src: Path, dst: Path, value: Any) -> Path:
    """``src`` with its document's ``calibration`` set to ``value`` (raw JSON, NaN allowed)."""
    data = src.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    document = json.loads(header["__metadata__"][METADATA_KEY])
    document["calibration"] = value
    header["__metadata__"][METADATA_KEY] = json.dumps(document)  # NaN written as NaN
    raw = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])
    return dst


def test_a_checkpoint_without_calibration_reads_with_temperature_one(plain: Path) -> None:
    assert "calibration" not in _document(plain)  # as files written before the field
    _, meta = read_metadata(plain)
    assert meta.calibration is None and meta.temperatures == (1.0, 1.0)
    assert "calibration" not in meta.to_dict()


def test_calibration_round_trips(plain: Path, tmp_path: Path) -> None:
    model, meta = load_checkpoint(plain)
    fit = {"frames": 24, "activity": {"ece_before": 0.2, "ece_after": 0.03}}
    calibration = Calibration(activity_temperature=2.5, segmentation_temperature=0.8, fit=fit)
    calibrated = dataclasses.replace(meta, calibration=calibration)
    path = save_checkpoint(tmp_path / "calibrated.safetensors", model, calibrated)
    assert _document(path)["calibration"] == {
        "activity_temperature": 2.5,
        "segmentation_temperature": 0.8,
        "fit": fit,
    }
    _, again = read_metadata(path)
    assert again == calibrated and again.temperatures == (2.5, 0.8)
    assert CheckpointMetadata(**calibrated.to_dict()) == calibrated
    # an explicit null, and a mapping of defaults, read as written
    assert (
        read_metadata(_with_calibration(plain, tmp_path / "null.st", None))[1].calibration is None
    )
    _, defaults = read_metadata(_with_calibration(plain, tmp_path / "empty.st", {}))
    assert defaults.calibration == Calibration() and defaults.temperatures == (1.0, 1.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"activity_temperature": -1.0}, "calibration.activity_temperature must be a number in"),
        ({"activity_temperature": 0}, "calibration.activity_temperature must be a number in"),
        ({"segmentation_temperature": float("nan")}, "calibration.segmentation_temperature"),
        ({"segmentation_temperature": float("inf")}, "calibration.segmentation_temperature"),
        ({"activity_temperature": 1e6}, "[0.01, 100], got 1000000"),
        ({"activity_temperature": "2.0"}, "calibration.activity_temperature must be a number"),
        ({"activity_temperature": True}, "calibration.activity_temperature must be a number"),
        ({"activity_temperature": [2.0]}, "calibration.activity_temperature must be a number"),
        ({"fit": [1, 2]}, "calibration.fit must be a mapping"),
        ({"temperature": 2.0}, "unknown field(s) in calibration: temperature"),
        (2.0, "calibration must be a mapping"),
        ("T=2", "calibration must be a mapping"),
    ],
)
def test_malformed_calibration_is_refused_naming_the_field(
    plain: Path, tmp_path: Path, value: Any, expected: str
) -> None:
    path = _with_calibration(plain, tmp_path / "bad.safetensors", value)
    for read in (read_metadata, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and expected in message
        assert "\n" not in message


def test_metadata_refuses_a_calibration_of_the_wrong_type(plain: Path) -> None:
    _, meta = read_metadata(plain)
    with pytest.raises(CheckpointError, match="calibration must be a mapping or null, got float"):
        dataclasses.replace(meta, calibration=2.0)
    with pytest.raises(CheckpointError, match=r"calibration\.activity_temperature"):
        dataclasses.replace(meta, calibration={"activity_temperature": -2})
