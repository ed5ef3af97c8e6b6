"""Reader for the official EndoARSS layout, used by MTLESD and MTLEndovis.

    <root>/<split>/<activity folder 1..N>/image/<name>.png
    <root>/<split>/<activity folder 1..N>/mask/<name>.png     (single-channel)

Splits are `train` and `test` in the release; any folder under the root can be named. The
activity index is the folder number minus 1. A mask has the image's file name, or its stem with
`.png` when the image is stored in another format. Names starting with "." (e.g. `.DS_Store`)
are ignored; any other unexpected entry is an error.

Mask values: the official loader decrements every value above 0 by one, so raw 0 and raw 1 both
become class 0 and raw k >= 2 becomes class k-1 (the released masks appear to use raw 0 and
2..7). `mask_mapping="official"` reproduces that; `"identity"` takes values as class ids, with
255 as ignore. Under the official mapping raw 255 maps to 254 and is reported as out of range,
as the official loader's assertion would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np

from endoarss_ros.data.classes import MTLESD_CLASSES, ClassInfo
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
)

MaskMapping = Literal["official", "identity"]


def official_mask_values(raw: np.ndarray) -> np.ndarray:
    """The EndoARSS loader's mapping: every value above 0 decremented by one."""
    return raw - (raw > 0).astype(np.uint8)


def identity_mask_values(raw: np.ndarray) -> np.ndarray:
    return raw


MASK_MAPPINGS: Final[dict[str, Callable[[np.ndarray], np.ndarray]]] = {
    "official": official_mask_values,
    "identity": identity_mask_values,
}


@dataclass(frozen=True)
class OfficialEntry:
    """One indexed frame: its files and its activity (folder number - 1)."""

    image_path: Path
    mask_path: Path
    activity: int


class OfficialLayoutDataset(ActivitySegmentationDataset):
    """Frames of one split of an official-layout dataset, ordered by activity then file name."""

    def __init__(
        self,
        root: Path | str,
        split: str = "train",
        class_info: ClassInfo = MTLESD_CLASSES,
        mask_mapping: MaskMapping = "official",
        transform: Transform | None = None,
    ) -> None:
        super().__init__(class_info, transform)
        if mask_mapping not in MASK_MAPPINGS:
            raise ValueError(
                f"unknown mask_mapping {mask_mapping!r}; choose one of {sorted(MASK_MAPPINGS)}"
            )
        self.root = Path(root)
        self.split = split
        self.mask_mapping: MaskMapping = mask_mapping
        self._map_mask = MASK_MAPPINGS[mask_mapping]
        self.entries: tuple[OfficialEntry, ...] = tuple(
            index_official_split(self.root / split, class_info.num_activities, self.root)
        )

    def __len__(self) -> int:
        return len(self.entries)

    def activity_of(self, index: int) -> int:
        return self.entries[index].activity

    def load(self, index: int) -> Sample:
        entry = self.entries[index]
        image = read_rgb_image(entry.image_path)
        raw = read_label_mask(entry.mask_path)
        mask = self._map_mask(raw)
        try:
            check_pair(image, mask, self.class_info, entry.image_path, entry.mask_path)
        except DatasetError as exc:
            if self.mask_mapping == "official" and image.shape[:2] == mask.shape[:2]:
                raise DatasetError(
                    f"{exc} (after the official mapping raw k -> k-1; raw values present: "
                    f"{np.unique(raw).tolist()})"
                ) from None
            raise
        relative = entry.image_path.relative_to(self.root)
        return Sample(image, mask, entry.activity, relative.as_posix(), entry.image_path)


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def index_official_split(
    split_dir: Path, num_activities: int, root: Path | None = None
) -> list[OfficialEntry]:
    """Pair every image with its mask; raise `DatasetError` naming the first inconsistency.

    ``root`` (the split folder's parent by default) is the dataset root: no folder or file may
    be a symbolic link leading outside it."""
    root = split_dir.parent if root is None else root
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: split folder does not exist")
    check_inside_root(split_dir, root)
    folders: list[tuple[int, Path]] = []
    for child in _visible_entries(split_dir):
        check_inside_root(child, root)
        number = int(child.name) if child.name.isdigit() else None
        if not child.is_dir() or number is None or not 1 <= number <= num_activities:
            raise DatasetError(
                f"{child}: unknown activity; expected only folders named 1..{num_activities}"
            )
        folders.append((number, child))
    entries: list[OfficialEntry] = []
    for number, folder in sorted(folders):
        entries.extend(_index_activity_folder(folder, number - 1, root))
    if not entries:
        raise DatasetError(f"{split_dir}: split contains no images")
    return entries


def _index_activity_folder(folder: Path, activity: int, root: Path) -> list[OfficialEntry]:
    image_dir, mask_dir = folder / "image", folder / "mask"
    for needed in (image_dir, mask_dir):
        if not needed.is_dir():
            raise DatasetError(
                f"{needed}: folder missing (an activity folder needs image/ and mask/)"
            )
        check_inside_root(needed, root)
    unexpected = [p for p in _visible_entries(folder) if p.name not in ("image", "mask")]
    if unexpected:
        raise DatasetError(f"{unexpected[0]}: unexpected entry beside image/ and mask/")
    masks = {p.name: p for p in _visible_entries(mask_dir)}
    used: set[str] = set()
    entries = []
    for image_path in _visible_entries(image_dir):
        if not image_path.is_file() or image_path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(
                f"{image_path}: not an image file (expected {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        mask_name = next(
            (n for n in (image_path.name, image_path.stem + ".png") if n in masks), None
        )
        if mask_name is None:
            raise DatasetError(
                f"{image_path}: image without mask (looked for {mask_dir / image_path.name})"
            )
        used.add(mask_name)
        check_inside_root(image_path, root)
        check_inside_root(masks[mask_name], root)
        entries.append(OfficialEntry(image_path, masks[mask_name], activity))
    orphans = sorted(set(masks) - used)
    if orphans:
        raise DatasetError(f"{masks[orphans[0]]}: mask without image in {image_dir}")
    return entries
