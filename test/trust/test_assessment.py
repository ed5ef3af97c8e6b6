"""The combined trust level and its reasons, and the hysteresis diagnostics latch on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from endoarss_ros.data.synthetic.dataset import generate_frame
from endoarss_ros.trust.assessment import (
    LevelHysteresis,
    Reason,
    TrustConfig,
    TrustEvaluator,
    assess,
)
from endoarss_ros.trust.image_checks import ImageQualityChecker, ImageQualityConfig, Level
from endoarss_ros.trust.ood import FeatureAccumulator
from endoarss_ros.validation import ValidationError, flat_fields, from_flat

OK, WARN, ERROR = Level.OK, Level.WARN, Level.ERROR


@pytest.fixture(scope="module")
def clean_frame() -> np.ndarray:
    return generate_frame(53, 0, (256, 320)).image


def test_no_signals_is_ok():
    result = assess(TrustConfig())
    assert result.level == OK and result.ok and result.reasons == () and result.summary() == "OK"


@pytest.mark.parametrize(
    ("score", "level", "threshold"), [(0.5, OK, None), (1.0, WARN, 1.0), (2.5, ERROR, 2.0)]
)
def test_ood_score_levels(score, level, threshold):
    result = assess(TrustConfig(), ood_score=score)
    assert result.level == level and result.ood_score == score
    if threshold is None:
        assert result.reasons == ()
    else:
        assert result.reasons == (Reason("ood", score, threshold, level),)


def test_confidence_levels():
    config = TrustConfig(confidence_warn=0.6, confidence_error=0.3)
    assert assess(config, confidence=0.9).level == OK
    low = assess(config, confidence=0.45)
    assert low.level == WARN and low.reasons[0].describe() == "confidence 0.45 < 0.6"
    assert assess(config, confidence=0.2).level == ERROR
    # By default a low calibrated confidence warns but never stops anything on its own.
    assert assess(TrustConfig(), confidence=0.01).level == WARN


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_broken_numbers_are_errors(value):
    assert assess(TrustConfig(), ood_score=value).level == ERROR
    assert assess(TrustConfig(), confidence=value).level == ERROR
    json.dumps(assess(TrustConfig(), ood_score=value).to_dict(), allow_nan=False)


def test_reasons_combine_worst_first(clean_frame):
    black = np.zeros_like(clean_frame)
    image = ImageQualityChecker()(black)
    result = assess(TrustConfig(), image, ood_score=1.2, confidence=0.3)
    assert result.level == ERROR
    assert [r.check for r in result.reasons] == ["dark_blocks", "ood", "confidence"]
    assert [r.level for r in result.reasons] == [ERROR, WARN, WARN]
    assert result.reasons[0].value == 25 and result.reasons[0].threshold == 21
    assert result.summary() == ("ERROR: dark_blocks 25 >= 21; ood 1.2 >= 1; confidence 0.3 < 0.5")
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["level"] == "ERROR" and data["reasons"][0]["check"] == "dark_blocks"
    assert data["checks"]["blur"] is None  # not measurable on a black frame


def _statistics(dim: int = 8):
    rng = np.random.default_rng(0)
    accumulator = FeatureAccumulator(dim)
    accumulator.add(rng.standard_normal((500, dim)))
    return accumulator.finish()


def test_evaluator_uses_what_it_has(clean_frame):
    image_only = TrustEvaluator()
    result = image_only(clean_frame, features=np.zeros(8), confidence=0.9)
    assert result.level == OK and result.ood_score is None and result.image is not None
    stats = _statistics()
    evaluator = TrustEvaluator(statistics=stats)
    near = evaluator(clean_frame, features=np.zeros(8), confidence=0.9)
    far = evaluator(clean_frame, features=np.full(8, 10.0), confidence=0.9)
    assert near.level == OK and near.ood_score is not None and near.ood_score < 1.0
    assert far.level == ERROR and far.reasons[0].check == "ood"
    assert evaluator(None, features=np.zeros(8)).image is None
    # A new configuration reaches the image checks too.
    evaluator.config = TrustConfig(image=ImageQualityConfig(disabled="blur"))
    assert "blur" not in {c.name for c in evaluator(clean_frame).image.checks}


def test_hysteresis_ignores_single_bad_frames():
    latch = LevelHysteresis()
    levels = [latch.update(level) for level in [OK, ERROR, OK, OK, ERROR, OK, OK, OK, ERROR, OK]]
    assert levels == [OK] * 10


def test_hysteresis_latches_error_and_clears_after_clean_frames():
    latch = LevelHysteresis(window=5, error_frames=3, clear_frames=5)
    seen = [latch.update(level) for level in [ERROR, OK, ERROR, ERROR]]
    assert seen == [OK, OK, OK, ERROR]  # 3 of the last 5
    # Good frames: held for five consecutive ones, then down to what the window supports.
    seen = [latch.update(OK) for _ in range(6)]
    assert seen == [ERROR, ERROR, ERROR, ERROR, OK, OK]
    # One bad frame inside a clean run restarts the count.
    latch = LevelHysteresis(window=5, error_frames=3, clear_frames=5)
    for level in [ERROR] * 3 + [OK] * 4 + [ERROR] + [OK] * 4:
        latch.update(level)
    assert latch.level == ERROR and latch.update(OK) == OK


def test_hysteresis_warn_and_step_down():
    latch = LevelHysteresis(window=5, error_frames=3, warn_frames=2, clear_frames=3)
    assert [latch.update(level) for level in [WARN, WARN]] == [OK, WARN]
    assert [latch.update(ERROR) for _ in range(3)] == [WARN, WARN, ERROR]
    # From ERROR to WARN once three frames are below ERROR and the window no longer holds three.
    assert [latch.update(WARN) for _ in range(3)] == [ERROR, ERROR, WARN]
    assert latch.state() == {"latched": 1, "frames_in_window": 5, "frames_below_latched": 0}
    latch.reset()
    assert latch.level == OK and latch.state()["frames_in_window"] == 0


def test_hysteresis_from_config_and_bad_arguments():
    latch = LevelHysteresis.from_config(
        TrustConfig(hysteresis_window=3, hysteresis_error_frames=1, hysteresis_clear_frames=2)
    )
    assert latch.update(ERROR) == ERROR
    with pytest.raises(ValueError, match="window must be a positive integer"):
        LevelHysteresis(window=0)
    with pytest.raises(ValueError, match="at most window"):
        LevelHysteresis(window=3, error_frames=4)


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"ood_warn": 0}, "trust.ood_warn", "must be a number in (0, 1000000]"),
        ({"ood_error": 0.5}, "trust.ood_error", "must be at least ood_warn (1)"),
        ({"confidence_error": 0.7}, "trust.confidence_error", "must be at most confidence_warn"),
        ({"confidence_warn": 1.5}, "trust.confidence_warn", "a number in [0, 1]"),
        ({"hysteresis_error_frames": 6}, "trust.hysteresis_error_frames", "at most hysteresis"),
        ({"hysteresis_window": 0}, "trust.hysteresis_window", "an integer in [1, 1000]"),
        ({"hysteresis_clear_frames": True}, "trust.hysteresis_clear_frames", "got True"),
    ],
)
def test_config_errors_name_the_field(settings, field, message):
    with pytest.raises(ValidationError) as info:
        TrustConfig(**settings)
    assert info.value.field == field and message in str(info.value)


def test_config_nests_the_image_checks():
    config = TrustConfig.from_dict({"ood_warn": 1.5, "ood_error": 3, "image": {"blur_warn": 0.1}})
    assert config.image.blur_warn == 0.1 and TrustConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValidationError) as info:
        TrustConfig.from_dict({"image": {"blur_error": 0.2}})
    assert info.value.field == "trust.image.blur_error"
    # The flat (parameter) view: every threshold a dotted name with a rule and a range.
    names = {f.name for f in flat_fields(TrustConfig)}
    assert {"ood_warn", "image.blur_warn", "image.dark_blocks_error"} <= names
    flat = from_flat(TrustConfig, {"image.haze_warn": 0.6, "ood_error": 4.0})
    assert flat.image.haze_warn == 0.6 and flat.ood_error == 4.0
