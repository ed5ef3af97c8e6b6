"""`endoarss bench memory`: peak memory of the node's per-frame work on large frames.

For each frame size, one frame goes through the frame pipeline (`FramePipeline.run`: image
checks, preprocessing, the network, the mask at the source resolution) and its overlay, as the
node runs them, while a thread samples the process's resident memory. The baseline is the same
code with the resize and the overlay done in one pass over the whole frame (strips off: the
float32 copy of the frame and whole-frame temporaries), measured in the same run. Peaks are
above the memory held before the frame, in multiples of the frame's own bytes (the frame, the
message it came in and the DDS buffers are not counted: they are the same either way).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from endoarss_ros.bench.report import machine_description, write_json
from endoarss_ros.cli_options import frame_size

DEFAULT_CHECKPOINT = "checkpoints/demo/endoarss_demo.safetensors"
DEFAULT_SIZES = ((1024, 1280), (2160, 3840), (8000, 8000))
SAMPLE_PERIOD_S = 0.001
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, default=Path(DEFAULT_CHECKPOINT), help="model checkpoint"
    )
    parser.add_argument(
        "--sizes",
        type=frame_size(16),
        nargs="+",
        default=list(DEFAULT_SIZES),
        help="frame sizes WIDTHxHEIGHT (1280x1024 3840x2160 8000x8000)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="frames per size and variant")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")


def run(args: argparse.Namespace) -> int:
    from endoarss_ros.inference.options import PipelineConfig, PredictorOptions
    from endoarss_ros.inference.pipeline import FramePipeline, load_predictor

    _fixed_mmap_threshold()
    config = PipelineConfig()
    options = PredictorOptions(checkpoint=str(args.checkpoint), device="cpu")
    pipeline: FramePipeline[Any] = FramePipeline(load_predictor(options, config), config)
    try:
        small = np.zeros((480, 640, 3), np.uint8)
        pipeline.overlay(pipeline.run([small]), 0)  # warm: first-call allocations
        rows = []
        for height, width in args.sizes:
            frame = np.random.default_rng(height * width).integers(
                0, 256, (height, width, 3), dtype=np.uint8
            )
            row: dict[str, Any] = {
                "size": f"{width}x{height}",
                "frame_mib": round(frame.nbytes / 2**20, 1),
            }
            for variant, strips in (("strips", True), ("one_pass", False)):
                with _strips(strips):
                    peak, seconds = _frame_peak(pipeline, frame, args.rounds)
                row[f"{variant}_peak_x_frame"] = round(peak / frame.nbytes, 2)
                row[f"{variant}_s"] = round(seconds, 3)
            row["peak_ratio"] = round(
                row["strips_peak_x_frame"] / max(row["one_pass_peak_x_frame"], 1e-9), 2
            )
            row["time_ratio"] = round(row["strips_s"] / row["one_pass_s"], 2)
            rows.append(row)
            del frame
    finally:
        pipeline.close()
    print(_table(rows))
    if args.json is not None:
        machine = machine_description(pipeline.predictor.device)
        write_json(
            args.json, {"machine": machine, "checkpoint": str(args.checkpoint), "rows": rows}
        )
    return 0


@contextmanager
def _strips(enabled: bool) -> Iterator[None]:
    """The resize and the overlay as shipped, or in one pass over the whole frame."""
    from endoarss_ros.data import preprocessing
    from endoarss_ros.inference import overlay

    saved = preprocessing.STRIP_PIXELS, overlay.STRIP_PIXELS
    if not enabled:
        preprocessing.STRIP_PIXELS = overlay.STRIP_PIXELS = sys.maxsize
    try:
        yield
    finally:
        preprocessing.STRIP_PIXELS, overlay.STRIP_PIXELS = saved


def _fixed_mmap_threshold() -> None:
    """glibc serves allocations above 128 KiB by mmap and gives them back when freed, but
    raises that threshold to the largest block freed so far (up to 32 MiB): the buffers of one
    frame would then stay resident and hide the next frame's peak. Fixing it keeps every
    measurement a fresh one."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: no such adjustment to undo
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _frame_peak(pipeline: Any, frame: np.ndarray, rounds: int) -> tuple[int, float]:
    """The lowest peak and time over `rounds` frames after one untimed (other work on the
    machine only adds)."""
    pipeline.overlay(pipeline.run([frame]), 0)
    measured = [_peak(lambda: pipeline.overlay(pipeline.run([frame]), 0)) for _ in range(rounds)]
    return min(peak for peak, _ in measured), min(seconds for _, seconds in measured)


def _resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak(work: Callable[[], object]) -> tuple[int, float]:
    """Bytes of resident memory above the level before `work`, at the highest sample; and
    the seconds `work` took."""
    base = _resident_bytes()
    highest = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            highest[0] = max(highest[0], _resident_bytes())
            time.sleep(SAMPLE_PERIOD_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        result = work()
        seconds = time.perf_counter() - started
        highest[0] = max(highest[0], _resident_bytes())
        del result
    finally:
        done.set()
        sampler.join()
    return highest[0] - base, seconds


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| frame | MiB | peak, strips (x frame) | peak, one pass (x frame) | peak ratio "
        "| s, strips | s, one pass | time ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['frame_mib']} | {row['strips_peak_x_frame']} "
            f"| {row['one_pass_peak_x_frame']} | {row['peak_ratio']} | {row['strips_s']} "
            f"| {row['one_pass_s']} | {row['time_ratio']} |"
        )
    return "\n".join(lines)
