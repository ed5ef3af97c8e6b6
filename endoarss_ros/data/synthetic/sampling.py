"""Random scenes for a wanted activity, with distractors that keep the activity from showing in
global colour statistics: blood, smoke, burn marks and loose needles also appear where no
instrument acts on them, and idle instruments hover with open or closed jaws.

Sizes scale with the frame's shorter side, so a scene looks alike at 224 px and at 1080 px.
"""

from __future__ import annotations

import itertools
import math
from typing import Final

import numpy as np

from endoarss_ros.data.synthetic.scene import (
    Activity,
    BloodPool,
    BurnMark,
    HeldNeedle,
    Instrument,
    InstrumentKind,
    LooseNeedle,
    Optics,
    Point,
    RGBf,
    Scene,
    SmokePlume,
    Stitch,
    TissueStyle,
    without_instruments,
)

ACTING_KIND: Final = {
    Activity.GRASPING: InstrumentKind.GRASPER,
    Activity.CAUTERY: InstrumentKind.SCISSORS,
    Activity.SUTURING: InstrumentKind.NEEDLE_DRIVER,
    Activity.SUCTION: InstrumentKind.SUCTION,
}
"""The instrument that performs each activity."""

THREAD_COLORS: Final[tuple[RGBf, ...]] = (
    (0.42, 0.18, 0.58),
    (0.1, 0.45, 0.3),
    (0.15, 0.28, 0.68),
    (0.85, 0.8, 0.66),
)

BLOOD_RATE: Final = 0.6
"""Share of frames without suction that still show blood somewhere."""
HAZE_RATE: Final = 0.45
DETACHED_PLUME_RATE: Final = 0.35
OLD_BURN_RATE: Final = 0.5
LOOSE_NEEDLE_RATE: Final = 0.35
STITCH_RATE: Final = 0.45
DISTRACTOR_KIND_WEIGHTS: Final = {
    InstrumentKind.GRASPER: 0.25,
    InstrumentKind.SCISSORS: 0.25,
    InstrumentKind.NEEDLE_DRIVER: 0.2,
    InstrumentKind.SUCTION: 0.3,
}
"""Idle instruments: the suction tube, which only suction frames need, is drawn most often."""


def sample_tissue(rng: np.random.Generator, canvas_size: tuple[int, int]) -> TissueStyle:
    red = rng.uniform(0.62, 0.86)
    return TissueStyle(
        seed=int(rng.integers(2**63)),
        canvas_size=canvas_size,
        color=(red, red * rng.uniform(0.38, 0.58), red * rng.uniform(0.34, 0.5)),
        fat=float(rng.uniform(0.0, 0.8)),
        vessels=int(rng.integers(3, 10)),
        relief=float(rng.uniform(0.6, 1.4)),
    )


def sample_optics(rng: np.random.Generator, height: int, width: int) -> Optics:
    scale = min(height, width)
    angle = rng.uniform(0, 2 * math.pi)
    return Optics(
        fov_center=(
            width / 2 + rng.normal(0, 0.02 * scale),
            height / 2 + rng.normal(0, 0.02 * scale),
        ),
        fov_radius=float(rng.uniform(0.5, 0.78) * scale),
        vignetting=float(rng.uniform(0.25, 0.6)),
        exposure=float(rng.uniform(0.8, 1.15)),
        white_balance=tuple(float(g) for g in rng.uniform(0.92, 1.08, 3)),
        light_direction=(math.cos(angle), math.sin(angle)),
        noise=float(rng.uniform(1.0, 5.0)),
    )


def point_in_view(rng: np.random.Generator, optics: Optics, fraction: float) -> Point:
    """A uniform point in the disc of `fraction` times the field-of-view radius."""
    rho = optics.fov_radius * fraction * math.sqrt(rng.random())
    angle = rng.uniform(0, 2 * math.pi)
    return (
        optics.fov_center[0] + rho * math.cos(angle),
        optics.fov_center[1] + rho * math.sin(angle),
    )


def entry_point(optics: Optics, angle: float) -> Point:
    """Where a shaft comes from: outside the field of view, in direction `angle` from its centre."""
    distance = optics.fov_radius * 1.3
    return (
        optics.fov_center[0] + distance * math.cos(angle),
        optics.fov_center[1] + distance * math.sin(angle),
    )


def spread_angles(rng: np.random.Generator, count: int, separation: float = 1.1) -> list[float]:
    """Entry directions at least `separation` radians apart, as instruments come through ports,
    in random order. The spare angle is shared out at random between the gaps."""
    if count == 0:
        return []
    spare = 2 * math.pi - count * separation
    if spare < 0:
        raise ValueError(f"{count} directions cannot be {separation} rad apart")
    gaps = separation + rng.dirichlet(np.ones(count)) * spare
    angles = (rng.uniform(0, 2 * math.pi) + np.cumsum(gaps)) % (2 * math.pi)
    return [float(a) for a in rng.permutation(angles)]


def shaft_width(rng: np.random.Generator, kind: InstrumentKind, scale: int) -> float:
    low, high = (0.045, 0.06) if kind is InstrumentKind.SUCTION else (0.06, 0.085)
    return float(rng.uniform(low, high) * scale)


def hover_height(rng: np.random.Generator, scale: int) -> float:
    return float(rng.uniform(0.07, 0.14) * scale)


def idle_jaw_opening(rng: np.random.Generator) -> float:
    return 0.0 if rng.random() < 0.4 else float(rng.uniform(0.2, 0.7))


def sample_held_needle(
    rng: np.random.Generator, tip: Point, scale: int, inserted: float
) -> HeldNeedle:
    angle = rng.uniform(0, 2 * math.pi)
    reach = rng.uniform(0.15, 0.35) * scale
    end = (tip[0] + reach * math.cos(angle), tip[1] + reach * math.sin(angle))
    controls = tuple(
        (
            tip[0] + (end[0] - tip[0]) * f + rng.normal(0, 0.08 * scale),
            tip[1] + (end[1] - tip[1]) * f + rng.normal(0, 0.08 * scale),
        )
        for f in (0.33, 0.66)
    )
    return HeldNeedle(
        radius=float(rng.uniform(0.045, 0.07) * scale),
        side=1 if rng.random() < 0.5 else -1,
        inserted=inserted,
        thread_end=end,
        thread_control=(controls[0], controls[1]),
    )


def sample_blood_pool(rng: np.random.Generator, center: Point, radius: float) -> BloodPool:
    amplitudes = rng.uniform(0.0, 0.08, 4)
    phases = rng.uniform(0, 2 * math.pi, 4)
    return BloodPool(center, radius, tuple(zip(amplitudes.tolist(), phases.tolist(), strict=True)))


def smooth_path(
    rng: np.random.Generator, end: Point, length: float, steps: int = 8
) -> tuple[Point, ...]:
    """A gently curving path of about `length` pixels that ends at `end`."""
    angle = rng.uniform(0, 2 * math.pi)
    turn = rng.normal(0, 0.15)
    x, y = end
    points = [(x, y)]
    for _ in range(steps):
        angle += turn + rng.normal(0, 0.1)
        x, y = x + length / steps * math.cos(angle), y + length / steps * math.sin(angle)
        points.append((x, y))
    return tuple(reversed(points))


def sample_burn_mark(rng: np.random.Generator, end: Point, scale: int) -> BurnMark:
    return BurnMark(
        smooth_path(rng, end, rng.uniform(0.1, 0.3) * scale), rng.uniform(0.008, 0.015) * scale
    )


def sample_loose_needle(rng: np.random.Generator, center: Point, scale: int) -> LooseNeedle:
    radius = rng.uniform(0.045, 0.07) * scale
    start = rng.uniform(0, 2 * math.pi)
    swage = (center[0] + radius * math.cos(start), center[1] + radius * math.sin(start))
    thread = smooth_path(rng, swage, rng.uniform(0.15, 0.4) * scale, steps=10)[::-1]
    return LooseNeedle(center, float(radius), float(start), thread[1:])


def sample_stitch(rng: np.random.Generator, center: Point, scale: int) -> Stitch:
    """A tied suture: a short loop across a closed cut, with its two tails."""
    angle = rng.uniform(0, 2 * math.pi)
    half = rng.uniform(0.025, 0.05) * scale
    ux, uy = math.cos(angle), math.sin(angle)
    vx, vy = -uy, ux
    cx, cy = center
    points = [
        (cx - ux * half + vx * 0.6 * half, cy - uy * half + vy * 0.6 * half),
        (cx - ux * half, cy - uy * half),
        (cx, cy),
        (cx + ux * half, cy + uy * half),
        (cx + ux * half - vx * 0.6 * half, cy + uy * half - vy * 0.6 * half),
    ]
    return Stitch(tuple(points))


def _far_from(point: Point, others: list[Point], distance: float) -> bool:
    return all(math.dist(point, other) >= distance for other in others)


def point_away(
    rng: np.random.Generator,
    optics: Optics,
    avoid: list[Point],
    distance: float,
    fraction: float,
    shift: float = 0.0,
) -> Point | None:
    """A point in view (`point_in_view`, moved by `shift` on both axes: the tissue canvas of a
    clip is larger than the frame) at least `distance` from every point of `avoid`, or None
    after 30 tries: distractors keep away from where an instrument acts, so they never hide
    or fake its cue."""
    for _ in range(30):
        x, y = point_in_view(rng, optics, fraction)
        candidate = (x + shift, y + shift)
        if _far_from(candidate, avoid, distance):
            return candidate
    return None


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def covers(tool: Instrument, point: Point, margin: float) -> bool:
    """Whether `tool` (its centre line, widened by `margin`) passes over `point`."""
    g = tool.geometry
    chain = [tool.entry, g.wrist, g.jaw_base, tool.tip]
    p = np.asarray(point)
    return any(
        _segment_distance(p, np.asarray(a), np.asarray(b)) < tool.shaft_width * 0.7 + margin
        for a, b in itertools.pairwise(chain)
    )


def sample_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    activity: Activity | None = None,
    *,
    instruments: bool = True,
) -> Scene:
    """A single frame showing `activity` (uniformly drawn when None), with distractors.

    `instruments=False` draws the same scene from the same generator state and then withdraws
    every instrument out of view (`without_instruments`): frame for frame the scenes of a seed
    with and without instruments differ only in the instruments and what they do to the
    tissue, and the activity becomes IDLE.
    """
    if activity is None:
        activity = Activity(int(rng.integers(len(Activity))))
    scale = min(height, width)
    optics = sample_optics(rng, height, width)
    tissue = sample_tissue(rng, (height, width))
    tools, acting = _sample_instruments(rng, activity, optics, scale)
    tips = [tool.tip for tool in tools]
    acting_tips = [acting.tip] if acting is not None else []

    blood_pools: list[BloodPool] = []
    burn_marks: list[BurnMark] = []
    smoke: list[SmokePlume] = []
    if acting is not None and activity is Activity.SUCTION:
        radius = rng.uniform(0.07, 0.13) * scale
        offset = rng.uniform(0, 0.25 * radius, 2)
        center = (acting.tip[0] + offset[0], acting.tip[1] + offset[1])
        blood_pools.append(sample_blood_pool(rng, center, radius))
    if rng.random() < BLOOD_RATE * (0.4 if activity is Activity.SUCTION else 1.0):
        for _ in range(int(rng.integers(1, 3))):
            radius = rng.uniform(0.06, 0.13) * scale
            center = point_away(rng, optics, acting_tips, radius * 1.3 + 0.08 * scale, 0.8)
            if center is not None:
                blood_pools.append(sample_blood_pool(rng, center, radius))
    if acting is not None and activity is Activity.CAUTERY:
        burn_marks.append(sample_burn_mark(rng, acting.tip, scale))
        smoke.append(_plume(rng, acting.tip, scale, away_from=acting.entry))
    if rng.random() < OLD_BURN_RATE:
        for _ in range(int(rng.integers(1, 3))):
            end = point_away(rng, optics, tips, 0.12 * scale, 0.85)
            if end is not None:
                burn_marks.append(sample_burn_mark(rng, end, scale))
    haze = 0.0
    if rng.random() < HAZE_RATE * (0.75 if activity is Activity.CAUTERY else 1.0):
        haze = float(rng.uniform(0.15, 0.5))
    if activity is not Activity.CAUTERY and rng.random() < DETACHED_PLUME_RATE:
        source = point_away(rng, optics, tips, 0.15 * scale, 0.8)
        if source is not None:
            smoke.append(_plume(rng, source, scale))
    loose_needles, stitches = _sample_sutures(rng, activity, optics, tips, acting_tips, scale)

    scene = Scene(
        height=height,
        width=width,
        tissue=tissue,
        optics=optics,
        view_offset=(0, 0),
        instruments=tuple(tools),
        blood_pools=tuple(blood_pools),
        burn_marks=tuple(burn_marks),
        loose_needles=tuple(loose_needles),
        stitches=tuple(stitches),
        smoke=tuple(smoke),
        haze=haze,
        thread_color=THREAD_COLORS[int(rng.integers(len(THREAD_COLORS)))],
        noise_seed=int(rng.integers(2**63)),
    )
    return scene if instruments else without_instruments(scene)


def _sample_instruments(
    rng: np.random.Generator, activity: Activity, optics: Optics, scale: int
) -> tuple[list[Instrument], Instrument | None]:
    """The acting instrument (none when idle) first, then hovering ones that neither crowd
    another tip nor pass over the acting tip (which would hide what it does)."""
    acting_kind = ACTING_KIND.get(activity)
    if acting_kind is None:
        extra = int(rng.choice(4, p=[0.1, 0.35, 0.35, 0.2]))
    else:
        extra = int(rng.choice(3, p=[0.35, 0.4, 0.25]))
    kinds = list(InstrumentKind)
    kind_weights = [DISTRACTOR_KIND_WEIGHTS[k] for k in kinds]
    angles = spread_angles(rng, extra + (acting_kind is not None))
    instruments: list[Instrument] = []
    acting: Instrument | None = None
    if acting_kind is not None:
        tip = point_in_view(rng, optics, 0.55)
        entry = entry_point(optics, angles[0])
        acting = _acting_instrument(rng, activity, acting_kind, entry, tip, scale)
        instruments.append(acting)
    for angle in angles[len(instruments) :]:
        kind = kinds[int(rng.choice(len(kinds), p=kind_weights))]
        for _ in range(20):
            tip = point_in_view(rng, optics, 0.72)
            tool = Instrument(
                kind=kind,
                entry=entry_point(optics, angle),
                tip=tip,
                wrist_angle=float(rng.uniform(-0.8, 0.8)),
                jaw_opening=idle_jaw_opening(rng),
                height=hover_height(rng, scale),
                shaft_width=shaft_width(rng, kind, scale),
            )
            if _far_from(tip, [t.tip for t in instruments], 0.2 * scale) and (
                acting is None or not covers(tool, acting.tip, 0.06 * scale)
            ):
                instruments.append(tool)
                break
    return instruments, acting


def _sample_sutures(
    rng: np.random.Generator,
    activity: Activity,
    optics: Optics,
    tips: list[Point],
    acting_tips: list[Point],
    scale: int,
) -> tuple[list[LooseNeedle], list[Stitch]]:
    """Dropped needles and placed stitches: suture material where nobody is suturing."""
    loose_needles: list[LooseNeedle] = []
    stitches: list[Stitch] = []
    if rng.random() < LOOSE_NEEDLE_RATE * (0.4 if activity is Activity.SUTURING else 1.0):
        center = point_away(rng, optics, tips, 0.15 * scale, 0.75)
        if center is not None:
            loose_needles.append(sample_loose_needle(rng, center, scale))
    if rng.random() < STITCH_RATE:
        for _ in range(int(rng.integers(1, 4))):
            center = point_away(rng, optics, acting_tips, 0.1 * scale, 0.8)
            if center is not None:
                stitches.append(sample_stitch(rng, center, scale))
    return loose_needles, stitches


def plume_direction(rng: np.random.Generator, source: Point, away_from: Point | None) -> float:
    """Random, or drifting away from `away_from` (the instrument's side) within +-75 degrees,
    so that a cautery plume does not bury the instrument that makes it."""
    if away_from is None:
        return float(rng.uniform(0, 2 * math.pi))
    outward = math.atan2(source[1] - away_from[1], source[0] - away_from[0])
    return float(outward + rng.uniform(-1.3, 1.3))


def _plume(
    rng: np.random.Generator, source: Point, scale: int, away_from: Point | None = None
) -> SmokePlume:
    return SmokePlume(
        source=source,
        direction=plume_direction(rng, source, away_from),
        length=float(rng.uniform(0.2, 0.4) * scale),
        density=float(rng.uniform(0.5, 0.9)),
    )


def _acting_instrument(
    rng: np.random.Generator,
    activity: Activity,
    kind: InstrumentKind,
    entry: Point,
    tip: Point,
    scale: int,
) -> Instrument:
    """The one instrument that touches the tissue, in the state its activity needs."""
    return Instrument(
        kind=kind,
        entry=entry,
        tip=tip,
        wrist_angle=float(rng.uniform(-0.8, 0.8)),
        jaw_opening=float(rng.uniform(0.3, 0.6)) if activity is Activity.CAUTERY else 0.0,
        height=0.0,
        shaft_width=shaft_width(rng, kind, scale),
        energized=activity is Activity.CAUTERY,
        needle=(
            sample_held_needle(rng, tip, scale, float(rng.uniform(0.15, 0.45)))
            if activity is Activity.SUTURING
            else None
        ),
    )
