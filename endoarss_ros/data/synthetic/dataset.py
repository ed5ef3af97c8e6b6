"""Synthetic frames on demand: a dataset that needs no disk, deterministic by seed and index.

Frame `i` of seed `s` is drawn from its own generator (`numpy.random.default_rng([s, i])`), so
any frame can be made alone, in any order, in any worker process, and is byte-identical every
time (same library versions and platform).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from endoarss_ros.data.dataset import ActivitySegmentationDataset, Sample, Transform
from endoarss_ros.data.synthetic.render import render
from endoarss_ros.data.synthetic.sampling import sample_scene
from endoarss_ros.data.synthetic.scene import SYNTHETIC_CLASSES, Scene, activity_of


@dataclass(frozen=True, eq=False)
class SyntheticFrame:
    image: np.ndarray
    mask: np.ndarray
    activity: int
    scene: Scene


def frame_scene(seed: int, index: int, size: tuple[int, int], *, instruments: bool = True) -> Scene:
    """The scene of frame `index` for `seed` at `size` (height, width); `instruments=False`:
    the same scene with its instruments out of view (see `sample_scene`)."""
    return sample_scene(
        np.random.default_rng([seed, index]), size[0], size[1], instruments=instruments
    )


def generate_frame(
    seed: int, index: int, size: tuple[int, int], *, instruments: bool = True
) -> SyntheticFrame:
    scene = frame_scene(seed, index, size, instruments=instruments)
    image, mask = render(scene)
    return SyntheticFrame(image, mask, int(activity_of(scene)), scene)


class SyntheticDataset(ActivitySegmentationDataset):
    """`length` independent synthetic frames of `size` (height, width); activities uniform, or
    all idle with `instruments=False` (the same scenes with every instrument out of view)."""

    def __init__(
        self,
        length: int,
        size: tuple[int, int] = (256, 256),
        seed: int = 0,
        transform: Transform | None = None,
        *,
        instruments: bool = True,
    ) -> None:
        super().__init__(SYNTHETIC_CLASSES, transform)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        height, width = size
        if height < 32 or width < 32:
            raise ValueError(f"size must be at least 32x32, got {height}x{width}")
        self.length = length
        self.size = (int(height), int(width))
        self.seed = seed
        self.instruments = instruments

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        return frame_scene(self.seed, index, self.size, instruments=self.instruments)

    def activity_of(self, index: int) -> int:
        return int(activity_of(self.scene(index)))

    def load(self, index: int) -> Sample:
        frame = generate_frame(self.seed, index, self.size, instruments=self.instruments)
        return Sample(frame.image, frame.mask, frame.activity, f"synthetic-{self.seed}-{index:07d}")
