"""The perception node's parameters: one table, generated from the validated sections.

:data:`PARAMETERS` is built from :class:`~endoarss_ros.inference.options.PredictorOptions`,
:class:`~endoarss_ros.inference.options.PipelineConfig` (shared with `endoarss bag infer`) and
:class:`NodeOptions` (what only the node has). From it come the ``declare_parameter``
descriptors (type, range, read-only, description: what ``ros2 param describe`` shows), the
validation at start-up, at configure and on every change, the check of parameter files that
the launch files run, and the parameter table of docs/parameters.md (``python -m
endoarss_ros.ros.parameters --markdown``; a test fails when any of them drifts). Adding a
parameter means adding one field to one of those sections.

When a value takes effect (``applies``):

- ``runtime``: at once, while the node runs;
- ``configure``: at the next configure; settable while the node is unconfigured (so a new
  checkpoint, device or precision is ``cleanup`` -> set -> ``configure``, no restart);
- ``startup``: read once when the process starts (read-only).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import yaml
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from endoarss_ros.inference.options import PipelineConfig, PredictorOptions
from endoarss_ros.validation import (
    Boolean,
    Choice,
    FieldInfo,
    Integer,
    Number,
    Rule,
    Section,
    ValidationError,
    check,
    flat_fields,
    from_flat,
    setting,
    to_flat,
)

from .rclpy_compat import parameter_overrides

NODE_NAME: Final = "perception"
INPUT_TRANSPORTS: Final = ("raw", "compressed")
INPUT_QOS_PRESETS: Final = ("sensor_data", "reliable", "system_default")

RUNTIME: Final = "runtime"
CONFIGURE: Final = "configure"
STARTUP: Final = "startup"


class ParameterError(ValidationError):
    """A parameter value that cannot be used; the message starts with the parameter's name."""

    @staticmethod
    def format(field: str, message: str) -> str:
        return f"parameter '{field}' {message}"

    @classmethod
    def from_validation(cls, exc: ValidationError) -> ParameterError:
        return cls(exc.field or "params_file", exc.detail)


@dataclass(frozen=True)
class NodeOptions(Section):
    """What only the node has: its input subscriptions, watchdogs, diagnostics, start-up."""

    ERROR: ClassVar = ParameterError

    input_transport: str = setting(
        "raw",
        Choice(INPUT_TRANSPORTS, fold_case=True),
        doc="raw (sensor_msgs/Image on <topic>) | compressed (CompressedImage on "
        "<topic>/compressed)",
    )
    input_qos: str = setting(
        "sensor_data",
        Choice(INPUT_QOS_PRESETS, fold_case=True),
        doc="sensor_data (best effort, matches every publisher) | reliable | system_default",
    )
    input_depth: int = setting(1, Integer(1, 100), doc="history depth of the input subscriptions")
    max_frame_age_ms: float = setting(
        0.0,
        Number(0, 3_600_000, unit="ms"),
        doc="drop frames whose stamp is older than this when inference starts; 0 = keep all",
        runtime=True,
    )
    input_timeout_s: float = setting(
        5.0,
        Number(0, 3600, low_open=True, unit="s"),
        doc="warn, naming the likely cause, when no frame arrived for this long",
        runtime=True,
    )
    diagnostics_period_s: float = setting(
        1.0, Number(0.1, 60, unit="s"), doc="period of the /diagnostics status"
    )
    autostart: bool = setting(
        True,
        Boolean(),
        doc="configure and activate at start-up; false waits for a lifecycle manager",
        read_only=True,
    )


@dataclass(frozen=True)
class ParameterSpec:
    """One row of the table."""

    name: str
    rule: Rule
    default: Any
    description: str
    applies: str

    @classmethod
    def of(cls, info: FieldInfo) -> ParameterSpec:
        applies = STARTUP if info.read_only else RUNTIME if info.runtime else CONFIGURE
        return cls(info.name, info.rule, info.default, info.doc, applies)


PARAMETERS: Final[tuple[ParameterSpec, ...]] = tuple(
    ParameterSpec.of(info)
    for section in (PredictorOptions, PipelineConfig, NodeOptions)
    for info in flat_fields(section)
)
PARAMETER_NAMES: Final = frozenset(spec.name for spec in PARAMETERS)
SPECS: Final = {spec.name: spec for spec in PARAMETERS}

# Parameters every rclpy node has; a parameter file may set them too.
_STANDARD_PARAMETERS: Final = frozenset({"use_sim_time", "start_type_description_service"})
_QOS_OVERRIDE_PREFIX: Final = "qos_overrides."
# Parameters of earlier releases, with what replaced them.
_REPLACED: Final = {
    "enable": "the node is a lifecycle node: `ros2 lifecycle set <node> deactivate` pauses it "
    "(the ~/enable service still does the same)",
}


@dataclass(frozen=True)
class PerceptionParameters:
    predictor: PredictorOptions
    pipeline: PipelineConfig
    node: NodeOptions

    def as_dict(self) -> dict[str, Any]:
        """Flat parameter names and values, the inverse of :func:`parse_parameters`."""
        return {**to_flat(self.predictor), **to_flat(self.pipeline), **to_flat(self.node)}


def parse_parameters(
    values: Mapping[str, Any], *, require_checkpoint: bool = True
) -> PerceptionParameters:
    """Validate parameter values (defaults fill what is missing) into typed parameters.

    ``require_checkpoint=False`` accepts an empty checkpoint, for parameter files whose
    checkpoint is given on the launch command line, and for a node not yet configured.
    """
    try:
        parameters = PerceptionParameters(
            predictor=from_flat(PredictorOptions, values),
            pipeline=from_flat(PipelineConfig, values),
            node=from_flat(NodeOptions, values),
        )
    except ParameterError:
        raise
    except ValidationError as exc:
        raise ParameterError.from_validation(exc) from None
    if require_checkpoint and not parameters.predictor.checkpoint:
        raise ParameterError(
            "checkpoint", "is required: the path of an EndoARSS .safetensors checkpoint"
        )
    return parameters


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
        mark = getattr(exc, "problem_mark", None)
        if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
            reason = f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
        else:
            reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ParameterError(
            "params_file", f"cannot be read from {str(path)!r}: {reason}"
        ) from None
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
        parameters = section["ros__parameters"] or {}
        if not isinstance(parameters, Mapping):
            raise ParameterError(
                "params_file", f"{str(path)!r}: 'ros__parameters' of {key!r} is not a mapping"
            )
        _flatten("", parameters, values)
    return values


def check_known(names: Sequence[str], where: str) -> None:
    """Refuse names the node does not have: rclpy ignores undeclared parameters, so a
    misspelt name would silently do nothing."""
    for name in sorted(names):
        if (
            name in PARAMETER_NAMES
            or name in _STANDARD_PARAMETERS
            or name.startswith(_QOS_OVERRIDE_PREFIX)
        ):
            continue
        if name in _REPLACED:
            raise ParameterError(name, f"{where} no longer exists: {_REPLACED[name]}")
        raise ParameterError(
            name,
            f"{where} is not a parameter of the perception node (known: "
            f"{', '.join(sorted(PARAMETER_NAMES))})",
        )


def validate_parameter_file(
    path: str | Path, node_name: str = NODE_NAME, *, require_checkpoint: bool = False
) -> PerceptionParameters:
    """Check a parameter file as the node would, unknown names included."""
    values = load_parameter_file(path, node_name)
    check_known(list(values), f"in {str(path)!r}")
    return parse_parameters(values, require_checkpoint=require_checkpoint)


def markdown_table() -> str:
    """The parameter table of docs/parameters.md."""
    rows = [
        "| parameter | type | default | accepted | applies | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for spec in PARAMETERS:
        default = "`" + (yaml.safe_dump(spec.default).strip().removesuffix("...").strip()) + "`"
        if spec.default == "":
            default = "(none)"
        rows.append(
            f"| `{spec.name}` | {type_name(spec.rule)} | {default} | "
            f"{_cell(spec.rule.expectation)} | {spec.applies} | {_cell(spec.description)} |"
        )
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def type_name(rule: Rule) -> str:
    """The ROS parameter type a rule declares."""
    if isinstance(rule, Boolean):
        return "bool"
    if isinstance(rule, Integer):
        return "integer"
    if isinstance(rule, Number):
        return "double"
    return "string"


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """What ``ros2 param describe`` shows: type, range, accepted values, when it applies."""
    rule = spec.rule
    described = ParameterDescriptor(
        name=spec.name,
        type=_PARAMETER_TYPES[type_name(rule)],
        description=f"{spec.description} (applies: {spec.applies})",
        additional_constraints=f"must be {rule.expectation}",
        read_only=spec.applies == STARTUP,
    )
    if isinstance(rule, Integer) and rule.low is not None and rule.high is not None:
        described.integer_range = [IntegerRange(from_value=rule.low, to_value=rule.high, step=0)]
    if isinstance(rule, Number) and rule.low is not None and rule.high is not None:
        described.floating_point_range = [
            FloatingPointRange(from_value=float(rule.low), to_value=float(rule.high), step=0.0)
        ]
    return described


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every parameter with its real type and range; returns the values it starts with.

    A YAML file or launch argument writing ``stereo_slop_ms: 15`` gives an integer where a
    double is declared, which rclpy would refuse at declaration; such start-up values are
    widened to doubles first, as run-time changes are (:func:`widen_integers`).
    """
    overrides = parameter_overrides(node)
    for spec in PARAMETERS:
        given = overrides.get(spec.name)
        if given is None:
            continue
        # Checked here first so a bad value is reported in this node's words, not as rclpy's
        # type or range exception from declare_parameter.
        check(spec.name, given.value, spec.rule, ParameterError)
        overrides[spec.name] = _widened(given)
    values = {}
    for spec in PARAMETERS:
        parameter = node.declare_parameter(spec.name, spec.default, descriptor(spec))
        values[spec.name] = parameter.value
    return values


def widen_integers(parameters: list[Parameter]) -> list[Parameter]:
    """Requested changes with a whole number for a double parameter (``ros2 param set ...
    stereo_slop_ms 20``) turned into that double, before rclpy's type check would refuse it;
    the rest unchanged. A pre-set parameters callback (Jazzy and Kilted; on Humble such a
    change gets rclpy's "Wrong parameter type" refusal)."""
    return [_widened(parameter) for parameter in parameters]


def _widened(parameter: Parameter) -> Parameter:
    spec = SPECS.get(parameter.name)
    if (
        spec is not None
        and type_name(spec.rule) == "double"
        and parameter.type_ == Parameter.Type.INTEGER
    ):
        return Parameter(parameter.name, Parameter.Type.DOUBLE, float(parameter.value))
    return parameter


_PARAMETER_TYPES: Final = {
    "bool": ParameterType.PARAMETER_BOOL,
    "integer": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m endoarss_ros.ros.parameters",
        description="Check a parameter file of the perception node, or print the table.",
    )
    parser.add_argument("params_file", nargs="?", type=Path)
    parser.add_argument(
        "--markdown", action="store_true", help="print the table of docs/parameters.md"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
        return 0
    if args.params_file is None:
        parser.error("give a parameter file or --markdown")
    try:
        validate_parameter_file(args.params_file)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.params_file}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
