"""The training YAML: every shipped config validates, and errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from endoarss_ros.training.ablation import load_spec
from endoarss_ros.training.config import TrainConfigError, load_train_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("train_*.yaml")), ids=lambda p: p.name)
def test_shipped_training_configs_validate(path: Path) -> None:
    config = load_train_config(path)
    assert config.optim.epochs > 0
    assert all(side % 14 == 0 for side in config.model.input_size)


def test_shipped_ablation_spec_loads() -> None:
    spec = load_spec(CONFIG_DIR / "ablation_synthetic.yaml")
    names = [row.name for row in spec.rows]
    assert len(names) == 5
    assert set(spec.baselines) == {"activity", "segmentation"}
    for row in spec.rows:
        load_train_config(None, list(row.overrides), base=spec.base)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=-0.1"], "optim.lr must be a positive number"),
        (["optim.lrr=0.1"], "unknown field(s) in optim: lrr"),
        (["loss.tasks=[activity, depth]"], "loss.tasks must be"),
        (["loss.weighting=pcgrad"], "loss.weighting must be one of"),
        (["model.input_size=[100, 112]"], "model.input_size must be multiples of 14"),
        (["data.source=generic"], "data.root must be the dataset folder"),
        (["data.synthetic.train_frames=0"], "data.synthetic.train_frames must be a positive"),
        (["amp=fp8"], "amp must be one of"),
        (
            ["loss.tasks=[segmentation]", "selection_metric=activity_accuracy"],
            "needs the activity task",
        ),
        (["optim"], "must look like section.field=value"),
        (["optim.epochs.max=3"], "optim.epochs must be a positive integer"),
        (["optim.lr=0.1", "optim.lr.max=3"], "optim.lr is not a section"),
        (["loss.task_weights={activity: 0}"], "loss.task_weights.activity must be a positive"),
    ],
)
def test_errors_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(TrainConfigError) as error:
        load_train_config(None, overrides)
    assert message in str(error.value)


def test_yaml_file_and_overrides_combine(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("optim:\n  lr: 0.01\n  epochs: 3\nloss:\n  weighting: stch\n")
    config = load_train_config(path, ["optim.epochs=5", "model.overrides.tesla.enabled=false"])
    assert config.optim.lr == 0.01 and config.optim.epochs == 5
    assert config.loss.weighting == "stch"
    assert config.model.overrides == {"tesla": {"enabled": False}}
    assert load_train_config(None, [], base=config.to_dict()) == config


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("optim: [unclosed\n")
    with pytest.raises(TrainConfigError, match=r"broken\.yaml: not valid YAML"):
        load_train_config(path)
    path.write_text("- a list\n")
    with pytest.raises(TrainConfigError, match="must be a mapping"):
        load_train_config(path)


def test_model_overrides_are_validated_by_the_model_config() -> None:
    from endoarss_ros.data.synthetic.scene import SYNTHETIC_CLASSES
    from endoarss_ros.training.model_setup import model_config

    config = load_train_config(None, ["model.overrides.lora.rank=0"])
    with pytest.raises(TrainConfigError, match=r"model\.overrides: lora\.rank must be"):
        model_config(config.model, SYNTHETIC_CLASSES)
    config = load_train_config(None, ["model.preset=vit_nonexistent"])
    with pytest.raises(TrainConfigError, match=r"model\.preset: unknown preset"):
        model_config(config.model, SYNTHETIC_CLASSES)
