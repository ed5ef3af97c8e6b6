"""The state of a synthetic endoscopic scene, its label sets, and the rule that names the activity.

A `Scene` is a complete, immutable description of one frame: the renderer draws it without any
further randomness, and `activity_of(scene)` derives the activity from the physical state (which
instrument touches the tissue, with what). The samplers build scenes for a wanted activity, but
the label always comes from this rule, so the picture and the label cannot disagree.

Coordinates are pixels of the frame, x to the right and y down. Things attached to the tissue
(blood, burn marks, stitches, dropped needles) are in tissue-canvas pixels; the frame shows the
canvas shifted by `view_offset`, so the camera can pan over the tissue in a clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum, IntEnum
from functools import cached_property
from typing import Final

import cv2
import numpy as np

from endoarss_ros.data.classes import ClassInfo

Point = tuple[float, float]
RGBf = tuple[float, float, float]


class Activity(IntEnum):
    """What the instrument touching the tissue does; IDLE when none touches it."""

    IDLE = 0
    GRASPING = 1
    CAUTERY = 2
    SUTURING = 3
    SUCTION = 4


class SegClass(IntEnum):
    """Segmentation class ids; pixels outside the endoscope's field of view are 255 (ignore)."""

    TISSUE = 0
    SHAFT = 1
    WRIST = 2
    JAWS = 3
    NEEDLE = 4
    THREAD = 5
    BLOOD = 6
    BURN_MARK = 7


SYNTHETIC_CLASSES: Final = ClassInfo(
    name="synthetic-surgery",
    activities=tuple(a.name.lower() for a in Activity),
    segmentation=("tissue", "shaft", "wrist", "jaws", "needle", "thread", "blood", "burn_mark"),
    colors=(
        (0, 0, 0),
        (0, 114, 189),
        (237, 177, 32),
        (217, 83, 25),
        (119, 172, 48),
        (126, 47, 142),
        (200, 20, 60),
        (77, 190, 238),
    ),
    notes=(
        "Procedurally generated endoscopic scenes. tissue is the background class; pixels "
        "outside the circular field of view are 255 (ignore). The activity is that of the one "
        "instrument touching the tissue: grasping = closed jaws pulling a tissue fold; cautery = "
        "energised open jaws with smoke and a burn mark at the tip; suturing = needle held in "
        "the jaws and driven into the tissue; suction = suction tube tip in a blood pool; idle = "
        "no instrument touches the tissue. Blood, smoke, burn marks and loose needles also occur "
        "away from any instrument as distractors."
    ),
)


class InstrumentKind(str, Enum):
    """An instrument's kind; a string enum (``enum.StrEnum`` is Python 3.11+): ``str()`` and
    f-strings give the value, e.g. ``"grasper"``, on every Python version."""

    GRASPER = "grasper"
    SCISSORS = "scissors"
    NEEDLE_DRIVER = "needle_driver"
    SUCTION = "suction"

    def __str__(self) -> str:
        return str.__str__(self)


WRIST_LENGTH: Final = {  # in shaft widths
    InstrumentKind.GRASPER: 1.1,
    InstrumentKind.SCISSORS: 1.1,
    InstrumentKind.NEEDLE_DRIVER: 1.0,
    InstrumentKind.SUCTION: 0.0,
}
JAW_LENGTH: Final = {
    InstrumentKind.GRASPER: 1.35,
    InstrumentKind.SCISSORS: 1.5,
    InstrumentKind.NEEDLE_DRIVER: 1.0,
    InstrumentKind.SUCTION: 0.0,
}


@dataclass(frozen=True)
class HeldNeedle:
    """A curved (half-circle) needle grasped in the jaws, thread trailing from its back end.

    `inserted` is the fraction of the arc that has gone into the tissue (0 = in the air).
    """

    radius: float
    side: int
    inserted: float
    thread_end: Point
    thread_control: tuple[Point, Point]


@dataclass(frozen=True)
class Instrument:
    """An articulated instrument: shaft from `entry` (outside the view), wrist, jaws to `tip`.

    `height` is the tip's distance above the tissue in pixels; 0 means touching (its shadow
    meets the tip). The suction tube has no wrist or jaws: its shaft ends at the tip.
    """

    kind: InstrumentKind
    entry: Point
    tip: Point
    wrist_angle: float
    jaw_opening: float
    height: float
    shaft_width: float
    energized: bool = False
    needle: HeldNeedle | None = None

    @property
    def touching(self) -> bool:
        return self.height <= 0.0

    @property
    def has_jaws(self) -> bool:
        return self.kind is not InstrumentKind.SUCTION

    @cached_property
    def geometry(self) -> InstrumentGeometry:
        return InstrumentGeometry.solve(self)


@dataclass(frozen=True)
class InstrumentGeometry:
    """Joint positions that put the tip where the instrument says, for its wrist bend."""

    entry: Point
    shaft_direction: Point
    wrist: Point
    jaw_base: Point
    jaw_direction: Point
    wrist_length: float
    jaw_length: float

    @staticmethod
    def solve(tool: Instrument) -> InstrumentGeometry:
        # tip - entry = R(shaft) @ [shaft_len + a, b] with the wrist at half the bend angle.
        wrist_len = WRIST_LENGTH[tool.kind] * tool.shaft_width
        jaw_len = JAW_LENGTH[tool.kind] * tool.shaft_width
        bend = tool.wrist_angle if tool.has_jaws else 0.0
        a = wrist_len * math.cos(bend / 2) + jaw_len * math.cos(bend)
        b = wrist_len * math.sin(bend / 2) + jaw_len * math.sin(bend)
        dx, dy = tool.tip[0] - tool.entry[0], tool.tip[1] - tool.entry[1]
        distance = max(math.hypot(dx, dy), 1e-6)
        # The entry only fixes the direction the shaft comes from; a tip too close to it moves
        # the entry further out along that direction so that a shaft of some length remains.
        needed = math.hypot(a + tool.shaft_width, b)
        if distance < needed:
            dx, dy = dx * needed / distance, dy * needed / distance
            distance = needed
        entry = (tool.tip[0] - dx, tool.tip[1] - dy)
        along = math.sqrt(distance**2 - b**2)
        shaft_len = along - a
        angle = math.atan2(dy, dx) - math.atan2(b, along)
        d = (math.cos(angle), math.sin(angle))
        wrist = (entry[0] + shaft_len * d[0], entry[1] + shaft_len * d[1])
        w_dir = _rotate(d, bend / 2)
        jaw_base = (wrist[0] + wrist_len * w_dir[0], wrist[1] + wrist_len * w_dir[1])
        return InstrumentGeometry(entry, d, wrist, jaw_base, _rotate(d, bend), wrist_len, jaw_len)


def _rotate(v: Point, angle: float) -> Point:
    c, s = math.cos(angle), math.sin(angle)
    return (c * v[0] - s * v[1], s * v[0] + c * v[1])


@dataclass(frozen=True)
class BloodPool:
    """An irregular pool: radius modulated by a few angular harmonics (amplitude, phase)."""

    center: Point
    radius: float
    harmonics: tuple[tuple[float, float], ...]

    @cached_property
    def outline(self) -> np.ndarray:
        """N x 2 float32 polygon in canvas pixels."""
        theta = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        r = np.ones_like(theta)
        for order, (amplitude, phase) in enumerate(self.harmonics, start=2):
            r += amplitude * np.cos(order * theta + phase)
        r *= self.radius
        points = np.stack([self.center[0] + r * np.cos(theta), self.center[1] + r * np.sin(theta)])
        return points.T.astype(np.float32)

    def contains(self, point: Point) -> bool:
        return cv2.pointPolygonTest(self.outline, (float(point[0]), float(point[1])), False) > 0


@dataclass(frozen=True)
class BurnMark:
    """Coagulated tissue along a path (canvas pixels): a charred core in a pale rim."""

    points: tuple[Point, ...]
    width: float


@dataclass(frozen=True)
class LooseNeedle:
    """A needle lying on the tissue (canvas pixels), thread trailing along `thread`."""

    center: Point
    radius: float
    start_angle: float
    thread: tuple[Point, ...]


@dataclass(frozen=True)
class Stitch:
    """A placed suture: a thread path over the tissue (canvas pixels)."""

    points: tuple[Point, ...]


@dataclass(frozen=True)
class SmokePlume:
    """Surgical smoke rising from `source` (frame pixels) along `direction` (radians)."""

    source: Point
    direction: float
    length: float
    density: float


@dataclass(frozen=True)
class TissueStyle:
    """Everything the tissue texture depends on; equal styles give identical textures."""

    seed: int
    canvas_size: tuple[int, int]
    color: RGBf
    fat: float
    vessels: int
    relief: float


@dataclass(frozen=True)
class Optics:
    """The endoscope: circular field of view, light fall-off and camera response."""

    fov_center: Point
    fov_radius: float
    vignetting: float
    exposure: float
    white_balance: RGBf
    light_direction: Point
    noise: float


@dataclass(frozen=True)
class Scene:
    height: int
    width: int
    tissue: TissueStyle
    optics: Optics
    view_offset: tuple[int, int]
    instruments: tuple[Instrument, ...]
    blood_pools: tuple[BloodPool, ...] = ()
    burn_marks: tuple[BurnMark, ...] = ()
    loose_needles: tuple[LooseNeedle, ...] = ()
    stitches: tuple[Stitch, ...] = ()
    smoke: tuple[SmokePlume, ...] = ()
    haze: float = 0.0
    thread_color: RGBf = (0.45, 0.2, 0.6)
    noise_seed: int = 0

    def to_canvas(self, point: Point) -> Point:
        return (point[0] + self.view_offset[0], point[1] + self.view_offset[1])

    def blood_at(self, point: Point) -> bool:
        """Whether a frame point lies in a blood pool."""
        canvas_point = self.to_canvas(point)
        return any(pool.contains(canvas_point) for pool in self.blood_pools)


def instrument_action(scene: Scene, tool: Instrument) -> Activity:
    """What a touching instrument does to the tissue (IDLE when it merely rests on it)."""
    if not tool.touching:
        return Activity.IDLE
    if tool.needle is not None and tool.needle.inserted > 0:
        return Activity.SUTURING
    if tool.energized:
        return Activity.CAUTERY
    if tool.kind is InstrumentKind.SUCTION:
        return Activity.SUCTION if scene.blood_at(tool.tip) else Activity.IDLE
    if tool.jaw_opening <= 0.0:
        return Activity.GRASPING
    return Activity.IDLE


def activity_of(scene: Scene) -> Activity:
    """The scene's activity: the action of the instrument touching the tissue, IDLE if none.

    Scenes are built with at most one touching instrument; two would make the label ambiguous
    and are rejected.
    """
    touching = [tool for tool in scene.instruments if tool.touching]
    if len(touching) > 1:
        raise ValueError(f"{len(touching)} instruments touch the tissue; the activity is ambiguous")
    return instrument_action(scene, touching[0]) if touching else Activity.IDLE


def without_instruments(scene: Scene) -> Scene:
    """``scene`` with every instrument withdrawn out of view: the same tissue, blood, smoke and
    optics, without the shafts, their shadows and what a touching tip does to the tissue (the
    footprint, wrinkles, ripples and glow are drawn from the instrument). Its activity is
    IDLE by :func:`activity_of`, the label of "no instrument touches the tissue", which the
    taxonomy has; a consumer that follows the instrument has nothing to follow, which the
    model's answer alone does not say."""
    return replace(scene, instruments=())
