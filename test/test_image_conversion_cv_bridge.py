"""The RGB frame fed to the model equals what ROS 2 cv_bridge's ``imgmsg_to_cv2(msg, "rgb8")``
(``toCvCopy``) returns, for every encoding the node accepts; where cv_bridge refuses an
encoding, the documented stand-in holds.

The reference below is written from cv_bridge's conversion rules (``getConversionCode`` and
``convert`` in cv_bridge.cpp), not from the module under test:

- the source encoding is classified: colour (rgb/bgr/rgba/bgra), mono (mono8/mono16), Bayer,
  YUV 4:2:2, or none of these (``8UC1``, ``16UC1``, ``32FC1``, ...). A non-colour source to a
  colour destination throws ("is not a color format ... does not make sense");
- otherwise the OpenCV ``cvtColor`` code for the (source, destination) pair is applied, then, if
  the bit depths differ and the colour families differ, ``convertTo`` to 8 bits with scale
  255/65535 (OpenCV rounds to nearest);
- a compressed image is ``imdecode(..., IMREAD_UNCHANGED)`` and then treated as bgr8 (3
  channels), bgra8 (4) or mono8 (1).
"""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from endoarss_ros.image_conversion import (
    ENCODINGS,
    ImageConversionError,
    compressed_to_numpy,
    image_to_rgb8,
)

pytestmark = pytest.mark.ros


class CvBridgeRefuses(Exception):
    pass


_COLOUR = {"rgb8": 8, "bgr8": 8, "rgba8": 8, "bgra8": 8}
_MONO = {"mono8": 8, "mono16": 16}
_BAYER = {f"bayer_{p}8": 8 for p in ("rggb", "bggr", "gbrg", "grbg")}
_YUV = {"yuv422": 8, "yuv422_yuy2": 8}
_TO_RGB_CODE = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    # cv_bridge uses OpenCV's historic names, named after the second row: ROS rggb is "BG".
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
_FAMILY = {"mono8": "gray", "mono16": "gray"}


def _convert_to_8bit(pixels: np.ndarray) -> np.ndarray:
    """``Mat::convertTo(CV_8U, 255. / 65535.)``: scale, round to nearest, saturate."""
    scaled = np.rint(pixels.astype(np.float64) * (255.0 / 65535.0))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def cv_bridge_rgb8(encoding: str, pixels: np.ndarray) -> np.ndarray:
    """cv_bridge's ``toCvCopy(msg, "rgb8")`` on decoded pixels of ``encoding``."""
    depths = {**_COLOUR, **_MONO, **_BAYER, **_YUV}
    if encoding not in depths:
        raise CvBridgeRefuses(f"[{encoding}] is not a color format. but [rgb8] is")
    if encoding == "rgb8":
        return pixels
    result = cv2.cvtColor(pixels, _TO_RGB_CODE[encoding])
    if depths[encoding] != 8 and _FAMILY.get(encoding, encoding) != "rgb8":
        result = _convert_to_8bit(result)
    return result


# Where cv_bridge refuses, the node reads the encoding as the one named here (documented in
# endoarss_ros/image_conversion.py and the README).
STAND_INS = {"8UC1": "mono8", "8UC3": "rgb8", "16UC1": "mono16"}


def _pixels(encoding: str, height: int = 6, width: int = 8) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    rng = np.random.default_rng(sum(map(ord, encoding)))
    if dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    values = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)
    if dtype == np.uint16:  # values where rounding and truncation by 256 disagree
        values.flat[:6] = [0, 127, 128, 511, 65279, 65535]
    return values


def _message(pixels: np.ndarray, encoding: str, big_endian: bool = False) -> Image:
    height, width = pixels.shape[:2]
    wire = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<"))
    data = np.ascontiguousarray(wire).view(np.uint8).reshape(height, -1)
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(big_endian),
        step=data.shape[1],
        data=array.array("B", data.tobytes()),
    )


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_encoding_equals_cv_bridge_or_its_documented_stand_in(
    encoding: str, big_endian: bool
) -> None:
    pixels = _pixels(encoding)
    ours = image_to_rgb8(_message(pixels, encoding, big_endian))
    assert ours.dtype == np.uint8 and ours.shape == (*pixels.shape[:2], 3)
    if encoding == "32FC1":
        with pytest.raises(CvBridgeRefuses):
            cv_bridge_rgb8(encoding, pixels)
        grey = np.rint(np.clip(np.nan_to_num(pixels), 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(ours, np.dstack([grey] * 3))
        return
    if encoding in STAND_INS:
        with pytest.raises(CvBridgeRefuses):
            cv_bridge_rgb8(encoding, pixels)
        expected = cv_bridge_rgb8(STAND_INS[encoding], pixels)
    else:
        expected = cv_bridge_rgb8(encoding, pixels)
    np.testing.assert_array_equal(ours, expected)


def _compressed(fmt: str, payload: np.ndarray) -> CompressedImage:
    return CompressedImage(format=fmt, data=array.array("B", payload.tobytes()))


def _cv_bridge_compressed_rgb8(payload: np.ndarray) -> np.ndarray:
    decoded = cv2.imdecode(payload, cv2.IMREAD_UNCHANGED)
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    source = {1: "mono8", 3: "bgr8", 4: "bgra8"}[channels]
    if decoded.dtype == np.uint16:
        # cv_bridge labels 16-bit decoded data mono8/bgr8 and so returns it unscaled (16-bit
        # values in an "rgb8" image); this package scales it like the raw mono16 path.
        source = "mono16" if channels == 1 else source
        if channels != 1:
            return _convert_to_8bit(cv_bridge_rgb8(source, decoded))
    return cv_bridge_rgb8(source, decoded)


def _encoded(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "colour_jpeg":
        ys, xs = np.mgrid[0:32, 0:40]
        bgr = np.dstack([xs * 5, ys * 6, np.full_like(xs, 70)]).astype(np.uint8)
        return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    if kind == "colour_png":
        return cv2.imencode(".png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))[1]
    if kind == "bgra_png":
        return cv2.imencode(".png", rng.integers(0, 256, (32, 40, 4), dtype=np.uint8))[1]
    if kind == "mono_jpeg":
        return cv2.imencode(".jpg", rng.integers(0, 256, (32, 40), dtype=np.uint8))[1]
    if kind == "mono16_png":
        grey = rng.integers(0, 65536, (32, 40), dtype=np.uint16)
        grey.flat[:6] = [0, 127, 128, 511, 65279, 65535]
        return cv2.imencode(".png", grey)[1]
    raise AssertionError(kind)


FORMATS = [
    ("jpeg", "colour_jpeg"),
    ("jpg", "colour_jpeg"),
    ("png", "colour_png"),
    ("rgb8; jpeg compressed bgr8", "colour_jpeg"),
    ("bgr8; png compressed bgr8", "colour_png"),
    ("bgra8; png compressed bgra8", "bgra_png"),
    ("mono8; jpeg compressed mono8", "mono_jpeg"),
    ("16UC1; png compressed mono16", "mono16_png"),
    ("mono16; png compressed ", "mono16_png"),
    ("JPEG", "colour_jpeg"),
    ("  Png ", "colour_png"),
    ("RGB8; JPEG compressed BGR8", "colour_jpeg"),
    ("rgb8;jpeg compressed bgr8", "colour_jpeg"),
    ("MONO8 ;  JPEG   COMPRESSED   MONO8", "mono_jpeg"),
    # Unknown or wrong format strings: the data decides.
    ("", "colour_png"),
    ("jpeg", "colour_png"),
    ("theora", "colour_jpeg"),
    ("16UC1; compressedDepth png", "mono16_png"),
]


@pytest.mark.parametrize(("fmt", "kind"), FORMATS)
def test_compressed_formats_decode_like_cv_bridge(fmt: str, kind: str) -> None:
    payload = _encoded(kind)
    ours = compressed_to_numpy(_compressed(fmt, payload), "rgb8")
    np.testing.assert_array_equal(ours, _cv_bridge_compressed_rgb8(payload))


@pytest.mark.parametrize("fmt", ["BAYER_GBRG8; png compressed ", " bayer_gbrg8 ; PNG compressed"])
def test_compressed_bayer_named_in_any_case_is_demosaiced(fmt: str) -> None:
    mosaic = np.random.default_rng(3).integers(0, 256, (16, 20), dtype=np.uint8)
    payload = cv2.imencode(".png", mosaic)[1]
    ours = compressed_to_numpy(_compressed(fmt, payload), "rgb8")
    np.testing.assert_array_equal(ours, cv_bridge_rgb8("bayer_gbrg8", mosaic))


@pytest.mark.parametrize("fmt", ["jpeg", "unknown", "rgb8; png compressed bgr8"])
def test_undecodable_data_is_one_clear_line(fmt: str) -> None:
    junk = np.frombuffer(b"GIF89a not an image at all\n\x00\x01", dtype=np.uint8)
    with pytest.raises(ImageConversionError) as info:
        compressed_to_numpy(_compressed(fmt, junk), "rgb8")
    message = str(info.value)
    assert "\n" not in message
    assert repr(fmt) in message
    assert "neither JPEG nor PNG" in message
