"""Training runs on tiny synthetic data: determinism, resume, weightings, accumulation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_tiny_runs import tiny_config, tiny_splits

from endoarss_ros.model.checkpoint import load_checkpoint, read_metadata
from endoarss_ros.training.config import TrainConfigError
from endoarss_ros.training.state import state_paths
from endoarss_ros.training.trainer import Trainer, learning_rate_factor


def train(tmp_path: Path, *overrides: str, until: int | None = None):
    config = tiny_config(tmp_path, *overrides)
    trainer = Trainer(config, splits=tiny_splits(config))
    return trainer, trainer.fit(until_epoch=until)


def test_training_twice_with_one_seed_gives_identical_results(tmp_path: Path) -> None:
    _, first = train(tmp_path / "a")
    _, second = train(tmp_path / "b")
    strip = [{k: v for k, v in h.items() if "second" not in k} for h in first.history]
    assert strip == [{k: v for k, v in h.items() if "second" not in k} for h in second.history]
    assert first.history[-1]["val"]["segmentation_miou"] is not None
    weights_a = load_file(first.best_checkpoint)
    weights_b = load_file(second.best_checkpoint)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    _, other_seed = train(tmp_path / "c", "seed=1")
    assert load_file(other_seed.last_checkpoint).keys() == weights_a.keys()
    assert any(
        not torch.equal(weights_a[k], load_file(other_seed.best_checkpoint)[k])
        for k in weights_a
        if "lora_A" in k
    )


def test_resume_continues_exactly_where_the_run_stopped(tmp_path: Path) -> None:
    _, straight = train(tmp_path / "straight", "loss.weighting=uncertainty")
    _, interrupted = train(tmp_path / "split", "loss.weighting=uncertainty", until=1)
    assert len(interrupted.history) == 1
    last = interrupted.last_checkpoint
    assert all(p.is_file() for p in state_paths(last))
    _, resumed = train(tmp_path / "split", "loss.weighting=uncertainty", f"resume={last}")
    assert len(resumed.history) == 2
    a = load_file(straight.last_checkpoint)
    b = load_file(resumed.last_checkpoint)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.history[-1]["val"] == straight.history[-1]["val"]


def test_resume_refuses_a_checkpoint_without_training_state(tmp_path: Path) -> None:
    _, result = train(tmp_path / "run", "optim.epochs=1")
    from endoarss_ros.training.state import TrainingStateError

    with pytest.raises(TrainingStateError, match=r"best\.state\.safetensors"):
        train(tmp_path / "again", f"resume={result.best_checkpoint}")


@pytest.mark.parametrize("weighting", ["dbmtl", "stch", "uncertainty"])
def test_every_weighting_trains_and_logs_gradient_conflict(tmp_path: Path, weighting: str) -> None:
    trainer, result = train(tmp_path, f"loss.weighting={weighting}", "loss.stch_warmup_epochs=1")
    for record in result.history:
        assert all(v == v and v > 0 for v in record["train_loss"].values())
        assert -1.0 <= record["grad_cosine"] <= 1.0
    tensors = load_file(state_paths(result.last_checkpoint)[0])
    if weighting == "dbmtl":
        average = tensors["weighting.gradient_average"]
        assert average.shape == (2, trainer.shared_numel) and average.abs().sum() > 0
    if weighting == "stch":
        assert bool(tensors["weighting.nadir_set"])
    if weighting == "uncertainty":
        assert tensors["weighting.log_variance"].abs().sum() > 0
    _, meta = load_checkpoint(result.best_checkpoint)
    assert meta.training["weighting"] == weighting
    assert meta.input_size == (56, 56)
    assert list(meta.activity_classes) == list(trainer.class_info.activities)


def test_single_task_run_leaves_the_other_head_untouched(tmp_path: Path) -> None:
    trainer, result = train(tmp_path, "loss.tasks=[segmentation]", "optim.epochs=1")
    _, meta = load_checkpoint(result.best_checkpoint)
    assert meta.training["tasks"] == ["segmentation"]
    assert set(result.history[0]["val"]) == {
        "segmentation_miou",
        "segmentation_miou_no_background",
        "segmentation_mean_dice",
        "segmentation_pixel_accuracy",
    }
    assert all(not p.requires_grad for p in trainer.model.activity_head.parameters())
    adapters = trainer.model.backbone.task_adapters["activity"]
    assert all(not p.requires_grad for p in adapters.parameters())
    assert result.history[0]["grad_cosine"] is None


def test_activity_head_of_a_segmentation_only_run_keeps_its_initial_weights(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "loss.tasks=[segmentation]", "optim.epochs=1")
    trainer = Trainer(config, splits=tiny_splits(config))
    before = {k: v.clone() for k, v in trainer.model.activity_head.state_dict().items()}
    trainer.fit()
    after = trainer.model.activity_head.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradient_accumulation_matches_one_large_batch(tmp_path: Path) -> None:
    # Cross-entropy over frames is a mean over equal micro-batches, so 2 x 4 accumulated
    # equals one batch of 8 (plain SGD, so the update is the gradient itself).
    common = [
        "optim.epochs=1",
        "data.augment=false",
        "loss.tasks=[activity]",
        "optim.optimizer=sgd",
        "optim.momentum=0.0",
        "model.overrides={seg_head: {dropout: 0.0}, activity_head: {dropout: 0.0}}",
        "data.synthetic.train_frames=8",
        "optim.weight_decay=0.0",
    ]
    config = tiny_config(tmp_path / "big", *common, "optim.batch_size=8")
    big = Trainer(config, splits=tiny_splits(config))
    initial = {k: v.clone() for k, v in big.model.state_dict().items()}
    big.fit()
    small, _ = train(
        tmp_path / "small", *common, "optim.batch_size=4", "optim.accumulation_steps=2"
    )
    assert big.global_step == small.global_step == 1
    a, b = big.model.state_dict(), small.model.state_dict()
    assert not torch.equal(a["activity_head.fc2.weight"], initial["activity_head.fc2.weight"])
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_run_folder_contents(tmp_path: Path) -> None:
    _, result = train(tmp_path, "logging.tensorboard=true", "optim.epochs=1")
    assert (tmp_path / "history.jsonl").read_text().count("\n") == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and summary["train_images_per_second"] > 0
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    _, meta = read_metadata(result.best_checkpoint)
    assert meta.training["config"]["data"]["source"] == "synthetic"
    assert "val_metrics" in meta.training


def test_too_few_frames_for_one_step_is_an_error(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "optim.batch_size=32")
    with pytest.raises(TrainConfigError, match="no optimiser step"):
        Trainer(config, splits=tiny_splits(config))


def test_learning_rate_schedules(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "optim.warmup_steps=4", "optim.epochs=10")
    factors = [learning_rate_factor(s, config, 10) for s in range(100)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[-1] < 0.01
    step = tiny_config(
        tmp_path, "optim.scheduler=step", "optim.step_epochs=3", "optim.step_gamma=0.5"
    )
    assert learning_rate_factor(29, step, 10) == 1.0
    assert learning_rate_factor(30, step, 10) == 0.5


@pytest.mark.parametrize("weighting", ["equal", "dbmtl"])
def test_loss_scaling_path_gives_the_unscaled_update(tmp_path: Path, weighting: str) -> None:
    # The fp16 path (GradScaler) exercised on the CPU in float32: scaling the losses and
    # unscaling the gradients, DB-MTL's merge included, must not change the update.
    overrides = [f"loss.weighting={weighting}", "optim.epochs=1"]
    config = tiny_config(tmp_path / "plain", *overrides)
    plain = Trainer(config, splits=tiny_splits(config))
    plain.fit()
    config = tiny_config(tmp_path / "scaled", *overrides)
    scaled = Trainer(config, splits=tiny_splits(config))
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    scaled.fit()
    assert scaled.scaler.get_scale() > 2.0**10  # every step was finite, so the scale grew
    a, b = plain.model.state_dict(), scaled.model.state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key
