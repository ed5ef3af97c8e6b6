"""What the labels of a dataset mean: activity names, segmentation class names and colours.

A `ClassInfo` travels with a dataset (the generic layout's `classes.yaml`) and later with a
model checkpoint, so predictions can be named and drawn without the dataset at hand. Class ids
are list positions; mask value `IGNORE_INDEX` (255) marks unlabelled pixels and is never a class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import yaml

IGNORE_INDEX: Final = 255
"""Mask value for pixels without a label; excluded from losses and metrics."""

MAX_SEGMENTATION_CLASSES: Final = IGNORE_INDEX
"""Class ids 0..254 fit a uint8 mask next to the ignore value."""

RGB = tuple[int, int, int]


class ClassInfoError(ValueError):
    """A class description that is inconsistent; the message names the offending entry."""


@dataclass(frozen=True)
class ClassInfo:
    """Names of the activities and segmentation classes of a dataset, and one RGB colour per class.

    `notes` carries what a user must know about the labels (e.g. an index order that is not
    documented upstream); it is kept in `classes.yaml` and in checkpoints.
    """

    activities: tuple[str, ...]
    segmentation: tuple[str, ...]
    colors: tuple[RGB, ...]
    name: str = ""
    notes: str = ""
    _activity_ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "activities", tuple(self.activities))
        object.__setattr__(self, "segmentation", tuple(self.segmentation))
        object.__setattr__(self, "colors", tuple(_as_rgb(c, i) for i, c in enumerate(self.colors)))
        _check_names("activity", self.activities)
        _check_names("segmentation class", self.segmentation)
        if len(self.segmentation) > MAX_SEGMENTATION_CLASSES:
            raise ClassInfoError(
                f"{len(self.segmentation)} segmentation classes; at most "
                f"{MAX_SEGMENTATION_CLASSES} fit a uint8 mask beside ignore value {IGNORE_INDEX}"
            )
        if len(self.colors) != len(self.segmentation):
            raise ClassInfoError(
                f"{len(self.colors)} colours for {len(self.segmentation)} segmentation classes"
            )
        object.__setattr__(self, "_activity_ids", {n: i for i, n in enumerate(self.activities)})

    @property
    def num_activities(self) -> int:
        return len(self.activities)

    @property
    def num_segmentation_classes(self) -> int:
        return len(self.segmentation)

    def activity_id(self, name: str) -> int:
        """Index of an activity name; KeyError lists the known names."""
        try:
            return self._activity_ids[name]
        except KeyError:
            raise KeyError(
                f"unknown activity {name!r}; known: {', '.join(self.activities)}"
            ) from None

    def palette(self, ignore_color: RGB = (0, 0, 0)) -> np.ndarray:
        """256 x 3 uint8 lookup table: `palette[mask]` draws a mask in the class colours."""
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: len(self.colors)] = np.asarray(self.colors, dtype=np.uint8)
        table[IGNORE_INDEX] = ignore_color
        return table

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the `classes.yaml` schema (also used for checkpoint metadata)."""
        data: dict[str, Any] = {}
        if self.name:
            data["name"] = self.name
        if self.notes:
            data["notes"] = self.notes
        data["activities"] = list(self.activities)
        data["segmentation"] = [
            {"name": name, "color": list(color)}
            for name, color in zip(self.segmentation, self.colors, strict=True)
        ]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassInfo:
        """Inverse of `to_dict`; unknown keys are an error so typos do not pass unnoticed."""
        if not isinstance(data, Mapping):
            raise ClassInfoError(f"expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {"name", "notes", "activities", "segmentation"}
        if unknown:
            raise ClassInfoError(f"unknown keys {sorted(unknown)}")
        for key in ("activities", "segmentation"):
            if not isinstance(data.get(key), list):
                raise ClassInfoError(f"'{key}' must be a list")
        names: list[str] = []
        colors: list[RGB] = []
        for index, entry in enumerate(data["segmentation"]):
            if not isinstance(entry, Mapping) or set(entry) != {"name", "color"}:
                raise ClassInfoError(
                    f"segmentation entry {index} needs exactly 'name' and 'color': {entry!r}"
                )
            names.append(entry["name"])
            colors.append(_as_rgb(entry["color"], index))
        return cls(
            activities=tuple(data["activities"]),
            segmentation=tuple(names),
            colors=tuple(colors),
            name=str(data.get("name", "")),
            notes=str(data.get("notes", "")),
        )

    @classmethod
    def from_yaml(cls, path: Path) -> ClassInfo:
        """Read a `classes.yaml`; every problem is reported with the file's path."""
        try:
            text = Path(path).read_text(encoding="utf-8")
            return cls.from_dict(yaml.safe_load(text))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ClassInfoError) as exc:
            raise ClassInfoError(f"{path}: {exc}") from exc

    def to_yaml(self, path: Path) -> None:
        Path(path).write_text(
            yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8"
        )


def _check_names(kind: str, names: Sequence[object]) -> None:
    if not names:
        raise ClassInfoError(f"no {kind} names")
    seen: set[object] = set()
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ClassInfoError(f"{kind} {index} has no name: {name!r}")
        if name in seen:
            raise ClassInfoError(f"{kind} name {name!r} appears twice")
        seen.add(name)


def _as_rgb(color: object, index: int) -> RGB:
    if (
        not isinstance(color, Sequence)
        or isinstance(color, str)
        or len(color) != 3
        or not all(isinstance(c, int | np.integer) and 0 <= c <= 255 for c in color)
    ):
        raise ClassInfoError(f"colour of class {index} must be three integers 0..255: {color!r}")
    return (int(color[0]), int(color[1]), int(color[2]))


def placeholder_class_info(
    num_activities: int, num_segmentation_classes: int, name: str = "", notes: str = ""
) -> ClassInfo:
    """Numbered names (`activity_1`.., background, `class_1`..) where the real ones are unknown."""
    return ClassInfo(
        activities=tuple(f"activity_{i + 1}" for i in range(num_activities)),
        segmentation=("background", *(f"class_{i}" for i in range(1, num_segmentation_classes))),
        colors=distinct_colors(num_segmentation_classes),
        name=name,
        notes=notes,
    )


def distinct_colors(count: int) -> tuple[RGB, ...]:
    """Black for class 0, then saturated colours spread around the hue circle (golden ratio)."""
    colors: list[RGB] = [(0, 0, 0)]
    for index in range(1, count):
        hue = int((index * 0.6180339887 % 1.0) * 180)
        hsv = np.array([[[hue, 220, 235 if index % 2 else 170]]], dtype=np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
        colors.append((int(rgb[0]), int(rgb[1]), int(rgb[2])))
    return tuple(colors[:count])


MTLESD_CLASSES: Final = ClassInfo(
    name="MTLESD",
    activities=("Marking", "Circumferential Incision", "Submucosal Dissection"),
    segmentation=(
        "Background",
        "Marking Area",
        "Electric Knife",
        "Incision Area",
        "Mucosal Flaps",
        "FPCW Forceps",
        "FPCW Knife",
    ),
    colors=(
        (0, 0, 0),
        (255, 221, 51),
        (0, 160, 255),
        (255, 64, 64),
        (255, 128, 200),
        (64, 224, 96),
        (170, 85, 255),
    ),
    notes=(
        "Activity order follows the dataset's folders 1..3. Segmentation: class 0 is background; "
        "the order of classes 1..6 is not documented by the EndoARSS release, so these names are "
        "the known set in an assumed order, not verified against the masks."
    ),
)
"""Endoscopic submucosal dissection: 3 activities, background + 6 segmentation classes."""

MTLENDOVIS_CLASSES: Final = placeholder_class_info(
    12,
    7,
    name="MTLEndovis",
    notes=(
        "EndoVis 2018 frames; 12 activities (folders 1..12) and 7 segmentation classes whose "
        "names the EndoARSS release does not give; numbered placeholders are used."
    ),
)
"""EndoVis18-based: 12 activities and 7 segmentation classes, names unknown."""
