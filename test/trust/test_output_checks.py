"""Output checks: instrument classes found by name, the instrument fraction measured inside the
field of view, quiet with instruments in view and firing without, on ground-truth masks and on
the demo model's, and configuration errors that name the field."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from endoarss_ros.data.classes import MTLENDOVIS_CLASSES, MTLESD_CLASSES
from endoarss_ros.data.synthetic.dataset import generate_frame
from endoarss_ros.data.synthetic.scene import SYNTHETIC_CLASSES, SegClass
from endoarss_ros.trust.image_checks import ImageQualityChecker, Level
from endoarss_ros.trust.output_checks import (
    OutputCheckConfig,
    instrument_class_ids,
    instrument_fraction,
)
from endoarss_ros.validation import ValidationError

SIZE = (240, 320)
SEED = 37  # a seed no other trust test or the demo model's training used
DEMO = Path(__file__).resolve().parents[2] / "checkpoints" / "demo" / "endoarss_demo.safetensors"
SYNTHETIC_INSTRUMENTS = (SegClass.SHAFT, SegClass.WRIST, SegClass.JAWS)


def test_instrument_classes_are_found_by_name():
    assert instrument_class_ids(SYNTHETIC_CLASSES.segmentation) == SYNTHETIC_INSTRUMENTS
    assert instrument_class_ids(MTLESD_CLASSES.segmentation) == (2, 5, 6)  # knife, forceps, knife
    assert instrument_class_ids(MTLENDOVIS_CLASSES.segmentation) == ()  # placeholders only
    config = OutputCheckConfig(instrument_classes=" Needle ,  SHAFT")
    assert config.instrument_classes == "needle,shaft"
    assert instrument_class_ids(SYNTHETIC_CLASSES.segmentation, config) == (1, 4)
    assert instrument_class_ids(("Tool  Tip", "x"), OutputCheckConfig("tool tip")) == (0,)


def _frames(count: int, instruments: bool):
    frames = (generate_frame(SEED, i, SIZE, instruments=instruments) for i in range(count))
    # Independent frames are occasionally drawn idle without any instrument: keep real views.
    return [f for f in frames if f.scene.instruments or not instruments]


def test_ground_truth_masks_with_and_without_instruments():
    checker = ImageQualityChecker()
    ids = instrument_class_ids(SYNTHETIC_CLASSES.segmentation)
    for frame in _frames(12, instruments=True):
        view = checker(frame.image).field_of_view
        result = instrument_fraction(frame.mask, ids, field_of_view=view)
        assert result.level == Level.OK and result.value > 0.01, result
    for frame in _frames(12, instruments=False):
        view = checker(frame.image).field_of_view
        result = instrument_fraction(frame.mask, ids, field_of_view=view)
        assert result.value == 0.0 and result.level == Level.WARN, result
        assert result.describe() == "instrument_fraction 0 <= 0.01"


def test_only_the_field_of_view_counts():
    # Inside a lit disc: tissue and a shaft covering 5 % of it; outside: "shaft" everywhere,
    # which is what a model may paint on the black border that training ignored.
    rows, cols = np.indices((200, 200))
    inside = (rows - 100) ** 2 + (cols - 100) ** 2 < 90**2
    mask = np.where(inside, SegClass.TISSUE, SegClass.SHAFT).astype(np.uint8)
    shaft = inside & (np.abs(cols - 100) <= 3)  # 7 columns of a 180-px disc: 5 %
    mask[shaft] = SegClass.SHAFT
    whole = instrument_fraction(mask, SYNTHETIC_INSTRUMENTS)
    assert whole.value > 0.2
    exact = instrument_fraction(mask, SYNTHETIC_INSTRUMENTS, field_of_view=inside)
    assert 0.04 < exact.value < 0.06 and exact.level == Level.OK
    # The view as the image checks find it, at their analysis size: the mask is resized to it.
    image = np.zeros((200, 200, 3), np.uint8)
    image[inside] = (170, 90, 80)
    view = ImageQualityChecker()(image).field_of_view
    assert view.shape == (200, 200)  # a frame smaller than the analysis size is not enlarged
    found = instrument_fraction(mask, SYNTHETIC_INSTRUMENTS, field_of_view=view)
    assert found.value == pytest.approx(exact.value, abs=0.005)
    # Unlabelled pixels (255) are neither instrument nor anything else.
    mask[inside & ~shaft] = 255
    assert instrument_fraction(mask, SYNTHETIC_INSTRUMENTS, field_of_view=inside).value == 1.0


def test_levels_thresholds_and_unmeasurable_values():
    empty = np.zeros((40, 50), np.uint8)
    config = OutputCheckConfig(instrument_fraction_warn=0.05, instrument_fraction_error=0.02)
    mask = empty.copy()
    mask[:, :3] = SegClass.JAWS  # 6 % instrument
    assert instrument_fraction(mask, SYNTHETIC_INSTRUMENTS, config).level == Level.OK
    mask[:, 2] = SegClass.TISSUE  # 4 %
    assert instrument_fraction(mask, SYNTHETIC_INSTRUMENTS, config).level == Level.WARN
    result = instrument_fraction(empty, SYNTHETIC_INSTRUMENTS, config)
    assert result.level == Level.ERROR and result.threshold == 0.02 and result.fires_below
    # 0 turns a level off: not even an empty mask reaches it.
    off = OutputCheckConfig(instrument_fraction_warn=0, instrument_fraction_error=0)
    assert instrument_fraction(empty, SYNTHETIC_INSTRUMENTS, off).level == Level.OK
    errors_only = OutputCheckConfig(instrument_fraction_warn=0, instrument_fraction_error=0.01)
    assert instrument_fraction(empty, SYNTHETIC_INSTRUMENTS, errors_only).level == Level.ERROR
    # Not measurable: no instrument class in the checkpoint, or nothing labelled in view.
    for result in (
        instrument_fraction(empty, ()),
        instrument_fraction(np.full((40, 50), 255, np.uint8), SYNTHETIC_INSTRUMENTS),
        instrument_fraction(empty, SYNTHETIC_INSTRUMENTS, field_of_view=np.zeros((8, 8), bool)),
    ):
        assert math.isnan(result.value) and result.level == Level.OK


@pytest.mark.parametrize(
    ("mask", "ids", "view", "message"),
    [
        (np.zeros((4, 4), np.int32), (1,), None, "H x W uint8 mask"),
        (np.zeros((4, 4, 1), np.uint8), (1,), None, "H x W uint8 mask"),
        (np.zeros((4, 4), np.uint8), (255,), None, r"ids must lie in \[0, 255\)"),
        (np.zeros((4, 4), np.uint8), (-1,), None, r"ids must lie in \[0, 255\)"),
        (np.zeros((4, 4), np.uint8), (1,), np.ones((4, 4, 3), bool), "2-D array"),
    ],
)
def test_bad_inputs_are_refused(mask, ids, view, message):
    with pytest.raises(ValueError, match=message):
        instrument_fraction(mask, ids, field_of_view=view)


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        (
            {"instrument_fraction_warn": 0.01, "instrument_fraction_error": 0.02},
            "trust.output.instrument_fraction_error",
            "must be at most instrument_fraction_warn",
        ),
        ({"instrument_fraction_warn": 1.5}, "trust.output.instrument_fraction_warn", "[0, 1]"),
        ({"instrument_classes": "shaft,SHAFT"}, "trust.output.instrument_classes", "no repeats"),
        ({"instrument_classes": 3}, "trust.output.instrument_classes", "got 3"),
    ],
)
def test_config_errors_name_the_field(settings, field, message):
    with pytest.raises(ValidationError) as info:
        OutputCheckConfig(**settings)
    assert info.value.field == field
    assert message in str(info.value) and str(info.value).startswith(field)
    assert OutputCheckConfig.from_dict(OutputCheckConfig().to_dict()) == OutputCheckConfig()


def test_the_demo_model_is_caught_without_instruments_in_view():
    """Frames with every instrument withdrawn are clean and in distribution, so only the
    model's mask tells; over the whole mask the black border's arbitrary classes hide it."""
    from endoarss_ros.inference.predictor import Predictor

    predictor = Predictor(DEMO, device="cpu", threads=1)
    ids = instrument_class_ids(predictor.info.segmentation_names)
    assert ids == SYNTHETIC_INSTRUMENTS
    checker = ImageQualityChecker()

    def levels(frames):
        masks = [p.mask for p in predictor.predict([f.image for f in frames])]
        views = [checker(f.image).field_of_view for f in frames]
        return [
            instrument_fraction(mask, ids, field_of_view=view).level
            for mask, view in zip(masks, views, strict=True)
        ]

    visible = levels(_frames(10, instruments=True))
    withdrawn = levels(_frames(10, instruments=False))
    assert visible.count(Level.OK) == len(visible) >= 8
    assert withdrawn.count(Level.WARN) >= 9, withdrawn
