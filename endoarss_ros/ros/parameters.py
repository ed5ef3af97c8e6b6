"""The perception node's parameters: declaration, validation, and parameter-file checking.

Every parameter is validated by :func:`parse_parameters`, at start-up, on every run-time change,
and by :func:`validate_parameter_file` for YAML files (what the launch files pass), so a
mistake fails with one message that names the parameter, wherever it was made. Parameters are
declared with dynamic typing and typed here: YAML's ``slop: 15`` (an integer) is then a valid
number of milliseconds instead of an rclpy type error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

import yaml

from endoarss_ros.inference.devices import check_device_spec, check_precision_spec
from endoarss_ros.inference.errors import DeviceError
from endoarss_ros.inference.smoothing import SMOOTHING_METHODS, SmoothingConfig

INPUT_MODES: Final = ("mono", "stereo", "side_by_side")
INPUT_TRANSPORTS: Final = ("raw", "compressed")
INPUT_QOS_PRESETS: Final = ("sensor_data", "reliable", "system_default")
NODE_NAME: Final = "perception"


class ParameterError(ValueError):
    """A parameter value that cannot be used; the message starts with the parameter's name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"parameter '{name}' {message}")
        self.name = name


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    runtime: bool = False
    """Changeable while the node runs; the others are read when it starts."""


_DEFAULT_SMOOTHING = SmoothingConfig()

PARAMETERS: Final[tuple[ParameterSpec, ...]] = (
    ParameterSpec("checkpoint", "", "EndoARSS checkpoint (.safetensors) to load; required"),
    ParameterSpec("device", "auto", "auto | cpu | cuda | cuda:N"),
    ParameterSpec("precision", "auto", "auto | fp32 | fp16 | bf16 (auto: bf16/fp16 on CUDA)"),
    ParameterSpec("compile", False, "torch.compile the model at start-up"),
    ParameterSpec(
        "cpu_threads",
        0,
        "PyTorch intra-op CPU threads; 0 = PyTorch's default (one per core)",
    ),
    ParameterSpec(
        "mask_min_confidence",
        0.0,
        "pixels whose class probability is below this become 255 (unlabeled); 0 = never",
    ),
    ParameterSpec("input_mode", "mono", "mono | stereo (left/right topics) | side_by_side"),
    ParameterSpec("input_transport", "raw", "raw (sensor_msgs/Image) | compressed"),
    ParameterSpec("input_qos", "sensor_data", "sensor_data | reliable | system_default"),
    ParameterSpec("input_depth", 1, "history depth of the input subscriptions"),
    ParameterSpec("stereo_slop_ms", 15.0, "largest stamp difference of a stereo pair"),
    ParameterSpec(
        "max_frame_age_ms",
        0.0,
        "drop frames whose stamp is older than this when inference starts; 0 = keep all",
        runtime=True,
    ),
    ParameterSpec(
        "input_timeout_s",
        5.0,
        "warn when no frame arrived for this long, naming the likely cause",
        runtime=True,
    ),
    ParameterSpec("overlay_alpha", 0.5, "opacity of class colours in the overlay", runtime=True),
    ParameterSpec("diagnostics_period_s", 1.0, "period of the /diagnostics status"),
    ParameterSpec("enable", True, "process frames; also switched by the enable service", True),
    ParameterSpec(
        "smoothing.method",
        _DEFAULT_SMOOTHING.method,
        "none | ema | hysteresis | ema_hysteresis",
        runtime=True,
    ),
    ParameterSpec(
        "smoothing.ema_alpha",
        _DEFAULT_SMOOTHING.ema_alpha,
        "weight of the newest frame in the moving average, (0, 1]",
        runtime=True,
    ),
    ParameterSpec(
        "smoothing.hysteresis_frames",
        _DEFAULT_SMOOTHING.hysteresis_frames,
        "frames a new class must lead before it is reported",
        runtime=True,
    ),
    ParameterSpec(
        "smoothing.hysteresis_margin",
        _DEFAULT_SMOOTHING.hysteresis_margin,
        "probability lead a new class needs to count as leading, [0, 1)",
        runtime=True,
    ),
)

PARAMETER_NAMES: Final = frozenset(spec.name for spec in PARAMETERS)
# Parameters every rclpy node has; a parameter file may set them too.
_STANDARD_PARAMETERS: Final = frozenset({"use_sim_time"})
_QOS_OVERRIDE_PREFIX: Final = "qos_overrides."


@dataclass(frozen=True)
class PerceptionParameters:
    checkpoint: str
    device: str
    precision: str
    compile: bool
    cpu_threads: int
    mask_min_confidence: float
    input_mode: str
    input_transport: str
    input_qos: str
    input_depth: int
    stereo_slop_ms: float
    max_frame_age_ms: float
    input_timeout_s: float
    overlay_alpha: float
    diagnostics_period_s: float
    enable: bool
    smoothing: SmoothingConfig

    @property
    def stereo(self) -> bool:
        return self.input_mode != "mono"


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ParameterError(name, f"must be a string, got {value!r}")
    return value.strip()


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    text = _string(name, value).lower()
    if text not in choices:
        raise ParameterError(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return text


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(name, f"must be true or false, got {value!r}")
    return value


def _number(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    unit: str = "",
) -> float:
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    suffix = f" {unit}" if unit else ""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParameterError(name, f"must be a number in {interval}{suffix}, got {value!r}")
    number = float(value)
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if below or above:
        raise ParameterError(name, f"must be in {interval}{suffix}, got {value!r}")
    return number


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParameterError(name, f"must be an integer in [{low}, {high}], got {value!r}")
    return value


def _smoothing(values: Mapping[str, Any]) -> SmoothingConfig:
    return SmoothingConfig(
        method=_choice("smoothing.method", values["smoothing.method"], SMOOTHING_METHODS),
        ema_alpha=_number(
            "smoothing.ema_alpha", values["smoothing.ema_alpha"], 0, 1, low_open=True
        ),
        hysteresis_frames=_integer(
            "smoothing.hysteresis_frames", values["smoothing.hysteresis_frames"], 1, 1000
        ),
        hysteresis_margin=_number(
            "smoothing.hysteresis_margin",
            values["smoothing.hysteresis_margin"],
            0,
            1,
            high_open=True,
        ),
    )


def _device_setting(name: str, check: Callable[[str], str], value: Any) -> str:
    try:
        return check(_string(name, value))
    except DeviceError as exc:
        raise ParameterError(name, str(exc).removeprefix(f"{name} ")) from None


def parse_parameters(
    values: Mapping[str, Any], *, require_checkpoint: bool = True
) -> PerceptionParameters:
    """Validate parameter values (defaults fill what is missing) into typed parameters.

    ``require_checkpoint=False`` accepts an empty checkpoint, for parameter files whose
    checkpoint is given on the launch command line.
    """
    merged = {spec.name: spec.default for spec in PARAMETERS}
    merged.update({k: v for k, v in values.items() if k in PARAMETER_NAMES})
    checkpoint = _string("checkpoint", merged["checkpoint"])
    if require_checkpoint and not checkpoint:
        raise ParameterError(
            "checkpoint", "is required: the path of an EndoARSS .safetensors checkpoint"
        )
    if checkpoint and not checkpoint.endswith(".safetensors"):
        raise ParameterError(
            "checkpoint", f"must name a .safetensors checkpoint file, got {checkpoint!r}"
        )
    device, precision = (
        _device_setting(name, check, merged[name])
        for name, check in (("device", check_device_spec), ("precision", check_precision_spec))
    )
    return PerceptionParameters(
        checkpoint=checkpoint,
        device=device,
        precision=precision,
        compile=_boolean("compile", merged["compile"]),
        cpu_threads=_integer("cpu_threads", merged["cpu_threads"], 0, 1024),
        mask_min_confidence=_number(
            "mask_min_confidence", merged["mask_min_confidence"], 0, 1, high_open=True
        ),
        input_mode=_choice("input_mode", merged["input_mode"], INPUT_MODES),
        input_transport=_choice("input_transport", merged["input_transport"], INPUT_TRANSPORTS),
        input_qos=_choice("input_qos", merged["input_qos"], INPUT_QOS_PRESETS),
        input_depth=_integer("input_depth", merged["input_depth"], 1, 100),
        stereo_slop_ms=_number(
            "stereo_slop_ms", merged["stereo_slop_ms"], 0, 1000, low_open=True, unit="ms"
        ),
        max_frame_age_ms=_number(
            "max_frame_age_ms", merged["max_frame_age_ms"], 0, 3_600_000, unit="ms"
        ),
        input_timeout_s=_number(
            "input_timeout_s", merged["input_timeout_s"], 0, 3600, low_open=True, unit="s"
        ),
        overlay_alpha=_number("overlay_alpha", merged["overlay_alpha"], 0, 1),
        diagnostics_period_s=_number(
            "diagnostics_period_s", merged["diagnostics_period_s"], 0.1, 60, unit="s"
        ),
        enable=_boolean("enable", merged["enable"]),
        smoothing=_smoothing(merged),
    )


def _flatten(prefix: str, tree: Mapping[str, Any], out: dict[str, Any]) -> None:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(f"{name}.", value, out)
        else:
            out[name] = value


def _applies_to(key: str, node_name: str) -> bool:
    """Whether a parameter-file section key (``/**``, ``perception``, ``/ns/perception``, ...)
    addresses this node, by the rules rcl applies (wildcards in the namespace only)."""
    if key in ("/**", "**"):
        return True
    parts = key.strip("/").split("/")
    return parts[-1] in (node_name, "*") and all(p in ("**", "*") or p for p in parts[:-1])


def load_parameter_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The flattened ``ros__parameters`` a YAML file gives to a node of this name."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError("params_file", f"cannot be read from {str(path)!r}: {exc}") from exc
    if not isinstance(document, Mapping):
        raise ParameterError("params_file", f"{str(path)!r} is not a mapping of node names")
    values: dict[str, Any] = {}
    for key, section in document.items():
        if not _applies_to(str(key), node_name):
            continue
        if not isinstance(section, Mapping) or "ros__parameters" not in section:
            raise ParameterError(
                "params_file", f"{str(path)!r}: section {key!r} has no 'ros__parameters'"
            )
        _flatten("", section["ros__parameters"] or {}, values)
    return values


def validate_parameter_file(
    path: str | Path, node_name: str = NODE_NAME, *, require_checkpoint: bool = False
) -> PerceptionParameters:
    """Check a parameter file as the node would, and reject names the node does not have
    (rclpy ignores undeclared parameters, so a misspelt name would silently do nothing)."""
    values = load_parameter_file(path, node_name)
    unknown = sorted(
        name
        for name in values
        if name not in PARAMETER_NAMES
        and name not in _STANDARD_PARAMETERS
        and not name.startswith(_QOS_OVERRIDE_PREFIX)
    )
    if unknown:
        raise ParameterError(
            unknown[0],
            f"in {str(path)!r} is not a parameter of the perception node (known: "
            f"{', '.join(sorted(PARAMETER_NAMES))})",
        )
    return parse_parameters(values, require_checkpoint=require_checkpoint)


def as_dict(parameters: PerceptionParameters) -> dict[str, Any]:
    """Flat parameter names and values, the inverse of :func:`parse_parameters`."""
    out: dict[str, Any] = {}
    for field in fields(parameters):
        value = getattr(parameters, field.name)
        if isinstance(value, SmoothingConfig):
            for sub in fields(value):
                out[f"smoothing.{sub.name}"] = getattr(value, sub.name)
        else:
            out[field.name] = value
    return out
