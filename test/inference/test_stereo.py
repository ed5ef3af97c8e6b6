"""Approximate-stamp pairing of two independently stamped eyes."""

from __future__ import annotations

import random

import pytest

from endoarss_ros.inference.stereo import LEFT, RIGHT, StereoPairer

MS = 1_000_000
PERIOD = 33 * MS


def test_eyes_a_few_milliseconds_apart_are_paired_in_either_arrival_order():
    pairer: StereoPairer[str] = StereoPairer(slop_ns=15 * MS)
    assert pairer.add(LEFT, 0, "L0") is None
    pair = pairer.add(RIGHT, 4 * MS, "R0")
    assert pair is not None
    assert (pair.left, pair.right, pair.skew_ns) == ("L0", "R0", 4 * MS)
    assert pairer.add(RIGHT, PERIOD - 3 * MS, "R1") is None
    pair = pairer.add(LEFT, PERIOD, "L1")
    assert pair is not None
    assert (pair.left, pair.right, pair.skew_ns) == ("L1", "R1", -3 * MS)
    assert pairer.unpaired == 0


def test_identical_stamps_pair():
    pairer: StereoPairer[int] = StereoPairer(slop_ns=1)
    pairer.add(LEFT, 5, 1)
    assert pairer.add(RIGHT, 5, 2) is not None


def test_frames_beyond_the_slop_are_not_paired_and_are_counted():
    pairer: StereoPairer[str] = StereoPairer(slop_ns=15 * MS, capacity=3)
    assert pairer.add(LEFT, 0, "L0") is None
    assert pairer.add(RIGHT, 20 * MS, "R0") is None
    # A later left frame matches R0; L0 can no longer be paired.
    pair = pairer.add(LEFT, 25 * MS, "L1")
    assert pair is not None and (pair.left, pair.right) == ("L1", "R0")
    assert pairer.unpaired == 1


def test_a_silent_eye_does_not_grow_memory():
    pairer: StereoPairer[int] = StereoPairer(slop_ns=15 * MS, capacity=4)
    for index in range(10):
        assert pairer.add(LEFT, index * PERIOD, index) is None
    assert pairer.unpaired == 6


def test_jittered_stream_pairs_every_frame():
    rng = random.Random(1)
    pairer: StereoPairer[int] = StereoPairer(slop_ns=15 * MS)
    pairs = []
    for index in range(300):
        left = index * PERIOD + rng.randint(-2, 2) * MS
        right = index * PERIOD + rng.randint(1, 8) * MS
        events = [(LEFT, left), (RIGHT, right)]
        rng.shuffle(events)
        for side, stamp in events:
            pair = pairer.add(side, stamp, index)
            if pair is not None:
                pairs.append(pair)
    assert [(p.left, p.right) for p in pairs] == [(i, i) for i in range(300)]
    assert pairer.unpaired == 0


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="slop"):
        StereoPairer(slop_ns=0)
    with pytest.raises(ValueError, match="side"):
        StereoPairer(slop_ns=1).add("middle", 0, None)
