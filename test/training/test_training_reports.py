"""Report pieces: overlays, the Markdown tables, the plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from endoarss_ros.data.classes import ClassInfo
from endoarss_ros.metrics import classification_metrics, segmentation_metrics
from endoarss_ros.training.reports import FrameExample, markdown_report, overlay, write_report

CLASSES = ClassInfo(
    activities=("idle", "cut"),
    segmentation=("background", "tool", "blood"),
    colors=((0, 0, 0), (0, 0, 255), (255, 0, 0)),
)


def test_overlay_tints_foreground_only() -> None:
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.uint8)
    out = overlay(image, mask, CLASSES, alpha=0.5)
    assert (out[0, 0] == 100).all() and (out[1, 0] == 100).all() and (out[1, 2] == 100).all()
    assert out[0, 1].tolist() == [50, 50, 177]
    assert out[0, 2].tolist() == [177, 50, 50]


def test_markdown_report_states_both_background_conventions_and_robustness() -> None:
    metrics = {
        "activity": classification_metrics(np.array([[3, 1], [0, 4]])),
        "segmentation": segmentation_metrics(np.array([[50, 2, 0], [3, 10, 0], [0, 0, 0]])),
    }
    robustness = {
        "clean": {0: {"activity_accuracy": 0.875, "segmentation_miou": 0.6}},
        "smoke": {
            1: {"activity_accuracy": 0.75, "segmentation_miou": 0.5},
            5: {"activity_accuracy": 0.25, "segmentation_miou": 0.3},
        },
    }
    text = markdown_report(metrics, CLASSES, {"split": "test"}, robustness)
    assert "| with background |" in text and "| without background |" in text
    assert "chance (uniform)" in text and "0.5000 |" in text
    assert "| 2 blood | - | - | 0 |" in text  # absent class: undefined, not zero
    assert "| smoke | 0.7500 | - | - | - | 0.2500 | 0.5000 |" in text


def test_write_report_files(tmp_path: Path) -> None:
    metrics = {
        "activity": classification_metrics(np.array([[3, 1], [0, 4]])),
        "segmentation": segmentation_metrics(np.array([[50, 2, 0], [3, 10, 1], [0, 0, 4]])),
    }
    frame = FrameExample(
        image=np.zeros((8, 8, 3), np.uint8),
        mask=np.ones((8, 8), np.uint8),
        predicted_mask=np.zeros((8, 8), np.uint8),
        activity=0,
        predicted_activity=1,
        score=0.25,
        sample_id="frame-1",
    )
    written = write_report(tmp_path, metrics, CLASSES, {"split": "val"}, [frame], [frame])
    assert {p.name for p in written} == {
        "metrics.json",
        "report.md",
        "confusion_matrix.png",
        "per_class_iou.png",
        "best_frames.png",
        "worst_frames.png",
    }
