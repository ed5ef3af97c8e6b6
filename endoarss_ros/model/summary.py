"""Parameter table per component and CPU forward timing of a preset.

Usage::

    python -m endoarss_ros.model.summary vit_small_patch14_dinov2 --size 448
    python -m endoarss_ros.model.summary vit_base_patch14_dinov2 --size 448 --repeats 5
    python -m endoarss_ros.model.summary vit_tiny_patch14 --height 266 --width 364 --no-timing
    python -m endoarss_ros.model.summary --list

The model is built with random weights (timing does not depend on their values). Timing runs
the inference path the deployed node uses: ``merge()``, ``eval()``, ``torch.inference_mode``,
float32, batch ``--batch``, after ``--warmup`` untimed passes; it reports the median and the
fastest of ``--repeats`` passes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .lora import is_adapter_parameter

COMPONENTS = (
    "backbone",
    "shared adapters",
    "task adapters",
    "SMA",
    "seg head",
    "activity head",
)


@dataclass(frozen=True)
class ComponentParameters:
    name: str
    total: int
    trainable: int


def component_of(name: str) -> str:
    """The summary component a parameter of :class:`EndoARSS` belongs to, by its name."""
    if name.startswith("backbone.task_adapters."):
        return "task adapters"
    if name.startswith("backbone."):
        return "shared adapters" if is_adapter_parameter(name) else "backbone"
    if ".sma." in name:
        return "SMA"
    if name.startswith("seg_head."):
        return "seg head"
    if name.startswith("activity_head."):
        return "activity head"
    raise ValueError(f"parameter {name!r} belongs to no known component")


def parameter_summary(model: nn.Module) -> list[ComponentParameters]:
    """Total and trainable parameter counts per component, in :data:`COMPONENTS` order."""
    total = dict.fromkeys(COMPONENTS, 0)
    trainable = dict.fromkeys(COMPONENTS, 0)
    for name, param in model.named_parameters():
        component = component_of(name)
        total[component] += param.numel()
        if param.requires_grad:
            trainable[component] += param.numel()
    return [ComponentParameters(c, total[c], trainable[c]) for c in COMPONENTS]


def format_summary(rows: Sequence[ComponentParameters]) -> str:
    """A fixed-width table with a total line."""
    lines = [f"{'component':<16} {'total':>15} {'trainable':>13}"]
    for row in rows:
        lines.append(f"{row.name:<16} {row.total:>15,} {row.trainable:>13,}")
    total = sum(r.total for r in rows)
    trainable = sum(r.trainable for r in rows)
    lines.append(f"{'all':<16} {total:>15,} {trainable:>13,}")
    lines.append(f"trainable share: {100.0 * trainable / max(total, 1):.2f} %")
    return "\n".join(lines)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    best_ms: float
    repeats: int


def time_forward(
    model: nn.Module,
    height: int,
    width: int,
    *,
    batch: int = 1,
    warmup: int = 1,
    repeats: int = 3,
) -> Timing:
    """Wall-clock forward time of ``model`` (merged, eval, inference mode) on the CPU."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    model.eval()
    merge = getattr(model, "merge", None)
    if merge is not None:
        merge()
    x = torch.randn(batch, 3, height, width)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(1000.0 * (time.perf_counter() - start))
    return Timing(statistics.median(times), min(times), repeats)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", help="preset name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--size", type=int, default=448, help="square input side (default 448)")
    parser.add_argument("--height", type=int, help="input height (overrides --size)")
    parser.add_argument("--width", type=int, help="input width (overrides --size)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-timing", action="store_true", help="only count parameters")


def run(args: argparse.Namespace) -> int:
    from .endoarss import create_model, get_preset, list_presets

    if args.list:
        print("\n".join(list_presets()))
        return 0
    if args.preset is None:
        print("error: a preset name is required (or --list)", file=sys.stderr)
        return 2
    try:
        config = get_preset(args.preset)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    height = args.height or args.size
    width = args.width or args.size
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = create_model(config)
    print(f"preset {args.preset}, input {height}x{width}")
    print(format_summary(parameter_summary(model)))
    if not args.no_timing:
        timing = time_forward(
            model, height, width, batch=args.batch, warmup=args.warmup, repeats=args.repeats
        )
        print(
            f"CPU forward (batch {args.batch}, {torch.get_num_threads()} threads, merged, fp32): "
            f"median {timing.median_ms:.1f} ms, best {timing.best_ms:.1f} ms "
            f"over {timing.repeats} runs"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m endoarss_ros.model.summary",
        description="Parameter table per component and CPU forward time of an EndoARSS preset.",
    )
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
