"""Temperature scaling: the fit recovers a known temperature, the measurements use torchmetrics'
ECE on bounded fixed-seed pixel subsamples, and ``endoarss calibrate`` / ``endoarss eval`` put
the temperatures into a checkpoint and the ECE before and after into the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from training_tiny_runs import TINY_RUN

from endoarss_ros.cli import main
from endoarss_ros.data.synthetic.dataset import SyntheticDataset
from endoarss_ros.data.synthetic.scene import SYNTHETIC_CLASSES
from endoarss_ros.inference.random_checkpoint import write_random_checkpoint
from endoarss_ros.model.checkpoint import (
    TEMPERATURE_RANGE,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from endoarss_ros.training.calibration import (
    CalibrationSample,
    MildlyCorrupted,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from endoarss_ros.training.config import load_train_config


def calibrated_logits(count: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from the logits' own softmax: calibrated by construction."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, classes, generator=generator) * 2.0
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("temperature", [3.0, 0.5])
def test_fit_recovers_a_known_temperature(temperature: float) -> None:
    logits, labels = calibrated_logits(40_000, 5, seed=1)
    fitted = fit_temperature(logits * temperature, labels)
    assert fitted == pytest.approx(temperature, rel=0.05)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.05)


def test_fit_stays_within_the_bounds_a_checkpoint_accepts() -> None:
    logits, labels = calibrated_logits(10_000, 5, seed=4)
    low, high = TEMPERATURE_RANGE
    assert fit_temperature(logits * low / 2, labels) == low  # optimum at low / 2
    assert fit_temperature(logits * high * 2, labels) == high
    # Every sample right with a growing margin: the NLL falls towards 0 as T does.
    separable = torch.tensor([[10.0, 0.0], [0.0, 10.0]] * 50)
    assert low <= fit_temperature(separable, torch.tensor([0, 1] * 50)) < 1.0
    with pytest.raises(ValueError, match="no labelled samples"):
        fit_temperature(torch.empty(0, 3), torch.empty(0, dtype=torch.long))


def test_scaling_lowers_the_ece_and_keeps_the_argmax() -> None:
    logits, labels = calibrated_logits(20_000, 5, seed=2)
    sharp = logits * 3.0
    sample = CalibrationSample(5, ("activity",))
    sample.update({"activity": sharp}, labels, torch.zeros(1))
    temperatures = sample.fit()
    metrics = calibration_metrics(sample, temperatures)["activity"]
    assert metrics["ece_before"] > 0.1 and metrics["ece_after"] < 0.02
    assert metrics["nll_after"] < metrics["nll_before"]
    assert torch.equal((sharp / temperatures[0]).argmax(1), sharp.argmax(1))


def test_reliability_bins_are_the_ones_the_ece_weighs() -> None:
    logits, labels = calibrated_logits(5_000, 4, seed=3)
    probabilities = torch.softmax(logits * 2.0, 1)
    bins = reliability_bins(probabilities, labels)
    share = np.array(bins["share"])
    gap = np.abs(np.array(bins["accuracy"]) - np.array(bins["confidence"]))
    assert len(share) == 15 and share.sum() == pytest.approx(1.0)
    assert float(np.nansum(share * gap)) == pytest.approx(
        expected_calibration_error(probabilities, labels), abs=1e-6
    )


def test_pixel_subsamples_are_bounded_per_class_and_repeatable() -> None:
    def gather(seed: int) -> CalibrationSample:
        sample = CalibrationSample(
            3, ("segmentation",), pixels=500, pixels_per_class=100, seed=seed
        )
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):
            logits = torch.randn(2, 3, 16, 16, generator=generator)
            masks = torch.randint(0, 2, (2, 16, 16), generator=generator)
            masks[:, :4] = 255  # unlabelled: never sampled
            masks[:, 6, :5] = 2  # a rare class: all its 30 pixels are kept
            sample.update({"segmentation": logits}, torch.zeros(2), masks)
        return sample

    first, again, other = gather(0), gather(0), gather(1)
    assert len(first.pixels) == 500 and set(first.pixels.labels.tolist()) <= {0, 1, 2}
    assert [len(pool) for pool in first.by_class] == [100, 100, 30]
    for cls, pool in enumerate(first.by_class):
        assert set(pool.labels.tolist()) == {cls}
    assert torch.equal(first.pixels.logits, again.pixels.logits)
    assert not torch.equal(first.pixels.logits, other.pixels.logits)
    per_class = calibration_metrics(first, (1.0, 1.0))["segmentation"]["per_class"]
    assert [c["samples"] for c in per_class] == [len(p) for p in first.by_class]


def test_mildly_corrupted_copies_follow_the_clean_frames() -> None:
    source = SyntheticDataset(8, (32, 32), seed=5)
    quarter = MildlyCorrupted(source, range(8), 0.25, seed=0)
    assert len(quarter) == 10
    double = MildlyCorrupted(source, [1, 3], 2.0, corruptions=("smoke", "contrast"), seed=0)
    assert len(double) == 6
    clean = double.load(0)
    assert np.array_equal(clean.image, source.load(1).image)
    copy = double.load(1)
    assert not np.array_equal(copy.image, clean.image)
    assert np.array_equal(copy.mask, clean.mask) and copy.activity == clean.activity
    assert copy.sample_id.split("~")[1] in {
        f"{c}{s}" for c in ("smoke", "contrast") for s in (1, 2)
    }
    assert np.array_equal(double.load(1).image, copy.image)
    assert [double.activity_of(i) for i in range(6)] == [source.activity_of(1)] * 3 + [
        source.activity_of(3)
    ] * 3


# --- the commands, on a tiny random-init checkpoint and in-memory synthetic frames ---


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """A random-init checkpoint with the synthetic classes, its output layers scaled up so it
    is over-confident as trained networks are (Guo et al. 2017), and a config of synthetic
    data."""
    root = tmp_path_factory.mktemp("calibrate")
    checkpoint = write_random_checkpoint(
        root / "random.safetensors",
        input_size=(56, 56),
        activity_names=SYNTHETIC_CLASSES.activities,
        segmentation_names=SYNTHETIC_CLASSES.segmentation,
        segmentation_colors=SYNTHETIC_CLASSES.colors,
        seed=3,
    )
    model, meta = load_checkpoint(checkpoint)
    with torch.no_grad():
        for name in ("activity_head.fc2", "seg_head.classifier"):
            layer = model.get_submodule(name)
            layer.weight.mul_(8.0)
            layer.bias.mul_(8.0)
    save_checkpoint(checkpoint, model, meta)
    config = load_train_config(
        None, [*TINY_RUN, "data.synthetic.val_frames=24", f"output_dir={root / 'run'}"]
    )
    config_path = root / "train.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    return checkpoint, config_path


def test_calibrate_writes_temperatures_and_eval_reports_ece(
    setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    checkpoint, config = setup
    original = checkpoint.read_bytes()
    out = tmp_path / "calibrated.safetensors"
    command = ["calibrate", str(checkpoint), "--config", str(config), "-o", str(out), "--quiet"]
    assert main([*command, "--copies", "1", "--batch-size", "8"]) == 0
    printed = capsys.readouterr().out
    assert "fitted on 48 frames: 24 of the validation split" in printed
    assert "activity ECE" in printed and "segmentation ECE, mean over classes" in printed
    assert checkpoint.read_bytes() == original

    _, meta = read_metadata(out)
    assert meta.calibration is not None
    activity_t, segmentation_t = meta.temperatures
    assert activity_t != 1.0 and segmentation_t != 1.0
    fit = meta.calibration.fit
    assert fit["frames"] == 24 and fit["corrupted_copies"] == 1 and fit["severities"] == [1, 2]
    assert fit["activity"]["nll_after"] <= fit["activity"]["nll_before"]
    assert fit["segmentation"]["nll_after"] <= fit["segmentation"]["nll_before"]
    before, _ = load_checkpoint(checkpoint)
    after, _ = load_checkpoint(out)
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    # eval on the clean validation frames the temperatures were fitted on (with copies)
    report = tmp_path / "report"
    evaluation = ["eval", str(out), "--config", str(config), "--split", "val", "--quiet"]
    assert main([*evaluation, "--out", str(report), "--examples", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"temperature {activity_t:.4g} (activity)" in printed
    document = json.loads((report / "metrics.json").read_text())
    calibration = document["calibration"]
    assert calibration["n_bins"] == 15
    assert calibration["temperatures"] == {"activity": activity_t, "segmentation": segmentation_t}
    activity, seg = calibration["activity"], calibration["segmentation"]
    assert activity["samples"] == 24
    assert activity_t > 1.0 and segmentation_t > 1.0  # over-confident: softened
    assert activity["ece_after"] < activity["ece_before"]
    assert seg["pixels"]["ece_after"] < seg["pixels"]["ece_before"]
    assert seg["mean_class_ece_after"] < seg["mean_class_ece_before"]
    assert len(seg["per_class"]) == len(SYNTHETIC_CLASSES.segmentation)
    assert max(c["samples"] for c in seg["per_class"] if c is not None) <= 20_000
    markdown = (report / "report.md").read_text()
    assert "## Calibration" in markdown and f"{activity['ece_after']:.4f}" in markdown
    assert "reliability.png" in markdown
    png = report / "reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_of_an_uncalibrated_checkpoint_reports_temperature_one(
    setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    checkpoint, config = setup
    report = tmp_path / "report"
    command = ["eval", str(checkpoint), "--config", str(config), "--out", str(report)]
    assert main([*command, "--examples", "0", "--quiet"]) == 0
    assert "calibration: none (temperature 1" in capsys.readouterr().out
    calibration = json.loads((report / "metrics.json").read_text())["calibration"]
    assert calibration["activity"]["ece_after"] == calibration["activity"]["ece_before"]


def test_calibrate_in_place_and_refusals(setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    checkpoint, config = setup
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(checkpoint.read_bytes())
    base = ["calibrate", str(copy), "--config", str(config), "--quiet"]
    assert main([*base, "-o", str(copy)]) == 2
    assert "--in-place" in capsys.readouterr().err
    assert main([*base, "--in-place", "--copies", "-1"]) == 2
    assert "--copies" in capsys.readouterr().err
    assert main([*base, "--in-place", "--corruptions", "fog"]) == 2
    assert main([*base, "--in-place", "--severities", "0"]) == 2
    assert read_metadata(copy)[1].calibration is None
    assert main([*base, "--in-place", "--copies", "0"]) == 0
    _, meta = read_metadata(copy)
    assert meta.calibration is not None and meta.calibration.fit["corruptions"] == []
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file
    # a second fit starts from the raw logits again and says what it replaces
    assert main([*base, "--in-place", "--copies", "0"]) == 0
    assert "replacing temperatures" in capsys.readouterr().out
    assert read_metadata(copy)[1].temperatures == meta.temperatures


# --- feature statistics (the out-of-distribution score), fitted by the same command ---


def _training_frames(config: Path) -> tuple[list[np.ndarray], list[int]]:
    from endoarss_ros.training.data import build_splits

    train_config = load_train_config(config)
    train = build_splits(train_config.data, train_config.model.input_size, train_config.seed).train
    samples = [train.source.load(i) for i in train.indices]
    return [s.image for s in samples], [s.activity for s in samples]


def test_calibrate_fits_feature_statistics_on_the_training_split(
    setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    from endoarss_ros.inference import Predictor
    from endoarss_ros.trust.feature_tap import fit_feature_statistics

    checkpoint, config = setup
    out = tmp_path / "both.safetensors"
    command = ["calibrate", str(checkpoint), "--config", str(config), "-o", str(out), "--quiet"]
    assert main([*command, "--copies", "0", "--ood-rank", "8"]) == 0
    printed = capsys.readouterr().out
    assert "fitted on 24 frames: 24 of the validation split" in printed
    assert "feature statistics fitted on 16 of the 16 frames of the training split" in printed
    assert "128 features (cls_mean), rank 8, " in printed
    _, meta = read_metadata(out)
    assert meta.calibration is not None and meta.temperatures != (1.0, 1.0)
    stats = meta.feature_statistics
    assert stats is not None and meta.trust is not None
    assert (
        f"held-out 99th percentile of the squared Mahalanobis distance: {stats.reference:.4g}"
        in (printed)
    )
    fit = meta.trust.ood_fit
    assert fit["split"] == "training split (train)" and fit["frames"] == fit["split_frames"] == 16
    assert fit["class_means"] == "activity"
    assert (stats.dim, stats.rank) == (128, 8)
    assert f"rank 8, {stats.num_classes} class mean(s)" in printed
    assert stats.fitted_frames + stats.holdout_frames == 16 and stats.holdout_frames == 4

    # The same fit as the library's on the training frames (in the command's seeded order),
    # preprocessed as the Predictor does: the statistics are of the Predictor's features.
    images, activities = _training_frames(config)
    order = np.random.default_rng([fit["sample_seed"], 2]).permutation(len(images))
    predictor = Predictor(out, device="cpu")
    expected = fit_feature_statistics(
        predictor.model,
        [images[i] for i in order],
        input_size=meta.input_size,
        mean=meta.mean,
        std=meta.std,
        labels=[activities[i] for i in order],
        num_classes=5,
        rank=8,
    )
    # One mean per activity the fitted frames show (5 at most, for 12 frames maybe fewer).
    assert 1 < stats.num_classes == expected.num_classes <= 5
    np.testing.assert_allclose(stats.means, expected.means, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.variances, expected.variances, rtol=1e-4)
    assert stats.reference == pytest.approx(expected.reference, rel=1e-4)
    features = np.stack([p.features for p in predictor.predict(images)])
    # The held-out frames are among these; their 99th percentile cannot exceed their maximum.
    assert stats.distance(features).max() >= stats.reference * (1 - 1e-4)
    before, _ = load_checkpoint(checkpoint)
    after, _ = load_checkpoint(out)
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_calibrate_only_one_fit_keeps_the_other(
    setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    checkpoint, config = setup
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(checkpoint.read_bytes())
    base = ["calibrate", str(copy), "--config", str(config), "--in-place", "--quiet"]
    assert main([*base, "--only", "temperature", "--copies", "0"]) == 0
    printed = capsys.readouterr().out
    assert "temperature" in printed and "feature statistics" not in printed
    _, meta = read_metadata(copy)
    assert meta.calibration is not None and meta.trust is None
    temperatures = meta.temperatures

    assert main([*base, "--only", "ood", "--ood-frames", "10", "--ood-rank", "4"]) == 0
    printed = capsys.readouterr().out
    assert "feature statistics fitted on 10 of the 16 frames" in printed
    assert "ECE" not in printed
    _, meta = read_metadata(copy)
    assert meta.temperatures == temperatures  # kept
    stats = meta.feature_statistics
    assert stats is not None and stats.rank == 4 and meta.trust.ood_fit["frames"] == 10

    assert main([*base, "--only", "temperature", "--copies", "0"]) == 0
    assert "replacing temperatures" in capsys.readouterr().out
    _, meta = read_metadata(copy)
    assert meta.feature_statistics is not None  # kept
    assert meta.feature_statistics.to_metadata() == stats.to_metadata()

    assert main([*base, "--only", "ood", "--ood-rank", "6"]) == 0
    assert "replacing statistics of rank 4 on 128 features" in capsys.readouterr().out
    assert read_metadata(copy)[1].feature_statistics.rank == 6


def test_calibrate_refuses_bad_statistics_options_and_too_few_frames(
    setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    checkpoint, config = setup
    out = tmp_path / "out.safetensors"
    base = ["calibrate", str(checkpoint), "--config", str(config), "-o", str(out), "--quiet"]
    assert main([*base, "--ood-frames", "3"]) == 2
    assert "--ood-frames must be at least 10" in capsys.readouterr().err
    assert main([*base, "--ood-rank", "0"]) == 2
    assert "--ood-rank must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main([*base, "--only", "everything"])
    assert stopped.value.code == 2
    assert "choose from 'temperature', 'ood'" in capsys.readouterr().err
    few = ["--only", "ood", "--set", "data.synthetic.train_frames=2"]
    assert main([*base, *few]) == 1
    error = capsys.readouterr().err
    assert "training split (train) has 2 frames, too few" in error
    assert error.count("\n") == 1
    assert not out.exists()
