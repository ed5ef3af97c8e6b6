"""The `endoarss` command: one subcommand per job, each defined beside the code it runs.

A subcommand module provides `configure(parser)` to declare its arguments and `run(args) -> int`.
Modules are imported only when their subcommand runs, so `endoarss --help` stays fast (PyTorch
takes seconds to import).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
