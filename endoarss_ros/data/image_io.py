"""Reading and writing frames and class-id masks, RGB in memory, with errors that name the file.

Files are read as bytes and decoded by OpenCV, so a missing file, an unreadable one and a corrupt
one are told apart (`cv2.imread` returns None for all three).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import cv2
import numpy as np

from endoarss_ros.data.dataset import DatasetError

IMAGE_EXTENSIONS: Final = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
"""Image file types the readers index; masks are always PNG (lossless)."""

_WRITE_PARAMS: Final = {
    ".png": [cv2.IMWRITE_PNG_COMPRESSION, 1],
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
}


def resolve_link(link: Path) -> Path:
    """Where a symbolic link finally points; a loop is a :class:`DatasetError` naming it."""
    try:
        return link.resolve(strict=False)
    except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise DatasetError(f"{link}: symbolic link loop or unreadable link ({exc})") from None


def check_inside_root(path: Path, root: Path) -> Path:
    """``path`` itself, if no part of it below ``root`` is a symbolic link leading outside
    ``root``; else a one-line :class:`DatasetError` naming the link.

    Links inside the dataset (a frame shared by two splits) are fine, and ``root`` itself may
    be a link; a link out of it would let a dataset read any file the process can read, and
    makes the dataset depend on files that are not part of it."""
    root_real = root.resolve()
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise DatasetError(f"{path}: not inside the dataset root {root}") from None
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            target = resolve_link(current)
            if not target.is_relative_to(root_real):
                raise DatasetError(
                    f"{current}: symbolic link to {target}, outside the dataset root {root}; "
                    "copy the data into the dataset or link the whole dataset root"
                )
    return path


def _read_bytes(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file does not exist") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    if data.size == 0:
        raise DatasetError(f"{path}: file is empty")
    return data


def read_rgb_image(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB; grey or 16-bit files are converted, alpha is dropped."""
    # IMREAD_COLOR_RGB would save the conversion, but OpenCV before 4.11 (Ubuntu's) lacks it.
    decoded = cv2.imdecode(_read_bytes(path), cv2.IMREAD_COLOR)
    if decoded is None:
        raise DatasetError(f"{path}: not a decodable image (corrupt or unsupported format)")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def read_label_mask(path: Path) -> np.ndarray:
    """H x W uint8 values exactly as stored: no colour conversion, no scaling.

    A three-channel file is accepted only when its channels are equal (a grey mask saved as
    RGB); colour-coded or paletted masks must be converted to class ids first.
    """
    decoded = cv2.imdecode(_read_bytes(path), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise DatasetError(f"{path}: not a decodable mask (corrupt or unsupported format)")
    if decoded.ndim == 3:
        if decoded.shape[2] == 4:
            decoded = decoded[:, :, :3]
        if decoded.shape[2] != 1 and not (
            np.array_equal(decoded[:, :, 0], decoded[:, :, 1])
            and np.array_equal(decoded[:, :, 0], decoded[:, :, 2])
        ):
            raise DatasetError(
                f"{path}: mask has {decoded.shape[2]} differing colour channels; masks must be "
                "single-channel class ids (convert colour-coded or paletted masks first)"
            )
        decoded = decoded[:, :, 0]
    if decoded.dtype != np.uint8:
        if decoded.dtype.kind != "u" or int(decoded.max(initial=0)) > 255:
            raise DatasetError(
                f"{path}: mask of type {decoded.dtype} holds values above 255; class ids must "
                "fit in uint8"
            )
        decoded = decoded.astype(np.uint8)
    return np.ascontiguousarray(decoded)


def write_rgb_image(path: Path, image: np.ndarray) -> None:
    """Write an RGB uint8 image; the format follows the extension (fast PNG, JPEG quality 95)."""
    _check_array(image, 3, path)
    _write(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_label_mask(path: Path, mask: np.ndarray) -> None:
    """Write a single-channel uint8 class-id mask; must be PNG so ids survive."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"{path}: masks must be written as .png to keep class ids exact")
    _check_array(mask, 2, path)
    _write(path, mask)


def _check_array(array: np.ndarray, ndim: int, path: Path) -> None:
    if array.dtype != np.uint8 or array.ndim != ndim or (ndim == 3 and array.shape[2] != 3):
        expected = "H x W x 3" if ndim == 3 else "H x W"
        raise ValueError(
            f"{path}: expected a {expected} uint8 array, got {array.shape} {array.dtype}"
        )


def _write(path: Path, pixels: np.ndarray) -> None:
    path = Path(path)
    params = _WRITE_PARAMS.get(path.suffix.lower(), [])
    ok, encoded = cv2.imencode(path.suffix, pixels, params)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode {path.suffix} files")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded.tofile(path)
