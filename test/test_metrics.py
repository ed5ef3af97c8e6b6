"""Metrics against an independent computation from the raw label arrays (plain numpy loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from endoarss_ros.metrics import (
    MultiTaskMetrics,
    classification_metrics,
    frame_scores,
    json_ready,
    segmentation_metrics,
    selection_score,
)

IGNORE = 255


def reference_classification(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    precision, recall, f1 = [], [], []
    for c in range(num_classes):
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        precision.append(tp / (tp + fp) if tp + fp else math.nan)
        recall.append(tp / (tp + fn) if tp + fn else math.nan)
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
    labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "macro_f1": float(np.mean([f1[c] for c in labels])),
    }


def reference_segmentation(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> dict:
    valid = gt != IGNORE
    g, p = gt[valid], pred[valid]
    iou, dice = [], []
    for c in range(num_classes):
        inter = np.sum((g == c) & (p == c))
        union = np.sum((g == c) | (p == c))
        size = np.sum(g == c) + np.sum(p == c)
        iou.append(inter / union if union else math.nan)
        dice.append(2 * inter / size if size else math.nan)
    foreground = g != 0
    return {
        "iou": iou,
        "dice": dice,
        "miou": float(np.nanmean(iou)),
        "miou_fg": float(np.nanmean(iou[1:])),
        "mdice": float(np.nanmean(dice)),
        "mdice_fg": float(np.nanmean(dice[1:])),
        "pixel_accuracy": float(np.mean(g == p)),
        "pixel_accuracy_fg": float(np.mean(g[foreground] == p[foreground])),
    }


def confusion_of(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in zip(y_true.ravel(), y_pred.ravel(), strict=True):
        if t != IGNORE:
            matrix[t, p] += 1
    return matrix


def assert_close_lists(actual: list, expected: list) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        if math.isnan(e):
            assert math.isnan(a)
        else:
            assert a == pytest.approx(e)


def test_classification_metrics_match_reference() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 5, 300))
    y_pred[y_pred == 4] = 3  # class 4 is never predicted: its precision is undefined
    ours = classification_metrics(confusion_of(y_true, y_pred, 5))
    ref = reference_classification(y_true, y_pred, 5)
    assert ours["accuracy"] == pytest.approx(ref["accuracy"])
    assert ours["macro_f1"] == pytest.approx(ref["macro_f1"])
    assert_close_lists(ours["per_class_precision"], ref["precision"])
    assert_close_lists(ours["per_class_recall"], ref["recall"])
    assert_close_lists(ours["per_class_f1"], ref["f1"])
    assert math.isnan(ours["per_class_precision"][4])
    assert ours["support"] == np.bincount(y_true, minlength=5).tolist()


def test_macro_f1_skips_classes_absent_from_truth_and_prediction() -> None:
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 2])
    ours = classification_metrics(confusion_of(y_true, y_pred, 4))  # class 3 never occurs
    ref = reference_classification(y_true, y_pred, 4)
    assert ours["macro_f1"] == pytest.approx(ref["macro_f1"])
    assert math.isnan(ours["per_class_f1"][3])


def test_segmentation_metrics_match_reference_with_ignored_pixels() -> None:
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 6, (4, 20, 24))
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 6, gt.shape))
    gt[:, :3, :] = IGNORE
    gt[gt == 5] = 0  # class 5 only ever predicted: IoU 0, not undefined
    ours = segmentation_metrics(confusion_of(gt, pred, 7))  # class 6 absent everywhere
    ref = reference_segmentation(gt, pred, 7)
    assert_close_lists(ours["per_class_iou"], ref["iou"])
    assert_close_lists(ours["per_class_dice"], ref["dice"])
    assert ours["miou"] == pytest.approx(ref["miou"])
    assert ours["miou_no_background"] == pytest.approx(ref["miou_fg"])
    assert ours["mean_dice"] == pytest.approx(ref["mdice"])
    assert ours["mean_dice_no_background"] == pytest.approx(ref["mdice_fg"])
    assert ours["pixel_accuracy"] == pytest.approx(ref["pixel_accuracy"])
    assert ours["pixel_accuracy_no_background"] == pytest.approx(ref["pixel_accuracy_fg"])
    assert ours["per_class_iou"][5] == 0.0
    assert math.isnan(ours["per_class_iou"][6])


def test_accumulator_matches_reference_over_batches() -> None:
    rng = np.random.default_rng(3)
    num_act, num_seg = 4, 5
    metrics = MultiTaskMetrics(num_act, num_seg, per_frame=True)
    all_true, all_pred, all_gt, all_mask_pred = [], [], [], []
    for _ in range(3):
        act_logits = torch.from_numpy(rng.normal(size=(6, num_act))).float()
        act_true = torch.from_numpy(rng.integers(0, num_act, 6))
        seg_logits = torch.from_numpy(rng.normal(size=(6, num_seg, 9, 11))).float()
        gt = rng.integers(0, num_seg, (6, 9, 11))
        gt[:, 0, :] = IGNORE
        metrics.update(
            {"activity": act_logits, "segmentation": seg_logits}, act_true, torch.from_numpy(gt)
        )
        all_true.append(act_true.numpy())
        all_pred.append(act_logits.argmax(1).numpy())
        all_gt.append(gt)
        all_mask_pred.append(seg_logits.argmax(1).numpy())
    result = metrics.compute()
    ref_act = reference_classification(np.concatenate(all_true), np.concatenate(all_pred), num_act)
    ref_seg = reference_segmentation(np.concatenate(all_gt), np.concatenate(all_mask_pred), num_seg)
    assert result["activity"]["accuracy"] == pytest.approx(ref_act["accuracy"])
    assert result["activity"]["macro_f1"] == pytest.approx(ref_act["macro_f1"])
    assert result["segmentation"]["miou"] == pytest.approx(ref_seg["miou"])
    assert result["segmentation"]["pixel_accuracy"] == pytest.approx(ref_seg["pixel_accuracy"])

    frames = metrics.frame_scores()
    gt_all, pred_all = np.concatenate(all_gt), np.concatenate(all_mask_pred)
    assert len(frames["frame_iou"]) == 18
    assert frames["index"].tolist() == list(range(18))
    for k in (0, 7, 17):
        expected = reference_segmentation(gt_all[k], pred_all[k], num_seg)
        present = [c for c in range(num_seg) if not math.isnan(expected["iou"][c])]
        assert frames["frame_iou"][k] == pytest.approx(
            np.mean([expected["iou"][c] for c in present])
        )


def test_endovis_frame_scores_follow_their_definitions() -> None:
    # One frame, 3 classes: GT has classes 0 and 1; prediction adds a false class 2.
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 2, 1, 0]])
    confusion = confusion_of(gt, pred, 3)[None]
    scores = frame_scores(confusion)
    iou1 = 1 / 2  # inter 1, union {2, 3}
    iou2 = 0.0
    assert scores["challenge_iou"][0] == pytest.approx(iou1)  # GT foreground classes only
    assert scores["isi_iou"][0] == pytest.approx((iou1 + iou2) / 2)  # GT or prediction
    # A frame with only background: challenge IoU is 1 for an empty prediction, else 0.
    empty = confusion_of(np.zeros((1, 4), int), np.zeros((1, 4), int), 3)[None]
    wrong = confusion_of(np.zeros((1, 4), int), np.array([[0, 0, 0, 2]]), 3)[None]
    assert frame_scores(empty)["challenge_iou"][0] == 1.0
    assert frame_scores(wrong)["challenge_iou"][0] == 0.0


def test_selection_score_and_json_ready() -> None:
    metrics = {
        "activity": classification_metrics(np.array([[3, 1], [0, 4]])),
        "segmentation": segmentation_metrics(np.array([[5, 1, 0], [1, 3, 0], [0, 0, 0]])),
    }
    expected = (metrics["activity"]["macro_f1"] + metrics["segmentation"]["miou"]) / 2
    assert selection_score(metrics) == pytest.approx(expected)
    assert selection_score(metrics, "activity_accuracy") == pytest.approx(7 / 8)
    cleaned = json_ready(metrics)
    assert cleaned["segmentation"]["per_class_iou"][2] is None
