"""Clips: consecutive frames of one procedure, with activity segments and smooth motion.

A clip has two or three instrument ports. Each segment has one activity; the port that performs
it gets the right instrument (exchanged at the segment boundary when needed) and works at a
point of the tissue, while the other instruments hover. Tips follow smooth Hermite tracks in
tissue coordinates (so a working tip stays on its tissue point while the camera pans) and slow
to a halt at each working knot. The scene keeps its history: burn marks grow along the cutting
tip's path and remain, a stitch remains where a suture was placed, bleeding starts shortly
before suction and is gone when the suction ends, smoke lingers after cautery. Blood, old
burn marks and a dropped needle present from the start keep away from every working point, as
in the still frames: a tool never works in blood it is not sucking.

Every frame's label comes from `activity_of(scene)`; the planner checks that it equals the
planned segment, so segments are exact runs of the per-frame labels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from endoarss_ros.data.synthetic.sampling import (
    ACTING_KIND,
    BLOOD_RATE,
    HAZE_RATE,
    LOOSE_NEEDLE_RATE,
    OLD_BURN_RATE,
    THREAD_COLORS,
    covers,
    entry_point,
    plume_direction,
    point_away,
    point_in_view,
    sample_blood_pool,
    sample_burn_mark,
    sample_loose_needle,
    sample_optics,
    sample_stitch,
    sample_tissue,
    shaft_width,
    spread_angles,
)
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
    Scene,
    SmokePlume,
    Stitch,
    activity_of,
)

FRAME_RATE = 30.0
"""Nominal frames per second of a clip, for timestamps when clips become bags."""

BLEEDING_LEAD = 10
"""Frames before a suction segment in which its blood pool grows."""

MAX_TIP_SPEED = 0.012
"""Largest free tip motion between knots, in shorter-side lengths per frame."""


@dataclass(frozen=True)
class ActivitySegment:
    """Frames `start` (inclusive) to `stop` (exclusive) of a clip share `activity`."""

    start: int
    stop: int
    activity: Activity


@dataclass(frozen=True)
class Clip:
    scenes: tuple[Scene, ...]
    segments: tuple[ActivitySegment, ...]

    def activities(self) -> list[Activity]:
        return [
            segment.activity
            for segment in self.segments
            for _ in range(segment.stop - segment.start)
        ]


def activity_segments(activities: Sequence[int]) -> list[ActivitySegment]:
    """Maximal runs of equal activity."""
    segments: list[ActivitySegment] = []
    start = 0
    for index in range(1, len(activities) + 1):
        if index == len(activities) or activities[index] != activities[start]:
            segments.append(ActivitySegment(start, index, Activity(int(activities[start]))))
            start = index
    return segments


def hermite_track(
    times: Sequence[int], points: np.ndarray, still: Sequence[bool], length: int
) -> np.ndarray:
    """length x 2 positions through `points` at `times` (increasing); still knots stop the motion.

    Moving knots get finite-difference tangents (a C1 Catmull-Rom-like curve); still knots get
    zero tangents, so between two still knots the track stays on the segment joining them.
    """
    t = np.asarray(times, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    if len(t) == 1:
        return np.repeat(p, length, axis=0)
    tangents = np.zeros_like(p)
    for i in range(len(t)):
        if still[i]:
            continue
        lo, hi = max(i - 1, 0), min(i + 1, len(t) - 1)
        tangents[i] = (p[hi] - p[lo]) / (t[hi] - t[lo])
    frames = np.arange(length, dtype=np.float64)
    index = np.clip(np.searchsorted(t, frames, side="right") - 1, 0, len(t) - 2)
    h = t[index + 1] - t[index]
    u = np.clip((frames - t[index]) / h, 0.0, 1.0)[:, None]
    h = h[:, None]
    h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
    h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
    return (
        h00 * p[index]
        + h10 * h * tangents[index]
        + h01 * p[index + 1]
        + h11 * h * tangents[index + 1]
    )


@dataclass
class _Work:
    """A segment's working point on the tissue and the motion of the tip there."""

    segment: ActivitySegment
    port: int
    point: np.ndarray  # canvas pixels, set when the port's track is built
    direction: np.ndarray
    travel: float
    jaw_opening: float = 0.0
    plume_direction: float = 0.0
    needle: HeldNeedle | None = None
    pool: BloodPool | None = None
    stitch: Stitch | None = None
    mark: list[Point] = field(default_factory=list)


def _plan_segments(
    rng: np.random.Generator, length: int, mean_segment: int, min_segment: int
) -> list[ActivitySegment]:
    bounds = [0]
    while bounds[-1] < length:
        step = int(rng.integers(min_segment, max(min_segment, 2 * mean_segment - min_segment) + 1))
        bounds.append(min(length, bounds[-1] + step))
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < min_segment:
        del bounds[-2]
    segments = []
    previous: Activity | None = None
    for start, stop in itertools.pairwise(bounds):
        choices = [a for a in Activity if a is not previous]
        activity = choices[int(rng.integers(len(choices)))]
        segments.append(ActivitySegment(start, stop, activity))
        previous = activity
    return segments


def _clamp_to_view(points: np.ndarray, optics: Optics, fraction: float) -> np.ndarray:
    center = np.asarray(optics.fov_center)
    offset = points - center
    distance = np.linalg.norm(offset, axis=1, keepdims=True)
    limit = optics.fov_radius * fraction
    return center + offset * np.minimum(1.0, limit / np.maximum(distance, 1e-9))


def plan_clip(
    rng: np.random.Generator,
    height: int,
    width: int,
    length: int,
    mean_segment: int = 45,
    min_segment: int = 12,
) -> Clip:
    """A clip of `length` frames; segments last `min_segment` to about 2 x `mean_segment` frames."""
    if length < 1:
        raise ValueError(f"clip length must be positive, got {length}")
    scale = min(height, width)
    margin = round(0.06 * scale)
    optics = sample_optics(rng, height, width)
    tissue = sample_tissue(rng, (height + 2 * margin, width + 2 * margin))
    thread_color = THREAD_COLORS[int(rng.integers(len(THREAD_COLORS)))]
    segments = _plan_segments(rng, length, mean_segment, min_segment)

    pan_times = [*range(0, length, 30), length - 1] if length > 1 else [0]
    pan_times = sorted(set(pan_times))
    pan_knots = rng.uniform(0, 2 * margin, (len(pan_times), 2))
    pan = np.clip(
        hermite_track(pan_times, pan_knots, [False] * len(pan_times), length), 0, 2 * margin
    )
    offsets = np.round(pan).astype(int)

    ports = _sample_ports(rng, optics, scale)
    port_kinds, works = _assign_work(rng, segments, len(ports), scale)
    tips = [_port_track(rng, p, works, offsets, optics, length, scale) for p in range(len(ports))]
    for work in works:
        if work is not None:
            entry = ports[work.port].entry
            _prepare_work(rng, work, scale, optics, entry, offsets[work.segment.start])
    base_pools, old_marks, loose, base_haze = _standing_distractors(
        rng, optics, margin, scale, works
    )

    segment_of = np.zeros(length, dtype=int)
    for index, segment in enumerate(segments):
        segment_of[segment.start : segment.stop] = index
    hover_tips = [
        _clear_of_work(p, port, tips, offsets, optics, works, segment_of, port_kinds, scale, length)
        for p, port in enumerate(ports)
    ]

    scenes = []
    for t in range(length):
        segment_index = int(segment_of[t])
        segment, work = segments[segment_index], works[segment_index]
        offset = offsets[t]
        instruments = []
        for p, port in enumerate(ports):
            if work is not None and work.port == p:
                tip = tips[p][t] - offset
                tool = port.instrument(port_kinds[segment_index][p], (tip[0], tip[1]), t)
                instruments.append(_at_work(tool, work, t))
                continue
            tip = hover_tips[p][t]
            instruments.append(port.instrument(port_kinds[segment_index][p], (tip[0], tip[1]), t))
        if work is not None and work.segment.activity is Activity.CAUTERY:
            work.mark.append(tuple(tips[work.port][t]))
        pools, marks, stitches, smoke, haze = _history(works, t, tips, offset, scale)
        scene = Scene(
            height=height,
            width=width,
            tissue=tissue,
            optics=optics,
            view_offset=(int(offset[0]), int(offset[1])),
            instruments=tuple(instruments),
            blood_pools=tuple(base_pools + pools),
            burn_marks=tuple(old_marks + marks),
            loose_needles=tuple(loose),
            stitches=tuple(stitches),
            smoke=tuple(smoke),
            haze=1.0 - (1.0 - base_haze) * (1.0 - haze),
            thread_color=thread_color,
            noise_seed=int(rng.integers(2**63)),
        )
        if activity_of(scene) is not segment.activity:
            raise RuntimeError(
                f"clip frame {t} shows {activity_of(scene).name} but was planned as "
                f"{segment.activity.name}"
            )
        scenes.append(scene)
    return Clip(tuple(scenes), tuple(segments))


RETRACT_SMOOTHING = 9
"""Frames over which a hovering instrument draws back from, and returns over, a working tip."""


def _clear_of_work(
    p: int,
    port: _Port,
    tips: list[np.ndarray],
    offsets: np.ndarray,
    optics: Optics,
    works: list[_Work | None],
    segment_of: np.ndarray,
    port_kinds: list[list[InstrumentKind]],
    scale: int,
    length: int,
) -> np.ndarray:
    """The hovering tip of port `p` per frame (frame pixels), drawn back along its shaft while
    the instrument would pass over another port's working tip, as still frames never let a
    hovering tool hide the acting one. The draw-back eases in and out over a few frames."""
    tip = _clamp_to_view(tips[p] - offsets, optics, 0.8)
    entry = np.asarray(port.entry)
    direction = tip - entry
    reach = np.linalg.norm(direction, axis=1, keepdims=True)
    direction = direction / np.maximum(reach, 1e-9)
    limit = 0.9 * reach[:, 0]
    step = 0.02 * scale

    def clear(t: int, drawn_back: float) -> float:
        """The least draw-back from `drawn_back` on that clears frame t's working tip (the
        coverage of a tip beside the shaft comes and goes as the tip draws back)."""
        work = works[int(segment_of[t])]
        if work is None or work.port == p:
            return drawn_back
        acting = tips[work.port][t] - offsets[t]
        kind = port_kinds[int(segment_of[t])][p]
        while drawn_back < limit[t]:
            moved = tip[t] - direction[t] * drawn_back
            tool = port.instrument(kind, (float(moved[0]), float(moved[1])), t)
            if not covers(tool, (float(acting[0]), float(acting[1])), 0.06 * scale):
                break
            drawn_back += step
        return min(drawn_back, limit[t])

    needed = np.array([clear(t, 0.0) for t in range(length)])
    if not needed.any():
        return tip
    # A running maximum then a running mean of the same width: eased in and out, and never
    # less than needed; then cleared again where the eased amount uncovers nothing.
    width = RETRACT_SMOOTHING
    padded = np.pad(needed, width, mode="edge")
    peak = np.array([padded[i : i + 2 * width + 1].max() for i in range(length + 2 * width)])
    kernel = np.ones(2 * width + 1) / (2 * width + 1)
    eased = np.maximum(np.convolve(peak, kernel, mode="same")[width:-width], needed)
    drawn = np.array([clear(t, min(float(eased[t]), limit[t])) for t in range(length)])
    return tip - direction * drawn[:, None]


@dataclass(frozen=True)
class _Port:
    """An instrument port: where shafts enter, and how its idle instrument sways over time."""

    entry: Point
    widths: dict[InstrumentKind, float]
    hover: tuple[float, float, float]  # height, phase, angular speed per frame
    jaws: tuple[float, float]  # angular speed, phase
    wrist: tuple[float, float, float]  # bias, angular speed, phase

    def instrument(self, kind: InstrumentKind, tip: Point, t: int) -> Instrument:
        """The hovering instrument of this port at frame `t`."""
        height, phase, speed = self.hover
        bias, wrist_speed, wrist_phase = self.wrist
        return Instrument(
            kind=kind,
            entry=self.entry,
            tip=(float(tip[0]), float(tip[1])),
            wrist_angle=bias + 0.3 * math.sin(wrist_speed * t + wrist_phase),
            jaw_opening=max(0.0, 0.7 * math.sin(self.jaws[0] * t + self.jaws[1])),
            height=height * (1.0 + 0.25 * math.sin(speed * t + phase)),
            shaft_width=self.widths[kind],
        )


def _sample_ports(rng: np.random.Generator, optics: Optics, scale: int) -> list[_Port]:
    return [
        _Port(
            entry=entry_point(optics, angle),
            widths={kind: shaft_width(rng, kind, scale) for kind in InstrumentKind},
            hover=(
                rng.uniform(0.08, 0.12) * scale,
                rng.uniform(0, 2 * math.pi),
                rng.uniform(0.03, 0.08),
            ),
            jaws=(rng.uniform(0.04, 0.12), rng.uniform(0, 2 * math.pi)),
            wrist=(rng.uniform(-0.5, 0.5), rng.uniform(0.01, 0.04), rng.uniform(0, 2 * math.pi)),
        )
        for angle in spread_angles(rng, int(rng.integers(2, 4)))
    ]


def _assign_work(
    rng: np.random.Generator, segments: list[ActivitySegment], ports: int, scale: int
) -> tuple[list[list[InstrumentKind]], list[_Work | None]]:
    """Instrument kinds per port and segment (exchanging one when a segment needs a kind no
    port holds), and the working port of each non-idle segment."""
    kinds = [list(InstrumentKind)[int(rng.integers(4))] for _ in range(ports)]
    port_kinds: list[list[InstrumentKind]] = []
    works: list[_Work | None] = []
    for segment in segments:
        needed = ACTING_KIND.get(segment.activity)
        work = None
        if needed is not None:
            if needed not in kinds:
                kinds[int(rng.integers(ports))] = needed
            candidates = [p for p in range(ports) if kinds[p] is needed]
            port = candidates[int(rng.integers(len(candidates)))]
            work = _Work(segment, port, np.zeros(2), *_work_motion(rng, segment.activity, scale))
        port_kinds.append(list(kinds))
        works.append(work)
    return port_kinds, works


def _standing_distractors(
    rng: np.random.Generator, optics: Optics, margin: int, scale: int, works: list[_Work | None]
) -> tuple[list[BloodPool], list[BurnMark], list[LooseNeedle], float]:
    """Blood, old burn marks, a dropped needle and haze present for the whole clip, kept away
    from every working point by the distances the still frames keep from an acting tip."""
    points = [(float(w.point[0]), float(w.point[1])) for w in works if w is not None]
    pools = []
    if rng.random() < BLOOD_RATE:
        for _ in range(int(rng.integers(1, 3))):
            radius = rng.uniform(0.06, 0.12) * scale
            center = point_away(rng, optics, points, radius * 1.3 + 0.08 * scale, 0.8, margin)
            if center is not None:
                pools.append(sample_blood_pool(rng, center, radius))
    marks = []
    if rng.random() < OLD_BURN_RATE:
        for _ in range(int(rng.integers(1, 3))):
            end = point_away(rng, optics, points, 0.12 * scale, 0.85, margin)
            if end is not None:
                marks.append(sample_burn_mark(rng, end, scale))
    loose = []
    if rng.random() < LOOSE_NEEDLE_RATE:
        center = point_away(rng, optics, points, 0.15 * scale, 0.75, margin)
        if center is not None:
            loose.append(sample_loose_needle(rng, center, scale))
    haze = float(rng.uniform(0.1, 0.35)) if rng.random() < HAZE_RATE else 0.0
    return pools, marks, loose, haze


def _work_motion(
    rng: np.random.Generator, activity: Activity, scale: int
) -> tuple[np.ndarray, float]:
    """Direction and distance a working tip moves during its segment (cutting moves most)."""
    angle = rng.uniform(0, 2 * math.pi)
    travel = {Activity.CAUTERY: rng.uniform(0.08, 0.2)}.get(activity, rng.uniform(0.01, 0.03))
    return np.array([math.cos(angle), math.sin(angle)]), float(travel * scale)


def _prepare_work(
    rng: np.random.Generator,
    work: _Work,
    scale: int,
    optics: Optics,
    entry: Point,
    offset: np.ndarray,
) -> None:
    """What the work needs besides its motion: jaw opening and smoke, needle, bleeding."""
    activity = work.segment.activity
    if activity is Activity.CAUTERY:
        work.jaw_opening = float(rng.uniform(0.3, 0.6))
        frame_point = work.point - offset
        work.plume_direction = plume_direction(rng, (frame_point[0], frame_point[1]), entry)
    elif activity is Activity.SUTURING:
        work.needle = HeldNeedle(
            radius=float(rng.uniform(0.045, 0.07) * scale),
            side=1 if rng.random() < 0.5 else -1,
            inserted=0.1,
            thread_end=point_in_view(rng, optics, 0.9),
            thread_control=((0.0, 0.0), (0.0, 0.0)),
        )
        work.stitch = sample_stitch(rng, (float(work.point[0]), float(work.point[1])), scale)
    elif activity is Activity.SUCTION:
        work.pool = sample_blood_pool(rng, tuple(work.point), rng.uniform(0.09, 0.14) * scale)


def _progress(work: _Work, t: int) -> float:
    span = work.segment.stop - 1 - work.segment.start
    return 0.0 if span <= 0 else (t - work.segment.start) / span


def _port_track(
    rng: np.random.Generator,
    port: int,
    works: list[_Work | None],
    offsets: np.ndarray,
    optics: Optics,
    length: int,
    scale: int,
) -> np.ndarray:
    """The port's tip track in canvas pixels, built forward in time.

    Free knots wander the view at a bounded speed; each of the port's working segments gets its
    working point where the tip can reach from its last knot, and still knots along the work.
    """
    max_step = MAX_TIP_SPEED * scale
    own = sorted(
        (w for w in works if w is not None and w.port == port), key=lambda w: w.segment.start
    )
    busy = np.zeros(length, dtype=bool)
    for work in own:
        busy[max(0, work.segment.start - 4) : min(length, work.segment.stop + 4)] = True
    events: list[tuple[int, _Work | None]] = [
        (t, None) for t in sorted({*range(0, length, 15), length - 1}) if not busy[t]
    ]
    events = sorted(events + [(w.segment.start, w) for w in own], key=lambda event: event[0])
    knots: dict[int, tuple[np.ndarray, bool]] = {}
    position: np.ndarray | None = None
    last = 0
    for t, work in events:
        target = np.asarray(point_in_view(rng, optics, 0.7 if work is None else 0.45))
        target = target + offsets[t]
        if position is not None:
            step = target - position
            reach = max_step * (t - last)
            distance = float(np.linalg.norm(step))
            if distance > reach:
                target = position + step * (reach / distance)
        if work is None:
            knots[t] = (target, False)
            position, last = target, t
            continue
        frame_point = _clamp_to_view((target - offsets[t])[None, :], optics, 0.6)[0]
        work.point = frame_point + offsets[t]
        start, stop = work.segment.start, work.segment.stop
        for k in sorted({*range(start, stop, 8), stop - 1}):
            knots[k] = (work.point + work.direction * work.travel * _progress(work, k), True)
        position, last = knots[stop - 1][0], stop - 1
    times = sorted(knots)
    return hermite_track(
        times, np.array([knots[t][0] for t in times]), [knots[t][1] for t in times], length
    )


def _at_work(tool: Instrument, work: _Work, t: int) -> Instrument:
    """The port's instrument touching the tissue in the state its segment's activity needs."""
    needle = None
    if work.needle is not None:
        # The needle is driven in over the segment; its thread follows the tool.
        x, y = tool.tip
        dx, dy = work.needle.thread_end[0] - x, work.needle.thread_end[1] - y
        controls = (
            (x + dx / 3 - dy / 4, y + dy / 3 + dx / 4),
            (x + 2 * dx / 3 + dy / 5, y + 2 * dy / 3 - dx / 5),
        )
        inserted = 0.1 + 0.45 * _progress(work, t)
        needle = replace(work.needle, inserted=inserted, thread_control=controls)
    return replace(
        tool,
        height=0.0,
        jaw_opening=work.jaw_opening,
        energized=work.segment.activity is Activity.CAUTERY,
        needle=needle,
    )


def _history(
    works: list[_Work | None], t: int, tips: list[np.ndarray], offset: np.ndarray, scale: int
) -> tuple[list[BloodPool], list[BurnMark], list[Stitch], list[SmokePlume], float]:
    """What earlier and current segments left on the tissue and in the air at frame `t`."""
    working_tips = [
        (float(tips[w.port][t][0]), float(tips[w.port][t][1]))
        for w in works
        if w is not None and w.segment.start <= t < w.segment.stop
    ]
    pools: list[BloodPool] = []
    marks: list[BurnMark] = []
    stitches: list[Stitch] = []
    smoke: list[SmokePlume] = []
    haze = 0.0
    for work in works:
        if work is None:
            continue
        start, stop = work.segment.start, work.segment.stop
        activity = work.segment.activity
        if activity is Activity.SUCTION and work.pool is not None and t >= start - BLEEDING_LEAD:
            if t < start:
                growth = 0.5 + 0.5 * (t - (start - BLEEDING_LEAD)) / BLEEDING_LEAD
                grown = replace(work.pool, radius=work.pool.radius * growth)
                if any(grown.contains(tip) for tip in working_tips):
                    growth = 0.0  # not under another tool at work: it bleeds when that ends
            elif t < stop:
                growth = 1.0 - 0.4 * _progress(work, t)
            else:
                growth = 0.0  # sucked away: no pool for a later tool to stand in
            if growth > 0.0:
                pools.append(replace(work.pool, radius=work.pool.radius * growth))
        if activity is Activity.CAUTERY and t >= start:
            if len(work.mark) >= 2:
                marks.append(BurnMark(tuple(work.mark), 0.011 * scale))
            if t < stop:
                tip = tips[work.port][t] - offset
                ramp = min(1.0, (t - start + 1) / 5)
                smoke.append(
                    SmokePlume(
                        (float(tip[0]), float(tip[1])),
                        work.plume_direction,
                        0.3 * scale,
                        0.8 * ramp,
                    )
                )
                haze = max(haze, 0.3 * _progress(work, t))
            else:
                haze = max(haze, 0.45 * math.exp(-(t - stop) / 25))
        if work.stitch is not None and t >= stop:
            stitches.append(work.stitch)
    return pools, marks, stitches, smoke, haze
