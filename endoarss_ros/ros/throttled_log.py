"""Logging that cannot flood and cannot hide.

One bad frame per camera period must not write thirty lines a second, yet every kind of
problem must reach the log: under one key (a drop cause, a topic) at most one line per period
is written, with a count of what was held back, except that the first line of each distinct
reason under a key is always written. Reasons differing only in numbers (a frame's age, its
size) are the same reason.
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Any, Final

MAX_REASONS_PER_KEY: Final = 64
"""Bounds the memory of reasons seen, against a source of endlessly new messages."""

_NUMBER: Final = re.compile(r"\d+(?:\.\d+)?")


def reason_signature(message: str) -> str:
    """What makes two messages the same reason: the text with its numbers blanked."""
    return _NUMBER.sub("#", message)


class ThrottledLog:
    def __init__(self, logger: Any, period_s: float) -> None:
        self._logger = logger
        self._period = period_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, level: str, key: str, message: str) -> None:
        now = time.monotonic()
        signature = reason_signature(message)
        with self._lock:
            seen = self._seen.setdefault(key, set())
            held = 0
            if signature not in seen and len(seen) < MAX_REASONS_PER_KEY:
                seen.add(signature)  # a new reason is written at once; held lines stay held
            elif now - self._last.get(key, -math.inf) < self._period:
                self._held[key] = self._held.get(key, 0) + 1
                return
            else:
                held = self._held.pop(key, 0)
            self._last[key] = now
        if held:
            message += f" ({held} more like this in the last {self._period:g} s)"
        # rclpy fixes a call site's severity at its first call: one call site per level.
        if level == "error":
            self._logger.error(message)
        elif level == "warning":
            self._logger.warning(message)
        else:
            self._logger.info(message)


class BackoffLog:
    """A condition that can last for hours (no camera yet) is written when it starts, then at
    doubling intervals up to ``max_interval_s``, and at once whenever its reason changes;
    :meth:`clear` when it ends. The state itself stays in ``/diagnostics`` every period."""

    def __init__(
        self,
        logger: Any,
        first_interval_s: float = 10.0,
        max_interval_s: float = 600.0,
        clock: Any = time.monotonic,
    ) -> None:
        self._logger = logger
        self._first = first_interval_s
        self._max = max_interval_s
        self._clock = clock
        self._signature: str | None = None
        self._next = -math.inf
        self._interval = first_interval_s

    def warning(self, message: str) -> bool:
        """Write ``message`` if its time has come; returns whether it was written."""
        now = self._clock()
        signature = reason_signature(message)
        if signature != self._signature:
            self._signature, self._interval = signature, self._first
        elif now < self._next:
            return False
        self._next = now + self._interval
        self._logger.warning(f"{message} (next reminder in {self._interval:g} s if it lasts)")
        self._interval = min(2 * self._interval, self._max)
        return True

    def clear(self) -> None:
        self._signature, self._next, self._interval = None, -math.inf, self._first
