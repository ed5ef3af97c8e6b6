"""Activity smoothing: raw when off, averaging with ema, switching late with hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from endoarss_ros.inference.smoothing import ActivitySmoother, SmoothingConfig

A = np.array([0.7, 0.2, 0.1], dtype=np.float32)
B = np.array([0.1, 0.8, 0.1], dtype=np.float32)


def test_none_reports_every_frame_as_is():
    smoother = ActivitySmoother(SmoothingConfig(method="none"))
    for frame in (A, B, A):
        result = smoother.update(frame)
        assert result.class_id == result.raw_class_id == int(np.argmax(frame))
        assert result.confidence == result.raw_confidence == pytest.approx(frame.max())
        np.testing.assert_array_equal(result.probabilities, frame)


def test_ema_weights_the_newest_frame_by_alpha():
    smoother = ActivitySmoother(SmoothingConfig(method="ema", ema_alpha=0.25))
    smoother.update(A)
    result = smoother.update(B)
    expected = 0.25 * B + 0.75 * A
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-6)
    assert result.class_id == 0, "one frame of B must not outvote the history"
    assert result.raw_class_id == 1
    assert result.raw_confidence == pytest.approx(0.8)
    assert result.confidence == pytest.approx(expected[0])


def test_hysteresis_switches_only_after_enough_leading_frames():
    smoother = ActivitySmoother(
        SmoothingConfig(method="hysteresis", hysteresis_frames=3, hysteresis_margin=0.2)
    )
    assert smoother.update(A).class_id == 0
    assert [smoother.update(B).class_id for _ in range(3)] == [0, 0, 1]
    # A lead smaller than the margin does not count.
    close = np.array([0.45, 0.55, 0.0], dtype=np.float32)
    smoother.reset()
    smoother.update(np.array([0.6, 0.4, 0.0], dtype=np.float32))
    assert [smoother.update(close).class_id for _ in range(5)] == [0] * 5


def test_interrupted_lead_starts_counting_again():
    smoother = ActivitySmoother(
        SmoothingConfig(method="hysteresis", hysteresis_frames=2, hysteresis_margin=0.0)
    )
    smoother.update(A)
    assert [smoother.update(f).class_id for f in (B, A, B, B)] == [0, 0, 0, 1]


def test_reset_and_method_change_forget_the_history():
    smoother = ActivitySmoother(SmoothingConfig(method="ema", ema_alpha=0.1))
    smoother.update(A)
    smoother.reset()
    np.testing.assert_array_equal(smoother.update(B).probabilities, B)
    smoother.configure(SmoothingConfig(method="ema_hysteresis", ema_alpha=0.1))
    np.testing.assert_array_equal(smoother.update(A).probabilities, A)


def test_ema_with_hysteresis_reports_a_class_of_the_smoothed_distribution():
    smoother = ActivitySmoother(
        SmoothingConfig(method="ema_hysteresis", ema_alpha=0.5, hysteresis_frames=2)
    )
    smoother.update(A)
    results = [smoother.update(B) for _ in range(4)]
    assert results[-1].class_id == 1
    for result in results:
        assert result.confidence == pytest.approx(result.probabilities[result.class_id])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "median"}, "smoothing.method"),
        ({"ema_alpha": 0.0}, "smoothing.ema_alpha"),
        ({"ema_alpha": 1.5}, "smoothing.ema_alpha"),
        ({"hysteresis_frames": 0}, "smoothing.hysteresis_frames"),
        ({"hysteresis_margin": 1.0}, "smoothing.hysteresis_margin"),
        ({"ema_alpha": float("nan")}, "smoothing.ema_alpha"),
    ],
)
def test_bad_settings_name_the_setting(changes, message):
    with pytest.raises(ValueError, match=message):
        SmoothingConfig(**changes)
