"""The latest-frame slot: a newer frame replaces an untaken one, and says so."""

from __future__ import annotations

import threading
import time

from endoarss_ros.inference.frame_slot import LatestSlot


def test_newer_item_replaces_an_untaken_one():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.take(timeout=0.0) == 2
    assert slot.take(timeout=0.0) is None
    assert slot.put(3) is False


def test_take_waits_for_a_put_from_another_thread():
    slot: LatestSlot[str] = LatestSlot()
    threading.Timer(0.05, slot.put, args=("frame",)).start()
    started = time.monotonic()
    assert slot.take(timeout=5.0) == "frame"
    assert time.monotonic() - started < 4.0


def test_close_wakes_a_waiting_taker():
    slot: LatestSlot[str] = LatestSlot()
    threading.Timer(0.05, slot.close).start()
    started = time.monotonic()
    assert slot.take(timeout=5.0) is None
    assert time.monotonic() - started < 4.0
    assert slot.closed


def test_clear_discards_the_waiting_item():
    slot: LatestSlot[int] = LatestSlot()
    slot.put(1)
    assert slot.clear() is True
    assert slot.clear() is False
    assert slot.take(timeout=0.0) is None


def test_swap_returns_the_item_nobody_took():
    slot = LatestSlot()
    assert slot.swap("a") is None
    assert slot.swap("b") == "a"
    assert slot.take(timeout=0.0) == "b"
    assert slot.swap("c") is None
