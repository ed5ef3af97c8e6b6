"""The training YAML: every shipped config validates, and errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from endoarss_ros.training.ablation import load_spec
from endoarss_ros.training.config import TrainConfig, TrainConfigError, load_train_config
from endoarss_ros.validation import ValidationError, flat_fields, from_flat, to_flat

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("train_*.yaml")), ids=lambda p: p.name)
def test_shipped_training_configs_validate(path: Path) -> None:
    config = load_train_config(path)
    assert config.optim.epochs > 0
    if config.model.architecture == "endoarss":  # the released network resizes internally
        assert all(side % 14 == 0 for side in config.model.input_size)


def test_shipped_ablation_spec_loads() -> None:
    spec = load_spec(CONFIG_DIR / "ablation_synthetic.yaml")
    names = [row.name for row in spec.rows]
    assert len(names) == 7
    assert set(spec.baselines) == {"activity", "segmentation"}
    for row in spec.rows:
        config = load_train_config(None, list(row.overrides), base=spec.base)
        # The preset's image stems are on; only the rows named for them keep them.
        stems = config.model.overrides
        assert stems["seg_head"]["hires"] == ("image stem" in row.name)
        assert stems["activity_head"]["hires"] == row.name.endswith("both image stems")


def test_released_network_ablation_spec_loads_at_the_synthetic_budget() -> None:
    spec = load_spec(CONFIG_DIR / "ablation_official.yaml")
    synthetic = load_spec(CONFIG_DIR / "ablation_synthetic.yaml")
    assert spec.base == synthetic.base and spec.seeds == synthetic.seeds
    configs = {
        row.name: load_train_config(None, list(row.overrides), base=spec.base) for row in spec.rows
    }
    project = configs.pop("project's model")
    assert project.model.architecture == "endoarss"
    # The project's row is the synthetic table's full-model row.
    full = next(r for r in synthetic.rows if r.name.endswith("both image stems"))
    assert project == load_train_config(None, list(full.overrides), base=synthetic.base)
    assert set(configs) == {"released network, authors' recipe", "released network, base recipe"}
    for config in configs.values():
        assert config.model.architecture == "official"
        assert config.model.preset == "endoarss_official_tiny"
        # Same budget: data, epochs and batch as the project's row.
        assert config.data == project.data or config.data.augment is False
        assert config.optim.epochs == project.optim.epochs
        assert config.optim.batch_size == project.optim.batch_size
    authors = configs["released network, authors' recipe"]
    assert (authors.optim.optimizer, authors.optim.weight_decay_on) == ("adam", "all")
    assert (authors.loss.segmentation, authors.loss.weighting) == ("ce", "dbmtl")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=-0.1"], "optim.lr must be a positive number"),
        (["optim.lrr=0.1"], "unknown field(s) in optim: lrr"),
        (["loss.tasks=[activity, depth]"], "loss.tasks must be"),
        (["loss.weighting=pcgrad"], "loss.weighting must be one of"),
        (["loss.class_weight_power=1.5"], "loss.class_weight_power must be a number in [0, 1]"),
        (["loss.focal_gamma=-1"], "loss.focal_gamma must be a number in [0, 5]"),
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
        (["loss.task_weights={depth: 1}"], "loss.task_weights must be a mapping with keys from"),
        (["loss.tasks=[activity, activity]"], "(repeated: ['activity'])"),
        (["optim.lr=.nan"], "optim.lr must be a positive number, got nan"),
        (["optim.epochs=true"], "optim.epochs must be a positive integer, got True"),
        (["optim.grad_clip_norm=0"], "optim.grad_clip_norm must be a positive number or null"),
        (["threads=0"], "threads must be a positive integer or null, got 0"),
        (["data.val_fraction=1"], "data.val_fraction must be a number in (0, 1), got 1"),
        (["data.synthetic.colour=1"], "unknown field(s) in data.synthetic: colour"),
        (["data.synthetic=3"], "data.synthetic must be a mapping, got int"),
        (["model.overrides=[1]"], "model.overrides must be a mapping of model config sections"),
        (["model.pretrained=''"], "model.pretrained must be a non-empty string or null, got ''"),
        (["resume=''"], "resume must be a non-empty string or null"),
    ],
)
def test_errors_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(TrainConfigError) as error:
        load_train_config(None, overrides)
    assert message in str(error.value)


def test_errors_are_validation_errors_with_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        load_train_config(None, ["data.synthetic.train_frames=0"])
    assert isinstance(error.value, TrainConfigError)
    assert error.value.field == "data.synthetic.train_frames"
    assert error.value.detail == "must be a positive integer, got 0"


def test_defaults_are_canonical() -> None:
    config = load_train_config(None, ["loss.tasks=[segmentation, activity]"])
    assert config.loss.tasks == ("activity", "segmentation")
    config = load_train_config(None, ["loss.task_weights={segmentation: 2}"])
    assert config.loss.task_weights == {"activity": 1.0, "segmentation": 2.0}
    assert from_flat(TrainConfig, to_flat(config)) == config
    assert all(f.doc for f in flat_fields(TrainConfig))


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
    with pytest.raises(TrainConfigError, match=r"broken\.yaml: the configuration must be a map"):
        load_train_config(path)
    path.write_text("optim:\n  lr: -1\n")
    with pytest.raises(TrainConfigError, match=r"optim\.lr must be a positive number, got -1"):
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
