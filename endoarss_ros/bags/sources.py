"""Where `bag make` gets frames: a synthetic clip (with ground truth), a video file or an image
folder (frames only), each as RGB frames at a nominal frame rate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .schema import BagError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class SourceFrame:
    """One camera frame (H x W x 3 uint8 RGB) and, where the source knows them, its activity
    id and uint8 class-id mask (255 = unlabeled)."""

    rgb: np.ndarray
    activity: int | None = None
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class FrameSource:
    frames: Iterator[SourceFrame]
    fps: float
    activity_names: tuple[str, ...] = ()
    segmentation_names: tuple[str, ...] = ()
    segmentation_colors: tuple[tuple[int, int, int], ...] = ()


def synthetic_source(length: int, size: tuple[int, int], seed: int, fps: float) -> FrameSource:
    """A rendered synthetic clip: every frame with its true activity and mask."""
    from endoarss_ros.data.synthetic.clips import plan_clip
    from endoarss_ros.data.synthetic.render import render
    from endoarss_ros.data.synthetic.scene import SYNTHETIC_CLASSES

    height, width = size
    clip = plan_clip(np.random.default_rng(seed), height, width, length)
    activities = clip.activities()

    def frames() -> Iterator[SourceFrame]:
        for scene, activity in zip(clip.scenes, activities, strict=True):
            rgb, mask = render(scene)
            yield SourceFrame(rgb=rgb, activity=int(activity), mask=mask)

    return FrameSource(
        frames=frames(),
        fps=fps,
        activity_names=SYNTHETIC_CLASSES.activities,
        segmentation_names=SYNTHETIC_CLASSES.segmentation,
        segmentation_colors=SYNTHETIC_CLASSES.colors,
    )


def video_source(path: Path, fps: float | None, limit: int | None) -> FrameSource:
    """Frames of a video file at its own frame rate unless `fps` is given."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BagError(f"cannot open video {str(path)!r}")
    rate = fps or capture.get(cv2.CAP_PROP_FPS) or 30.0

    def frames() -> Iterator[SourceFrame]:
        count = 0
        try:
            while limit is None or count < limit:
                ok, bgr = capture.read()
                if not ok:
                    break
                count += 1
                yield SourceFrame(rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            capture.release()

    return FrameSource(frames=frames(), fps=float(rate))


def folder_source(folder: Path, fps: float, limit: int | None) -> FrameSource:
    """Image files of a folder in name order."""
    if not folder.is_dir():
        raise BagError(f"image folder {str(folder)!r} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BagError(f"image folder {str(folder)!r} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    paths = paths[:limit] if limit is not None else paths

    def frames() -> Iterator[SourceFrame]:
        for path in paths:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise BagError(f"cannot read image {str(path)!r}")
            yield SourceFrame(rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    return FrameSource(frames=frames(), fps=fps)
