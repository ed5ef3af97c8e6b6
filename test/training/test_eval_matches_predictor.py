"""``endoarss eval`` and training validation compute what the Predictor (the node) computes, on
frames whose size is not the network's: 640x480 and 1280x1024 into 224x224.

The shared steps themselves are pinned against independent references in
test/data/test_preprocessing.py; here the paths are tied to each other: the network input,
the activity probabilities (to 1e-5), the masks (eval's class ids at the network resolution,
upsampled as the Predictor upsamples, equal its masks pixel for pixel), and the metrics
``endoarss eval`` reports (equal to the metrics of the Predictor's outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from reference_resize import nearest_exact_indices, resize_nearest_exact
from training_tiny_runs import TINY_RUN

from endoarss_ros.data.classes import ClassInfo
from endoarss_ros.data.generic import (
    GenericLayoutDataset,
    LabelRecord,
    write_index,
    write_sample_files,
)
from endoarss_ros.data.preprocessing import Preprocessing, resize_mask
from endoarss_ros.inference import Predictor, write_random_checkpoint
from endoarss_ros.inference.random_checkpoint import (
    ACTIVITY_NAMES,
    SEGMENTATION_COLORS,
    SEGMENTATION_NAMES,
)
from endoarss_ros.metrics import MultiTaskMetrics
from endoarss_ros.model.checkpoint import load_checkpoint
from endoarss_ros.training.config import load_train_config
from endoarss_ros.training.evaluation import (
    evaluate_checkpoint,
    evaluation_frames,
    evaluation_loader,
    evaluation_transform,
    model_outputs,
)
from endoarss_ros.training.trainer import Trainer

INPUT_SIZE = (224, 224)
SIZES = [(480, 640), (1024, 1280), (480, 640), (1024, 1280)]
CLASSES = ClassInfo(
    activities=ACTIVITY_NAMES,
    segmentation=SEGMENTATION_NAMES,
    colors=SEGMENTATION_COLORS,
    name="random checkpoint classes",
)


def frame(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth colour ramps plus noise (a resize without antialiasing would alias it), and a
    mask of blocks whose edges fall between network pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    image = np.clip(ramps + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    blocks = rng.integers(0, len(SEGMENTATION_NAMES), (height // 37 + 1, width // 41 + 1))
    mask = blocks.repeat(37, 0).repeat(41, 1)[:height, :width].astype(np.uint8)
    return image, mask


def write_dataset(root: Path, split: str, count: int) -> None:
    records = []
    for index in range(count):
        image, mask = frame(*SIZES[index % len(SIZES)], seed=index)
        name = f"{split}_{index:02d}.png"
        write_sample_files(root, name, image, mask)
        records.append(LabelRecord(name, index % len(ACTIVITY_NAMES), split))
    write_index(root, CLASSES, records)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    write_dataset(root, "test", len(SIZES))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("checkpoint") / "random.safetensors"
    return write_random_checkpoint(path, input_size=INPUT_SIZE, seed=3)


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor(checkpoint, device="cpu", precision="fp32", warmup_batch_sizes=())


def eval_outputs(checkpoint: Path, root: Path):
    """Per frame: eval's network input, activity probabilities and class ids at the network
    resolution, and its ground-truth mask, through the functions ``evaluate_checkpoint``
    runs."""
    model, meta = load_checkpoint(checkpoint)
    model.merge()
    source = GenericLayoutDataset(str(root), split="test")
    frames = evaluation_frames(source, meta.input_size)
    loader = evaluation_loader(frames, evaluation_transform(meta), batch_size=2)
    results = {}
    for batch, output in model_outputs(model, loader, torch.device("cpu")):
        probabilities = torch.softmax(output["activity"], dim=1)
        ids = output["segmentation"].argmax(dim=1).to(torch.uint8)
        for row, index in enumerate(batch.indices.tolist()):
            results[index] = (batch.images[row], probabilities[row], ids[row], batch.masks[row])
    return source, results


def test_eval_outputs_are_the_predictor_outputs(checkpoint, dataset, predictor):
    source, results = eval_outputs(checkpoint, dataset)
    assert sorted(results) == list(range(len(SIZES)))
    for index, (image, probabilities, ids, truth) in results.items():
        sample = source.load(index)
        assert sample.image.shape[:2] == SIZES[index]
        # The network input: the same steps, so the same numbers up to float rounding.
        network_input = predictor._preprocess(sample.image)[0]
        torch.testing.assert_close(image, network_input, atol=1e-5, rtol=0)
        (prediction,) = predictor.predict([sample.image])
        np.testing.assert_allclose(probabilities.numpy(), prediction.activity, atol=1e-5)
        # Eval scores the class ids at the network resolution; the Predictor's mask is them
        # upsampled to the frame by pixel-centre nearest.
        assert prediction.mask.shape == SIZES[index]
        np.testing.assert_array_equal(resize_mask(ids.numpy(), SIZES[index]), prediction.mask)
        assert len(np.unique(prediction.mask)) > 1, "a constant mask would hide geometry errors"
        # ... against the ground truth resized to the network input by pixel-centre nearest.
        np.testing.assert_array_equal(truth.numpy(), resize_nearest_exact(sample.mask, INPUT_SIZE))


def network_ids(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The network-resolution ids a Predictor mask was upsampled from (upsampling reaches every
    source pixel, so each one is read back from the first target pixel that took it)."""
    rows = np.searchsorted(nearest_exact_indices(size[0], mask.shape[0]), np.arange(size[0]))
    cols = np.searchsorted(nearest_exact_indices(size[1], mask.shape[1]), np.arange(size[1]))
    return mask[rows[:, None], cols[None, :]]


def test_eval_reports_the_metrics_of_the_predictor_outputs(checkpoint, dataset, predictor):
    data = load_train_config(None, ["data.source=generic", f"data.root={dataset}"]).data
    result = evaluate_checkpoint(checkpoint, data, "test", device=torch.device("cpu"), examples=1)

    source = GenericLayoutDataset(str(dataset), split="test")
    metrics = MultiTaskMetrics(len(ACTIVITY_NAMES), len(SEGMENTATION_NAMES), device="cpu")
    for index in range(len(source)):
        sample = source.load(index)
        (prediction,) = predictor.predict([sample.image])
        ids = torch.from_numpy(network_ids(prediction.mask, INPUT_SIZE)).long()
        output = {
            "activity": torch.from_numpy(np.log(prediction.activity))[None],
            "segmentation": torch.nn.functional.one_hot(ids, len(SEGMENTATION_NAMES))
            .permute(2, 0, 1)[None]
            .float(),
        }
        truth = torch.from_numpy(resize_nearest_exact(sample.mask, INPUT_SIZE))[None]
        metrics.update(output, torch.tensor([sample.activity]), truth, torch.tensor([index]))
    expected = metrics.compute()
    for task in ("activity", "segmentation"):
        assert result.metrics[task]["confusion"] == expected[task]["confusion"]
        for key, value in expected[task].items():  # and every number derived from them
            np.testing.assert_equal(result.metrics[task][key], value, err_msg=key)
    assert np.count_nonzero(result.metrics["segmentation"]["confusion"]) > 5
    assert result.context["input size"] == "224x224"
    assert all(example.image.dtype == np.uint8 for example in result.best + result.worst)


def test_validation_feeds_the_network_what_the_predictor_feeds_it(tmp_path: Path):
    root = tmp_path / "frames"
    write_dataset(root, "train", 8)
    config = load_train_config(
        None,
        [
            *TINY_RUN,
            "data.source=generic",
            f"data.root={root}",
            "data.val_fraction=0.5",
            f"model.input_size=[{INPUT_SIZE[0]}, {INPUT_SIZE[1]}]",
            "optim.batch_size=2",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    trainer = Trainer(config)
    transform = trainer.val_loader.collate_fn.transform
    shared = Preprocessing(INPUT_SIZE, transform.preprocessing.mean, transform.preprocessing.std)
    checked = set()
    for batch in trainer.val_loader:
        for row, position in enumerate(batch.indices.tolist()):
            sample = trainer.splits.val.source.load(trainer.splits.val.indices[position])
            expected = shared(torch.from_numpy(sample.image).permute(2, 0, 1)[None])[0]
            torch.testing.assert_close(batch.images[row], expected, atol=1e-5, rtol=0)
            np.testing.assert_array_equal(
                batch.masks[row].numpy(), resize_nearest_exact(sample.mask, INPUT_SIZE)
            )
            checked.add(sample.image.shape[:2])
    assert checked == {(480, 640), (1024, 1280)}
