"""Conversion between sensor_msgs Image / CompressedImage messages and numpy arrays.

This stands in for cv_bridge, which cannot be installed alongside the Python ROS wheels. It runs on
every camera frame, so raw images are exposed as views of the message buffer whenever the wire
layout allows, and every inconsistent message is reported as an `ImageConversionError` that names
the encoding and sizes involved instead of surfacing as an obscure numpy or OpenCV failure.

What the model is fed equals ROS 2 cv_bridge's ``imgmsg_to_cv2(msg, "rgb8")`` (``toCvCopy``,
whose ``getConversionCode``/``convert`` apply one OpenCV ``cvtColor`` and, when the bit depths
and colour families differ, ``convertTo(CV_8U, 255. / 65535.)``), encoding by encoding:

=================  =================================================  ============================
encoding           cv_bridge to rgb8                                  here
=================  =================================================  ============================
rgb8               unchanged                                          same (a view of the message)
bgr8, rgba8,       ``cvtColor`` BGR2RGB, RGBA2RGB, BGRA2RGB           same
bgra8
mono8              ``cvtColor`` GRAY2RGB                              same
mono16             GRAY2RGB, then x 255/65535 rounded to nearest      same
yuv422,            ``cvtColor`` YUV2RGB_UYVY / YUV2RGB_YUY2           same (odd widths refused)
yuv422_yuy2
bayer_rggb8, ...   ``cvtColor`` BayerBG2RGB (rggb), RG (bggr),        same
                   GR (gbrg), GB (grbg): OpenCV's names follow the
                   second row
8UC1               throws ("not a color format")                      **differs**: read as mono8
8UC3               throws                                             **differs**: read as rgb8
16UC1              throws                                             **differs**: read as mono16
                                                                      (x 255/65535)
32FC1              throws                                             **differs**: values in [0, 1]
                                                                      x 255 rounded, clipped;
                                                                      NaN -> 0, +inf -> 255
=================  =================================================  ============================

Byte order follows ``is_bigendian`` as in cv_bridge. The generic encodings differ on purpose: a
camera or depth driver publishing them should still give the model a frame rather than an
exception per message, and the stand-ins are cv_bridge's own conversions of the nearest named
encoding.

A ``CompressedImage`` is decoded as cv_bridge does, ``imdecode(IMREAD_UNCHANGED)`` and then
bgr8 (3 channels), bgra8 (4) or mono8 (1). The container is found from the data's magic bytes
(JPEG, PNG, TIFF; a compressedDepth PNG after its 12-byte header), never from the ``format``
string, so every format image_transport writes (``jpeg``, ``png``, ``rgb8; jpeg compressed
bgr8``, ``16UC1; png compressed mono16``, ...), in any case or spacing, and unknown or wrong
ones decode alike; data that is none of these is refused in one line. The format string is read
only for a Bayer source, which is demosaiced. **Differs**: 16-bit decoded data is scaled by
255/65535 like raw mono16, where cv_bridge labels it 8-bit and passes 16-bit values through.
"""

from __future__ import annotations

import array as stdlib_array
import copy
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    from sensor_msgs.msg import CompressedImage, Image


class ImageConversionError(ValueError):
    """An image message or array that cannot be converted; the message says which field is wrong."""


class ImageMessage(Protocol):
    """The Image fields the decoder reads, so plain objects can stand in for sensor_msgs Image."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


class CompressedImageMessage(Protocol):
    """The CompressedImage fields the decoder reads."""

    format: str
    data: Any


_UINT8: Final = np.dtype(np.uint8)
_UINT16: Final = np.dtype(np.uint16)
_FLOAT32: Final = np.dtype(np.float32)

ENCODINGS: Final[dict[str, tuple[np.dtype, int]]] = {
    "rgb8": (_UINT8, 3),
    "bgr8": (_UINT8, 3),
    "rgba8": (_UINT8, 4),
    "bgra8": (_UINT8, 4),
    "mono8": (_UINT8, 1),
    "mono16": (_UINT16, 1),
    "8UC1": (_UINT8, 1),
    "8UC3": (_UINT8, 3),
    "16UC1": (_UINT16, 1),
    "32FC1": (_FLOAT32, 1),
    # Packed 4:2:2: each pixel holds one luma byte and alternately the U or V byte of its pair.
    "yuv422": (_UINT8, 2),
    "yuv422_yuy2": (_UINT8, 2),
    "bayer_rggb8": (_UINT8, 1),
    "bayer_bggr8": (_UINT8, 1),
    "bayer_gbrg8": (_UINT8, 1),
    "bayer_grbg8": (_UINT8, 1),
}
"""Supported raw encodings: encoding name -> (element dtype in host byte order, channels)."""

_HOST_IS_BIGENDIAN: Final = int(sys.byteorder == "big")
_TO_BGR_CODES: Final = {
    "rgb8": cv2.COLOR_RGB2BGR,
    "rgba8": cv2.COLOR_RGBA2BGR,
    "bgra8": cv2.COLOR_BGRA2BGR,
}
_COMPRESSION_EXTENSIONS: Final = {"jpeg": ".jpg", "png": ".png"}
_DESIRED_COMPRESSED_ENCODINGS: Final = ("rgb8", "bgr8", "passthrough")


def _encoding_spec(encoding: str) -> tuple[np.dtype, int]:
    """Look up an encoding, failing with the list of supported ones."""
    try:
        return ENCODINGS[encoding]
    except KeyError:
        supported = ", ".join(sorted(ENCODINGS))
        raise ImageConversionError(
            f"unknown image encoding {encoding!r}; supported encodings: {supported}"
        ) from None


def _pixel_shape(height: int, width: int, channels: int) -> tuple[int, ...]:
    """Single-channel images are HxW so they can go straight into OpenCV grey-level routines."""
    return (height, width) if channels == 1 else (height, width, channels)


def _byte_buffer(data: Any) -> np.ndarray:
    """View the message data as bytes without copying; sequences that are not buffers are copied."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        pass
    # Range-checked here: numpy 1.x wraps an out-of-range integer where 2.x raises.
    try:
        values = np.asarray(data).reshape(-1)
        if values.size == 0:
            return values.astype(np.uint8)
        if values.dtype.kind not in "iub":
            raise TypeError(f"elements are {values.dtype}, not integers")
        if values.min() < 0 or values.max() > 255:
            raise ValueError(f"values from {values.min()} to {values.max()} do not fit in a byte")
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageConversionError(
            f"image data of type {type(data).__name__} is not a byte buffer: {exc}"
        ) from exc
    return values.astype(np.uint8)


def _check_layout(
    encoding: str, height: int, width: int, step: int, data_size: int
) -> tuple[np.dtype, int]:
    """Reject geometry that does not fit the data before any view is built on it."""
    dtype, channels = _encoding_spec(encoding)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: {encoding} with height={height}, width={width}")
    bytes_per_pixel = dtype.itemsize * channels
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"{encoding} image step {step} is smaller than width {width} x "
            f"{bytes_per_pixel} bytes per pixel = {row_bytes}"
        )
    if step % dtype.itemsize:
        raise ImageConversionError(
            f"{encoding} image step {step} is not a multiple of its {dtype.itemsize}-byte "
            f"{dtype.name} element size"
        )
    needed = step * height
    if data_size < needed:
        raise ImageConversionError(
            f"{encoding} image data has {data_size} bytes, but step {step} x height {height} "
            f"needs {needed}"
        )
    return dtype, channels


def image_to_numpy(msg: ImageMessage) -> np.ndarray:
    """Expose a raw Image as an array in its own encoding, sharing the message buffer if possible.

    The result is a view (row padding skipped through strides) unless the message byte order
    differs from the host's, in which case the pixels are swapped into a new native array. Writing
    to a view writes to the message.
    """
    encoding = msg.encoding
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    raw = _byte_buffer(msg.data)
    dtype, channels = _check_layout(encoding, height, width, step, raw.size)
    wire_dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    elements = np.frombuffer(raw, dtype=wire_dtype, count=step * height // dtype.itemsize)
    rows = elements.reshape(height, step // dtype.itemsize)[:, : width * channels]
    pixels = rows.reshape(_pixel_shape(height, width, channels))
    if not wire_dtype.isnative:
        return pixels.astype(dtype)
    return pixels


def _convert_colour(code: int) -> Callable[[np.ndarray, str], np.ndarray]:
    def convert(pixels: np.ndarray, encoding: str) -> np.ndarray:
        return cv2.cvtColor(pixels, code)

    return convert


def _unchanged(pixels: np.ndarray, encoding: str) -> np.ndarray:
    return pixels


def _scale_16_to_8(pixels: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 -> 8 bit step, ``Mat::convertTo(CV_8U, 255. / 65535.)``: scale, round to
    nearest, saturate (``convertScaleAbs`` is the same on unsigned input)."""
    return cv2.convertScaleAbs(pixels, alpha=255.0 / 65535.0)


def _mono16_to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """As cv_bridge converts mono16 to rgb8: grey to RGB, then 16 -> 8 bit scaled by 255/65535."""
    return cv2.cvtColor(_scale_16_to_8(pixels), cv2.COLOR_GRAY2RGB)


def _float_to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Treat floats as intensities in [0, 1]; NaN (no measurement) becomes black."""
    intensity = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(intensity, 0.0, 1.0, out=intensity)
    grey = np.rint(intensity * 255.0).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


def _convert_yuv422(code: int) -> Callable[[np.ndarray, str], np.ndarray]:
    def convert(pixels: np.ndarray, encoding: str) -> np.ndarray:
        width = pixels.shape[1]
        if width % 2:
            raise ImageConversionError(
                f"{encoding} image width {width} is odd; 4:2:2 chroma needs pixel pairs"
            )
        return cv2.cvtColor(pixels, code)

    return convert


# OpenCV's historic Bayer codes are named after the second row's pattern (so ROS rggb is OpenCV
# "BG"); the explicit four-letter aliases are named like ROS, which keeps this table readable.
_TO_RGB8: Final[dict[str, Callable[[np.ndarray, str], np.ndarray]]] = {
    "rgb8": _unchanged,
    "8UC3": _unchanged,
    "bgr8": _convert_colour(cv2.COLOR_BGR2RGB),
    "rgba8": _convert_colour(cv2.COLOR_RGBA2RGB),
    "bgra8": _convert_colour(cv2.COLOR_BGRA2RGB),
    "mono8": _convert_colour(cv2.COLOR_GRAY2RGB),
    "8UC1": _convert_colour(cv2.COLOR_GRAY2RGB),
    "mono16": _mono16_to_rgb8,
    "16UC1": _mono16_to_rgb8,
    "32FC1": _float_to_rgb8,
    "yuv422": _convert_yuv422(cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": _convert_yuv422(cv2.COLOR_YUV2RGB_YUY2),
    "bayer_rggb8": _convert_colour(cv2.COLOR_BayerRGGB2RGB),
    "bayer_bggr8": _convert_colour(cv2.COLOR_BayerBGGR2RGB),
    "bayer_gbrg8": _convert_colour(cv2.COLOR_BayerGBRG2RGB),
    "bayer_grbg8": _convert_colour(cv2.COLOR_BayerGRBG2RGB),
}


def _pixels_to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    return _TO_RGB8[encoding](pixels, encoding)


def check_frame_size(height: int, width: int, max_pixels: int, what: str = "image") -> None:
    """Refuse a frame of more than ``max_pixels`` pixels (0: any size) before any copy of it:
    converting an 8000 x 8000 frame would take several times its 192 MB."""
    if max_pixels and height * width > max_pixels:
        raise ImageConversionError(
            f"{what} of {width}x{height} pixels ({height * width:,}) is larger than "
            f"max_frame_pixels ({max_pixels:,}); refused unread"
        )


def image_to_rgb8(msg: ImageMessage, max_pixels: int = 0) -> np.ndarray:
    """Bring any supported raw Image to the HxWx3 uint8 RGB layout the model consumes, as
    cv_bridge's ``toCvCopy(msg, "rgb8")`` does (see the module docstring for the encodings
    cv_bridge refuses and this reads anyway).

    rgb8 and 8UC3 (read as RGB) come back as views of the message; 8UC1 is read as mono8, 16UC1
    as mono16. ``max_pixels``: see :func:`check_frame_size`.
    """
    check_frame_size(int(msg.height), int(msg.width), max_pixels, f"{msg.encoding} image")
    return _pixels_to_rgb8(image_to_numpy(msg), msg.encoding)


def _validated_pixels(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Check an array against an encoding and return it C-contiguous in host byte order."""
    dtype, channels = _encoding_spec(encoding)
    pixels = np.asarray(pixels)
    if pixels.dtype.newbyteorder("=") != dtype:
        raise ImageConversionError(
            f"encoding {encoding!r} needs dtype {dtype.name}, got {pixels.dtype.name}"
        )
    single_channel_3d = channels == 1 and pixels.ndim == 3 and pixels.shape[2] == 1
    if single_channel_3d:
        pixels = pixels[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
        expected = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ImageConversionError(
            f"encoding {encoding!r} needs an array of shape {expected}, got {pixels.shape}"
        )
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty image: {encoding} array of shape {pixels.shape}")
    return np.ascontiguousarray(pixels, dtype=dtype)


def _byte_array(pixels: np.ndarray) -> stdlib_array.array:
    """Pack into array('B'): with ROS_PYTHON_CHECK_FIELDS=1 the setter checks bytes one by one.

    An array('B') costs a memcpy or two whether checks are on or off; bytes would take ~170 ms
    per 1280x1024 rgb8 frame when they are on.
    """
    packed = stdlib_array.array("B")
    packed.frombytes(np.ascontiguousarray(pixels).reshape(-1).view(np.uint8))
    return packed


def numpy_to_image(array: np.ndarray, encoding: str, header: Any = None) -> Image:
    """Pack an array into a raw Image, refusing arrays whose shape or dtype contradict the encoding.

    Single-channel encodings also accept HxWx1. Multi-byte pixels are written in host byte order.
    """
    from sensor_msgs.msg import Image

    pixels = _validated_pixels(array, encoding)
    msg = Image()
    if header is not None:
        msg.header = copy.deepcopy(header)
    msg.height, msg.width = pixels.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = _HOST_IS_BIGENDIAN
    msg.step = pixels.strides[0]
    msg.data = _byte_array(pixels)
    return msg


_MAGIC: Final = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
"""Leading bytes of the containers image_transport's compressed plugins write."""
_DEPTH_HEADER_BYTES: Final = 12
"""compressed_depth_image_transport's header (format, two quantisation floats) before the PNG."""


def _container(data: np.ndarray, fmt: str) -> tuple[np.ndarray, str]:
    """The encoded image and its container, found from the bytes whatever ``fmt`` says: the
    format string is a label a publisher may get wrong, the magic bytes are not."""
    head = data[: _DEPTH_HEADER_BYTES + 8].tobytes()
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return data, name
    if head[_DEPTH_HEADER_BYTES:].startswith(b"\x89PNG\r\n\x1a\n"):
        if _source_encoding(fmt) == "32fc1":
            raise ImageConversionError(
                f"compressed depth image (format {fmt!r}) holds quantised inverse 32FC1 depth, "
                "which is not supported; publish 16UC1 depth or a raw Image"
            )
        return data[_DEPTH_HEADER_BYTES:], "PNG"
    raise ImageConversionError(
        f"cannot decode {data.size} bytes of compressed image (format {fmt!r}): the data is "
        f"neither JPEG nor PNG nor TIFF (it starts with {head[:8].hex(' ')})"
    )


def _check_complete(data: np.ndarray, container: str, fmt: str) -> None:
    """Refuse a JPEG or PNG cut short: libjpeg in OpenCV 4.x decodes a truncated JPEG to a
    partly grey image with only a warning, where 5.x refuses it; both now refuse it here."""
    raw = data.tobytes()
    if container == "JPEG":
        # The main image's end-of-image marker follows its last scan (an EXIF thumbnail's comes
        # before); entropy-coded data never holds FF D9.
        complete = raw.rfind(b"\xff\xd9") > raw.rfind(b"\xff\xda") >= 0
    elif container == "PNG":
        complete = b"IEND" in raw[-32:]
    else:
        return
    if not complete:
        raise ImageConversionError(
            f"cannot decode {data.size} bytes of compressed image (format {fmt!r}): the "
            f"{container} data is truncated (no end-of-image marker)"
        )


def _decode_compressed(data: np.ndarray, fmt: str) -> np.ndarray:
    data, container = _container(data, fmt)
    _check_complete(data, container, fmt)
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageConversionError(
            f"cannot decode {data.size} bytes of compressed image (format {fmt!r}): {exc}"
        ) from exc
    if decoded is None:
        raise ImageConversionError(
            f"cannot decode {data.size} bytes of compressed image (format {fmt!r})"
        )
    return decoded


def _compressed_size(data: np.ndarray, fmt: str) -> tuple[int, int]:
    """(height, width) from the compressed file's header, without decoding its pixels."""
    import io

    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(io.BytesIO(data.tobytes())) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageConversionError(
            f"cannot read the size of {data.size} bytes of compressed image (format {fmt!r}): {exc}"
        ) from exc
    return int(height), int(width)


def _source_encoding(fmt: str) -> str:
    """The raw encoding before compression, lower-case: the part of an image_transport format
    before ';' ("" for a bare "jpeg"/"png")."""
    return fmt.split(";", 1)[0].strip().lower() if ";" in fmt else ""


def _as_8bit_encoded(decoded: np.ndarray, fmt: str) -> tuple[np.ndarray, str]:
    """Name the decoded pixels with a raw encoding so the raw converters can finish the job."""
    pixels = _scale_16_to_8(decoded) if decoded.dtype == np.uint16 else decoded
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        source = _source_encoding(fmt)
        return pixels, source if source.startswith("bayer_") else "mono8"
    return pixels, "bgra8" if pixels.shape[2] == 4 else "bgr8"


def compressed_to_numpy(
    msg: CompressedImageMessage, desired: str = "rgb8", max_pixels: int = 0
) -> np.ndarray:
    """Decode a CompressedImage to HxWx3 uint8 in the desired channel order.

    "passthrough" returns what OpenCV decoded (BGR/BGRA or HxW, 8 or 16 bit), as cv_bridge does.
    Colour is always read in OpenCV order, whatever the format string claims; a Bayer source named
    in the format string is demosaiced. ``max_pixels``: the size in the file's header is checked
    (:func:`check_frame_size`) before anything is decoded: a few kilobytes of JPEG can claim a
    frame of gigabytes.
    """
    fmt = msg.format
    if desired not in _DESIRED_COMPRESSED_ENCODINGS:
        raise ImageConversionError(
            f"cannot decode compressed image (format {fmt!r}) to {desired!r}; "
            f"choose one of {', '.join(_DESIRED_COMPRESSED_ENCODINGS)}"
        )
    data = _byte_buffer(msg.data)
    if data.size == 0:
        raise ImageConversionError(f"empty compressed image data (format {fmt!r})")
    if max_pixels:
        height, width = _compressed_size(data, fmt)
        check_frame_size(height, width, max_pixels, "compressed image")
    decoded = _decode_compressed(data, fmt)
    if desired == "passthrough":
        return decoded
    pixels, encoding = _as_8bit_encoded(decoded, fmt)
    if desired == "bgr8" and encoding == "bgr8":
        return pixels
    rgb = _pixels_to_rgb8(pixels, encoding)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if desired == "bgr8" else rgb


def _encoder_input(pixels: np.ndarray, encoding: str, fmt: str) -> tuple[np.ndarray, str]:
    """Mirror image_transport: colour goes to the encoder as bgr8, everything else unchanged."""
    dtype, channels = ENCODINGS[encoding]
    if dtype == _FLOAT32:
        raise ImageConversionError(f"cannot compress {encoding}: {fmt} needs 8 or 16-bit pixels")
    if channels == 2:
        raise ImageConversionError(
            f"cannot compress {encoding}: two-channel 4:2:2 pixels are not encodable as {fmt}; "
            "convert with image_to_rgb8 first"
        )
    if dtype == _UINT16 and fmt == "jpeg":
        raise ImageConversionError(
            f"cannot compress {encoding} as jpeg: jpeg holds 8-bit pixels; use png"
        )
    if encoding == "bgr8":
        return pixels, "bgr8"
    if encoding in _TO_BGR_CODES:
        return cv2.cvtColor(pixels, _TO_BGR_CODES[encoding]), "bgr8"
    return pixels, ""


def numpy_to_compressed(
    array: np.ndarray,
    encoding: str = "rgb8",
    fmt: str = "jpeg",
    quality: int = 90,
    header: Any = None,
) -> CompressedImage:
    """Compress an array into a CompressedImage readable by image_transport subscribers.

    The format string is written as image_transport's compressed plugin writes it, e.g.
    "rgb8; jpeg compressed bgr8" for colour and "mono8; png compressed " (nothing after the last
    space) for everything else. `quality` (0-100) applies to jpeg; png is lossless.
    """
    from sensor_msgs.msg import CompressedImage

    if fmt not in _COMPRESSION_EXTENSIONS:
        raise ImageConversionError(
            f"unsupported compression format {fmt!r}; choose one of "
            f"{', '.join(_COMPRESSION_EXTENSIONS)}"
        )
    if not 0 <= quality <= 100:
        raise ImageConversionError(f"jpeg quality must be within 0-100, got {quality}")
    pixels = _validated_pixels(array, encoding)
    encoder_input, compressed_encoding = _encoder_input(pixels, encoding, fmt)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    encoded_ok, encoded = cv2.imencode(_COMPRESSION_EXTENSIONS[fmt], encoder_input, params)
    if not encoded_ok:
        raise ImageConversionError(
            f"OpenCV failed to encode {encoding} array of shape {pixels.shape} as {fmt}"
        )
    msg = CompressedImage()
    if header is not None:
        msg.header = copy.deepcopy(header)
    msg.format = f"{encoding}; {fmt} compressed {compressed_encoding}"
    msg.data = _byte_array(encoded)
    return msg
