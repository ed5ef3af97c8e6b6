"""`endoarss bench model|node|trust|memory`: one subcommand, a module per benchmark."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS: dict[str, tuple[str, str]] = {
    "model": (
        "endoarss_ros.bench.model_bench",
        "Predictor latency/throughput per preset, size, precision, batch, LoRA, compile",
    ),
    "node": (
        "endoarss_ros.bench.node_bench",
        "node end-to-end latency and delivered ratio vs a naive node and a pass-through node",
    ),
    "trust": (
        "endoarss_ros.bench.trust_bench",
        "trust signal: false alarms on clean clips, flags on corrupted and far out-of-"
        "distribution frames, harm of unflagged frames, ECE, cost against the Predictor",
    ),
    "memory": (
        "endoarss_ros.bench.memory_bench",
        "peak memory of the per-frame work on large frames, in frame sizes, vs the same work "
        "in one pass over the whole frame",
    ),
}


def configure(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).configure(subparser)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(BENCHMARKS[args.benchmark][0]).run(args) or 0)
