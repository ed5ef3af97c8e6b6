"""`endoarss bench node`: end-to-end latency and delivered-frame ratio of the perception node,
next to a naive node (the typical ROS 2 PyTorch pipeline, endoarss_ros.bench.ros.naive_node) and a
pass-through node (the transport floor), all on the same model, frames and camera.

For each (frame size, layout, rate) the three nodes run back to back in child processes,
probed by this process (the camera and the consumer, endoarss_ros.bench.ros.latency_probe), with
the Predictor's own time on the same frames measured once before them. ``--repeats`` runs the
three again in rotated order, so slow periods of a shared machine spread over all of them.
Overhead = end-to-end p50 - Predictor p50: what transport, conversion and waiting add.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from endoarss_ros.cli_options import frame_size

NODES = ("perception", "naive", "naive_1thread", "passthrough")
FULL_SIZES = ((480, 640), (1024, 1280), (1080, 1920))


@dataclass(frozen=True)
class NodeRow:
    node: str
    size: str
    layout: str
    rate_hz: float
    repeat: int
    published: int
    answered: int
    delivered_ratio: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    predictor_p50_ms: float
    overhead_ms: float
    """End-to-end p50 minus Predictor p50 (the Predictor time is 0 for the pass-through)."""
    overhead_ratio: float
    """overhead_ms / Predictor p50."""
    node_inference_p50_ms: float
    """predict() inside the perception node (its diagnostics; NaN for the other nodes)."""
    node_latency_p50_ms: float
    """Received to published inside the perception node: waiting for the inference thread,
    conversion, predict() and publishing; end-to-end minus this is DDS transport."""


@dataclass(frozen=True)
class Comparison:
    size: str
    layout: str
    rate_hz: float
    ours_vs_naive_p50: float
    """Our p50 latency / the naive node's p50 latency (below 1: ours is faster)."""
    ours_vs_naive_1thread_p50: float
    ours_vs_passthrough_p50: float
    ours_delivered: float
    naive_delivered: float
    naive_1thread_delivered: float
    passthrough_delivered: float


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="vit_small_patch14_dinov2")
    parser.add_argument("--input-size", type=int, default=224, help="network input")
    parser.add_argument("--checkpoint", type=Path, help="use this instead of random weights")
    parser.add_argument("--sizes", type=frame_size(16), nargs="+", default=[(1024, 1280)])
    parser.add_argument("--layouts", nargs="+", choices=("mono", "stereo"), default=["mono"])
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0])
    parser.add_argument("--nodes", nargs="+", choices=NODES, default=list(NODES))
    parser.add_argument(
        "--full", action="store_true", help="640x480, 1280x1024, 1920x1080; mono, stereo; 30, 60 Hz"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per node")
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all nodes, rotated")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="cpu_threads of the perception node and of the Predictor timing (0 = default)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--predictor-repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=Path("bench_node.json"))


def run(args: argparse.Namespace) -> int:
    from endoarss_ros.ros.transport import configure_large_image_transport

    if args.full:
        args.sizes, args.layouts, args.rates = list(FULL_SIZES), ["mono", "stereo"], [30.0, 60.0]
    print(f"camera side: {configure_large_image_transport()}", flush=True)

    import torch

    from endoarss_ros.inference import Predictor, write_random_checkpoint

    from .report import machine_description, write_json

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or write_random_checkpoint(
            Path(folder) / "random.safetensors",
            preset=args.preset,
            input_size=(args.input_size, args.input_size),
        )
        predictor = Predictor(
            checkpoint, device=args.device, precision="fp32", threads=args.cpu_threads
        )
        machine = machine_description(predictor.device)
        print(f"model: {predictor.describe()}; {machine}", flush=True)
        rows: list[NodeRow] = []
        for height, width in args.sizes:
            for layout in args.layouts:
                for rate in args.rates:
                    rows.extend(
                        bench_config(args, checkpoint, predictor, height, width, layout, rate)
                    )
    comparisons = compare(rows)
    print()
    print(format_rows(rows))
    print()
    print(format_comparisons(comparisons))
    document = {
        "machine": machine,
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "model": predictor.describe(),
        "cpu_threads": args.cpu_threads,
        "rows": [asdict(row) for row in rows],
        "comparisons": [asdict(c) for c in comparisons],
    }
    write_json(args.json, document)
    print(f"wrote {args.json}")
    return 0


def node_command(node: str) -> list[str] | None:
    """argv before --ros-args; None = the installed perception_node."""
    if node == "perception":
        return None
    module = {"naive": "naive_node", "naive_1thread": "naive_node"}.get(node, "passthrough_node")
    return [sys.executable, "-m", f"endoarss_ros.bench.ros.{module}"]


def bench_config(
    args: argparse.Namespace,
    checkpoint: Path,
    predictor,
    height: int,
    width: int,
    layout: str,
    rate: float,
) -> list[NodeRow]:
    from endoarss_ros.bench.ros.latency_probe import probe_size, scene_frames, time_predictor

    probe_args = copy.copy(args)
    probe_args.layout, probe_args.rate, probe_args.transport = layout, rate, "raw"
    probe_args.precision = "fp32"
    frames = scene_frames(height, width, 8, seed=width)
    predictor_ms = time_predictor(
        predictor, frames, 2 if layout == "stereo" else 1, args.predictor_repeats
    )
    rows = []
    for repeat in range(args.repeats):
        order = args.nodes[repeat % len(args.nodes) :] + args.nodes[: repeat % len(args.nodes)]
        for node in order:
            threads = {"perception": args.cpu_threads, "naive_1thread": 1}.get(node, 0)
            extra = ["-p", f"cpu_threads:={threads}"]
            try:
                result = probe_size(
                    probe_args,
                    checkpoint,
                    predictor,
                    height,
                    width,
                    command=node_command(node),
                    extra_arguments=extra,
                    predictor_ms=predictor_ms,
                )
            except RuntimeError as exc:
                # One node that fails to start or stop must not cost the other measurements;
                # its row is missing and its ratios are null.
                print(f"{node} at {width}x{height} {layout} {rate:g} Hz failed: {exc}", flush=True)
                continue
            model_ms = 0.0 if node == "passthrough" else result.predictor_p50_ms
            overhead = result.latency_p50_ms - model_ms
            row = NodeRow(
                node=node,
                size=result.size,
                layout=layout,
                rate_hz=rate,
                repeat=repeat,
                published=result.published,
                answered=result.answered,
                delivered_ratio=result.delivered_ratio,
                latency_p50_ms=result.latency_p50_ms,
                latency_p95_ms=result.latency_p95_ms,
                latency_p99_ms=result.latency_p99_ms,
                latency_max_ms=result.latency_max_ms,
                predictor_p50_ms=model_ms,
                overhead_ms=overhead,
                overhead_ratio=overhead / model_ms if model_ms else float("nan"),
                node_inference_p50_ms=result.node_inference_p50_ms,
                node_latency_p50_ms=result.node_latency_p50_ms,
            )
            rows.append(row)
            print(format_rows([row]).splitlines()[-1], flush=True)
    return rows


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if not ordered:
        return float("nan")
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def compare(rows: Sequence[NodeRow]) -> list[Comparison]:
    """Per configuration, ratios of the medians over repeats (nan where a node was not run)."""
    configs = sorted({(r.size, r.layout, r.rate_hz) for r in rows}, key=str)
    comparisons = []
    for size, layout, rate in configs:

        def of(node: str, field: str, config: tuple = (size, layout, rate)) -> float:
            return _median(
                [
                    getattr(r, field)
                    for r in rows
                    if (r.size, r.layout, r.rate_hz, r.node) == (*config, node)
                ]
            )

        ours = of("perception", "latency_p50_ms")
        comparisons.append(
            Comparison(
                size=size,
                layout=layout,
                rate_hz=rate,
                ours_vs_naive_p50=ours / of("naive", "latency_p50_ms"),
                ours_vs_naive_1thread_p50=ours / of("naive_1thread", "latency_p50_ms"),
                ours_vs_passthrough_p50=ours / of("passthrough", "latency_p50_ms"),
                ours_delivered=of("perception", "delivered_ratio"),
                naive_delivered=of("naive", "delivered_ratio"),
                naive_1thread_delivered=of("naive_1thread", "delivered_ratio"),
                passthrough_delivered=of("passthrough", "delivered_ratio"),
            )
        )
    return comparisons


def format_rows(rows: Sequence[NodeRow]) -> str:
    lines = [
        "| node | frame | layout | Hz | delivered | e2e p50 ms | p95 ms | p99 ms | max ms "
        "| Predictor p50 ms | overhead ms | overhead / Predictor | in node: predict p50 ms "
        "| in node: received to published p50 ms |",
        "|" + " --- |" * 14,
    ]
    for r in rows:
        ratio = "-" if r.node == "passthrough" else f"{100 * r.overhead_ratio:.0f} %"
        lines.append(
            f"| {r.node} | {r.size} | {r.layout} | {r.rate_hz:g} | {r.answered}/{r.published} "
            f"({100 * r.delivered_ratio:.0f} %) | {r.latency_p50_ms:.1f} | "
            f"{r.latency_p95_ms:.1f} | {r.latency_p99_ms:.1f} | {r.latency_max_ms:.1f} | "
            f"{r.predictor_p50_ms:.1f} | {r.overhead_ms:.1f} | {ratio} | "
            f"{_optional(r.node_inference_p50_ms)} | {_optional(r.node_latency_p50_ms)} |"
        )
    return "\n".join(lines)


def _optional(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def format_comparisons(comparisons: Sequence[Comparison]) -> str:
    lines = [
        "| frame | layout | Hz | ours / naive (p50) | ours / naive 1 thread (p50) "
        "| ours / pass-through (p50) | delivered ours | naive | naive 1 thread | pass-through |",
        "|" + " --- |" * 10,
    ]
    for c in comparisons:
        lines.append(
            f"| {c.size} | {c.layout} | {c.rate_hz:g} | {c.ours_vs_naive_p50:.2f} | "
            f"{c.ours_vs_naive_1thread_p50:.2f} | {c.ours_vs_passthrough_p50:.2f} | "
            f"{100 * c.ours_delivered:.0f} % | {100 * c.naive_delivered:.0f} % | "
            f"{100 * c.naive_1thread_delivered:.0f} % | {100 * c.passthrough_delivered:.0f} % |"
        )
    return "\n".join(lines)
