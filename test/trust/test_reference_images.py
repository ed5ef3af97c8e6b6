"""Far out-of-distribution reference images: every bundled photograph loads without a network,
everything comes as uint8 RGB of the size asked for, textures are reproducible by seed, and
none of it looks like the synthetic scenes the demo model knows."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from endoarss_ros.trust.reference_images import (
    NATURAL_IMAGES,
    PROCEDURAL_TEXTURES,
    fit,
    natural_image,
    natural_images,
    procedural_texture,
    procedural_textures,
)

SIZES = [(240, 320), (97, 61), (1024, 1280)]


@pytest.mark.parametrize("size", SIZES)
def test_natural_images_are_rgb_at_the_size_asked(size):
    images = natural_images(size)
    assert [name for name, _ in images] == list(NATURAL_IMAGES)
    assert len(NATURAL_IMAGES) >= 15
    for name, image in images:
        assert image.shape == (*size, 3) and image.dtype == np.uint8, name
        assert image.flags.c_contiguous and image.flags.writeable
        assert image.std() > 5, f"{name} is featureless"


def test_natural_images_are_the_bundled_pictures():
    # Centre crop, no stretching: the astronaut (square) at a square size is the picture resized.
    astronaut = natural_image("astronaut", (128, 128))
    reference = cv2.resize(skimage.data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(astronaut, reference)
    # Grey pictures come as three equal channels; the retina, a fundus photograph, as colour.
    camera = natural_image("camera", (64, 64))
    assert (camera[:, :, 0] == camera[:, :, 1]).all() and (camera[:, :, 1] == camera[:, :, 2]).all()
    retina = natural_image("retina", (64, 64)).astype(float)
    assert retina[:, :, 0].mean() > retina[:, :, 2].mean() + 30  # reddish, like tissue
    # A wide crop of a square picture keeps its middle rows.
    wide = natural_image("astronaut", (64, 256))
    middle = skimage.data.astronaut()[192:320]
    np.testing.assert_array_equal(wide, cv2.resize(middle, (256, 64), interpolation=cv2.INTER_AREA))
    with pytest.raises(KeyError, match="unknown natural image 'lena'"):
        natural_image("lena", (64, 64))


@pytest.mark.parametrize("size", SIZES)
def test_textures_are_rgb_at_the_size_asked_and_reproducible(size):
    first = procedural_textures(size, seed=4)
    again = procedural_textures(size, seed=4)
    other = dict(procedural_textures(size, seed=5))
    assert [name for name, _ in first] == list(PROCEDURAL_TEXTURES)
    for (name, image), (_, same) in zip(first, again, strict=True):
        assert image.shape == (*size, 3) and image.dtype == np.uint8, name
        assert image.tobytes() == same.tobytes(), name
        if not name.startswith("flat_") or name == "flat_colour":
            assert image.tobytes() != other[name].tobytes(), f"{name} ignores the seed"
    # A texture does not depend on what else was drawn.
    alone = procedural_texture("stripes", size, seed=4)
    assert alone.tobytes() == dict(first)["stripes"].tobytes()


def test_textures_are_what_they_say():
    size = (120, 160)
    flat = procedural_texture("flat_red", size)
    assert (flat == flat[0, 0]).all() and tuple(flat[0, 0]) == (153, 13, 13)
    assert (procedural_texture("flat_black", size) == 0).all()
    noise = procedural_texture("white_noise", size).astype(float)
    assert 60 < noise.std() < 90  # uniform in 0..255: 74
    neighbours = np.corrcoef(noise[:, :-1, 0].ravel(), noise[:, 1:, 0].ravel())[0, 1]
    assert abs(neighbours) < 0.05
    checker = procedural_texture("checkerboard", size)
    assert len(np.unique(checker.reshape(-1, 3), axis=0)) == 2
    blobs = procedural_texture("blobs", size).astype(float)
    smooth = np.corrcoef(blobs[:, :-1, 0].ravel(), blobs[:, 1:, 0].ravel())[0, 1]
    assert smooth > 0.95
    with pytest.raises(KeyError, match="unknown texture 'plaid'"):
        procedural_texture("plaid", size)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.zeros((10, 20), bool), 0),
        (np.ones((10, 20), bool), 255),
        (np.full((10, 20), 0.5), 128),
        (np.full((10, 20, 4), 7, np.uint8), 7),
    ],
)
def test_fit_accepts_grey_bool_float_and_rgba(image, expected):
    out = fit(image, (5, 5))
    assert out.shape == (5, 5, 3) and out.dtype == np.uint8 and (out == expected).all()


@pytest.mark.parametrize(
    ("image", "size", "message"),
    [
        (np.zeros((10, 10, 2), np.uint8), (5, 5), "grey, RGB or RGBA"),
        (np.zeros((0, 10, 3), np.uint8), (5, 5), "grey, RGB or RGBA"),
        (np.zeros((10, 10, 3), np.uint8), (0, 5), "at least 1 px"),
    ],
)
def test_fit_refuses_what_it_cannot_use(image, size, message):
    with pytest.raises(ValueError, match=message):
        fit(image, size)
