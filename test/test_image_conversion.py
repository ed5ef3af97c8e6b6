"""Tests for the cv_bridge replacement in endoarss_ros.image_conversion."""

from __future__ import annotations

import array
import re
from collections.abc import Callable
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from endoarss_ros.image_conversion import (
    ENCODINGS,
    ImageConversionError,
    compressed_to_numpy,
    image_to_numpy,
    image_to_rgb8,
    numpy_to_compressed,
    numpy_to_image,
)

pytestmark = pytest.mark.ros

REQUIRED_ENCODINGS = [
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    "8UC1",
    "8UC3",
    "16UC1",
    "32FC1",
    "yuv422",
    "yuv422_yuy2",
    "bayer_rggb8",
    "bayer_bggr8",
    "bayer_gbrg8",
    "bayer_grbg8",
]
BAYER_PATTERNS = ["rggb", "bggr", "gbrg", "grbg"]
HEIGHT, WIDTH = 6, 8


def random_pixels(encoding: str, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    rng = np.random.default_rng(sum(map(ord, encoding)))
    if dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def raw_message(
    pixels: np.ndarray, encoding: str, *, pad_bytes: int = 0, big_endian: bool = False
) -> Image:
    """Build an Image by hand, with 0xAB garbage in the row padding."""
    height, width = pixels.shape[:2]
    wire = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<"))
    rows = np.ascontiguousarray(wire).view(np.uint8).reshape(height, -1)
    padded = np.full((height, rows.shape[1] + pad_bytes), 0xAB, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(big_endian),
        step=padded.shape[1],
        data=array.array("B", padded.tobytes()),
    )


def message_bytes(msg: Image | CompressedImage) -> np.ndarray:
    return np.frombuffer(msg.data, dtype=np.uint8)


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, np.newaxis], 3, axis=2)


def scaled_to_8bit(pixels: np.ndarray) -> np.ndarray:
    """16 -> 8 bits as cv_bridge converts them: times 255/65535, rounded to nearest."""
    return np.rint(pixels.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


def make_header() -> Header:
    return Header(stamp=Time(sec=3, nanosec=4), frame_id="endoscope")


# --- encoding table and raw round trips -------------------------------------------------------


def test_encoding_table_covers_required_encodings() -> None:
    assert set(REQUIRED_ENCODINGS) <= set(ENCODINGS)
    assert ENCODINGS["rgb8"] == (np.dtype(np.uint8), 3)
    assert ENCODINGS["mono16"] == (np.dtype(np.uint16), 1)
    assert ENCODINGS["32FC1"] == (np.dtype(np.float32), 1)
    assert ENCODINGS["yuv422"] == (np.dtype(np.uint8), 2)
    assert ENCODINGS["bayer_grbg8"] == (np.dtype(np.uint8), 1)


def test_conversion_error_is_a_value_error() -> None:
    assert issubclass(ImageConversionError, ValueError)


@pytest.mark.parametrize("encoding", REQUIRED_ENCODINGS)
def test_numpy_image_round_trip(encoding: str) -> None:
    pixels = random_pixels(encoding)
    dtype, channels = ENCODINGS[encoding]

    msg = numpy_to_image(pixels, encoding)

    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding) == (HEIGHT, WIDTH, encoding)
    assert msg.is_bigendian == 0
    assert msg.step == WIDTH * dtype.itemsize * channels
    assert len(msg.data) == msg.step * HEIGHT
    restored = image_to_numpy(msg)
    assert restored.dtype == pixels.dtype
    assert restored.shape == pixels.shape
    np.testing.assert_array_equal(restored, pixels)


@pytest.mark.parametrize("encoding", REQUIRED_ENCODINGS)
def test_numpy_to_image_matches_hand_built_message(encoding: str) -> None:
    pixels = random_pixels(encoding)
    expected = raw_message(pixels, encoding)

    msg = numpy_to_image(pixels, encoding)

    assert msg.step == expected.step
    assert bytes(msg.data) == bytes(expected.data)


def test_numpy_to_image_copies_header() -> None:
    header = make_header()

    msg = numpy_to_image(random_pixels("mono8"), "mono8", header=header)

    assert msg.header == header
    assert msg.header is not header
    header.frame_id = "changed later"
    assert msg.header.frame_id == "endoscope"


def test_numpy_to_image_accepts_trailing_single_channel_axis() -> None:
    pixels = random_pixels("mono16")

    msg = numpy_to_image(pixels[:, :, np.newaxis], "mono16")

    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


def test_numpy_to_image_packs_non_contiguous_and_big_endian_arrays() -> None:
    wide = random_pixels("rgb8", width=2 * WIDTH)
    mono16 = random_pixels("16UC1")

    strided_msg = numpy_to_image(wide[:, ::2], "rgb8")
    big_endian_msg = numpy_to_image(mono16.astype(">u2"), "16UC1")

    np.testing.assert_array_equal(image_to_numpy(strided_msg), wide[:, ::2])
    assert big_endian_msg.is_bigendian == 0
    np.testing.assert_array_equal(image_to_numpy(big_endian_msg), mono16)


# --- row padding, byte order, zero copy ---------------------------------------------------------


@pytest.mark.parametrize("pad_elements", [1, 5])
@pytest.mark.parametrize("encoding", REQUIRED_ENCODINGS)
def test_row_padding_is_skipped(encoding: str, pad_elements: int) -> None:
    pixels = random_pixels(encoding)
    pad_bytes = pad_elements * ENCODINGS[encoding][0].itemsize
    padded = raw_message(pixels, encoding, pad_bytes=pad_bytes)

    np.testing.assert_array_equal(image_to_numpy(padded), pixels)
    np.testing.assert_array_equal(
        image_to_rgb8(padded), image_to_rgb8(raw_message(pixels, encoding))
    )


@pytest.mark.parametrize("pad_bytes", [0, 4])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
def test_big_endian_messages_are_swapped_to_host_order(encoding: str, pad_bytes: int) -> None:
    pixels = random_pixels(encoding)
    msg = raw_message(pixels, encoding, pad_bytes=pad_bytes, big_endian=True)

    restored = image_to_numpy(msg)

    assert restored.dtype == pixels.dtype
    assert restored.dtype.isnative
    np.testing.assert_array_equal(restored, pixels)
    assert not np.shares_memory(restored, message_bytes(msg))
    np.testing.assert_array_equal(image_to_rgb8(msg), image_to_rgb8(raw_message(pixels, encoding)))


def test_big_endian_flag_does_not_affect_byte_encodings() -> None:
    pixels = random_pixels("rgb8")
    msg = raw_message(pixels, "rgb8", big_endian=True)

    rgb = image_to_rgb8(msg)

    np.testing.assert_array_equal(rgb, pixels)
    assert np.shares_memory(rgb, message_bytes(msg))


@pytest.mark.parametrize("pad_bytes", [0, 7])
def test_rgb8_conversion_is_a_view_of_the_message(pad_bytes: int) -> None:
    msg = raw_message(random_pixels("rgb8"), "rgb8", pad_bytes=pad_bytes)

    rgb = image_to_rgb8(msg)

    assert np.shares_memory(rgb, message_bytes(msg))
    rgb[1, 0] = (1, 2, 3)
    assert bytes(msg.data[msg.step : msg.step + 3]) == b"\x01\x02\x03"


@pytest.mark.parametrize("encoding", ["mono8", "mono16", "32FC1", "bgr8", "yuv422", "bayer_rggb8"])
def test_host_order_messages_are_viewed_without_copy(encoding: str) -> None:
    msg = raw_message(random_pixels(encoding), encoding, pad_bytes=2 * 4)

    assert np.shares_memory(image_to_numpy(msg), message_bytes(msg))


def test_image_like_object_with_bytes_data() -> None:
    pixels = random_pixels("bgr8")
    data = pixels.tobytes()
    msg = SimpleNamespace(
        height=HEIGHT, width=WIDTH, encoding="bgr8", is_bigendian=0, step=WIDTH * 3, data=data
    )

    view = image_to_numpy(msg)

    np.testing.assert_array_equal(view, pixels)
    assert np.shares_memory(view, np.frombuffer(data, dtype=np.uint8))
    assert not view.flags.writeable
    np.testing.assert_array_equal(image_to_rgb8(msg), pixels[:, :, ::-1])


def test_image_like_object_with_list_data() -> None:
    pixels = random_pixels("mono8")
    msg = SimpleNamespace(
        height=HEIGHT,
        width=WIDTH,
        encoding="mono8",
        is_bigendian=0,
        step=WIDTH,
        data=pixels.reshape(-1).tolist(),
    )

    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


# --- image_to_rgb8 against independent references ---------------------------------------------


RGB8_REFERENCES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rgb8": lambda pixels: pixels,
    "8UC3": lambda pixels: pixels,
    "bgr8": lambda pixels: pixels[:, :, ::-1],
    "rgba8": lambda pixels: pixels[:, :, :3],
    "bgra8": lambda pixels: pixels[:, :, 2::-1],
    "mono8": grey_to_rgb,
    "8UC1": grey_to_rgb,
    "mono16": lambda pixels: grey_to_rgb(scaled_to_8bit(pixels)),
    "16UC1": lambda pixels: grey_to_rgb(scaled_to_8bit(pixels)),
}


@pytest.mark.parametrize("encoding", sorted(RGB8_REFERENCES))
def test_image_to_rgb8_matches_reference(encoding: str) -> None:
    pixels = random_pixels(encoding)

    rgb = image_to_rgb8(raw_message(pixels, encoding))

    assert rgb.shape == (HEIGHT, WIDTH, 3)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, RGB8_REFERENCES[encoding](pixels))


def test_float_image_is_clipped_to_unit_range() -> None:
    depth = np.array([[-0.5, 0.0, 0.25, 0.5, 1.0, 2.0, np.nan, np.inf, -np.inf]], np.float32)

    rgb = image_to_rgb8(raw_message(depth, "32FC1"))

    expected_grey = np.array([[0, 0, 64, 128, 255, 255, 0, 255, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(rgb, grey_to_rgb(expected_grey))


def bt601_limited_range_rgb(luma: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Studio-swing BT.601, the convention of OpenCV's packed 4:2:2 conversions."""
    y = 1.164 * (luma.astype(np.float64) - 16.0)
    cb, cr = u.astype(np.float64) - 128.0, v.astype(np.float64) - 128.0
    rgb = np.stack([y + 1.596 * cr, y - 0.392 * cb - 0.813 * cr, y + 2.017 * cb], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_packed_yuv422_to_rgb8(encoding: str) -> None:
    rng = np.random.default_rng(7)
    luma = rng.integers(16, 236, size=(HEIGHT, WIDTH), dtype=np.uint8)
    u = rng.integers(16, 241, size=(HEIGHT, WIDTH // 2), dtype=np.uint8)
    v = rng.integers(16, 241, size=(HEIGHT, WIDTH // 2), dtype=np.uint8)
    chroma = np.empty((HEIGHT, WIDTH), dtype=np.uint8)
    chroma[:, 0::2], chroma[:, 1::2] = u, v
    order = (chroma, luma) if encoding == "yuv422" else (luma, chroma)
    packed = np.stack(order, axis=-1)

    rgb = image_to_rgb8(raw_message(packed, encoding))

    expected = bt601_limited_range_rgb(luma, np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1))
    np.testing.assert_allclose(rgb.astype(int), expected.astype(int), atol=2)


QUADRANT_COLOURS = [(220, 40, 30), (30, 200, 60), (40, 50, 210), (200, 180, 90)]
QUADRANT_SIZE = 12


def quadrant_image() -> np.ndarray:
    """Four flat, mutually distinct colour regions: any channel mix-up changes some of them."""
    image = np.empty((2 * QUADRANT_SIZE, 2 * QUADRANT_SIZE, 3), dtype=np.uint8)
    for index, colour in enumerate(QUADRANT_COLOURS):
        row, col = divmod(index, 2)
        image[
            row * QUADRANT_SIZE : (row + 1) * QUADRANT_SIZE,
            col * QUADRANT_SIZE : (col + 1) * QUADRANT_SIZE,
        ] = colour
    return image


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample the colour each ROS pattern letter names, 2x2 cell read row by row."""
    channel_of = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], dtype=np.uint8)
    for cell_index, letter in enumerate(pattern):
        dy, dx = divmod(cell_index, 2)
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel_of[letter]]
    return mosaic


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bayer_demosaicing_restores_flat_colours(pattern: str) -> None:
    mosaic = bayer_mosaic(quadrant_image(), pattern)

    rgb = image_to_rgb8(raw_message(mosaic, f"bayer_{pattern}8"))

    assert rgb.shape == (2 * QUADRANT_SIZE, 2 * QUADRANT_SIZE, 3)
    margin = 3
    for index, colour in enumerate(QUADRANT_COLOURS):
        row, col = divmod(index, 2)
        interior = rgb[
            row * QUADRANT_SIZE + margin : (row + 1) * QUADRANT_SIZE - margin,
            col * QUADRANT_SIZE + margin : (col + 1) * QUADRANT_SIZE - margin,
        ]
        np.testing.assert_allclose(
            interior.reshape(-1, 3).astype(int),
            np.broadcast_to(colour, (interior.shape[0] * interior.shape[1], 3)),
            atol=1,
        )


# --- compressed images --------------------------------------------------------------------------


def smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    """Gradients with a different profile per channel: jpeg keeps them, and a swap shows."""
    ys, xs = np.mgrid[0:height, 0:width]
    red = 40 + 180 * xs / (width - 1)
    green = 200 - 150 * ys / (height - 1)
    blue = np.full_like(red, 70.0)
    return np.rint(np.stack([red, green, blue], axis=-1)).astype(np.uint8)


def compressed_message(payload: np.ndarray, fmt: str) -> CompressedImage:
    return CompressedImage(format=fmt, data=array.array("B", payload.tobytes()))


def test_jpeg_round_trip_rgb8() -> None:
    image = smooth_rgb()

    msg = numpy_to_compressed(image, "rgb8", "jpeg", quality=95)

    assert isinstance(msg, CompressedImage)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    assert bytes(msg.data[:2]) == b"\xff\xd8"
    decoded = compressed_to_numpy(msg)
    assert decoded.shape == image.shape
    assert decoded.dtype == np.uint8
    error = np.abs(decoded.astype(int) - image.astype(int))
    assert error.mean() < 2.0
    assert error.max() < 16


def test_jpeg_quality_trades_size_for_fidelity() -> None:
    image = random_pixels("rgb8", height=32, width=32)

    low = numpy_to_compressed(image, quality=10)
    high = numpy_to_compressed(image, quality=95)

    assert len(low.data) < len(high.data)


PNG_CASES: list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]] = [
    ("rgb8", "rgb8; png compressed bgr8", lambda pixels: pixels),
    ("bgr8", "bgr8; png compressed bgr8", lambda pixels: pixels[:, :, ::-1]),
    ("rgba8", "rgba8; png compressed bgr8", lambda pixels: pixels[:, :, :3]),
    ("bgra8", "bgra8; png compressed bgr8", lambda pixels: pixels[:, :, 2::-1]),
    ("mono8", "mono8; png compressed ", grey_to_rgb),
    ("8UC1", "8UC1; png compressed ", grey_to_rgb),
    ("8UC3", "8UC3; png compressed ", lambda pixels: pixels[:, :, ::-1]),
    ("mono16", "mono16; png compressed ", lambda p: grey_to_rgb(scaled_to_8bit(p))),
    ("16UC1", "16UC1; png compressed ", lambda p: grey_to_rgb(scaled_to_8bit(p))),
]


@pytest.mark.parametrize(("encoding", "expected_format", "rgb_reference"), PNG_CASES)
def test_png_round_trip(
    encoding: str, expected_format: str, rgb_reference: Callable[[np.ndarray], np.ndarray]
) -> None:
    pixels = random_pixels(encoding)

    msg = numpy_to_compressed(pixels, encoding, "png", header=make_header())

    assert msg.format == expected_format
    assert msg.header == make_header()
    rgb = compressed_to_numpy(msg, "rgb8")
    np.testing.assert_array_equal(rgb, rgb_reference(pixels))
    np.testing.assert_array_equal(compressed_to_numpy(msg, "bgr8"), rgb[:, :, ::-1])


def test_png_passthrough_returns_decoder_output() -> None:
    colour = random_pixels("rgb8")
    mono16 = random_pixels("mono16")

    colour_passthrough = compressed_to_numpy(numpy_to_compressed(colour, fmt="png"), "passthrough")
    mono16_passthrough = compressed_to_numpy(
        numpy_to_compressed(mono16, "mono16", "png"), "passthrough"
    )

    np.testing.assert_array_equal(colour_passthrough, colour[:, :, ::-1])
    assert mono16_passthrough.dtype == np.uint16
    np.testing.assert_array_equal(mono16_passthrough, mono16)


def test_compressed_bayer_is_demosaiced() -> None:
    mosaic = bayer_mosaic(quadrant_image(), "gbrg")

    msg = numpy_to_compressed(mosaic, "bayer_gbrg8", "png")

    assert msg.format == "bayer_gbrg8; png compressed "
    np.testing.assert_array_equal(
        compressed_to_numpy(msg), image_to_rgb8(raw_message(mosaic, "bayer_gbrg8"))
    )


@pytest.mark.parametrize(
    ("fmt", "extension", "grey"),
    [
        ("jpeg", ".jpg", False),
        ("png", ".png", False),
        ("rgb8; jpeg compressed bgr8", ".jpg", False),
        ("bgr8; png compressed bgr8", ".png", False),
        ("mono8; jpeg compressed mono8", ".jpg", True),
    ],
)
def test_decodes_image_transport_format_strings(fmt: str, extension: str, grey: bool) -> None:
    image = smooth_rgb()
    source = image[:, :, 1] if grey else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    _, payload = cv2.imencode(extension, source, [cv2.IMWRITE_JPEG_QUALITY, 95])

    rgb = compressed_to_numpy(compressed_message(payload, fmt))

    expected = grey_to_rgb(image[:, :, 1]) if grey else image
    assert rgb.shape == expected.shape
    assert np.abs(rgb.astype(int) - expected.astype(int)).mean() < 2.0


def test_bgr8_jpeg_is_labelled_like_image_transport() -> None:
    image = smooth_rgb()

    msg = numpy_to_compressed(image[:, :, ::-1], "bgr8", "jpeg")

    assert msg.format == "bgr8; jpeg compressed bgr8"
    assert np.abs(compressed_to_numpy(msg).astype(int) - image.astype(int)).mean() < 2.0


def test_numpy_to_compressed_copies_header() -> None:
    header = make_header()

    msg = numpy_to_compressed(smooth_rgb(), header=header)

    assert msg.header == header
    assert msg.header is not header


# --- error cases ------------------------------------------------------------------------------


def rgb8_message() -> Image:
    return raw_message(random_pixels("rgb8"), "rgb8")


def with_fields(msg: Image, **fields: object) -> Image:
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize("convert", [image_to_numpy, image_to_rgb8])
@pytest.mark.parametrize(
    ("make_message", "message"),
    [
        (
            lambda: with_fields(rgb8_message(), encoding="rgb9"),
            "unknown image encoding 'rgb9'; supported encodings: 16UC1, 32FC1,",
        ),
        (
            lambda: with_fields(rgb8_message(), step=20),
            "rgb8 image step 20 is smaller than width 8 x 3 bytes per pixel = 24",
        ),
        (
            lambda: with_fields(rgb8_message(), data=rgb8_message().data[:-1]),
            "rgb8 image data has 143 bytes, but step 24 x height 6 needs 144",
        ),
        (
            lambda: with_fields(rgb8_message(), height=0),
            "empty image: rgb8 with height=0, width=8",
        ),
        (
            lambda: with_fields(rgb8_message(), width=0, step=0, data=array.array("B")),
            "empty image: rgb8 with height=6, width=0",
        ),
        (
            lambda: with_fields(raw_message(random_pixels("mono16"), "mono16", pad_bytes=1)),
            "mono16 image step 17 is not a multiple of its 2-byte uint16 element size",
        ),
        (
            lambda: SimpleNamespace(
                height=1, width=2, encoding="mono8", is_bigendian=0, step=2, data=[7, 300]
            ),
            "image data of type list is not a byte buffer",
        ),
    ],
)
def test_inconsistent_raw_messages_are_rejected(
    convert: Callable[[Image], np.ndarray], make_message: Callable[[], Image], message: str
) -> None:
    with pytest.raises(ImageConversionError, match=re.escape(message)):
        convert(make_message())


def test_odd_width_yuv422_is_rejected() -> None:
    packed = random_pixels("yuv422", width=5)

    with pytest.raises(
        ImageConversionError, match="yuv422 image width 5 is odd; 4:2:2 chroma needs pixel pairs"
    ):
        image_to_rgb8(raw_message(packed, "yuv422"))


@pytest.mark.parametrize(
    ("array_", "encoding", "message"),
    [
        (np.zeros((6, 8, 3), np.uint8), "rgb9", "unknown image encoding 'rgb9'"),
        (np.zeros((6, 8), np.uint8), "rgb8", "needs an array of shape (H, W, 3), got (6, 8)"),
        (np.zeros((6, 8, 4), np.uint8), "rgb8", "needs an array of shape (H, W, 3), got (6, 8, 4)"),
        (np.zeros((6, 8, 3), np.uint8), "mono8", "'mono8' needs an array of shape (H, W), got"),
        (np.zeros(48, np.uint8), "mono8", "'mono8' needs an array of shape (H, W), got (48,)"),
        (np.zeros((1, 6, 8, 3), np.uint8), "bgr8", "'bgr8' needs an array of shape (H, W, 3)"),
        (np.zeros((6, 8), np.uint8), "mono16", "'mono16' needs dtype uint16, got uint8"),
        (np.zeros((6, 8), np.float64), "32FC1", "'32FC1' needs dtype float32, got float64"),
        (np.zeros((6, 8, 3), np.float32), "rgb8", "'rgb8' needs dtype uint8, got float32"),
        (np.zeros((0, 8, 3), np.uint8), "rgb8", "empty image: rgb8 array of shape (0, 8, 3)"),
        (np.zeros((6, 0), np.uint16), "16UC1", "empty image: 16UC1 array of shape (6, 0)"),
    ],
)
def test_numpy_to_image_rejects_arrays_that_contradict_the_encoding(
    array_: np.ndarray, encoding: str, message: str
) -> None:
    with pytest.raises(ImageConversionError, match=re.escape(message)):
        numpy_to_image(array_, encoding)


@pytest.mark.parametrize(
    ("msg", "desired", "message"),
    [
        (
            CompressedImage(format="jpeg", data=array.array("B", b"definitely not a jpeg")),
            "rgb8",
            "cannot decode 21 bytes of compressed image (format 'jpeg')",
        ),
        (
            CompressedImage(format="rgb8; png compressed bgr8", data=array.array("B", b"\x89PNG")),
            "bgr8",
            "cannot decode 4 bytes of compressed image (format 'rgb8; png compressed bgr8')",
        ),
        (
            CompressedImage(format="rgb8; jpeg compressed bgr8"),
            "rgb8",
            "empty compressed image data (format 'rgb8; jpeg compressed bgr8')",
        ),
        (
            CompressedImage(format="png", data=array.array("B", b"\x00")),
            "mono8",
            "cannot decode compressed image (format 'png') to 'mono8'; "
            "choose one of rgb8, bgr8, passthrough",
        ),
    ],
)
def test_bad_compressed_messages_are_rejected(
    msg: CompressedImage, desired: str, message: str
) -> None:
    with pytest.raises(ImageConversionError, match=re.escape(message)):
        compressed_to_numpy(msg, desired)


@pytest.mark.parametrize(
    ("array_", "kwargs", "message"),
    [
        (smooth_rgb(), {"fmt": "webp"}, "unsupported compression format 'webp'"),
        (smooth_rgb(), {"quality": 101}, "jpeg quality must be within 0-100, got 101"),
        (smooth_rgb(), {"encoding": "rgb9"}, "unknown image encoding 'rgb9'"),
        (smooth_rgb(), {"encoding": "rgba8"}, "needs an array of shape (H, W, 4), got (48, 64, 3)"),
        (
            random_pixels("32FC1"),
            {"encoding": "32FC1", "fmt": "png"},
            "cannot compress 32FC1: png needs 8 or 16-bit pixels",
        ),
        (
            random_pixels("yuv422"),
            {"encoding": "yuv422"},
            "cannot compress yuv422: two-channel 4:2:2 pixels are not encodable as jpeg",
        ),
        (
            random_pixels("mono16"),
            {"encoding": "mono16"},
            "cannot compress mono16 as jpeg: jpeg holds 8-bit pixels; use png",
        ),
    ],
)
def test_numpy_to_compressed_rejects_unencodable_input(
    array_: np.ndarray, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ImageConversionError, match=re.escape(message)):
        numpy_to_compressed(array_, **kwargs)


def test_a_frame_larger_than_allowed_is_refused_before_it_is_read():
    from endoarss_ros.image_conversion import (
        ImageConversionError,
        compressed_to_numpy,
        image_to_rgb8,
        numpy_to_compressed,
        numpy_to_image,
    )

    pixels = np.zeros((60, 80, 3), np.uint8)
    raw = numpy_to_image(pixels, "rgb8")
    assert image_to_rgb8(raw, max_pixels=4800).shape == (60, 80, 3)
    refusal = r"80x60 pixels \(4,800\) is larger than max_frame_pixels \(4,799\)"
    with pytest.raises(ImageConversionError, match=refusal):
        image_to_rgb8(raw, max_pixels=4799)
    raw.data = b""  # the size check comes first: nothing of the data is touched
    with pytest.raises(ImageConversionError, match="max_frame_pixels"):
        image_to_rgb8(raw, max_pixels=100)
    compressed = numpy_to_compressed(pixels, "rgb8", "png")
    assert compressed_to_numpy(compressed, max_pixels=4800).shape == (60, 80, 3)
    with pytest.raises(ImageConversionError, match=r"compressed image of 80x60 pixels"):
        compressed_to_numpy(compressed, max_pixels=4799)
