"""Losses and task weightings: values from their formulas, ignored pixels, state handling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from endoarss_ros.training.losses import (
    SegmentationLoss,
    TaskLosses,
    class_weights_from_counts,
    soft_dice_loss,
)
from endoarss_ros.training.weighting import (
    DualBalancingWeighting,
    EqualWeighting,
    SmoothTchebycheffWeighting,
    UncertaintyWeighting,
    build_weighting,
)

TASKS = ("activity", "segmentation")


def test_dice_loss_is_zero_for_a_confident_correct_prediction() -> None:
    target = torch.randint(0, 3, (2, 8, 8))
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50.0
    assert float(soft_dice_loss(logits, target)) == pytest.approx(0.0, abs=1e-4)
    wrong = F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 50.0
    assert float(soft_dice_loss(wrong, target)) > 0.9


def test_ignored_pixels_do_not_change_the_segmentation_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6)
    target = torch.randint(0, 4, (2, 6, 6))
    target[:, :2] = 255
    loss = SegmentationLoss(use_dice=True)
    changed = logits.clone()
    changed[:, :, :2] = torch.randn(2, 4, 2, 6) * 10
    assert float(loss(logits, target)) == pytest.approx(float(loss(changed, target)), abs=1e-6)
    ce_only = SegmentationLoss(use_dice=False)
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert float(ce_only(logits, target)) == pytest.approx(float(expected))


def test_fully_ignored_batch_gives_zero_loss_and_finite_gradient() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    value = SegmentationLoss()(logits, target)
    value.backward()
    assert float(value.detach()) == 0.0
    assert torch.isfinite(logits.grad).all()


def test_task_losses_only_for_trained_tasks() -> None:
    output = {"activity": torch.randn(3, 5), "segmentation": torch.randn(3, 4, 5, 5)}
    activity = torch.tensor([0, 1, 4])
    mask = torch.randint(0, 4, (3, 5, 5))
    both = TaskLosses(TASKS)(output, activity, mask)
    assert set(both) == set(TASKS)
    assert float(both["activity"]) == pytest.approx(
        float(F.cross_entropy(output["activity"], activity))
    )
    assert set(TaskLosses(("segmentation",))(output, activity, mask)) == {"segmentation"}


def losses(a: float, s: float) -> dict[str, torch.Tensor]:
    return {"activity": torch.tensor(a), "segmentation": torch.tensor(s)}


def test_equal_weighting_is_the_weighted_sum() -> None:
    weighting = EqualWeighting(TASKS, {"activity": 2.0})
    assert float(weighting.combine(losses(1.5, 0.5), 0)) == pytest.approx(3.5)


def test_uncertainty_weighting_formula_and_gradient() -> None:
    weighting = UncertaintyWeighting(TASKS)
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([0.5, -1.0]))
    value = weighting.combine(losses(2.0, 3.0), 0)
    expected = 0.5 * (math.exp(-0.5) * 2.0 + 0.5) + 0.5 * (math.exp(1.0) * 3.0 - 1.0)
    assert float(value.detach()) == pytest.approx(expected)
    value.backward()
    grad = weighting.log_variance.grad
    assert float(grad[0]) == pytest.approx(0.5 * (1 - math.exp(-0.5) * 2.0))
    assert float(grad[1]) == pytest.approx(0.5 * (1 - math.exp(1.0) * 3.0))


def test_stch_warms_up_then_uses_the_nadir_point() -> None:
    weighting = SmoothTchebycheffWeighting(TASKS, mu=0.5, warmup_epochs=2)
    assert float(weighting.combine(losses(2.0, 4.0), 0)) == pytest.approx(
        math.log(2.0) + math.log(4.0), rel=1e-6
    )
    weighting.end_epoch(0, {"activity": 9.0, "segmentation": 9.0})
    assert not bool(weighting.nadir_set)
    weighting.end_epoch(1, {"activity": 1.0, "segmentation": 2.0})
    value = float(weighting.combine(losses(2.0, 4.0), 2))
    scaled = torch.tensor([math.log(2.0 / 1.0), math.log(4.0 / 2.0)]) / 0.5
    assert value == pytest.approx(2 * 0.5 * float(torch.logsumexp(scaled, 0)), rel=1e-5)
    restored = SmoothTchebycheffWeighting(TASKS, mu=0.5, warmup_epochs=2)
    restored.load_state_dict(weighting.state_dict())
    assert float(restored.combine(losses(2.0, 4.0), 2)) == pytest.approx(value)


def test_small_mu_approaches_the_worst_normalised_task() -> None:
    weighting = SmoothTchebycheffWeighting(TASKS, mu=1e-3, warmup_epochs=1)
    weighting.end_epoch(0, {"activity": 1.0, "segmentation": 1.0})
    value = float(weighting.combine(losses(3.0, 1.5), 1))
    assert value == pytest.approx(2 * math.log(3.0), rel=1e-3)


def test_dbmtl_rescales_gradient_averages_to_the_largest_norm() -> None:
    weighting = DualBalancingWeighting(TASKS, shared_numel=2, beta=0.5)
    g_act = torch.tensor([1.0, 0.0])
    g_seg = torch.tensor([0.0, 4.0])
    merged = weighting.aggregate({"activity": g_act, "segmentation": g_seg})
    # averages after one step: 0.5 g; norms 0.5 and 2 -> activity scaled by 4.
    assert merged.tolist() == pytest.approx([2.0, 2.0])
    merged = weighting.aggregate({"activity": g_act, "segmentation": g_seg})
    # averages: 0.75 g; norms 0.75 and 3 -> [3, 3].
    assert merged.tolist() == pytest.approx([3.0, 3.0])
    assert weighting.describe()["activity"] == pytest.approx(4.0)


def test_dbmtl_ignores_a_non_finite_step() -> None:
    weighting = DualBalancingWeighting(TASKS, shared_numel=2, beta=0.5)
    weighting.aggregate({"activity": torch.ones(2), "segmentation": torch.ones(2)})
    before = weighting.gradient_average.clone()
    merged = weighting.aggregate(
        {"activity": torch.tensor([float("inf"), 0.0]), "segmentation": torch.ones(2)}
    )
    assert torch.isnan(merged).all()
    assert torch.equal(weighting.gradient_average, before)
    assert weighting.task_objective(torch.tensor(math.e)).item() == pytest.approx(1.0)


def test_build_weighting_names() -> None:
    assert isinstance(build_weighting("dbmtl", TASKS, shared_numel=3), DualBalancingWeighting)
    assert build_weighting("dbmtl", TASKS, shared_numel=3).needs_task_gradients
    assert not build_weighting("stch", TASKS).needs_task_gradients
    with pytest.raises(ValueError, match="unknown task weighting"):
        build_weighting("pcgrad", TASKS)


def test_class_weights_follow_the_frequency_power() -> None:
    counts = torch.tensor([900.0, 90.0, 10.0, 0.0])
    weights = class_weights_from_counts(counts, 0.5)
    frequency = counts / counts.sum()
    # Pixel-weighted mean 1; ratios are frequency ratios to the power -0.5.
    assert float((weights * frequency).sum()) == pytest.approx(1.0)
    assert float(weights[1] / weights[0]) == pytest.approx(math.sqrt(10.0))
    assert float(weights[2] / weights[0]) == pytest.approx(math.sqrt(90.0))
    assert float(weights[3]) == pytest.approx(float(weights[2]))  # unseen: the largest weight
    assert torch.allclose(class_weights_from_counts(counts, 0.0), torch.ones(4))
    capped = class_weights_from_counts(torch.tensor([1e6, 1.0]), 1.0, max_ratio=50.0)
    assert float(capped[1] / capped[0]) == pytest.approx(50.0)


def test_weighted_focal_pixel_loss_matches_its_formula() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, :3] = 255
    weights = torch.tensor([0.5, 1.0, 4.0])
    loss = SegmentationLoss(use_dice=False, class_weights=weights, focal_gamma=2.0)
    valid = target != 255
    p = logits.softmax(1).permute(0, 2, 3, 1)[valid]
    t = target[valid]
    p_t = p[torch.arange(len(t)), t]
    w = weights[t]
    expected = (w * (1 - p_t) ** 2 * -p_t.log()).sum() / w.sum()
    assert float(loss(logits, target)) == pytest.approx(float(expected), rel=1e-5)
    # Weights alone: PyTorch's weighted cross-entropy; neither: the plain one.
    weighted = SegmentationLoss(use_dice=False, class_weights=weights)
    reference = F.cross_entropy(logits, target, weight=weights, ignore_index=255)
    assert float(weighted(logits, target)) == pytest.approx(float(reference), rel=1e-5)
    plain = F.cross_entropy(logits, target, ignore_index=255)
    assert float(SegmentationLoss(use_dice=False)(logits, target)) == pytest.approx(float(plain))


def test_rare_class_weighting_raises_the_rare_class_gradient() -> None:
    logits = torch.zeros(1, 2, 10, 10, requires_grad=True)
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, 0, 0] = 1
    counts = torch.tensor([99.0, 1.0])
    grads = []
    for power in (0.0, 1.0):
        loss = SegmentationLoss(
            use_dice=False, class_weights=class_weights_from_counts(counts, power)
        )
        (grad,) = torch.autograd.grad(loss(logits, target), logits)
        grads.append(grad[0, 1, 0, 0].abs().item())
    assert grads[1] > 10 * grads[0]
