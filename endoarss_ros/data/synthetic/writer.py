"""Writing synthetic frames and clips to disk in the generic layout.

Independent frames go to `images/frames/NNNNNN.png`, clip frames to
`images/clips/clip_KKKK/NNNNN.png`; `labels.csv` gets the extra columns `clip` and `frame` (empty
for independent frames) so clips can be reassembled in order. Splits are drawn per frame, and
per clip for clips (a clip never straddles splits). `synthetic.yaml` records how the data was
made. Frames and clips can come at several sizes: independent frame `i` and clip `k` take size
`i mod n` and `k mod n` of the `n` given, so a model trained on the set sees the aspect ratios
and scales of the cameras it will serve. Work is spread over processes; the result does not
depend on their number.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import yaml

from endoarss_ros.data.generic import LabelRecord, write_index, write_sample_files
from endoarss_ros.data.synthetic.clips import FRAME_RATE, plan_clip
from endoarss_ros.data.synthetic.dataset import generate_frame
from endoarss_ros.data.synthetic.render import render
from endoarss_ros.data.synthetic.scene import (
    SYNTHETIC_CLASSES,
    activity_of,
    without_instruments,
)

SPLITS: Final = ("train", "val", "test")
CLIP_STREAM: Final = 0x636C6970
"""Seed-sequence tag that keeps clip generators apart from frame generators."""
SPLIT_STREAM: Final = 0x73706C74
FRAMES_PER_TASK: Final = 32
IMAGE_FORMATS: Final = {"png": ".png", "jpg": ".jpg"}


@dataclass(frozen=True)
class SynthesisSummary:
    root: Path
    frames: int
    seconds: float
    per_split: dict[str, int]
    per_activity: dict[str, int]

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else math.inf


def assign_splits(
    count: int, val_fraction: float, test_fraction: float, rng: np.random.Generator
) -> list[str]:
    """A shuffled split name per item; val and test get at least one item each when count >= 3."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) "
            "and sum to less than 1"
        )
    n_val = round(count * val_fraction)
    n_test = round(count * test_fraction)
    if count >= 3:
        n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    n_val, n_test = min(n_val, count), min(n_test, max(0, count - n_val))
    names = ["val"] * n_val + ["test"] * n_test + ["train"] * (count - n_val - n_test)
    return [names[i] for i in rng.permutation(count)]


def _single_threaded_worker() -> None:
    """One OpenCV thread per worker: frames are small, and threads fighting over cores are slow."""
    cv2.setNumThreads(1)


def _frames_task(
    root: Path,
    seed: int,
    size: tuple[int, int],
    indices: Sequence[int],
    splits: Sequence[str],
    suffix: str,
    instruments: bool,
) -> list[LabelRecord]:
    records = []
    for index, split in zip(indices, splits, strict=True):
        frame = generate_frame(seed, index, size, instruments=instruments)
        file = f"frames/{index:06d}{suffix}"
        write_sample_files(root, file, frame.image, frame.mask)
        records.append(LabelRecord(file, frame.activity, split, {"clip": "", "frame": ""}))
    return records


def _clip_task(
    root: Path,
    seed: int,
    size: tuple[int, int],
    clip: int,
    length: int,
    split: str,
    suffix: str,
    instruments: bool,
) -> list[LabelRecord]:
    plan = plan_clip(np.random.default_rng([seed, CLIP_STREAM, clip]), size[0], size[1], length)
    records = []
    name = f"clip_{clip:04d}"
    for index, scene in enumerate(plan.scenes):
        if not instruments:
            scene = without_instruments(scene)
        image, mask = render(scene)
        file = f"clips/{name}/{index:05d}{suffix}"
        write_sample_files(root, file, image, mask)
        extra = {"clip": name, "frame": str(index)}
        records.append(LabelRecord(file, int(activity_of(scene)), split, extra))
    return records


def write_synthetic_dataset(
    root: Path | str,
    frames: int,
    sizes: Sequence[tuple[int, int]],
    seed: int,
    clips: int = 0,
    clip_length: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    image_format: str = "png",
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    instruments: bool = True,
) -> SynthesisSummary:
    """Write `frames` independent frames and `clips` clips of `clip_length` frames under `root`,
    at the (height, width) `sizes` in turn.

    `root` must not exist or be empty. Images are PNG (lossless) or, with `image_format="jpg"`,
    JPEG of quality 95: several times smaller and faster to write, since sensor noise defeats
    PNG compression; masks are always PNG. `on_progress(n)` is called as batches of n frames
    finish. `instruments=False` withdraws every instrument out of view (the same scenes, all
    labelled idle; see `sampling.sample_scene`).
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(
            f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}"
        )
    suffix = IMAGE_FORMATS[image_format]
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: output folder is not empty")
    if frames < 0 or clips < 0 or (clips > 0 and clip_length < 1):
        raise ValueError("frames and clips must be >= 0 and clips need a clip_length >= 1")
    if frames + clips * clip_length == 0:
        raise ValueError("nothing to write: give frames > 0 or clips > 0")
    sizes = [(int(height), int(width)) for height, width in sizes]
    if not sizes:
        raise ValueError("give at least one frame size")
    for height, width in sizes:
        if height < 32 or width < 32:
            raise ValueError(f"size must be at least 32x32, got {width}x{height}")
    split_rng = np.random.default_rng([seed, SPLIT_STREAM])
    frame_splits = assign_splits(frames, val_fraction, test_fraction, split_rng)
    clip_splits = assign_splits(clips, val_fraction, test_fraction, split_rng)
    root.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    jobs: list[tuple[Callable[..., list[LabelRecord]], tuple]] = []
    stride = len(sizes)
    for first in range(0, frames, FRAMES_PER_TASK * stride):
        last = min(frames, first + FRAMES_PER_TASK * stride)
        for offset, size in enumerate(sizes):
            indices = list(range(first + offset, last, stride))
            if indices:
                splits = [frame_splits[i] for i in indices]
                jobs.append(
                    (_frames_task, (root, seed, size, indices, splits, suffix, instruments))
                )
    for clip in range(clips):
        size = sizes[clip % len(sizes)]
        jobs.append(
            (
                _clip_task,
                (root, seed, size, clip, clip_length, clip_splits[clip], suffix, instruments),
            )
        )
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results: list[list[LabelRecord]]
    if workers == 1:
        results = []
        for function, args in jobs:
            results.append(function(*args))
            if on_progress is not None:
                on_progress(len(results[-1]))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_single_threaded_worker
        ) as pool:
            futures = [pool.submit(function, *args) for function, args in jobs]
            results = []
            for future in futures:
                results.append(future.result())
                if on_progress is not None:
                    on_progress(len(results[-1]))
    # Frames in index order, then clips in order, whatever the sizes' task order.
    records = sorted(
        (record for batch in results for record in batch),
        key=lambda record: (bool(record.extra["clip"]), record.file),
    )
    write_index(root, SYNTHETIC_CLASSES, records)
    elapsed = time.perf_counter() - start
    per_split = Counter(r.split for r in records)
    per_activity = Counter(SYNTHETIC_CLASSES.activities[r.activity] for r in records)
    metadata = {
        "generator": "endoarss_ros.data.synthetic",
        "seed": seed,
        "sizes": [[height, width] for height, width in sizes],
        "frames": frames,
        "clips": clips,
        "clip_length": clip_length,
        "clip_frame_rate": FRAME_RATE,
        "image_format": image_format,
        "instruments": instruments,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "per_split": {s: per_split.get(s, 0) for s in SPLITS},
    }
    (root / "synthetic.yaml").write_text(
        yaml.safe_dump(metadata, sort_keys=False), encoding="utf-8"
    )
    return SynthesisSummary(
        root=root,
        frames=len(records),
        seconds=elapsed,
        per_split={s: per_split.get(s, 0) for s in SPLITS},
        per_activity={a: per_activity.get(a, 0) for a in SYNTHETIC_CLASSES.activities},
    )
