"""Reader and writer for the generic dataset layout (specified in README.md beside this file).

    <root>/classes.yaml     activities and segmentation classes (names, RGB colours)
    <root>/labels.csv       one row per frame: file,activity,split[,more columns]
    <root>/images/<file>    the frame (PNG, JPEG, ...)
    <root>/masks/<file stem>.png   class ids, 255 = ignore, same size as the frame

Every image under `images/` must be listed and every listed image must have its mask, so the
table and the folders cannot drift apart unnoticed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

import numpy as np

from endoarss_ros.data.classes import ClassInfo, ClassInfoError
from endoarss_ros.data.dataset import (
    ActivitySegmentationDataset,
    DatasetError,
    Sample,
    Transform,
    check_pair,
)
from endoarss_ros.data.image_io import (
    IMAGE_EXTENSIONS,
    check_inside_root,
    read_label_mask,
    read_rgb_image,
    resolve_link,
    write_label_mask,
    write_rgb_image,
)

CLASSES_FILE: Final = "classes.yaml"
LABELS_FILE: Final = "labels.csv"
IMAGES_DIR: Final = "images"
MASKS_DIR: Final = "masks"
REQUIRED_COLUMNS: Final = ("file", "activity", "split")


@dataclass(frozen=True)
class LabelRecord:
    """One row of `labels.csv`: image path relative to `images/`, activity index, split name.

    `extra` holds the optional columns (e.g. `clip` and `frame` for video clips) as strings.
    """

    file: str
    activity: int
    split: str
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def mask_file(self) -> str:
        """Mask path relative to `masks/`: the image path with a `.png` suffix."""
        return PurePosixPath(self.file).with_suffix(".png").as_posix()


class GenericLayoutDataset(ActivitySegmentationDataset):
    """The frames of one split (or all, with `split=None`) in `labels.csv` order."""

    def __init__(
        self, root: Path | str, split: str | None = "train", transform: Transform | None = None
    ) -> None:
        self.root = Path(root)
        for name in (CLASSES_FILE, LABELS_FILE):
            check_inside_root(self.root / name, self.root)
        try:
            class_info = ClassInfo.from_yaml(self.root / CLASSES_FILE)
        except ClassInfoError as exc:
            raise DatasetError(str(exc)) from exc
        super().__init__(class_info, transform)
        self.split = split
        all_records = read_labels(self.root, class_info)
        check_files(self.root, all_records)
        self.records: tuple[LabelRecord, ...] = tuple(
            r for r in all_records if split is None or r.split == split
        )
        if not self.records:
            splits = sorted({r.split for r in all_records})
            raise DatasetError(
                f"{self.root / LABELS_FILE}: split {split!r} is empty; splits present: {splits}"
            )

    @property
    def splits(self) -> list[str]:
        return sorted({r.split for r in self.records})

    def __len__(self) -> int:
        return len(self.records)

    def activity_of(self, index: int) -> int:
        return self.records[index].activity

    def load(self, index: int) -> Sample:
        record = self.records[index]
        image_path = self.root / IMAGES_DIR / record.file
        mask_path = self.root / MASKS_DIR / record.mask_file
        image = read_rgb_image(image_path)
        mask = read_label_mask(mask_path)
        check_pair(image, mask, self.class_info, image_path, mask_path)
        return Sample(image, mask, record.activity, record.file, image_path)


def read_labels(root: Path, class_info: ClassInfo) -> list[LabelRecord]:
    """Parse `labels.csv`; errors name the file and line."""
    path = root / LABELS_FILE
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # tolerate a spreadsheet BOM
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise DatasetError(f"{path}: labels table does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read labels table: {exc}") from exc
    if not rows:
        raise DatasetError(f"{path}: labels table is empty (expected a header line)")
    header = [name.strip() for name in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing or len(set(header)) != len(header):
        raise DatasetError(
            f"{path}: header {header} must name each of {list(REQUIRED_COLUMNS)} once"
        )
    records: list[LabelRecord] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DatasetError(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
        values = dict(zip(header, (v.strip() for v in row), strict=True))
        file, activity, split = (values.pop(c) for c in REQUIRED_COLUMNS)
        if not file or not split or not activity:
            raise DatasetError(f"{path}:{line}: empty file, activity or split")
        pure = PurePosixPath(file)
        if pure.is_absolute() or ".." in pure.parts or "\\" in file:
            raise DatasetError(
                f"{path}:{line}: file {file!r} must be a relative path under images/"
            )
        if pure.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(f"{path}:{line}: {file!r} is not an image file name")
        if file in seen:
            raise DatasetError(f"{path}:{line}: {file!r} already listed on line {seen[file]}")
        seen[file] = line
        try:
            activity_id = class_info.activity_id(activity)
        except KeyError as exc:
            raise DatasetError(f"{path}:{line}: {exc.args[0]}") from None
        records.append(LabelRecord(file, activity_id, split, values))
    return records


def check_files(root: Path, records: Iterable[LabelRecord]) -> None:
    """Every listed image exists with its mask; no image or mask is left unlisted."""
    images = _files_under(root / IMAGES_DIR, root)
    masks = _files_under(root / MASKS_DIR, root)
    listed_masks: set[str] = set()
    for record in records:
        if record.file not in images:
            raise DatasetError(
                f"{root / IMAGES_DIR / record.file}: listed in {LABELS_FILE} but does not exist"
            )
        if record.mask_file not in masks:
            raise DatasetError(
                f"{root / IMAGES_DIR / record.file}: image without mask "
                f"(expected {root / MASKS_DIR / record.mask_file})"
            )
        listed_masks.add(record.mask_file)
    unlisted_images = sorted(images - {r.file for r in records})
    if unlisted_images:
        raise DatasetError(
            f"{root / IMAGES_DIR / unlisted_images[0]}: image not listed in {LABELS_FILE}"
        )
    unlisted_masks = sorted(masks - listed_masks)
    if unlisted_masks:
        raise DatasetError(f"{root / MASKS_DIR / unlisted_masks[0]}: mask without a listed image")


def _files_under(folder: Path, root: Path) -> set[str]:
    """Relative POSIX paths of the files below `folder`; names starting with "." are ignored.

    Symbolic links are followed while they stay inside the dataset `root`; one leading outside
    it, or back to a folder above it (a loop), is a `DatasetError` naming the link."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder does not exist")
    check_inside_root(folder, root)
    root_real = root.resolve()
    found: set[str] = set()

    def walk(directory: Path, base: PurePosixPath, ancestors: frozenset[Path]) -> None:
        with os.scandir(directory) as entries:
            names = sorted(e.name for e in entries if not e.name.startswith("."))
        for name in names:
            path = directory / name
            if path.is_symlink():
                target = resolve_link(path)
                if not target.is_relative_to(root_real):
                    check_inside_root(path, root)  # names the link and its target
            if path.is_dir():
                real = path.resolve()
                if real in ancestors:
                    raise DatasetError(
                        f"{path}: symbolic link loop (leads back to {real}, a folder above it)"
                    )
                walk(path, base / name, ancestors | {real})
            else:
                found.add((base / name).as_posix())

    walk(folder, PurePosixPath(), frozenset({folder.resolve()}))
    return found


def write_sample_files(root: Path, file: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write the image and mask of one frame at their generic-layout paths (safe in workers)."""
    record = LabelRecord(file, 0, "")
    write_rgb_image(Path(root) / IMAGES_DIR / file, image)
    write_label_mask(Path(root) / MASKS_DIR / record.mask_file, mask)


def write_index(root: Path, class_info: ClassInfo, records: Iterable[LabelRecord]) -> None:
    """Write `classes.yaml` and `labels.csv`; optional columns follow in first-seen order."""
    root = Path(root)
    records = list(records)
    extra_columns: list[str] = []
    for record in records:
        extra_columns.extend(k for k in record.extra if k not in extra_columns)
    root.mkdir(parents=True, exist_ok=True)
    class_info.to_yaml(root / CLASSES_FILE)
    with (root / LABELS_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*REQUIRED_COLUMNS, *extra_columns])
        for r in records:
            activity = class_info.activities[r.activity]
            writer.writerow(
                [r.file, activity, r.split, *(r.extra.get(k, "") for k in extra_columns)]
            )
