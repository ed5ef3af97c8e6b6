"""Hostile or damaged checkpoint files: each is refused with one line naming the file (and the
field), quickly, before any model is built."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from endoarss_ros.inference.random_checkpoint import write_random_checkpoint
from endoarss_ros.model.checkpoint import METADATA_KEY, CheckpointError, load_checkpoint
from endoarss_ros.model.config import ConfigError, EndoARSSConfig
from endoarss_ros.model.official import OfficialConfig


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("valid") / "tiny.safetensors")


def _split(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def _join(header: bytes, body: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + body


def _with_document(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    """Copy ``src`` with its EndoARSS JSON document edited in place in the raw header."""
    header, body = _split(src)
    document = json.loads(header["__metadata__"][METADATA_KEY])
    edit(document)
    header["__metadata__"][METADATA_KEY] = json.dumps(document)
    dst.write_bytes(_join(json.dumps(header).encode(), body))
    return dst


def _refusal(path: Path) -> str:
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert elapsed < 1.0, f"took {elapsed:.1f} s to refuse: {message}"
    assert str(path) in message
    assert "\n" not in message
    return message


def _set(dotted: str, value) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        section = document["config"]
        *parents, last = dotted.split(".")
        for name in parents:
            section = section[name]
        section[last] = value

    return edit


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backbone.depth", 200000),
        ("backbone.embed_dim", 2**40),
        ("backbone.num_heads", 2**40),
        ("backbone.img_size", 14 * 10**6),
        ("backbone.reg_tokens", 10**9),
        ("backbone.mlp_ratio", 1e12),
        ("num_activities", 10**9),
        ("num_seg_classes", 10**6),
        ("lora.rank", 2**40),
        ("tesla.rank", 2**40),
        ("seg_head.channels", 2**40),
        ("activity_head.hidden", 2**40),
    ],
)
def test_config_far_out_of_bounds_is_refused_at_once(
    tmp_path: Path, valid: Path, field: str, value
) -> None:
    bad = _with_document(valid, tmp_path / "bad.safetensors", _set(field, value))
    message = _refusal(bad)
    assert field in message


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("backbone.depth", 40, "stores 4 blocks"),
        ("backbone.embed_dim", 1536, "stored tokens are 64 wide"),
        ("backbone.img_size", 4088, "position embedding"),
    ],
)
def test_config_that_does_not_fit_the_stored_tensors_is_refused_before_building(
    tmp_path: Path, valid: Path, field: str, value, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def edit(document: dict) -> None:
        _set(field, value)(document)
        if field == "backbone.embed_dim":
            document["config"]["backbone"]["num_heads"] = 8

    bad = _with_document(valid, tmp_path / "bad.safetensors", edit)

    from endoarss_ros.model import checkpoint

    def never(config):  # building the model would be too late
        raise AssertionError("a model was built")

    monkeypatch.setitem(checkpoint.ARCHITECTURES, "endoarss", (EndoARSSConfig, never))
    message = _refusal(bad)
    assert f"config.{field}" in message
    assert says in message


def test_official_config_is_bounded() -> None:
    for field, value in [("embed_dim", 2**40), ("depth", 200000), ("trans_depth", 10**6)]:
        with pytest.raises(ConfigError, match=field):
            OfficialConfig.from_dict({field: value})
    for field, value in [("depth", 200000), ("img_size", 14 * 10**6)]:
        with pytest.raises(ConfigError, match=field):
            EndoARSSConfig.from_dict({"backbone": {field: value}})


def test_truncated_file(tmp_path: Path, valid: Path) -> None:
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(valid.read_bytes()[:-100])
    message = _refusal(truncated)
    assert "truncated" in message


def test_header_length_larger_than_the_file(tmp_path: Path, valid: Path) -> None:
    data = valid.read_bytes()
    bad = tmp_path / "length.safetensors"
    bad.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    assert "header length" in _refusal(bad)
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    assert "not a safetensors file" in _refusal(short)


def test_header_that_is_not_utf8_or_not_json(tmp_path: Path, valid: Path) -> None:
    _, body = _split(valid)
    binary = tmp_path / "binary.safetensors"
    binary.write_bytes(_join(b'{"a": "\xff\xfe"}', body))
    assert "UTF-8" in _refusal(binary)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(_join(b'{"a": [1, 2', body))
    assert "not valid JSON" in _refusal(broken)
    nested = tmp_path / "nested.safetensors"
    nested.write_bytes(_join(b"[" * 100000 + b"]" * 100000, body))
    assert "not valid JSON" in _refusal(nested)


def test_duplicate_keys_are_refused(tmp_path: Path, valid: Path) -> None:
    header, body = _split(valid)
    text = json.dumps(header)
    name = "activity_head.fc2.bias"
    entry = json.dumps(header[name])
    doubled = text.replace(f'"{name}": {entry}', f'"{name}": {entry}, "{name}": {entry}', 1)
    assert doubled != text
    tensors = tmp_path / "tensors.safetensors"
    tensors.write_bytes(_join(doubled.encode(), body))
    message = _refusal(tensors)
    assert "duplicate key" in message and name in message

    def twice(document: dict) -> None:
        document["config"]["backbone"]["depth"] = 4

    inner = _with_document(valid, tmp_path / "inner.safetensors", twice)
    header, body = _split(inner)
    raw = header["__metadata__"][METADATA_KEY].replace('"depth": 4', '"depth": 4, "depth": 9', 1)
    header["__metadata__"][METADATA_KEY] = raw
    doc = tmp_path / "doc.safetensors"
    doc.write_bytes(_join(json.dumps(header).encode(), body))
    message = _refusal(doc)
    assert "duplicate key" in message and "depth" in message


def test_offsets_outside_the_data_or_overlapping(tmp_path: Path, valid: Path) -> None:
    header, body = _split(valid)
    name = "activity_head.fc2.bias"
    begin, end = header[name]["data_offsets"]
    far = dict(header)
    far[name] = {**header[name], "data_offsets": [len(body) + 8, len(body) + 8 + end - begin]}
    beyond = tmp_path / "beyond.safetensors"
    beyond.write_bytes(_join(json.dumps(far).encode(), body))
    message = _refusal(beyond)
    assert name in message and "truncated" in message
    wrong_size = dict(header)
    wrong_size[name] = {**header[name], "shape": [1000]}
    sized = tmp_path / "sized.safetensors"
    sized.write_bytes(_join(json.dumps(wrong_size).encode(), body))
    assert name in _refusal(sized)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(
    tmp_path: Path, valid: Path, value: float
) -> None:
    tensors = load_file(valid)
    with safe_open(valid, framework="pt") as f:
        metadata = f.metadata()
    tensors["seg_head.classifier.weight"][0, 0, 0, 0] = value
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, bad, metadata=metadata)
    message = _refusal(bad)
    assert "seg_head.classifier.weight" in message
    assert "NaN or infinite" in message


def test_the_valid_file_still_loads(valid: Path) -> None:
    model, meta = load_checkpoint(valid)
    assert meta.activity_classes
    assert all(torch.isfinite(p).all() for p in model.parameters())
