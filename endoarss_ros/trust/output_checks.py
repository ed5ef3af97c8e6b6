"""Cheap checks on the model's own output: does its answer hold what a consumer acts on?

The image checks (:mod:`.image_checks`) ask whether the frame can be read; these ask whether
the answer read from it is of use. A frame with every instrument withdrawn out of view is
clean, in distribution and confidently labelled (idle: no instrument touches the tissue), so
neither the image checks, the OOD score nor the confidence see anything wrong; but a robot
that follows the instrument has nothing to follow, and only the mask says so.

- **instrument_fraction**: the share of the lit field of view that the predicted mask puts on
  instrument classes; WARN at or below ``instrument_fraction_warn``, 1 % of the view. With an
  instrument in view the demo model's share is about 7 % and 1 % at the least (a tip just
  entering) on unseen synthetic frames; with every instrument withdrawn it is 0 on most frames
  and rarely above 0.5 %. Measured inside the field of view only: the black border outside an
  endoscope's field stop is ignored in training, so what the mask says there is arbitrary (the
  demo model paints up to 16 % of a 240 x 320 frame there as instrument on frames without
  any, and over the whole mask the check would miss half of them). The instrument classes
  come from the checkpoint's segmentation class names (:func:`instrument_class_ids`), never
  from fixed ids.

Each check returns a :class:`~.image_checks.CheckResult`, judged by
:func:`~.image_checks.judge` like the image checks; a value that cannot be measured (no
instrument class in the checkpoint, nothing labelled in the view) is NaN at level OK. A
threshold of 0 turns its level off (it is judged against -inf: no fraction is at or below it).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

import cv2
import numpy as np

from endoarss_ros.data.classes import IGNORE_INDEX
from endoarss_ros.validation import Number, Pattern, Section, setting

from .image_checks import CheckResult, judge

OUTPUT_CHECKS: Final = ("instrument_fraction",)

DEFAULT_INSTRUMENT_CLASSES: Final = "shaft,wrist,jaws,electric knife,fpcw forceps,fpcw knife"
"""The instrument classes of the synthetic scenes and of MTLESD (names compared in any case)."""


def _class_names(text: str) -> str | None:
    names = [" ".join(name.split()).lower() for name in text.split(",")]
    names = [name for name in names if name]
    if len(set(names)) != len(names):
        return None
    return ",".join(names)


_FRACTION = Number(0, 1)
_RIM = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class OutputCheckConfig(Section):
    """Thresholds of the checks on the model's output (defaults in the module docstring)."""

    SECTION: ClassVar[str] = "trust.output"

    instrument_classes: str = setting(
        DEFAULT_INSTRUMENT_CLASSES,
        Pattern("a comma-separated list of segmentation class names, no repeats", _class_names),
        doc="segmentation classes (names, any case) that are instruments; names the "
        "checkpoint lacks are skipped, and with none left instrument_fraction is not measured",
    )
    instrument_fraction_warn: float = setting(
        0.01,
        _FRACTION,
        doc="share of the lit view predicted as instrument at or below which: WARN "
        "(no instrument in view); 0: never",
        runtime=True,
    )
    instrument_fraction_error: float = setting(
        0.0,
        _FRACTION,
        doc="share of the lit view predicted as instrument at or below which: ERROR; 0: never",
        runtime=True,
    )

    def validate(self) -> None:
        warn, error = self.instrument_fraction_warn, self.instrument_fraction_error
        if warn > 0 and error > warn:
            self.fail(
                "instrument_fraction_error",
                f"must be at most instrument_fraction_warn ({warn:g}): instrument_fraction "
                f"fires as its value falls, ERROR after WARN; got {error:g}",
            )

    @property
    def instrument_class_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.instrument_classes.split(",") if name)


def instrument_class_ids(
    segmentation_names: Sequence[str], config: OutputCheckConfig | None = None
) -> tuple[int, ...]:
    """Ids of the checkpoint's segmentation classes that ``config`` names as instruments
    (compared in any case, runs of blanks as one); empty when it names none of them."""
    wanted = set((config or OutputCheckConfig()).instrument_class_names)
    return tuple(
        index
        for index, name in enumerate(segmentation_names)
        if " ".join(name.split()).lower() in wanted
    )


def instrument_fraction(
    mask: np.ndarray,
    instrument_ids: Collection[int],
    config: OutputCheckConfig | None = None,
    *,
    field_of_view: np.ndarray | None = None,
) -> CheckResult:
    """The ``instrument_fraction`` check of one predicted mask.

    ``mask``: H x W uint8 class ids, 255 unlabelled (the Predictor's mask); ``instrument_ids``:
    from :func:`instrument_class_ids`; ``field_of_view``: where to measure, a 2-D bool or uint8
    array (non-zero inside) of any size, e.g. :attr:`.ImageQuality.field_of_view` of the same
    frame; the mask is resized to it (pixel-centre nearest), which also makes the check cheap,
    and the view's outermost pixel ring is left out. None: the whole mask.
    """
    cfg = config or OutputCheckConfig()
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.ndim != 2:
        shape = getattr(mask, "shape", None)
        dtype = getattr(mask, "dtype", None)
        raise ValueError(f"expected an H x W uint8 mask of class ids, got {shape} {dtype}")
    ids = sorted({int(i) for i in instrument_ids})
    if any(not 0 <= i < IGNORE_INDEX for i in ids):
        raise ValueError(f"instrument class ids must lie in [0, {IGNORE_INDEX}), got {ids}")
    where = None
    if field_of_view is not None:
        if not isinstance(field_of_view, np.ndarray) or field_of_view.ndim != 2:
            shape = getattr(field_of_view, "shape", None)
            raise ValueError(f"field_of_view must be a 2-D array, got {shape}")
        # Its rim left out: a pixel of disagreement between the resized mask and the edge of
        # the view would otherwise count the border's arbitrary classes.
        where = cv2.erode((field_of_view != 0).view(np.uint8), _RIM)
        height, width = where.shape
        if mask.shape != where.shape:
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    value = math.nan
    if ids:
        counts = cv2.calcHist([mask], [0], where, [256], [0, 256]).ravel()
        labelled = float(counts.sum() - counts[IGNORE_INDEX])
        if labelled > 0:
            value = float(counts[ids].sum()) / labelled
    return judge(
        "instrument_fraction",
        value,
        cfg.instrument_fraction_warn or -math.inf,
        cfg.instrument_fraction_error or -math.inf,
    )
