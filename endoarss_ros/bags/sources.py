"""Where `bag make` gets frames: a synthetic clip (with ground truth), a video file or an image
folder (frames only), each as RGB frames at a nominal frame rate; and artefact segments, runs of
frames of any source corrupted with the corruption suite (:mod:`endoarss_ros.data.corruptions`)
so a replay can show when the trust signal fires and clears."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
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
    length: int | None = None
    """Frames the source will give, where known before reading them (not for a video)."""


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
        length=length,
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

    return FrameSource(frames=frames(), fps=fps, length=len(paths))


DEFAULT_ARTEFACT_SEVERITY = 4


class ArtefactError(ValueError):
    """An artefact segment that cannot be used (bad spelling, unknown corruption, outside the
    clip, overlapping another); the message quotes the segment."""


def _corruption_names() -> tuple[str, ...]:
    from endoarss_ros.data.corruptions import CORRUPTIONS

    return tuple(CORRUPTIONS)


@dataclass(frozen=True)
class ArtefactSegment:
    """Frames ``first``..``last`` (inclusive, from 0) corrupted by ``corruption`` at
    ``severity`` 1..5. The ground truth stays: it is the scene's, whatever the lens shows."""

    corruption: str
    first: int
    last: int
    severity: int = DEFAULT_ARTEFACT_SEVERITY

    def __post_init__(self) -> None:
        known = _corruption_names()
        if self.corruption not in known:
            raise ArtefactError(
                f"{self.spec()!r}: unknown corruption {self.corruption!r}; known: "
                f"{', '.join(known)}"
            )
        if self.first < 0 or self.last < self.first:
            raise ArtefactError(
                f"{self.spec()!r}: frames must satisfy 0 <= FIRST <= LAST, got "
                f"{self.first}..{self.last}"
            )
        if not 1 <= self.severity <= 5:
            raise ArtefactError(f"{self.spec()!r}: severity must be 1..5, got {self.severity}")

    @classmethod
    def parse(cls, text: str) -> ArtefactSegment:
        """``NAME:FIRST:LAST[:SEVERITY]``, e.g. ``smoke:20:34`` or ``over_exposure:20:34:5``."""
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ArtefactError(f"{text!r}: expected NAME:FIRST:LAST[:SEVERITY]")
        numbers: list[int] = []
        for what, part in zip(("FIRST", "LAST", "SEVERITY"), parts[1:], strict=False):
            try:
                numbers.append(int(part))
            except ValueError:
                raise ArtefactError(f"{text!r}: {what} must be an integer, got {part!r}") from None
        return cls(parts[0], *numbers)

    def spec(self) -> str:
        return f"{self.corruption}:{self.first}:{self.last}:{self.severity}"

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and self.first <= index <= self.last


def check_artefacts(
    segments: Sequence[ArtefactSegment], length: int | None
) -> tuple[ArtefactSegment, ...]:
    """The segments in frame order; raises ArtefactError for two that overlap or, where the
    clip's ``length`` is known, one that does not lie inside it."""
    ordered = tuple(sorted(segments, key=lambda s: s.first))
    for before, after in pairwise(ordered):
        if after.first <= before.last:
            raise ArtefactError(
                f"{before.spec()!r} and {after.spec()!r} overlap (frames "
                f"{after.first}..{min(before.last, after.last)})"
            )
    if length is not None:
        for segment in ordered:
            if segment.last >= length:
                raise ArtefactError(_outside(segment, length))
    return ordered


def _outside(segment: ArtefactSegment, length: int) -> str:
    clip = f"the clip of {length} frames (0..{length - 1})" if length else "the clip (no frames)"
    return f"{segment.spec()!r}: frames {segment.first}..{segment.last} are not inside {clip}"


def artefact_rng(seed: int, index: int, segment: ArtefactSegment) -> np.random.Generator:
    """The generator of one corrupted frame: the same bag from the same seed, whatever the other
    segments, as :class:`~endoarss_ros.data.corruptions.CorruptedDataset` seeds its samples."""
    name_key = zlib.crc32(segment.corruption.encode())
    return np.random.default_rng([seed % 2**64, index, name_key, segment.severity])


def with_artefacts(
    source: FrameSource, segments: Sequence[ArtefactSegment], seed: int
) -> FrameSource:
    """``source`` with the frames of ``segments`` corrupted (before any stereo split, so both
    eyes see the same artefact). Segments are checked against the clip's length up front where
    the source knows it, else when the source ends before a segment does."""
    ordered = check_artefacts(segments, source.length)
    if not ordered:
        return source
    from endoarss_ros.data.corruptions import corrupt

    def frames() -> Iterator[SourceFrame]:
        count = 0
        for index, frame in enumerate(source.frames):
            count = index + 1
            segment = next((s for s in ordered if index in s), None)
            if segment is None:
                yield frame
                continue
            rgb = corrupt(
                np.ascontiguousarray(frame.rgb),
                segment.corruption,
                segment.severity,
                artefact_rng(seed, index, segment),
            )
            yield replace(frame, rgb=rgb)
        if ordered[-1].last >= count:
            raise ArtefactError(_outside(ordered[-1], count))

    return replace(source, frames=frames())
