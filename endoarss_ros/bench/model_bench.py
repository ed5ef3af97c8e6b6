"""`endoarss bench model`: Predictor latency and throughput over a grid of settings, each
next to the bare-network floor measured in the same run.

The floor of a (preset, input size, batch) group is a plain ``model(x)`` loop of the same
network, merged, fp32, on a tensor that is already normalised at the network size: what the
hardware does with this network and nothing else. Every Predictor setting of the group (uint8
frames in, probabilities and masks out) is timed in the same rounds, interleaved with the
floor, so a neighbour process that slows one round slows every setting in it; the ratios are
then comparable even on a busy machine where the absolute times are not.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .report import machine_description, write_json

DEFAULT_PRESETS = ("vit_tiny_patch14", "vit_small_patch14_dinov2")
FULL_PRESETS = ("vit_tiny_patch14", "vit_small_patch14_dinov2", "vit_base_patch14_dinov2")
FULL_SIZES = (224, 448, 518)
FULL_BATCHES = (1, 2, 8)
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Setting:
    """One way of running the Predictor; ``kind`` 'floor' is the bare-network loop."""

    kind: str
    precision: str = "fp32"
    lora: str = "merged"
    compiled: bool = False
    threads: int = 0

    @property
    def label(self) -> str:
        if self.kind == "floor":
            return "bare model(x), fp32 merged"
        parts = [self.precision, f"LoRA {self.lora}"]
        if self.compiled:
            parts.append("compiled")
        return "Predictor " + ", ".join(parts)


@dataclass(frozen=True)
class ModelRow:
    preset: str
    input_size: int
    batch: int
    frame: str
    setting: str
    precision: str
    lora: str
    compiled: bool
    threads: int
    status: str
    """'ok', or why the setting was not measured (fp16 on the CPU, a failed compile)."""
    latency_p50_ms: float
    latency_p95_ms: float
    frames_per_s: float
    vs_floor: float
    """p50 latency / the floor's p50 latency in the same rounds (1.0 = the hardware limit)."""
    samples: int
    warmup_s: float


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[224], help="network inputs")
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=["fp32", "bf16", "fp16"]
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--lora", nargs="+", choices=("merged", "unmerged"), default=["merged", "unmerged"]
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="PyTorch intra-op threads to compare, interleaved (0 = PyTorch's default, one "
        "per core; on a shared CPU 1 is many times faster, docs/performance.md)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time a torch.compile'd fp32 merged Predictor (minutes of warm-up on a CPU)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"the whole grid: {', '.join(FULL_PRESETS)} x {FULL_SIZES} x batch {FULL_BATCHES}",
    )
    parser.add_argument(
        "--frame",
        default="",
        help="camera frame WIDTHxHEIGHT fed to the Predictor (default: the network size, so "
        "no resize is timed)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--iterations", type=int, default=3, help="timed calls per round")
    parser.add_argument("--json", type=Path, default=Path("bench_model.json"))


def run(args: argparse.Namespace) -> int:
    import torch

    from endoarss_ros.inference.devices import resolve_device

    if args.full:
        args.presets, args.sizes, args.batches = FULL_PRESETS, FULL_SIZES, FULL_BATCHES
    device = resolve_device(args.device)
    machine = machine_description(device)
    print(machine, flush=True)
    rows: list[ModelRow] = []
    with tempfile.TemporaryDirectory() as folder:
        for preset, size in itertools.product(args.presets, args.sizes):
            group = bench_group(args, device, preset, size, Path(folder))
            rows.extend(group)
            print("\n".join(format_table(group).splitlines()[2:]), flush=True)
    print()
    print(format_table(rows))
    document = {
        "machine": machine,
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "rows": [asdict(row) for row in rows],
    }
    write_json(args.json, document)
    print(f"wrote {args.json}")
    return 0


def settings_for(args: argparse.Namespace, device) -> tuple[list[Setting], list[Setting]]:
    """Settings to time, and settings that cannot run on this device (reported as such)."""
    import torch

    measured: list[Setting] = []
    skipped: list[Setting] = []
    for threads in args.threads:
        measured.append(Setting("floor", threads=threads))
        for precision, lora in itertools.product(args.precisions, args.lora):
            setting = Setting("predictor", precision, lora, threads=threads)
            usable = precision != "fp16" or device.type == "cuda"
            if precision == "bf16" and device.type == "cuda":
                usable = bool(torch.cuda.is_bf16_supported())
            (measured if usable else skipped).append(setting)
        if args.compile:
            measured.append(Setting("predictor", "fp32", "merged", True, threads))
    return measured, skipped


def bench_group(
    args: argparse.Namespace, device, preset: str, size: int, folder: Path
) -> list[ModelRow]:
    """All settings and batches of one (preset, size), interleaved round by round."""
    import torch

    from endoarss_ros.inference import Predictor, write_random_checkpoint

    checkpoint = write_random_checkpoint(
        folder / f"{preset}_{size}.safetensors", preset=preset, input_size=(size, size)
    )
    measured, skipped = settings_for(args, device)
    height, width = _frame_size(args.frame, size)
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    batches = sorted(set(args.batches))
    callers: dict[Setting, Callable[[int], None]] = {}
    warmups: dict[Setting, float] = {}
    failed: dict[Setting, str] = {}
    floor_model = None
    for setting in measured:
        if setting.kind == "floor":
            continue
        started = time.perf_counter()
        try:
            predictor = Predictor(
                checkpoint,
                device=str(device),
                precision=setting.precision,
                compile=setting.compiled,
                merge_lora=setting.lora == "merged",
                warmup_batch_sizes=batches,
            )
        except Exception as exc:  # a compile that fails is a result, not a crash
            failed[setting] = f"failed: {str(exc).splitlines()[0][:120]}"
            continue
        warmups[setting] = time.perf_counter() - started
        callers[setting] = _predictor_call(predictor, frame)
        if floor_model is None and setting.precision == "fp32" and setting.lora == "merged":
            floor_model = predictor.model
    if floor_model is None:
        floor_model = Predictor(checkpoint, device=str(device), precision="fp32").model
    for setting in measured:
        if setting.kind == "floor":
            callers[setting] = _floor_call(floor_model, device, size)

    times: dict[tuple[Setting, int], list[float]] = {}
    default_threads = torch.get_num_threads()
    for _ in range(args.rounds):
        for batch, setting in itertools.product(batches, callers):
            torch.set_num_threads(setting.threads or default_threads)
            call = callers[setting]
            call(batch)
            for _ in range(args.iterations):
                started = time.perf_counter()
                call(batch)
                _synchronize(device)
                times.setdefault((setting, batch), []).append(time.perf_counter() - started)
    torch.set_num_threads(default_threads)

    rows = []
    for batch, setting in itertools.product(batches, measured + skipped):
        samples = np.asarray(times.get((setting, batch), [])) * 1e3
        floor = np.asarray(times[(Setting("floor", threads=setting.threads), batch)]) * 1e3
        if setting in skipped:
            status = "n/a on CPU" if setting.precision == "fp16" else "not supported here"
        else:
            status = failed.get(setting, "ok")
        p50 = float(np.percentile(samples, 50)) if samples.size else float("nan")
        rows.append(
            ModelRow(
                preset=preset,
                input_size=size,
                batch=batch,
                frame=f"{width}x{height}",
                setting=setting.label,
                precision=setting.precision,
                lora=setting.lora,
                compiled=setting.compiled,
                threads=setting.threads or default_threads,
                status=status,
                latency_p50_ms=p50,
                latency_p95_ms=float(np.percentile(samples, 95)) if samples.size else p50,
                frames_per_s=batch * 1e3 / p50 if samples.size else float("nan"),
                vs_floor=p50 / float(np.percentile(floor, 50)) if samples.size else float("nan"),
                samples=int(samples.size),
                warmup_s=round(warmups.get(setting, 0.0), 2),
            )
        )
    return rows


def _frame_size(text: str, size: int) -> tuple[int, int]:
    if not text:
        return size, size
    width, _, height = text.partition("x")
    return int(height), int(width)


def _predictor_call(predictor, frame: np.ndarray) -> Callable[[int], None]:
    def call(batch: int) -> None:
        predictor.predict([frame] * batch)

    return call


def _floor_call(model, device, size: int) -> Callable[[int], None]:
    import torch

    inputs = {}

    @torch.inference_mode()
    def call(batch: int) -> None:
        if batch not in inputs:
            inputs[batch] = torch.randn(batch, 3, size, size, device=device)
        model(inputs[batch])

    return call


def _synchronize(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def format_table(rows: Sequence[ModelRow]) -> str:
    lines = [
        "| preset | input | frame | batch | setting | threads | p50 ms | p95 ms | frames/s "
        "| x floor | warm-up s |",
        "|" + " --- |" * 11,
    ]
    for r in rows:
        if r.status != "ok":
            figures = f"{r.status} | | | | |"
        else:
            figures = (
                f"{r.latency_p50_ms:.1f} | {r.latency_p95_ms:.1f} | {r.frames_per_s:.1f} "
                f"| {r.vs_floor:.2f} | {r.warmup_s:.1f} |"
            )
        lines.append(
            f"| {r.preset} | {r.input_size} | {r.frame} | {r.batch} | {r.setting} | {r.threads} "
            f"| {figures}"
        )
    return "\n".join(lines)
