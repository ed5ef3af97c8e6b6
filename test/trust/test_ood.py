"""Out-of-distribution statistics: Mahalanobis fit and score on toy features, the stored forms
and their refusal of bad values, and the tap that pools features of the running forward pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from endoarss_ros.trust.ood import (
    FeatureAccumulator,
    FeatureStatistics,
    FeatureStatisticsError,
)
from endoarss_ros.validation import ValidationError

DIM = 24


def _toy(rng: np.random.Generator, n: int, classes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Correlated Gaussian features around per-class means (shared covariance)."""
    rotation = np.linalg.qr(np.random.default_rng(99).standard_normal((DIM, DIM)))[0]
    mixing = rotation * np.linspace(3, 0.3, DIM)  # standard deviations 3 ... 0.3
    means = np.random.default_rng(98).standard_normal((classes, DIM)) * 4
    labels = rng.integers(0, classes, n)
    return means[labels] + rng.standard_normal((n, DIM)) @ mixing.T, labels


def _fit(n: int = 4000, classes: int = 1, rank: int = DIM) -> FeatureStatistics:
    features, labels = _toy(np.random.default_rng(0), n, classes)
    accumulator = FeatureAccumulator(DIM, classes)
    for start in range(0, n, 333):  # in uneven batches, as a data loader would
        accumulator.add(features[start : start + 333], labels[start : start + 333])
    return accumulator.finish(rank=rank)


def test_in_distribution_scores_low_and_far_away_high():
    stats = _fit()
    assert stats.holdout_frames == 800 and stats.fitted_frames == 3200
    held_out, _ = _toy(np.random.default_rng(1), 2000)
    scores = stats.scores(held_out)
    # 1.0 is the held-out 99th percentile: about 1 % of new in-distribution frames reach it.
    assert 0.003 < np.mean(scores >= 1.0) < 0.03
    assert np.mean(scores >= 2.0) < 0.002
    far = held_out[:50] + 25.0  # every feature shifted by many standard deviations
    assert (stats.scores(far) > 10.0).all()
    assert stats.score(held_out[0]) == pytest.approx(scores[0])


def test_full_rank_equals_the_textbook_mahalanobis_distance():
    stats = _fit()
    features, _ = _toy(np.random.default_rng(0), 4000)
    fitted = np.delete(features, np.arange(0, 4000, 5), axis=0)
    mean = fitted.mean(axis=0)
    precision = np.linalg.inv(np.cov(fitted, rowvar=False, bias=False))
    x = _toy(np.random.default_rng(2), 10)[0] - mean
    expected = np.einsum("nd,de,ne->n", x, precision, x)
    np.testing.assert_allclose(stats.distance(x + mean), expected, rtol=1e-4)


def test_low_rank_keeps_the_residual_direction():
    stats = _fit(rank=4)
    assert stats.rank == 4 and stats.components.shape == (DIM, 4)
    held_out, _ = _toy(np.random.default_rng(3), 2000)
    assert np.mean(stats.scores(held_out) >= 1.0) < 0.05
    # A step orthogonal to the kept components counts in units of the residual variance (the
    # probabilistic-PCA term), not zero as if those directions did not exist.
    away = np.random.default_rng(4).standard_normal(DIM)
    away -= stats.components @ (stats.components.T @ away)
    away /= np.linalg.norm(away)
    step = 10.0 * np.sqrt(stats.residual_variance)
    assert stats.distance(stats.means[0] + step * away)[0] == pytest.approx(100.0, rel=1e-4)
    assert stats.score(stats.means[0] + step * away) > 1.5


def test_class_means_share_one_covariance():
    stats = _fit(classes=3)
    assert stats.num_classes == 3
    features, _ = _toy(np.random.default_rng(4), 600, classes=3)
    assert np.mean(stats.scores(features) >= 1.0) < 0.05
    # Halfway between two class means is far from both, although near the overall mean.
    between = 0.5 * (stats.means[0] + stats.means[1])
    assert stats.score(between) > 2.0


def test_stored_forms_give_the_same_scores():
    stats = _fit(classes=2, rank=8)
    probe, _ = _toy(np.random.default_rng(5), 7, classes=2)
    expected = stats.scores(probe)
    arrays = stats.to_arrays()
    assert set(arrays) == {"means", "components", "variances"}
    assert all(a.dtype == np.float32 for a in arrays.values())
    metadata = json.loads(json.dumps(stats.to_metadata()))
    for again in (
        FeatureStatistics.from_arrays(arrays, metadata),
        FeatureStatistics.from_tensors(
            stats.to_tensors(prefix="trust.ood."), metadata, prefix="trust.ood."
        ),
        FeatureStatistics.from_json(json.loads(json.dumps(stats.to_json()))),
    ):
        np.testing.assert_allclose(again.scores(probe), expected, rtol=1e-5)
        assert again.to_metadata() == stats.to_metadata()


def _broken(**changes):
    stats = _fit(rank=6)
    arrays, metadata = stats.to_arrays(), stats.to_metadata()
    for key, value in changes.items():
        (arrays if key in arrays else metadata)[key] = value
    return arrays, metadata


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"variances": np.full(6, np.nan, np.float32)}, "variances", "NaN or infinite"),
        ({"variances": -np.ones(6, np.float32)}, "variances", "must all be positive"),
        ({"variances": np.ones(5, np.float32)}, "variances", "must hold 6 values"),
        ({"components": np.ones((DIM, 6), np.float32)}, "components", "orthonormal"),
        ({"components": np.eye(DIM + 1, 6, dtype=np.float32)}, "components", "must be 24 x K"),
        ({"means": np.zeros(DIM, np.float32)}, "means", "2-d float32 array"),
        ({"means": np.zeros((1, DIM), np.int32)}, "means", "float32 array, got int32"),
        ({"means": np.zeros((1, DIM), np.float64)}, "means", "float32 array, got float64"),
        ({"fit": {}}, "fit", "is not a known field"),
        ({"reference": 0.0}, "reference", "must be a number in (0"),
        ({"reference": "1"}, "reference", "must be a number"),
        ({"quantile": 1.5}, "quantile", "(0, 1]"),
        ({"residual_variance": float("inf")}, "residual_variance", "must be a number"),
        ({"format_version": 2}, "format_version", "must be 1"),
        ({"pooling": "max"}, "pooling", "one of cls_mean"),
        ({"dim": 23}, "dim", "the arrays hold 24"),
        ({"fitted_frames": -1}, "fitted_frames", "non-negative integer"),
    ],
)
def test_malformed_statistics_are_refused_naming_the_field(changes, field, message):
    arrays, metadata = _broken(**changes)
    with pytest.raises(FeatureStatisticsError) as info:
        FeatureStatistics.from_arrays(arrays, metadata)
    assert info.value.field == f"trust.ood.{field}"
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_loader_chooses_the_error_and_the_field():
    class CheckpointLikeError(ValidationError):
        pass

    arrays, metadata = _broken()
    del arrays["components"]
    with pytest.raises(CheckpointLikeError, match=r"^metadata\.trust\.ood\.components is missing"):
        FeatureStatistics.from_arrays(
            arrays, metadata, field="metadata.trust.ood", error=CheckpointLikeError
        )
    document = _fit(rank=2).to_json()
    document["arrays"]["variances"]["float32_le"] = "AAAA"  # 4 bytes for 2 values
    with pytest.raises(FeatureStatisticsError, match=r"variances\.float32_le holds 3 bytes"):
        FeatureStatistics.from_json(document)
    with pytest.raises(FeatureStatisticsError, match="must be a mapping"):
        FeatureStatistics.from_json([1, 2])


def test_accumulator_refuses_what_it_cannot_fit():
    accumulator = FeatureAccumulator(DIM, 2)
    with pytest.raises(ValueError, match="labels are needed"):
        accumulator.add(np.zeros((3, DIM)))
    with pytest.raises(ValueError, match="class ids in"):
        accumulator.add(np.zeros((3, DIM)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="N x 24"):
        accumulator.add(np.zeros((3, DIM + 1)), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        accumulator.add(np.full((3, DIM), np.nan), np.zeros(3))
    accumulator.add(np.ones((3, DIM)), np.zeros(3))
    with pytest.raises(ValueError, match="too few frames"):
        accumulator.finish()
    with pytest.raises(ValueError, match="holdout_every"):
        FeatureAccumulator(DIM, holdout_every=1)


def test_score_wants_the_fitted_width():
    stats = _fit(rank=3)
    with pytest.raises(ValueError, match="N x 24"):
        stats.distance(np.zeros(DIM + 1))
    with pytest.raises(ValueError, match="one frame"):
        stats.score(np.zeros((2, DIM)))
    assert stats.nbytes == 4 * (DIM + DIM * 3 + 3)


# The tap on real networks (random weights; the mechanics, not the quality of the features).


@pytest.fixture(scope="module")
def tiny_model():
    from endoarss_ros.model import create_model

    torch.manual_seed(0)
    return create_model("vit_tiny_patch14").eval()


def test_tap_pools_the_trunk_without_changing_outputs(tiny_model):
    from endoarss_ros.trust.feature_tap import FeatureTap

    x = torch.randn(2, 3, 28, 42)  # a 2 x 3 token grid: small, still not square
    with torch.inference_mode():
        plain = tiny_model(x)
        with FeatureTap(tiny_model) as tap:
            assert tap.dim == 128 and tap.take() is None
            tapped = tiny_model(x)
            features = tap.take()
            assert tap.take() is None  # taken once
        after = tiny_model(x)  # the hook is gone
    for key in plain:
        torch.testing.assert_close(tapped[key], plain[key], rtol=0, atol=0)
        torch.testing.assert_close(after[key], plain[key], rtol=0, atol=0)
    assert features is not None and features.shape == (2, 128) and features.dtype == torch.float32
    # Without TESLA the heads' last-level CLS token is the trunk's: the tap pools that tensor.
    with torch.inference_mode():
        levels = tiny_model.backbone(x)["activity"]
    if tiny_model.backbone.task_adapters is None:
        torch.testing.assert_close(features[:, :64], levels[-1].cls)


def test_tap_finds_the_official_network():
    from endoarss_ros.model.official import OfficialEndoARSS, get_official_preset
    from endoarss_ros.trust.feature_tap import FeatureTap

    config = get_official_preset("endoarss_official_tiny")
    model = OfficialEndoARSS(config).eval()
    with torch.inference_mode(), FeatureTap(model) as tap:
        model(torch.rand(1, 3, config.image_size, config.image_size))
        features = tap.take()
    assert features is not None and features.shape == (1, 2 * config.embed_dim)


def test_fit_feature_statistics_end_to_end(tiny_model):
    from endoarss_ros.data.synthetic.dataset import generate_frame
    from endoarss_ros.trust.feature_tap import fit_feature_statistics

    frames = [generate_frame(41, i, (64, 80)) for i in range(20)]
    stats = fit_feature_statistics(
        tiny_model,
        [f.image for f in frames],
        labels=[f.activity for f in frames],
        input_size=(56, 70),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        batch_size=20,  # one forward pass: the CPU test machines are slow and shared
        rank=8,
    )
    assert stats.dim == 128 and stats.rank == 8
    assert stats.fitted_frames == 16 and stats.holdout_frames == 4
    restored = FeatureStatistics.from_arrays(stats.to_arrays(), stats.to_metadata())
    assert restored.rank == 8
    with pytest.raises(ValueError, match="labels for"):
        fit_feature_statistics(
            tiny_model,
            [f.image for f in frames[:3]],
            labels=[0, 1, 2, 0],
            input_size=(56, 70),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        )
