"""The definitions behind `bag eval`'s trust metrics, on hand-made frame records whose answers
are known: detection delay, recovery (and where it stops looking), clean and settled rates, and
the scores by level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from endoarss_ros.bags.evaluate import (
    SETTLE_FRAMES,
    ArtefactSpan,
    FrameRecord,
    read_artefacts,
    trust_metrics,
)
from endoarss_ros.bags.make import ARTEFACTS_KEY
from endoarss_ros.bags.schema import IMAGE, BagError, stream_qos
from endoarss_ros.bags.storage import BagReader, BagWriter

PERIOD = 100


def _records(levels: list[int | None], latched: list[int | None]) -> list[FrameRecord]:
    """Frame i at stamp i * PERIOD; OK frames answered right, the others wrong, with a mask
    confusion to match (right: all on the diagonal)."""
    records = []
    for index, (level, latch) in enumerate(zip(levels, latched, strict=True)):
        right = level == 0
        records.append(
            FrameRecord(
                index * PERIOD,
                true_activity=1,
                predicted_activity=1 if right else 0,
                trust_level=level,
                trust_latched=latch,
                mask_confusion=np.array([[5, 0], [0, 5]]) if right else np.array([[0, 5], [5, 0]]),
            )
        )
    return records


def _span(first: int, last: int, name: str = "smoke") -> ArtefactSpan:
    return ArtefactSpan(name, 4, first, last, first * PERIOD, last * PERIOD)


def test_detection_recovery_and_clean_rates() -> None:
    levels = [0] * 20
    levels[3:7] = [2] * 4
    levels[15] = 1
    latched = [0] * 20
    latched[5:8] = [2] * 3
    spans = [_span(3, 6), _span(12, 13, "contrast")]
    metrics = trust_metrics(_records(levels, latched), spans, segmentation=True)

    first, second = metrics["segments"]
    assert (first["detection_delay_frames"], first["recovery_frames"]) == (2, 2)
    assert first["frames"] == first["frames_in_bag"] == 4
    assert first["flag_rate"] == first["error_rate"] == 1.0
    assert first["latched_error_rate"] == 0.5
    # Never raised: no detection, and OK already at its last frame.
    assert (second["detection_delay_frames"], second["recovery_frames"]) == (None, 0)
    assert second["corruption"] == "contrast" and second["flag_rate"] == 0.0

    clean = metrics["clean"]
    assert clean["frames"] == 14
    assert clean["flag_rate"] == pytest.approx(1 / 14) and clean["error_rate"] == 0
    assert clean["latched_error_rate"] == pytest.approx(1 / 14)
    # Settled: clean frames more than SETTLE_FRAMES after every segment end they follow.
    assert SETTLE_FRAMES == 10
    assert metrics["settled"]["frames"] == 3 and metrics["settled"]["latched_error_rate"] == 0

    assert metrics["levels"] == {"OK": 15, "WARN": 1, "ERROR": 4}
    assert metrics["latched_levels"] == {"OK": 17, "WARN": 0, "ERROR": 3}
    by_level = metrics["by_level"]
    assert by_level["OK"] == {"frames": 15, "activity_accuracy": 1.0, "miou": 1.0}
    assert by_level["ERROR"] == {"frames": 4, "activity_accuracy": 0.0, "miou": 0.0}
    assert by_level["flagged"]["frames"] == 5 and by_level["flagged"]["activity_accuracy"] == 0
    assert by_level["all"]["activity_accuracy"] == pytest.approx(15 / 20)
    assert by_level["all"]["miou"] == pytest.approx(0.6)


def test_recovery_stops_at_the_next_segment_and_missing_outputs() -> None:
    latched = [0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0]
    levels: list[int | None] = [0, 0, 2, 2, 0, 0, 2, 2, 0, 0, 0, 0, None]
    latched_or_missing: list[int | None] = [*latched[:12], None]
    spans = [_span(2, 3), _span(6, 7), _span(40, 45)]
    metrics = trust_metrics(_records(levels, latched_or_missing), spans, segmentation=False)
    first, second, absent = metrics["segments"]
    # Still ERROR when the next segment starts: the first one's recovery is not measured.
    assert (first["detection_delay_frames"], first["recovery_frames"]) == (1, None)
    # Latched already: detected at once; OK four frames after its end.
    assert (second["detection_delay_frames"], second["recovery_frames"]) == (0, 4)
    assert absent["frames_in_bag"] == 0 and absent["frames"] == 0
    assert absent["flag_rate"] is None and absent["detection_delay_frames"] is None
    assert metrics["frames_assessed"] == 12 and metrics["frames_missing"] == 1
    assert metrics["by_level"]["all"]["miou"] is None
    assert metrics["by_level"]["WARN"] == {"frames": 0, "activity_accuracy": None, "miou": None}


def test_without_segments_every_frame_is_clean() -> None:
    metrics = trust_metrics(_records([0, 1, 0], [0, 0, 0]), None, segmentation=False)
    assert metrics["segments"] is None
    assert metrics["clean"]["frames"] == metrics["settled"]["frames"] == 3
    assert metrics["clean"]["flag_rate"] == pytest.approx(1 / 3)


def test_unreadable_artefact_list_names_the_bag(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:
        writer.add_topic("/camera/image_raw", IMAGE, stream_qos(True))
        writer.set_custom_data(ARTEFACTS_KEY, '[{"corruption": "smoke"}]')
    with BagReader(bag) as reader, pytest.raises(BagError, match=ARTEFACTS_KEY) as error:
        read_artefacts(reader)
    assert str(bag) in str(error.value)
