"""The `endoarss` command: one subcommand per job, each defined beside the code it runs.

A subcommand module provides `configure(parser)` to declare its arguments and `run(args) -> int`.
Modules are imported only when their subcommand runs, so `endoarss --help` stays fast (PyTorch
takes seconds to import).

Errors about the input end the command with one line on stderr, ``endoarss <command>:
<message>``, and a documented status: 2 for a bad option, parameter or configuration value
(:class:`~endoarss_ros.validation.ValidationError`, argparse's errors), 1 for input that
cannot be used (a missing or unreadable file, a bag, checkpoint, dataset or device); any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": (
        "endoarss_ros.model.summary",
        "parameter table and CPU forward time of a model preset",
    ),
    "synth": (
        "endoarss_ros.data.synthetic.command",
        "write a synthetic surgical-scene dataset (frames and clips) in the generic layout",
    ),
    "train": (
        "endoarss_ros.training.train_command",
        "train a model from a YAML config (also under torchrun)",
    ),
    "eval": (
        "endoarss_ros.training.eval_command",
        "evaluate a checkpoint: metrics, report folder, corruption robustness",
    ),
    "calibrate": (
        "endoarss_ros.training.calibrate_command",
        "fit temperature scaling (validation frames) and out-of-distribution feature "
        "statistics (training frames) and store them in a checkpoint",
    ),
    "ablation": (
        "endoarss_ros.training.ablation",
        "train and evaluate every row of an ablation spec; write the table",
    ),
    "bag": (
        "endoarss_ros.ros.bags.command",
        "rosbag2 tools: make, play, record, reindex, eval, infer",
    ),
    "convert-official": (
        "endoarss_ros.model.official_convert",
        "convert the authors' released EndoARSS checkpoint (.pt) into an EndoARSS checkpoint",
    ),
    "bench": (
        "endoarss_ros.bench.command",
        "benchmarks: `bench model` (Predictor vs bare network), `bench node` (vs naive node)",
    ),
}


EXIT_BAD_OPTION = 2
"""A bad option, parameter or configuration value (argparse's status for a bad command line)."""
EXIT_UNUSABLE_INPUT = 1
"""A file, bag, checkpoint, dataset or device that cannot be used."""

_UNUSABLE_INPUT = (
    ("endoarss_ros.bags.schema", "BagError"),
    ("endoarss_ros.inference.errors", "PredictorError"),
    ("endoarss_ros.model.checkpoint", "CheckpointError"),
    ("endoarss_ros.model.official_convert", "OfficialCheckpointError"),
    ("endoarss_ros.model.weights", "PretrainedWeightsError"),
    ("endoarss_ros.data.dataset", "DatasetError"),
    ("endoarss_ros.data.classes", "ClassInfoError"),
    ("endoarss_ros.training.state", "TrainingStateError"),
)
"""The project's errors about input that cannot be used, by module: looked up only among
modules already imported (an exception of a module never imported cannot have been raised),
so mapping an error imports nothing."""

_BAD_OPTION = (("endoarss_ros.training.ablation", "AblationSpecError"),)
"""Errors about a bad value that are not ValidationErrors."""


def _loaded(names: tuple[tuple[str, str], ...]) -> tuple[type, ...]:
    return tuple(
        getattr(sys.modules[module], name) for module, name in names if module in sys.modules
    )


def exit_status(exc: BaseException) -> int | None:
    """The documented exit status of an error about the input, None for anything else (a
    bug, which keeps its traceback). A CheckpointError is a ValidationError but names an
    unusable file; a configuration that could not be read (its cause an OSError) is
    unusable input too."""
    from endoarss_ros.validation import ValidationError

    if isinstance(exc, (OSError, *_loaded(_UNUSABLE_INPUT))):
        return EXIT_UNUSABLE_INPUT
    if isinstance(exc, ValidationError):
        return EXIT_UNUSABLE_INPUT if isinstance(exc.__cause__, OSError) else EXIT_BAD_OPTION
    if isinstance(exc, _loaded(_BAD_OPTION)):
        return EXIT_BAD_OPTION
    return None


def one_line(exc: BaseException) -> str:
    """The error as one line: an OSError names its file first; line breaks (YAML parser
    messages, PyTorch's) become spaces."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


class CommandParser(argparse.ArgumentParser):
    """A bad command line is reported in one line, with where to find the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_OPTION, f"{self.prog}: {one_line(ValueError(message))} (see --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="endoarss",
        description="EndoARSS surgical activity recognition and segmentation.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).configure(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except Exception as exc:
        status = exit_status(exc)
        if status is None:
            raise
        action = getattr(args, "bag_command", None) if args.command == "bag" else None
        name = " ".join(["endoarss", args.command, *([action] if action else [])])
        print(f"{name}: {one_line(exc)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
