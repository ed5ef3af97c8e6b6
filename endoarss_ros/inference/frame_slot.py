"""A one-item mailbox between subscription callbacks and the inference thread.

Callbacks must never wait for inference, and inference must always work on the newest frame:
a queue would do neither (it blocks when full or serves old frames first). The slot holds
the latest offer; an offer that replaces one the inference thread has not taken yet reports
it, so the node can count the replaced frame as dropped.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

Item = TypeVar("Item")


class LatestSlot(Generic[Item]):
    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._item: Item | None = None
        self._closed = False

    def put(self, item: Item) -> bool:
        """Store ``item``; returns True when it replaced an item nobody took."""
        return self.swap(item) is not None

    def swap(self, item: Item) -> Item | None:
        """Store ``item``; returns the item it replaced, which nobody took, if any."""
        with self._ready:
            replaced, self._item = self._item, item
            self._ready.notify()
            return replaced

    def take(self, timeout: float) -> Item | None:
        """The latest item, waiting up to ``timeout`` seconds; None on timeout or close."""
        with self._ready:
            if self._item is None and not self._closed:
                self._ready.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> bool:
        """Discard the waiting item, if any; returns True when there was one."""
        with self._ready:
            had_item = self._item is not None
            self._item = None
            return had_item

    def close(self) -> None:
        """Wake a waiting taker, for shutdown."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
