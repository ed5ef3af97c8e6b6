"""Every parameter is validated with a message that names it, from any source."""

from __future__ import annotations

import pytest

from endoarss_ros.inference.smoothing import SmoothingConfig
from endoarss_ros.ros.parameters import (
    PARAMETERS,
    ParameterError,
    as_dict,
    parse_parameters,
    validate_parameter_file,
)

CHECKPOINT = {"checkpoint": "/models/endoarss.safetensors"}


def test_defaults_are_valid_and_documented():
    params = parse_parameters(CHECKPOINT)
    assert params.input_mode == "mono"
    assert params.input_qos == "sensor_data"
    assert params.input_depth == 1
    assert params.smoothing == SmoothingConfig()
    assert all(spec.description for spec in PARAMETERS)


def test_integers_are_accepted_where_numbers_are_expected():
    params = parse_parameters({**CHECKPOINT, "stereo_slop_ms": 15, "overlay_alpha": 1})
    assert params.stereo_slop_ms == 15.0
    assert params.overlay_alpha == 1.0


def test_round_trip_through_flat_names():
    params = parse_parameters(
        {**CHECKPOINT, "input_mode": "stereo", "smoothing.method": "hysteresis"}
    )
    assert parse_parameters(as_dict(params)) == params


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("checkpoint", "", "is required"),
        ("checkpoint", "/models/model.pt", "must name a .safetensors"),
        ("checkpoint", 7, "must be a string"),
        ("device", "gpu", "must be one of auto, cpu, cuda, cuda:N"),
        ("device", 0, "must be a string"),
        ("precision", "int8", "must be one of auto, fp32, fp16, bf16"),
        ("compile", "yes", "must be true or false"),
        ("cpu_threads", -1, r"must be an integer in \[0, 1024\]"),
        ("cpu_threads", 1.5, "must be an integer"),
        ("mask_min_confidence", 1.0, r"must be in \[0, 1\)"),
        ("input_mode", "trinocular", "must be one of mono, stereo, side_by_side"),
        ("input_transport", "theora", "must be one of raw, compressed"),
        ("input_qos", "best_effort", "must be one of sensor_data, reliable, system_default"),
        ("input_depth", 0, r"must be an integer in \[1, 100\]"),
        ("input_depth", 2.5, "must be an integer"),
        ("stereo_slop_ms", 0.0, r"must be in \(0, 1000\] ms"),
        ("stereo_slop_ms", -5, "must be in"),
        ("stereo_slop_ms", float("inf"), "must be a number"),
        ("max_frame_age_ms", -1.0, "must be in"),
        ("input_timeout_s", 0, "must be in"),
        ("overlay_alpha", 2.0, r"must be in \[0, 1\]"),
        ("diagnostics_period_s", 0.001, "must be in"),
        ("enable", 1, "must be true or false"),
        ("smoothing.method", "median", "must be one of none, ema, hysteresis, ema_hysteresis"),
        ("smoothing.ema_alpha", 0.0, r"must be in \(0, 1\]"),
        ("smoothing.hysteresis_frames", 10_000, "must be an integer"),
        ("smoothing.hysteresis_margin", -0.1, "must be in"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(name, value, message):
    with pytest.raises(ParameterError, match=message) as raised:
        parse_parameters({**CHECKPOINT, name: value})
    assert str(raised.value).startswith(f"parameter '{name}' ")
    assert raised.value.name == name


def test_a_parameter_file_is_checked_like_the_node_would(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    input_mode: stereo\n    stereo_slop_ms: 10\n"
        "    smoothing:\n      method: none\n"
        "other_node:\n  ros__parameters:\n    input_mode: nonsense\n"
        "perception:\n  ros__parameters:\n    use_sim_time: true\n"
        "    qos_overrides:\n      /endoarss/left/image:\n        subscription:\n"
        "          reliability: reliable\n"
    )
    params = validate_parameter_file(path)
    assert params.input_mode == "stereo"
    assert params.stereo_slop_ms == 10.0
    assert params.smoothing.method == "none"


def test_a_misspelt_parameter_in_a_file_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    smoothing:\n      metod: ema\n")
    with pytest.raises(ParameterError, match=r"'smoothing\.metod' in .* is not a parameter"):
        validate_parameter_file(path)


def test_a_bad_value_in_a_file_names_the_parameter(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("/endoarss/perception:\n  ros__parameters:\n    input_depth: -3\n")
    with pytest.raises(ParameterError, match="parameter 'input_depth'"):
        validate_parameter_file(path)


def test_an_unreadable_file_is_reported(tmp_path):
    with pytest.raises(ParameterError, match="params_file"):
        validate_parameter_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**: [unclosed\n")
    with pytest.raises(ParameterError, match="params_file"):
        validate_parameter_file(broken)
