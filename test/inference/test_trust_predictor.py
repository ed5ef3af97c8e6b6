"""The Predictor's pooled features: present exactly when the checkpoint has feature statistics,
equal to what ``extract_features`` computes for the same frame, per frame of a batch, with or
without merged adapters, in reduced precision and compiled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from endoarss_ros.inference import (
    CheckpointLoadError,
    Predictor,
    PredictorError,
    write_random_checkpoint,
)
from endoarss_ros.model.checkpoint import METADATA_KEY, load_checkpoint
from endoarss_ros.trust.feature_tap import extract_features, trunk_of
from endoarss_ros.trust.ood import FeatureAccumulator

INPUT_SIZE = (56, 70)  # non-square, as the other Predictor tests


def random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def stats_checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(
        tmp_path_factory.mktemp("trust") / "stats.safetensors",
        input_size=INPUT_SIZE,
        feature_statistics=True,
    )


@pytest.fixture(scope="module")
def stats_predictor(stats_checkpoint: Path) -> Predictor:
    return Predictor(stats_checkpoint, device="cpu", warmup_batch_sizes=(1, 2))


def _features_of(model: torch.nn.Module, predictor: Predictor, frames) -> np.ndarray:
    info = predictor.info
    batches = extract_features(
        model, frames, input_size=info.input_size, mean=info.mean, std=info.std, batch_size=1
    )
    return np.concatenate(list(batches))


def test_without_statistics_there_are_no_features_and_no_hook(cpu_predictor) -> None:
    assert cpu_predictor.feature_statistics is None
    assert cpu_predictor.info.feature_statistics is False
    block, _, _ = trunk_of(cpu_predictor.model)
    assert not block._forward_hooks
    predictions = cpu_predictor.predict([random_frame(40, 50), random_frame(60, 30, 1)])
    assert [p.features for p in predictions] == [None, None]


def test_features_are_those_extract_features_computes(stats_predictor, stats_checkpoint) -> None:
    assert stats_predictor.info.feature_statistics is True
    statistics = stats_predictor.feature_statistics
    assert statistics is not None and statistics.dim == 128
    frame = random_frame(90, 120, seed=3)
    (prediction,) = stats_predictor.predict([frame])
    features = prediction.features
    assert isinstance(features, np.ndarray)
    assert features.dtype == np.float32 and features.shape == (statistics.dim,)
    # The Predictor's own (merged) network through extract_features: the same numbers.
    np.testing.assert_array_equal(
        features, _features_of(stats_predictor.model, stats_predictor, [frame])[0]
    )
    # The unmerged network as loaded: merging changes rounding only.
    model, _ = load_checkpoint(stats_checkpoint)
    np.testing.assert_allclose(
        features, _features_of(model, stats_predictor, [frame])[0], atol=1e-4
    )
    assert np.isfinite(statistics.score(features))


def test_each_frame_of_a_batch_gets_its_own_features(stats_predictor) -> None:
    left, right = random_frame(72, 96, seed=4), random_frame(56, 70, seed=5)
    pair = stats_predictor.predict([left, right])
    alone = [stats_predictor.predict([frame])[0].features for frame in (left, right)]
    for prediction, single in zip(pair, alone, strict=True):
        assert prediction.features.shape == (128,)
        np.testing.assert_allclose(prediction.features, single, atol=1e-5)
    assert not np.allclose(pair[0].features, pair[1].features)


def test_features_with_separate_adapters_and_in_bfloat16(stats_checkpoint, stats_predictor) -> None:
    frame = random_frame(64, 80, seed=6)
    (reference,) = stats_predictor.predict([frame])
    (unmerged,) = Predictor(stats_checkpoint, device="cpu", merge_lora=False).predict([frame])
    np.testing.assert_allclose(unmerged.features, reference.features, atol=1e-4)
    half = Predictor(stats_checkpoint, device="cpu", precision="bf16")
    (low,) = half.predict([frame])
    assert low.features.dtype == np.float32 and low.features.shape == (128,)
    scale = np.abs(reference.features).max()
    assert np.abs(low.features - reference.features).max() < 0.1 * scale


def test_close_removes_the_hook(stats_checkpoint) -> None:
    predictor = Predictor(stats_checkpoint, device="cpu")
    block, _, _ = trunk_of(predictor.model)
    assert len(block._forward_hooks) == 1
    predictor.close()
    assert not block._forward_hooks


def test_a_forward_pass_without_the_hook_is_an_error_not_missing_features(
    stats_checkpoint,
) -> None:
    predictor = Predictor(stats_checkpoint, device="cpu")
    predictor._tap._handle.remove()  # what a model compiled before the hook existed does
    with pytest.raises(PredictorError, match="feature hook did not run"):
        predictor.predict([random_frame(40, 40)])


def test_statistics_of_another_width_are_refused_at_load(stats_checkpoint, tmp_path) -> None:
    with safe_open(stats_checkpoint, framework="pt") as f:
        document = json.loads(f.metadata()[METADATA_KEY])
    tensors = load_file(stats_checkpoint)
    accumulator = FeatureAccumulator(96)
    accumulator.add(np.random.default_rng(0).normal(size=(40, 96)))
    other = accumulator.finish(rank=4)
    tensors.update(other.to_tensors("trust.ood."))
    document["trust"]["ood"].update(other.to_metadata())
    bad = tmp_path / "wide.safetensors"
    save_file(tensors, bad, metadata={METADATA_KEY: json.dumps(document)})
    with pytest.raises(CheckpointLoadError) as info:
        Predictor(bad, device="cpu")
    text = str(info.value)
    assert "trust.ood.dim is 96 but the model pools" in text and "\n" not in text


@pytest.mark.slow
def test_compiled_model_gives_the_eager_features(stats_checkpoint, stats_predictor) -> None:
    frame = random_frame(56, 70, seed=7)
    compiled = Predictor(stats_checkpoint, device="cpu", compile=True, warmup_batch_sizes=(1, 2))
    for batch in ([frame], [frame, random_frame(40, 40, seed=8)]):
        fast = compiled.predict(batch)
        eager = stats_predictor.predict(batch)
        for a, b in zip(fast, eager, strict=True):
            np.testing.assert_allclose(a.features, b.features, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_features_match_the_cpu(stats_checkpoint, stats_predictor, precision, compile):
    frames = [random_frame(480, 640, seed=9), random_frame(480, 640, seed=10)]
    gpu = Predictor(
        stats_checkpoint,
        device="cuda",
        precision=precision,
        compile=compile,
        warmup_batch_sizes=(1, 2),
    )
    on_gpu = gpu.predict(frames)
    on_cpu = stats_predictor.predict(frames)
    scale = max(np.abs(p.features).max() for p in on_cpu)
    tolerance = 1e-3 if precision == "fp32" else 0.05
    for a, b in zip(on_gpu, on_cpu, strict=True):
        assert a.features.dtype == np.float32 and a.features.shape == (128,)
        assert np.abs(a.features - b.features).max() < tolerance * scale
