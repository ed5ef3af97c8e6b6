"""Every parameter is validated with a message that names it, from any source."""

from __future__ import annotations

from pathlib import Path

import pytest

from endoarss_ros.inference.smoothing import SmoothingConfig
from endoarss_ros.ros.parameters import (
    PARAMETERS,
    ParameterError,
    parse_parameters,
    validate_parameter_file,
)

CHECKPOINT = {"checkpoint": "/models/endoarss.safetensors"}


def test_defaults_are_valid_and_documented():
    params = parse_parameters(CHECKPOINT)
    assert params.pipeline.input_mode == "mono"
    assert params.node.input_qos == "sensor_data"
    assert params.node.input_depth == 1
    assert params.node.autostart is True
    assert params.pipeline.smoothing == SmoothingConfig()
    assert all(spec.description for spec in PARAMETERS)


def test_integers_are_accepted_where_numbers_are_expected():
    params = parse_parameters({**CHECKPOINT, "stereo_slop_ms": 15, "overlay_alpha": 1})
    assert params.pipeline.stereo_slop_ms == 15.0
    assert params.pipeline.overlay_alpha == 1.0


def test_round_trip_through_flat_names():
    params = parse_parameters(
        {**CHECKPOINT, "input_mode": "stereo", "smoothing.method": "hysteresis"}
    )
    assert parse_parameters(params.as_dict()) == params


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("checkpoint", "", "is required"),
        ("checkpoint", "/models/model.pt", "must name a .safetensors"),
        ("checkpoint", 7, "must be a string"),
        ("device", "gpu", "must be one of auto, cpu, cuda, cuda:N"),
        ("device", 0, "must be one of auto, cpu, cuda, cuda:N"),
        ("precision", "int8", "must be one of auto, fp32, fp16, bf16"),
        ("compile", "yes", "must be true or false"),
        ("cpu_threads", -1, r"must be an integer in \[0, 1024\]"),
        ("cpu_threads", 1.5, "must be an integer"),
        ("mask_min_confidence", 1.0, r"must be a number in \[0, 1\)"),
        ("input_mode", "trinocular", "must be one of mono, stereo, side_by_side"),
        ("input_transport", "theora", "must be one of raw, compressed"),
        ("input_qos", "best_effort", "must be one of sensor_data, reliable, system_default"),
        ("input_depth", 0, r"must be an integer in \[1, 100\]"),
        ("input_depth", 2.5, "must be an integer"),
        ("stereo_slop_ms", 0.0, r"must be a number in \(0, 1000\] ms"),
        ("stereo_slop_ms", -5, "must be a number in"),
        ("stereo_slop_ms", float("inf"), "must be a number"),
        ("max_frame_age_ms", -1.0, "must be a number in"),
        ("input_timeout_s", 0, "must be a number in"),
        ("overlay_alpha", 2.0, r"must be a number in \[0, 1\]"),
        ("diagnostics_period_s", 0.001, "must be a number in"),
        ("autostart", 1, "must be true or false"),
        ("smoothing.method", "median", "must be one of none, ema, hysteresis, ema_hysteresis"),
        ("smoothing.ema_alpha", 0.0, r"must be a number in \(0, 1\]"),
        ("smoothing.hysteresis_frames", 10_000, "must be an integer"),
        ("smoothing.hysteresis_margin", -0.1, "must be a number in"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(name, value, message):
    with pytest.raises(ParameterError, match=message) as raised:
        parse_parameters({**CHECKPOINT, name: value})
    assert str(raised.value).startswith(f"parameter '{name}' ")
    assert raised.value.field == name


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
    assert params.pipeline.input_mode == "stereo"
    assert params.pipeline.stereo_slop_ms == 10.0
    assert params.pipeline.smoothing.method == "none"


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


def test_a_replaced_parameter_in_a_file_says_what_replaced_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    enable: false\n")
    with pytest.raises(ParameterError, match=r"'enable' .* no longer exists: .*lifecycle"):
        validate_parameter_file(path)


# -- one table, everywhere ----------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_descriptors_carry_type_range_and_read_only():
    from rcl_interfaces.msg import ParameterType

    from endoarss_ros.ros.parameters import SPECS, descriptor

    slop = descriptor(SPECS["stereo_slop_ms"])
    assert slop.type == ParameterType.PARAMETER_DOUBLE
    assert (slop.floating_point_range[0].from_value, slop.floating_point_range[0].to_value) == (
        0.0,
        1000.0,
    )
    assert "(0, 1000] ms" in slop.additional_constraints
    depth = descriptor(SPECS["input_depth"])
    assert depth.type == ParameterType.PARAMETER_INTEGER
    assert (depth.integer_range[0].from_value, depth.integer_range[0].to_value) == (1, 100)
    assert descriptor(SPECS["compile"]).type == ParameterType.PARAMETER_BOOL
    mode = descriptor(SPECS["input_mode"])
    assert mode.type == ParameterType.PARAMETER_STRING
    assert "mono, stereo, side_by_side" in mode.additional_constraints
    assert descriptor(SPECS["autostart"]).read_only
    assert not any(descriptor(spec).read_only for spec in PARAMETERS if spec.name != "autostart")
    assert not any(descriptor(spec).dynamic_typing for spec in PARAMETERS)


def test_the_documented_table_is_the_parameter_table():
    from endoarss_ros.ros.parameters import markdown_table

    document = (ROOT / "docs" / "parameters.md").read_text()
    assert markdown_table() in document, (
        "docs/parameters.md's table differs from the node's; regenerate it with "
        "`python -m endoarss_ros.ros.parameters --markdown`"
    )


@pytest.mark.parametrize("name", ["perception.yaml", "dvrk.yaml"])
def test_parameter_files_set_every_parameter_but_the_checkpoint(name):
    from endoarss_ros.ros.parameters import PARAMETER_NAMES, load_parameter_file

    values = load_parameter_file(ROOT / "config" / name)
    assert set(values) == PARAMETER_NAMES - {"checkpoint"}, (
        f"config/{name} should show every parameter (but the checkpoint) once"
    )


def test_perception_yaml_holds_the_defaults():
    from endoarss_ros.ros.parameters import SPECS, load_parameter_file

    values = load_parameter_file(ROOT / "config" / "perception.yaml")
    for name, value in values.items():
        assert value == SPECS[name].default, f"config/perception.yaml {name}: {value!r}"


def test_launch_arguments_that_set_parameters_are_described_by_the_table():
    from endoarss_ros.ros.launch_support import PARAMETER_ARGUMENTS, argument_table
    from endoarss_ros.ros.parameters import SPECS

    table = argument_table("params.yaml", {})
    for name in PARAMETER_ARGUMENTS:
        assert table[name][1].startswith(SPECS[name].description)
