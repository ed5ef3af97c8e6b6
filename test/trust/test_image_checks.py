"""Image-quality checks: quiet on clean synthetic frames, each one firing on the corruption it
is for, any frame size, and configuration errors that name the field."""

from __future__ import annotations

import numpy as np
import pytest

from endoarss_ros.data.corruptions import corrupt
from endoarss_ros.data.synthetic.dataset import generate_frame
from endoarss_ros.trust.image_checks import (
    CHECK_NAMES,
    BlockState,
    ImageQualityChecker,
    ImageQualityConfig,
    Level,
    check_image,
    shrink,
)
from endoarss_ros.validation import ValidationError

SIZE = (256, 320)  # rendered small for speed; the checks shrink every frame to 240 rows
SEED = 31  # a seed no other trust test or the demo model's training used


@pytest.fixture(scope="module")
def clean_frames() -> list[np.ndarray]:
    return [generate_frame(SEED, index, SIZE).image for index in range(20)]


@pytest.fixture(scope="module")
def checker() -> ImageQualityChecker:
    return ImageQualityChecker()


def test_clean_frames_stay_quiet(clean_frames, checker):
    results = [checker(frame) for frame in clean_frames]
    assert all(result.level < Level.ERROR for result in results)
    fired = [result.fired for result in results if result.fired]
    assert len(fired) <= 1, fired  # <= 5 % of clean frames may warn
    assert {c.name for c in results[0].checks} == set(CHECK_NAMES)


# (check, corruption, severities): each check against the corruption it exists for.
CASES = [
    ("blur", "gaussian_blur", (3, 5)),
    ("blur", "defocus_blur", (3, 5)),
    ("blur", "motion_blur", (3, 5)),
    ("haze", "smoke", (4, 5)),
    ("contrast", "contrast", (4, 5)),
    ("blocked_blocks", "contrast", (5,)),
    ("saturated", "over_exposure", (3, 5)),
    ("saturated", "brightness", (5,)),
    ("specular", "specular_glare", (3, 5)),
    ("blood_drops", "bleeding", (3, 5)),
    ("noise", "gaussian_noise", (3, 5)),
    ("noise", "shot_noise", (3, 5)),
    ("noise", "impulse_noise", (3, 5)),
    ("noise", "speckle_noise", (3, 5)),
    ("flat_neighbours", "pixelate", (3, 5)),
]


@pytest.mark.parametrize(("check", "corruption", "severities"), CASES)
def test_each_check_fires_on_its_corruption(clean_frames, checker, check, corruption, severities):
    for index in (0, 1, 2):
        for severity in severities:
            frame = corrupt(clean_frames[index], corruption, severity, np.random.default_rng(index))
            result = checker(frame)[check]
            assert result.level >= Level.WARN, (index, severity, result)
            assert checker(clean_frames[index])[check].level == Level.OK


def test_low_visibility_blocks_fire_on_a_faint_picture(clean_frames, checker):
    # A tenth of the contrast of a clean frame (contrast at severity 4): too faint to read in
    # most blocks, yet not the featureless blocks the blocked check wants.
    frame = corrupt(clean_frames[0], "contrast", 4, np.random.default_rng(0))
    result = checker(frame)
    assert result["low_visibility_blocks"].level >= Level.WARN, result["low_visibility_blocks"]
    assert np.count_nonzero(result.blocks == BlockState.LOW_VISIBILITY) >= 3


def test_black_frame_is_dark_everywhere(checker):
    result = checker(np.zeros((1024, 1280, 3), np.uint8))
    assert result["dark_blocks"].value == 25 and result["dark_blocks"].level == Level.ERROR
    assert (result.blocks == BlockState.DARK).all()
    # Nothing lit: the frame measures are not measurable, and say so with NaN at level OK.
    for name in ("blur", "contrast", "saturated", "specular", "haze", "blood", "blood_drops"):
        assert np.isnan(result[name].value) and result[name].level == Level.OK
    assert result.level == Level.ERROR and result.fired[0].name == "dark_blocks"


def test_white_frame_is_over_exposed(checker):
    result = checker(np.full((480, 640, 3), 255, np.uint8))
    assert result["overexposed_blocks"].level == Level.ERROR
    assert result["saturated"].value == 1.0 and result["saturated"].level == Level.ERROR
    assert result["specular"].level == Level.ERROR
    assert np.isnan(result["blur"].value)  # featureless: no sharpness to measure


def test_specular_glare_frame(clean_frames, checker):
    # Hand-made glare: white discs covering about 12 % of a clean frame.
    frame = clean_frames[3].copy()
    rng = np.random.default_rng(4)
    rows, cols = np.indices(frame.shape[:2])
    for _ in range(12):
        y, x = rng.uniform(0.25, 0.75) * SIZE[0], rng.uniform(0.25, 0.75) * SIZE[1]
        frame[(rows - y) ** 2 + (cols - x) ** 2 < 18**2] = 255
    result = checker(frame)
    assert result["specular"].level >= Level.WARN, result["specular"]
    assert result["specular"].value > 0.05


def _disc_mask(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 < radius**2


BLOOD = (96, 8, 10)


def test_a_smear_of_blood_over_the_view_is_blood_not_drops(clean_frames, checker):
    # One large smear (a third of the frame): no spatter, but the view is hidden.
    frame = clean_frames[4].copy()
    frame[_disc_mask(SIZE, (128, 160), 90)] = BLOOD
    result = checker(frame)
    assert result["blood"].level == Level.ERROR, result["blood"]
    assert result["blood_drops"].value == 1 and result["blood_drops"].level == Level.OK


def test_blood_drops_count_separate_blobs_only(checker):
    # Pink tissue with twelve dark-red drops on a 3 x 4 lattice: twelve blobs.
    frame = np.empty((*SIZE, 3), np.uint8)
    frame[:] = (190, 95, 80)
    rng = np.random.default_rng(5)
    frame = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8)
    drops = frame.copy()
    for row in range(3):
        for col in range(4):
            drops[_disc_mask(SIZE, (50 + 75 * row, 45 + 77 * col), 9)] = BLOOD
    assert checker(drops)["blood_drops"].value == 12
    assert checker(drops)["blood_drops"].level == Level.WARN
    assert checker(frame)["blood_drops"].value == 0
    # A pool cut in two by a thin instrument shaft and pierced by impulse noise is one blob.
    pool = frame.copy()
    pool[_disc_mask(SIZE, (128, 160), 40)] = BLOOD
    pool[:, 158:162] = (40, 40, 44)
    speckle = rng.random(SIZE) < 0.05
    pool[speckle] = 255
    assert checker(pool)["blood_drops"].value == 1
    # Thin dark-red vessels are not blood blobs, nor is red clipped by over-exposure.
    vessels = frame.copy()
    for row in range(20, SIZE[0], 24):
        vessels[row : row + 4] = BLOOD
    clipped = frame.copy()
    clipped[_disc_mask(SIZE, (128, 160), 40)] = (255, 40, 40)
    for other in (vessels, clipped):
        result = checker(other)
        assert result["blood"].value == 0 and result["blood_drops"].value == 0


def test_half_dark_frame_marks_its_blocks(checker):
    frame = generate_frame(SEED, 0, SIZE).image.copy()
    frame[:, : SIZE[1] * 3 // 5] = 0
    result = checker(frame)
    assert (result.blocks[:, :3] == BlockState.DARK).all()
    assert result["dark_blocks"].value >= 15 and result["dark_blocks"].level == Level.WARN


def test_uniform_grey_frame_is_blocked(checker):
    result = checker(np.full((300, 400, 3), 128, np.uint8))
    assert result["blocked_blocks"].value == 25
    assert result["blocked_blocks"].level == Level.ERROR


@pytest.mark.parametrize("shape", [(40, 50, 3), (1024, 1280, 3), (481, 973, 3), (2000, 30, 3)])
def test_any_frame_size(shape):
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    result = check_image(frame)
    assert result.blocks.shape == (5, 5)
    assert shrink(frame, 240).shape[0] == 240


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
        [[0, 0, 0]],
    ],
)
def test_bad_frames_are_refused(checker, frame):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        checker(frame)


def test_disabled_checks_are_skipped(clean_frames):
    config = ImageQualityConfig(disabled="Haze, specular")
    assert config.disabled == "haze,specular"
    result = ImageQualityChecker(config)(clean_frames[0])
    assert {c.name for c in result.checks} == set(CHECK_NAMES) - {"haze", "specular"}
    with pytest.raises(KeyError, match="haze"):
        result["haze"]


def test_results_describe_the_crossed_threshold(clean_frames, checker):
    frame = corrupt(clean_frames[0], "gaussian_blur", 5, np.random.default_rng(0))
    blur = checker(frame)["blur"]
    assert blur.level == Level.ERROR and blur.threshold == 0.02
    assert blur.describe().startswith("blur ") and "<= 0.02" in blur.describe()


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"blur_warn": 0.01}, "trust.image.blur_error", "must be at most blur_warn"),
        ({"haze_error": 0.5}, "trust.image.haze_error", "must be at least haze_warn"),
        ({"dark_blocks_error": 5}, "trust.image.dark_blocks_error", "at least dark_blocks_warn"),
        ({"grid": 0}, "trust.image.grid", "an integer in [1, 16]"),
        ({"saturated_warn": 1.5}, "trust.image.saturated_warn", "a number in [0, 1]"),
        ({"analysis_height": 10}, "trust.image.analysis_height", "an integer in [48, 2160]"),
        ({"dark_intensity": 240.0}, "trust.image.dark_intensity", "below overexposed_intensity"),
        ({"disabled": "blur,fog"}, "trust.image.disabled", "comma-separated list of check"),
        ({"disabled": "blur,blur"}, "trust.image.disabled", "comma-separated list of check"),
        ({"specular_warn": "high"}, "trust.image.specular_warn", "got 'high'"),
        ({"blood_drops_error": 4}, "trust.image.blood_drops_error", "at least blood_drops_warn"),
        ({"blood_error": 0.1}, "trust.image.blood_error", "must be at least blood_warn"),
        ({"blood_chroma": 0}, "trust.image.blood_chroma", "a number in (0, 1]"),
    ],
)
def test_config_errors_name_the_field(settings, field, message):
    with pytest.raises(ValidationError) as info:
        ImageQualityConfig(**settings)
    assert info.value.field == field
    assert message in str(info.value) and str(info.value).startswith(field)


def test_config_reads_plain_data():
    config = ImageQualityConfig.from_dict({"blur_warn": 0.1, "grid": 4})
    assert config.blur_warn == 0.1 and ImageQualityConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValidationError, match="unknown field"):
        ImageQualityConfig.from_dict({"blurr_warn": 0.1})


def test_a_small_clean_frame_is_not_enlarged_into_blur():
    """A 112-px frame (the demo model's size) is as sharp as its camera made it: enlarging it
    to the analysis height would blur it and fire the blur check on clean frames."""
    checker = ImageQualityChecker()
    frames = [generate_frame(SEED, index, (112, 112)).image for index in range(20)]
    results = [checker(frame) for frame in frames]
    assert sum(result.level >= Level.WARN for result in results) <= 1
    assert all(result.field_of_view.shape == (112, 112) for result in results)
    blurred = [
        checker(corrupt(f, "gaussian_blur", 5, np.random.default_rng(i)))
        for i, f in enumerate(frames[:5])
    ]
    assert all(result["blur"].level == Level.ERROR for result in blurred)


def test_blockiness_is_measured_only_where_the_block_grid_survives(checker):
    clean = [generate_frame(SEED, index, (240, 320)).image for index in range(3)]
    for index, frame in enumerate(clean):
        assert checker(frame)["blockiness"].level == Level.OK
        for severity in (3, 5):
            jpeg = corrupt(frame, "jpeg_compression", severity, np.random.default_rng(index))
            assert checker(jpeg)["blockiness"].level >= Level.WARN, (index, severity)
    jpeg = corrupt(clean[0], "jpeg_compression", 5, np.random.default_rng(0))
    tall = np.repeat(np.repeat(jpeg, 2, axis=0), 2, axis=1)  # shrunk back for the checks
    assert np.isnan(checker(tall)["blockiness"].value)
