"""Drawing a `Scene`: RGB uint8 frame and uint8 class-id mask, deterministic given the scene.

Order, back to front: tissue texture, things on the tissue (burn marks, blood, stitches, loose
needles), what touching instruments do to the tissue (folds, dimples, ripples), instrument
shadows, instruments (lowest first), cautery glow, smoke, then the optics (light fall-off,
circular field of view, white balance, sensor noise). Smoke and light change the picture but
not the labels: a pixel keeps the class of the surface it shows.
"""

from __future__ import annotations

import math
from typing import Final

import cv2
import numpy as np

from endoarss_ros.data.classes import IGNORE_INDEX
from endoarss_ros.data.procedural import fractal_noise
from endoarss_ros.data.synthetic.painter import (
    Disk,
    Painter,
    Polygon,
    Polyline,
    Shape,
    cylinder_shader,
)
from endoarss_ros.data.synthetic.scene import (
    Activity,
    BloodPool,
    BurnMark,
    HeldNeedle,
    Instrument,
    InstrumentKind,
    LooseNeedle,
    Scene,
    SegClass,
    SmokePlume,
    instrument_action,
)
from endoarss_ros.data.synthetic.tissue import tissue_texture

BLOOD_COLOR: Final = (0.36, 0.02, 0.03)
SMOKE_COLOR: Final = np.array([0.84, 0.83, 0.8], dtype=np.float32)
METAL: Final = (0.62, 0.63, 0.66)
NEEDLE_METAL: Final = (0.78, 0.78, 0.8)
SHAFT_COLORS: Final = {
    InstrumentKind.GRASPER: (0.16, 0.16, 0.17),
    InstrumentKind.SCISSORS: (0.12, 0.12, 0.13),
    InstrumentKind.NEEDLE_DRIVER: (0.2, 0.2, 0.22),
    InstrumentKind.SUCTION: (0.6, 0.61, 0.64),
}
SHADOW_STRENGTH: Final = 0.6
_SMOKE_FACTOR: Final = 4


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """The frame (H x W x 3 uint8 RGB) and its mask (H x W uint8, `SegClass` ids, 255 outside)."""
    height, width = scene.height, scene.width
    ox, oy = scene.view_offset
    texture = tissue_texture(scene.tissue)
    rgb = texture[oy : oy + height, ox : ox + width].copy()
    if rgb.shape[:2] != (height, width):
        raise ValueError(
            f"view offset {scene.view_offset} puts the {width}x{height} frame outside the "
            f"{texture.shape[1]}x{texture.shape[0]} tissue canvas"
        )
    label = np.zeros((height, width), dtype=np.uint8)
    painter = Painter(rgb, label)
    scale = min(height, width)
    shift = np.array([-ox, -oy], dtype=np.float32)
    smoke_rng, sensor_rng = (np.random.default_rng([scene.noise_seed, i]) for i in range(2))

    for mark in scene.burn_marks:
        _draw_burn_mark(painter, mark, shift)
    for pool in scene.blood_pools:
        _draw_blood_pool(painter, pool, shift)
    for stitch in scene.stitches:
        points = np.asarray(stitch.points, dtype=np.float32) + shift
        _draw_thread(painter, points, scene.thread_color, scale)
    for needle in scene.loose_needles:
        _draw_loose_needle(painter, needle, shift, scene.thread_color, scale)

    tools = sorted(scene.instruments, key=lambda tool: tool.height)
    for tool in tools:
        if tool.touching:
            _draw_contact(painter, tool, instrument_action(scene, tool), scale)
    _draw_shadows(rgb, tools, scene.optics.light_direction, scale)
    for tool in tools:
        _draw_instrument(painter, tool, scene.thread_color, scale)
    for tool in tools:
        if tool.touching and tool.energized:
            _draw_glow(painter, tool.tip, scale)
    _draw_smoke(rgb, scene.smoke, scene.haze, smoke_rng)
    return _apply_optics(rgb, label, scene, sensor_rng), label


# --- things on the tissue -----------------------------------------------------------------


def _draw_burn_mark(painter: Painter, mark: BurnMark, shift: np.ndarray) -> None:
    points = np.asarray(mark.points, dtype=np.float32) + shift
    if len(points) < 2:
        return
    painter.paint(
        [Polyline(points, mark.width * 1.8)], (0.84, 0.74, 0.6), SegClass.BURN_MARK, opacity=0.85
    )
    painter.paint([Polyline(points, mark.width * 0.8)], (0.16, 0.09, 0.06), opacity=0.8)


def _draw_blood_pool(painter: Painter, pool: BloodPool, shift: np.ndarray) -> None:
    outline = pool.outline + shift
    painter.paint([Polygon(outline)], BLOOD_COLOR, SegClass.BLOOD)
    # Wet gloss: a few short highlight strokes at places fixed by the pool's shape.
    center = np.asarray(pool.center, dtype=np.float32) + shift
    for amplitude, phase in pool.harmonics[:3]:
        spot = center + pool.radius * (0.35 + amplitude) * np.array(
            [math.cos(phase), math.sin(phase)], dtype=np.float32
        )
        stroke = np.array([spot, spot + pool.radius * 0.12], dtype=np.float32)
        painter.paint([Polyline(stroke, max(1.0, pool.radius * 0.05))], (1.0, 0.9, 0.88), None, 0.7)


def _draw_thread(
    painter: Painter, points: np.ndarray, color: tuple[float, float, float], scale: int
) -> None:
    painter.paint([Polyline(points, max(1.0, 0.006 * scale))], color, SegClass.THREAD, 1.0, 0.3)


def _arc(center: np.ndarray, radius: float, start: float, stop: float) -> np.ndarray:
    steps = max(6, int(abs(stop - start) * radius / 3))
    angles = np.linspace(start, stop, steps)
    return np.stack(
        [center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], axis=1
    ).astype(np.float32)


def _draw_needle_arc(painter: Painter, points: np.ndarray, scale: int) -> None:
    width = max(1.0, 0.009 * scale)
    painter.paint([Polyline(points, width)], NEEDLE_METAL, SegClass.NEEDLE, 1.0, 0.3)
    if width >= 2.5:
        painter.paint([Polyline(points, width * 0.35)], (1.0, 1.0, 1.0), None, 0.6)


def _draw_loose_needle(
    painter: Painter,
    needle: LooseNeedle,
    shift: np.ndarray,
    thread_color: tuple[float, float, float],
    scale: int,
) -> None:
    center = np.asarray(needle.center, dtype=np.float32) + shift
    arc = _arc(center, needle.radius, needle.start_angle, needle.start_angle + math.pi)
    thread = np.asarray(needle.thread, dtype=np.float32) + shift
    _draw_thread(painter, np.vstack([arc[:1], thread]), thread_color, scale)
    _draw_needle_arc(painter, arc, scale)


# --- instruments --------------------------------------------------------------------------


def _normal(direction: tuple[float, float]) -> np.ndarray:
    return np.array([-direction[1], direction[0]], dtype=np.float32)


def _jaw_polygons(tool: Instrument) -> list[np.ndarray]:
    """Two tapered (for scissors curved) jaws, opened symmetrically about the jaw direction."""
    g = tool.geometry
    base = np.asarray(g.jaw_base, dtype=np.float32)
    width = tool.shaft_width
    half_base = {InstrumentKind.NEEDLE_DRIVER: 0.24, InstrumentKind.GRASPER: 0.2}.get(
        tool.kind, 0.17
    )
    curve = 0.12 if tool.kind is InstrumentKind.SCISSORS else 0.0
    t = np.linspace(0.0, 1.0, 7, dtype=np.float32)[:, None]
    polygons = []
    for side in (1.0, -1.0):
        angle = math.atan2(g.jaw_direction[1], g.jaw_direction[0]) + side * tool.jaw_opening / 2
        axis = np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)
        normal = _normal((axis[0], axis[1]))
        center = (
            base + axis * (t * g.jaw_length) + normal * (curve * g.jaw_length) * np.sin(np.pi * t)
        )
        half = width * half_base * (1.0 - 0.75 * t)
        polygons.append(np.vstack([center + normal * half, (center - normal * half)[::-1]]))
    return polygons


def _silhouette(tool: Instrument) -> list[Shape]:
    """The instrument's outline shapes (for shadows): shaft, wrist and jaws."""
    g = tool.geometry
    entry = np.asarray(g.entry, dtype=np.float32)
    wrist = np.asarray(g.wrist, dtype=np.float32)
    normal = _normal(g.shaft_direction)
    w = tool.shaft_width
    shapes: list[Shape] = [
        Polygon(
            np.array(
                [
                    entry + normal * w * 0.68,
                    wrist + normal * w * 0.5,
                    wrist - normal * w * 0.5,
                    entry - normal * w * 0.68,
                ]
            )
        )
    ]
    if tool.has_jaws:
        shapes.append(Polyline(np.array([wrist, g.jaw_base], dtype=np.float32), w * 0.85))
        shapes.extend(Polygon(p) for p in _jaw_polygons(tool))
    else:
        shapes.append(Disk(tool.tip, w * 0.5))
    return shapes


def _draw_instrument(
    painter: Painter, tool: Instrument, thread_color: tuple[float, float, float], scale: int
) -> None:
    g = tool.geometry
    w = tool.shaft_width
    entry = np.asarray(g.entry, dtype=np.float32)
    wrist = np.asarray(g.wrist, dtype=np.float32)
    normal = _normal(g.shaft_direction)
    shaft_length = float(np.linalg.norm(wrist - entry))
    shaft = Polygon(
        np.array(
            [
                entry + normal * w * 0.68,
                wrist + normal * w * 0.5,
                wrist - normal * w * 0.5,
                entry - normal * w * 0.68,
            ]
        )
    )
    color = SHAFT_COLORS[tool.kind]
    shine = 0.55 if tool.kind is InstrumentKind.SUCTION else 0.3
    shader = cylinder_shader(
        g.entry, g.shaft_direction, shaft_length, w * 0.68, w * 0.5, color, shine
    )
    if not tool.has_jaws:
        painter.paint([shaft, Disk(tool.tip, w * 0.5)], shader, SegClass.SHAFT)
        d = np.asarray(g.shaft_direction, dtype=np.float32)
        for k in (1.2, 2.0):
            hole = wrist - d * (w * k)
            painter.paint([Disk(tuple(hole), w * 0.13)], (0.05, 0.04, 0.04), None)
        return
    painter.paint([shaft], shader, SegClass.SHAFT)
    # A metal ring where the shaft ends: a strong cue for where the wrist starts.
    ring_start = wrist - np.asarray(g.shaft_direction, dtype=np.float32) * (w * 0.3)
    ring = Polygon(
        np.array(
            [
                ring_start + normal * w * 0.52,
                wrist + normal * w * 0.5,
                wrist - normal * w * 0.5,
                ring_start - normal * w * 0.52,
            ]
        )
    )
    painter.paint(
        [ring],
        cylinder_shader(
            tuple(ring_start), g.shaft_direction, w * 0.3, w * 0.52, w * 0.5, METAL, 0.5
        ),
        SegClass.SHAFT,
    )

    jaw_base = np.asarray(g.jaw_base, dtype=np.float32)
    wrist_dir = (jaw_base - wrist) / max(float(np.linalg.norm(jaw_base - wrist)), 1e-6)
    wrist_shader = cylinder_shader(
        g.wrist,
        (float(wrist_dir[0]), float(wrist_dir[1])),
        g.wrist_length,
        w * 0.45,
        w * 0.4,
        (0.5, 0.5, 0.53),
        0.5,
    )
    painter.paint(
        [
            Polyline(np.array([wrist, jaw_base], dtype=np.float32), w * 0.85),
            Disk(g.wrist, w * 0.45),
            Disk(g.jaw_base, w * 0.36),
        ],
        wrist_shader,
        SegClass.WRIST,
    )
    middle = (wrist + jaw_base) / 2
    painter.paint([Disk(tuple(middle), w * 0.12)], (0.08, 0.08, 0.09), None)
    painter.paint([Disk(g.jaw_base, w * 0.1)], (0.08, 0.08, 0.09), None)

    jaw_color = (0.3, 0.3, 0.32) if tool.kind is InstrumentKind.SCISSORS else METAL
    for polygon in _jaw_polygons(tool):
        axis = polygon[6] - polygon[0]
        axis_len = float(np.linalg.norm(axis))
        axis_start = (polygon[0] + polygon[-1]) / 2
        direction = (
            (float(axis[0] / axis_len), float(axis[1] / axis_len)) if axis_len else g.jaw_direction
        )
        jaw_shader = cylinder_shader(
            tuple(axis_start), direction, g.jaw_length, w * 0.2, w * 0.06, jaw_color, 0.45
        )
        painter.paint([Polygon(polygon)], jaw_shader, SegClass.JAWS)
        if tool.kind is InstrumentKind.GRASPER:
            slot = polygon[[1, 2, 3, 4]]
            slot = np.vstack([slot, (polygon[[-5, -4, -3, -2]])[::-1]])
            center = slot.mean(axis=0)
            painter.paint([Polygon(center + (slot - center) * 0.45)], (0.1, 0.05, 0.05), None, 0.8)
    if tool.needle is not None:
        _draw_held_needle(painter, tool, tool.needle, thread_color, scale)


def needle_arc(tool: Instrument, needle: HeldNeedle) -> np.ndarray:
    """The visible part of a held needle, swage (thread) end first, N x 2 pixels.

    The jaws grip the half-circle a third of the way from the swage end, across the needle; the
    `inserted` share at the point end is inside the tissue and not drawn."""
    g = tool.geometry
    e = np.asarray(g.jaw_direction, dtype=np.float32)
    grip = np.asarray(g.jaw_base, dtype=np.float32) + e * (0.6 * g.jaw_length)
    center = grip + e * needle.radius
    grip_angle = math.atan2(grip[1] - center[1], grip[0] - center[0])
    swage = grip_angle - needle.side * math.pi / 3
    point = grip_angle + needle.side * 2 * math.pi / 3
    visible_end = point - needle.side * math.pi * needle.inserted
    return _arc(center, needle.radius, swage, visible_end)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    t = np.linspace(0.0, 1.0, 24, dtype=np.float32)[:, None]
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * t * t * p2 + t**3 * p3


def _draw_held_needle(
    painter: Painter,
    tool: Instrument,
    needle: HeldNeedle,
    thread_color: tuple[float, float, float],
    scale: int,
) -> None:
    arc = needle_arc(tool, needle)
    p0 = arc[0]
    c1, c2 = (np.asarray(c, dtype=np.float32) for c in needle.thread_control)
    thread = _bezier(p0, c1, c2, np.asarray(needle.thread_end, dtype=np.float32))
    _draw_thread(painter, thread, thread_color, scale)
    _draw_needle_arc(painter, arc, scale)
    if needle.inserted > 0:
        # Where the point enters, the tissue puckers around a dark puncture.
        entry = (float(arc[-1][0]), float(arc[-1][1]))
        painter.scale([Disk(entry, 0.035 * scale)], 1.4, opacity=0.8)
        painter.scale([Disk(entry, 0.018 * scale)], 0.35, opacity=0.9)


def _draw_contact(painter: Painter, tool: Instrument, action: Activity, scale: int) -> None:
    """How the tissue answers a touching instrument: a blanched, pressed-in footprint with a wet
    rim under the tip (what tells touching from hovering at a glance), then the action's own
    mark: a grasped fold or suction ripples. Sizes keep each mark several pixels across at
    112 px."""
    tip = np.asarray(tool.tip, dtype=np.float32)
    painter.scale([Disk(tool.tip, 0.085 * scale)], 1.5, opacity=0.85)
    rim = _arc(tip, 0.085 * scale, 0.0, 2 * math.pi)
    painter.paint([Polyline(rim, max(1.0, 0.01 * scale))], (1.0, 0.95, 0.93), None, 0.55)
    painter.scale([Disk(tool.tip, 0.04 * scale)], 0.5, opacity=0.85)
    if action is Activity.GRASPING:
        # Tissue pulled into the closed jaws: wrinkles converging on the tip, a lifted tent.
        phase = (tool.entry[0] * 0.37 + tool.entry[1] * 0.11) % (2 * math.pi)
        for k in range(8):
            angle = phase + k * 2 * math.pi / 8
            length = (0.13 + 0.04 * math.cos(3 * angle + phase)) * scale
            direction = np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)
            bend = _normal((float(direction[0]), float(direction[1]))) * (0.15 * length)
            line = np.array(
                [tip, tip + direction * length * 0.5 + bend, tip + direction * length],
                dtype=np.float32,
            )
            painter.scale([Polyline(line, max(1.5, 0.014 * scale))], 0.45, opacity=0.9)
            highlight = line + 0.012 * scale
            painter.scale([Polyline(highlight, max(1.0, 0.007 * scale))], 1.4, opacity=0.7)
    elif action is Activity.SUCTION:
        for radius in (0.055, 0.085):
            ring = _arc(tip, radius * scale, 0.0, 2 * math.pi)
            painter.scale([Polyline(ring, max(1.2, 0.01 * scale))], 2.2, opacity=0.8)


def _draw_glow(painter: Painter, tip: tuple[float, float], scale: int) -> None:
    painter.paint([Disk(tip, 0.035 * scale)], (1.0, 0.75, 0.45), None, 0.35)
    painter.paint([Disk(tip, 0.014 * scale)], (1.0, 0.95, 0.8), None, 0.95)


def _draw_shadows(
    rgb: np.ndarray, tools: list[Instrument], light: tuple[float, float], scale: int
) -> None:
    """Soft shadows at quarter resolution; a hovering tool's shadow is offset from its tip."""
    if not tools:
        return
    height, width = rgb.shape[:2]
    small = np.zeros((height // 4 + 1, width // 4 + 1), dtype=np.uint8)
    small_painter = Painter(np.zeros((*small.shape, 3), np.float32), small)
    for tool in tools:
        offset = np.array([light[0], light[1]], dtype=np.float32) * tool.height
        shapes = [_offset_scaled(shape, offset, 0.25) for shape in _silhouette(tool)]
        found = small_painter.coverage(shapes)
        if found is None:
            continue
        cover, (x0, y0, x1, y1) = found
        np.maximum(small[y0:y1, x0:x1], cover, out=small[y0:y1, x0:x1])
    blurred = cv2.GaussianBlur(small, (0, 0), max(1.0, 0.006 * scale))
    shadow = cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)
    gain = 1.0 - shadow.astype(np.float32) * np.float32(SHADOW_STRENGTH / 255.0)
    rgb *= gain[:, :, None]


def _offset_scaled(shape: Shape, offset: np.ndarray, factor: float) -> Shape:
    if isinstance(shape, Polygon):
        return Polygon((shape.points + offset) * factor)
    if isinstance(shape, Polyline):
        return Polyline((shape.points + offset) * factor, shape.thickness * factor)
    center = (np.asarray(shape.center, dtype=np.float32) + offset) * factor
    return Disk((float(center[0]), float(center[1])), shape.radius * factor)


def _draw_smoke(
    rgb: np.ndarray, plumes: tuple[SmokePlume, ...], haze: float, rng: np.random.Generator
) -> None:
    """Plumes (blobs growing along a drift direction) and diffuse haze, wispy by fractal noise."""
    if not plumes and haze <= 0:
        return
    height, width = rgb.shape[:2]
    sh, sw = height // _SMOKE_FACTOR + 1, width // _SMOKE_FACTOR + 1
    texture = fractal_noise(rng, sh, sw, cells=5.0, octaves=3, persistence=0.55)
    wisps = np.clip(0.65 + 0.3 * texture, 0.0, 1.0)
    density = np.zeros((sh, sw), dtype=np.float32)
    xs = np.arange(sw, dtype=np.float32)[None, :] * _SMOKE_FACTOR
    ys = np.arange(sh, dtype=np.float32)[:, None] * _SMOKE_FACTOR
    for plume in plumes:
        dx, dy = math.cos(plume.direction), math.sin(plume.direction)
        for k in range(8):
            t = k / 7
            cx = plume.source[0] + dx * plume.length * t
            cy = plume.source[1] + dy * plume.length * t
            # A thin wisp at the source that thickens and spreads as it rises.
            sigma = plume.length * (0.04 + 0.22 * t)
            weight = plume.density * (0.35 + 1.4 * t * (1.0 - t) + 0.3 * t)
            density += weight * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma))
    alpha = 1.0 - np.exp(-density * wisps)
    if haze > 0:
        alpha = 1.0 - (1.0 - alpha) * (1.0 - np.float32(haze) * wisps)
    full = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
    rgb += (SMOKE_COLOR - rgb) * full[:, :, None]


def _apply_optics(
    rgb: np.ndarray, label: np.ndarray, scene: Scene, rng: np.random.Generator
) -> np.ndarray:
    """Light fall-off, the field-of-view circle (label 255 outside), white balance, noise."""
    optics = scene.optics
    cx, cy = optics.fov_center
    radius = optics.fov_radius
    xs = (np.arange(scene.width, dtype=np.float32) - cx) / radius
    ys = (np.arange(scene.height, dtype=np.float32) - cy) / radius
    d2 = xs[None, :] ** 2 + ys[:, None] ** 2
    edge = np.clip((1.0 - np.sqrt(d2)) * (radius / 1.5) + 0.5, 0.0, 1.0)
    gain = np.clip(1.0 - optics.vignetting * d2, 0.0, 1.0) * edge
    gain *= np.float32(255.0 * optics.exposure)
    white = np.asarray(optics.white_balance, dtype=np.float32)
    rgb *= cv2.merge([gain * white[0], gain * white[1], gain * white[2]])
    label[d2 > 1.0] = IGNORE_INDEX
    noise = rng.random(rgb.shape, dtype=np.float32)
    noise *= np.float32(2.0 * optics.noise)
    noise -= np.float32(optics.noise)
    return cv2.add(rgb, noise, dtype=cv2.CV_8U)  # rounds and saturates to 0..255
