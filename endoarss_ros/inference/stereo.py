"""Pairing of left and right camera frames by approximate stamp.

The da Vinci stereo endoscope is captured by one gscam process per eye, each stamping its
frames with its own ``now()``: the two eyes of one instant differ by a few milliseconds, so an
exact-stamp match never happens. A frame is paired with the other eye's frame nearest in
stamp if they are at most ``slop`` apart. A frame that can no longer be paired (a newer pair
was formed, or too many frames of its side are waiting) is counted as unpaired and dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

Item = TypeVar("Item")

LEFT: Final = "left"
RIGHT: Final = "right"


@dataclass(frozen=True)
class StereoPair(Generic[Item]):
    left: Item
    right: Item
    skew_ns: int
    """Right stamp minus left stamp."""


class StereoPairer(Generic[Item]):
    """Pairs items of two streams whose stamps (integer nanoseconds) are within ``slop_ns``.

    ``capacity`` bounds the frames waiting per side: at 30 Hz with the eyes a few ms apart a
    match is found within one frame, so a handful covers any realistic jitter.
    """

    def __init__(self, slop_ns: int, capacity: int = 5) -> None:
        if slop_ns <= 0:
            raise ValueError(f"slop must be positive, got {slop_ns} ns")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.slop_ns = slop_ns
        self._waiting: dict[str, deque[tuple[int, Item]]] = {
            LEFT: deque(),
            RIGHT: deque(),
        }
        self._capacity = capacity
        self._lock = threading.Lock()
        self.unpaired = 0
        self.paired = 0

    def clear(self) -> None:
        """Drop waiting frames without counting them (the input was switched off)."""
        with self._lock:
            for queue in self._waiting.values():
                queue.clear()

    def add(self, side: str, stamp_ns: int, item: Item) -> StereoPair[Item] | None:
        """Offer one frame; returns a pair when it completes one."""
        if side not in self._waiting:
            raise ValueError(f"side must be {LEFT!r} or {RIGHT!r}, got {side!r}")
        other_side = RIGHT if side == LEFT else LEFT
        with self._lock:
            others = self._waiting[other_side]
            best = min(range(len(others)), key=lambda i: abs(others[i][0] - stamp_ns), default=None)
            if best is not None and abs(others[best][0] - stamp_ns) <= self.slop_ns:
                other_stamp, other_item = others[best]
                # Frames of the other side older than the match can no longer find a partner,
                # nor can older frames of this side.
                for _ in range(best):
                    others.popleft()
                    self.unpaired += 1
                others.popleft()
                mine = self._waiting[side]
                while mine and mine[0][0] <= stamp_ns:
                    mine.popleft()
                    self.unpaired += 1
                self.paired += 1
                if side == LEFT:
                    return StereoPair(item, other_item, other_stamp - stamp_ns)
                return StereoPair(other_item, item, stamp_ns - other_stamp)
            mine = self._waiting[side]
            mine.append((stamp_ns, item))
            while len(mine) > self._capacity:
                mine.popleft()
                self.unpaired += 1
            return None
