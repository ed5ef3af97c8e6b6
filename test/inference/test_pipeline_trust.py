"""The trust the frame pipeline attaches to every frame (what the node publishes on ~/trust and
`bag infer` records): image checks on each eye with the worst eye deciding, hysteresis across
frames, thresholds changed while it runs, and the signals a checkpoint allows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from endoarss_ros.data.synthetic.dataset import generate_frame
from endoarss_ros.inference.options import PipelineConfig
from endoarss_ros.inference.pipeline import FramePipeline
from endoarss_ros.inference.smoothing import SmoothingConfig
from endoarss_ros.trust.assessment import TrustConfig, message_fields
from endoarss_ros.trust.image_checks import Level
from endoarss_ros.trust.output_checks import OutputCheckConfig

SEED = 47  # unseen by training and by the other trust tests
IMMEDIATE = {"hysteresis_window": 1, "hysteresis_error_frames": 1, "hysteresis_warn_frames": 1}


@pytest.fixture(scope="module")
def clean() -> list[np.ndarray]:
    return [generate_frame(SEED, index, (192, 240)).image for index in range(8)]


def black() -> np.ndarray:
    return np.zeros((192, 240, 3), np.uint8)


def pipeline_for(predictor, input_mode: str = "mono", output=None, **trust) -> FramePipeline:
    """A random model's masks say nothing about instruments: the output checks are off unless
    a test turns them on."""
    config = PipelineConfig(
        input_mode=input_mode,
        smoothing=SmoothingConfig(method="none"),
        trust=TrustConfig(output=output or OutputCheckConfig(instrument_fraction_warn=0), **trust),
    )
    return FramePipeline(predictor, config)


def test_a_clean_frame_is_ok_and_a_black_one_is_an_error_with_its_reason(cpu_predictor, clean):
    pipeline = pipeline_for(cpu_predictor)
    result = pipeline.run([clean[0]])
    assert result.trust.level == Level.OK, result.trust.summary()
    assert result.trust.image is not None
    assert result.trust_s > 0

    result = pipeline.run([black()])
    assert result.trust.level == Level.ERROR
    assert result.trust.reasons[0].level == Level.ERROR
    assert "dark_blocks" in [reason.check for reason in result.trust.reasons]
    assert result.trust.summary().startswith("ERROR: ")


def test_without_statistics_or_calibration_only_the_image_checks_decide(cpu_predictor, clean):
    assert cpu_predictor.feature_statistics is None and not cpu_predictor.info.calibrated
    result = pipeline_for(cpu_predictor).run([clean[1]])
    assert result.trust.ood_score is None
    assert result.trust.confidence is None  # an uncalibrated probability is no trust signal


def test_hysteresis_latches_error_after_three_of_five_and_clears_after_five(cpu_predictor, clean):
    pipeline = pipeline_for(cpu_predictor)
    sequence = [clean[0], black(), clean[1], black(), black(), *clean[2:8]]
    latched = [pipeline.run([image]).trust_latched for image in sequence]
    assert latched[:4] == [Level.OK] * 4  # two errors in five frames are not enough
    assert latched[4] == Level.ERROR  # the third
    assert latched[5:9] == [Level.ERROR] * 4  # four clean frames do not clear it
    assert latched[9] == Level.OK  # the fifth does
    assert pipeline.trust_latched == Level.OK


def test_reset_trust_forgets_the_latched_level(cpu_predictor, clean):
    pipeline = pipeline_for(cpu_predictor, **IMMEDIATE)
    assert pipeline.run([black()]).trust_latched == Level.ERROR
    pipeline.reset_trust()
    assert pipeline.trust_latched == Level.OK


def test_the_worst_eye_decides_a_stereo_frame(cpu_predictor, clean):
    pipeline = pipeline_for(cpu_predictor, "stereo")
    assert pipeline.run([clean[0], clean[1]]).trust.level == Level.OK
    result = pipeline.run([clean[0], black()])
    assert result.trust.level == Level.ERROR
    side_by_side = pipeline_for(cpu_predictor, "side_by_side")
    result = side_by_side.run([np.concatenate([black(), clean[2]], axis=1)])
    assert result.trust.level == Level.ERROR


def test_thresholds_change_while_it_runs(cpu_predictor, clean):
    pipeline = pipeline_for(cpu_predictor)
    assert pipeline.run([black()]).trust.level == Level.ERROR
    config = pipeline.config
    image = dataclasses.replace(config.trust.image, disabled="dark_blocks,contrast,blocked_blocks")
    lenient = dataclasses.replace(config.trust, image=image)
    pipeline.configure(dataclasses.replace(config, trust=lenient))
    result = pipeline.run([black()])
    assert "dark_blocks" not in [reason.check for reason in result.trust.reasons]


def test_hysteresis_settings_apply_at_once(cpu_predictor):
    pipeline = pipeline_for(cpu_predictor)
    assert pipeline.run([black()]).trust_latched == Level.OK  # one of three needed
    config = pipeline.config
    strict = dataclasses.replace(config.trust, **IMMEDIATE)
    pipeline.configure(dataclasses.replace(config, trust=strict))
    assert pipeline.run([black()]).trust_latched == Level.ERROR


def test_message_fields_carry_the_reasons_and_every_check(cpu_predictor):
    result = pipeline_for(cpu_predictor).run([black()])
    fields = message_fields(result.trust, result.trust_latched)
    assert fields["level"] == int(Level.ERROR)
    assert fields["latched_level"] == int(result.trust_latched)
    assert fields["reasons"] == [reason.check for reason in result.trust.reasons]
    assert fields["reason_levels"].dtype == np.uint8
    assert len(fields["reason_values"]) == len(fields["reasons"])
    assert len(fields["check_names"]) == len(fields["check_values"]) > 5
    assert np.isnan(fields["ood_score"]) and np.isnan(fields["confidence"])
    assert fields["summary"] == result.trust.summary()


def test_a_checkpoint_with_statistics_and_calibration_adds_both_signals(tmp_path, clean):
    from endoarss_ros.inference import Predictor, write_random_checkpoint

    path = write_random_checkpoint(
        tmp_path / "trusted.safetensors", input_size=(56, 70), feature_statistics=True
    )
    predictor = Predictor(path, device="cpu")
    assert predictor.info.feature_statistics and predictor.feature_statistics is not None
    pipeline = pipeline_for(predictor, "stereo", ood_warn=1e6, ood_error=1e6)
    left, right = clean[0], clean[1]
    result = pipeline.run([left, right])
    predictions = predictor.predict([left, right])
    scores = [predictor.feature_statistics.score(p.features) for p in predictions]
    assert result.trust.ood_score == pytest.approx(max(scores), rel=1e-5)  # the worse eye
    # A random model is not calibrated: no confidence signal, however low its probability.
    assert result.trust.confidence is None

    strict = pipeline_for(predictor, ood_warn=1e-6, ood_error=1e-6)
    result = strict.run([left])
    assert result.trust.level == Level.ERROR
    assert [r.check for r in result.trust.reasons] == ["ood"]


def test_the_predicted_mask_is_checked_for_instruments(cpu_predictor, clean):
    always = OutputCheckConfig(instrument_fraction_warn=1.0)
    result = pipeline_for(cpu_predictor, output=always).run([clean[0]])
    assert [c.name for c in result.trust.outputs] == ["instrument_fraction"]
    assert [r.check for r in result.trust.reasons] == ["instrument_fraction"]
    assert result.trust.level == Level.WARN
    fields = message_fields(result.trust, result.trust_latched)
    assert fields["check_names"][-1] == "instrument_fraction"
    # A checkpoint whose classes name no instrument: nothing to measure, no output check.
    none = OutputCheckConfig(instrument_classes="scalpel", instrument_fraction_warn=1.0)
    assert pipeline_for(cpu_predictor, output=none).run([clean[0]]).trust.outputs == ()
