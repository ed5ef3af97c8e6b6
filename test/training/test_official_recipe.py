"""config/train_official.yaml: the authors' released network trained with their recipe.

The numbers come from the released code (see the notes on the paper and the release): for
MTLESD's 7 segmentation classes and 3 activities the release trains 76 tensors holding
3,783,178 parameters (DV-LoRA A/B of the 24 FFN linears, 368,640; the DeepLab segmentation
head, 2,823,431; the classification head, 591,107) of 96,741,620, with cross-entropy on both
tasks, DB-MTL and Adam whose weight decay covers every trainable tensor.

The released ViT-B/14 network is built from the shipped config exactly as configured (random
init, no weight file) and pinned without a step: its SMA front end alone takes seconds per
image on one CPU thread. The training step runs on the same config with the toy-sized
``endoarss_official_tiny`` preset; a slow test also runs one step of the full network.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from reference_resize import resize_nearest_exact

from endoarss_ros.data.dataset import Sample
from endoarss_ros.model.checkpoint import load_checkpoint, read_metadata
from endoarss_ros.model.official import OfficialConfig, OfficialEndoARSS
from endoarss_ros.training.config import TrainConfigError, load_train_config
from endoarss_ros.training.data import resize_sample
from endoarss_ros.training.trainer import Trainer, learning_rate_factor
from endoarss_ros.training.weighting import DualBalancingWeighting

CONFIG = Path(__file__).resolve().parents[2] / "config" / "train_official.yaml"

RELEASED_TRAINABLE_TENSORS = 76
RELEASED_TRAINABLE_PARAMETERS = 3_783_178
RELEASED_TOTAL_PARAMETERS = 96_741_620
RELEASED_LORA_PARAMETERS = 368_640  # 12 blocks x (fc1 + fc2) x (A + B) at rank 4
RELEASED_SEG_HEAD_PARAMETERS = 2_823_431
RELEASED_ACTIVITY_HEAD_PARAMETERS = 591_107

FRAMES_PER_ACTIVITY = 14  # 15 % held out per activity: 36 training frames, one batch of 32
SOURCE_SIZE = (30, 38)  # H, W of the written frames: not square, smaller than 244
RAW_MASK_VALUES = np.array([0, 2, 3, 4, 5, 6, 7], dtype=np.uint8)  # the release's raw ids


def write_official_layout(root: Path, frames_per_activity: int = FRAMES_PER_ACTIVITY) -> Path:
    """An MTLESD-shaped dataset: train/<1..3>/{image,mask}/*.png with raw ids {0, 2..7}."""
    rng = np.random.default_rng(0)
    height, width = SOURCE_SIZE
    for activity in (1, 2, 3):
        images = root / "train" / str(activity) / "image"
        masks = root / "train" / str(activity) / "mask"
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for index in range(frames_per_activity):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            mask = rng.choice(RAW_MASK_VALUES, (height, width)).astype(np.uint8)
            assert cv2.imwrite(str(images / f"{index:03d}.png"), image)
            assert cv2.imwrite(str(masks / f"{index:03d}.png"), mask)
    return root


def official_config(root: Path, out: Path, *overrides: str):
    return load_train_config(
        CONFIG,
        [
            f"data.root={root}",
            f"output_dir={out}",
            "data.num_workers=0",
            "logging.progress=false",
            "logging.tensorboard=false",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_official_layout(tmp_path_factory.mktemp("official") / "MTLESD")


@pytest.fixture(scope="module")
def released(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """The shipped config, as configured: only the data root and the run folder are set."""
    torch.manual_seed(0)
    return Trainer(official_config(dataset_root, tmp_path_factory.mktemp("released")))


def _lora_names(depth: int) -> set[str]:
    return {
        f"vit.blocks.{block}.mlp.{linear}.lora_{part}"
        for block in range(depth)
        for linear in ("fc1", "fc2")
        for part in ("A", "B")
    }


def test_the_config_selects_the_released_network_and_recipe() -> None:
    config = load_train_config(CONFIG)
    assert config.model.architecture == "official"
    assert config.model.preset == "endoarss_official_vitb14"
    assert config.model.input_size == (244, 244)
    assert config.model.normalization == "none"
    assert not config.model.train_backbone
    assert config.data.image_resize == "pil_bicubic"
    assert not config.data.augment
    assert (config.optim.optimizer, config.optim.lr) == ("adam", 0.0011)
    assert (config.optim.weight_decay, config.optim.weight_decay_on) == (1e-4, "all")
    assert (config.optim.batch_size, config.optim.epochs) == (32, 150)
    assert (config.optim.scheduler, config.optim.step_epochs, config.optim.step_gamma) == (
        "step",
        100,
        0.5,
    )
    assert config.loss.segmentation == "ce"
    assert (config.loss.weighting, config.loss.dbmtl_beta) == ("dbmtl", 0.9)
    assert (config.seed, config.amp) == (42, "off")


def test_released_trainable_set(released: Trainer) -> None:
    model = released.model
    assert isinstance(model, OfficialEndoARSS)
    assert model.config == OfficialConfig()  # the released ViT-B/14 network, 7 + 3 classes
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == RELEASED_TRAINABLE_TENSORS
    assert sum(p.numel() for p in trainable.values()) == RELEASED_TRAINABLE_PARAMETERS
    assert sum(p.numel() for p in model.parameters()) == RELEASED_TOTAL_PARAMETERS
    assert [id(p) for p in released.params] == [id(p) for p in trainable.values()]

    lora = _lora_names(12)
    assert lora <= trainable.keys()
    assert sum(trainable[n].numel() for n in lora) == RELEASED_LORA_PARAMETERS
    by_head = {
        head: sum(p.numel() for n, p in trainable.items() if n.startswith(head + "."))
        for head in ("seg_head", "activity_head")
    }
    assert by_head == {
        "seg_head": RELEASED_SEG_HEAD_PARAMETERS,
        "activity_head": RELEASED_ACTIVITY_HEAD_PARAMETERS,
    }
    assert trainable.keys() - lora == {
        n for n, _ in model.named_parameters() if n.startswith(("seg_head.", "activity_head."))
    }
    # Frozen as released: the ViT, DV-LoRA's u/v vectors, the SMA front end (with the unused
    # MobileViT transformer) and the mask token.
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {n for n in frozen if n.endswith((".lora_U", ".lora_V"))} == {
        n.replace("lora_A", "lora_U").replace("lora_B", "lora_V") for n in lora
    }
    assert all(n in frozen for n, _ in model.named_parameters() if n.startswith("sma."))
    assert "mask_token" in frozen


def test_dbmtl_balances_the_shared_dv_lora(released: Trainer) -> None:
    weighting = released.weighting
    assert isinstance(weighting, DualBalancingWeighting)
    assert weighting.needs_task_gradients and weighting.beta == 0.9
    names = {id(p): n for n, p in released.model.named_parameters()}
    assert {names[id(p)] for p in released.shared} == _lora_names(12)
    assert released.shared_numel == RELEASED_LORA_PARAMETERS
    assert weighting.gradient_average.shape == (2, RELEASED_LORA_PARAMETERS)
    assert released.weighting_params == []


def test_adam_decays_every_trainable_tensor(released: Trainer) -> None:
    optimizer = released.optimizer
    assert type(optimizer) is torch.optim.Adam  # coupled L2, not AdamW
    decayed = [g for g in optimizer.param_groups if g["weight_decay"] > 0]
    assert len(decayed) == 1
    group = decayed[0]
    assert group["weight_decay"] == 1e-4
    assert not group.get("decoupled_weight_decay", False)
    assert (group["lr"], group["betas"], group["eps"]) == (0.0011, (0.9, 0.999), 1e-8)
    assert [id(p) for p in group["params"]] == [id(p) for p in released.params]
    one_dimensional = [p for p in group["params"] if p.ndim < 2]
    assert len(one_dimensional) == 18  # BatchNorm weights/biases and the two output biases
    # The other groups (no-decay, weighting parameters) hold nothing.
    assert all(not g["params"] for g in optimizer.param_groups if g is not group)
    steps = released.steps_per_epoch
    assert learning_rate_factor(99 * steps, released.config, steps) == 1.0
    assert learning_rate_factor(100 * steps, released.config, steps) == 0.5
    assert released.amp_dtype is None  # float32


def test_loss_terms_are_plain_cross_entropy(released: Trainer) -> None:
    losses = released.losses
    assert losses.tasks == ("activity", "segmentation")
    assert not losses.segmentation.use_dice  # no Dice
    assert losses.segmentation.class_weights is None and losses.segmentation.focal_gamma == 0
    assert losses.activity.label_smoothing == 0
    batch = next(iter(released.train_loader))
    generator = torch.Generator().manual_seed(0)
    output = {
        "activity": torch.randn(len(batch.activities), 3, generator=generator),
        "segmentation": torch.randn(len(batch.masks), 7, 244, 244, generator=generator),
    }
    terms = losses(output, batch.activities, batch.masks)
    assert set(terms) == {"activity", "segmentation"}
    torch.testing.assert_close(
        terms["activity"], F.cross_entropy(output["activity"], batch.activities)
    )
    torch.testing.assert_close(
        terms["segmentation"], F.cross_entropy(output["segmentation"], batch.masks)
    )


def test_frames_are_prepared_as_the_release_loads_them(released: Trainer) -> None:
    """Pillow's default (bicubic) resize to 244 and /255 for images; Pillow's NEAREST for
    masks, then the release's decrement of every id above 0."""
    frames = released.splits.train
    assert len(frames) == 36 and released.steps_per_epoch == 1
    for index in (0, len(frames) - 1):
        frame = frames.sample(index)
        path = Path(frame.path)
        image = np.asarray(Image.open(path).convert("RGB").resize((244, 244)))
        raw = np.asarray(
            Image.open(path.parent.parent / "mask" / path.name)
            .convert("L")
            .resize((244, 244), Image.NEAREST)
        )
        np.testing.assert_array_equal(frame.image, image)
        np.testing.assert_array_equal(frame.mask, raw - (raw > 0))
    batch = next(iter(released.train_loader))
    assert batch.images.shape == (32, 3, 244, 244) and batch.masks.shape == (32, 244, 244)
    frame = frames.sample(int(batch.indices[0]))
    expected = torch.from_numpy(frame.image).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(batch.images[0], expected)  # no mean/std normalisation
    assert torch.equal(batch.masks[0], torch.from_numpy(frame.mask).long())


def test_one_step_of_the_recipe_on_the_tiny_released_network(
    dataset_root: Path, tmp_path: Path
) -> None:
    config = official_config(
        dataset_root,
        tmp_path,
        "model.preset=endoarss_official_tiny",
        "optim.batch_size=4",
        "optim.epochs=1",
        "threads=1",
    )
    torch.manual_seed(0)
    trainer = Trainer(config)
    model = trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == _lora_names(4) | {
        n for n, _ in model.named_parameters() if n.startswith(("seg_head.", "activity_head."))
    }
    assert len(trainable) == 4 * 4 + 28  # the heads keep the released 23 + 5 tensors
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.steps_per_epoch = 1  # one optimiser step
    record = trainer._train_epoch(0)
    assert set(record["train_loss"]) == {"activity", "segmentation"}
    assert all(np.isfinite(v) and v > 0 for v in record["train_loss"].values())
    # DB-MTL's scales max_s |m_s| / |m_t|: the task with the larger gradient gets about 1.
    scales = record["task_weights"]
    assert set(scales) == {"activity", "segmentation"}
    assert all(np.isfinite(v) and v > 0 for v in scales.values())
    assert min(scales.values()) <= 1.0 <= max(scales.values()) + 1e-6
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    # Every trainable tensor moves, LoRA A included although its gradient is zero while B is
    # (B starts at zero): L2 decay reaches it. Nothing frozen moves.
    assert changed == trainable


def test_a_checkpoint_of_the_recipe_describes_the_released_network(
    dataset_root: Path, tmp_path: Path
) -> None:
    config = official_config(
        dataset_root,
        tmp_path,
        "model.preset=endoarss_official_tiny",
        "optim.batch_size=12",
        "optim.epochs=1",
        "threads=1",
    )
    result = Trainer(config).fit()
    _, meta = read_metadata(result.best_checkpoint)
    assert meta.architecture == "official"
    assert (meta.mean, meta.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert meta.input_size == (244, 244)
    model, _ = load_checkpoint(result.last_checkpoint)
    assert isinstance(model, OfficialEndoARSS)
    assert model.config.name == "endoarss_official_tiny"


@pytest.mark.parametrize("source", [(30, 38), (1024, 1280), (487, 613), (244, 250)])
@pytest.mark.parametrize("method", ["area", "pil_bicubic"])
def test_masks_are_resized_by_pixel_centre_nearest(source: tuple[int, int], method: str) -> None:
    rng = np.random.default_rng(sum(source))
    mask = rng.integers(0, 7, source, dtype=np.uint8)
    image = rng.integers(0, 256, (*source, 3), dtype=np.uint8)
    resized = resize_sample(Sample(image, mask, 0, "frame"), (244, 244), method)
    assert resized.image.shape == (244, 244, 3) and resized.image.flags.writeable
    np.testing.assert_array_equal(resized.mask, resize_nearest_exact(mask, (244, 244)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.architecture=timm"], "model.architecture must be one of"),
        (["model.normalization=zscore"], "model.normalization must be one of"),
        (["data.image_resize=lanczos"], "data.image_resize must be one of"),
        (["optim.weight_decay_on=biases"], "optim.weight_decay_on must be one of"),
        (["data.augment=true"], "data.augment must be false when model.input_size"),
        (["model.architecture=endoarss"], "model.input_size must be multiples of 14"),
    ],
)
def test_new_fields_are_validated(overrides: list[str], message: str) -> None:
    with pytest.raises(TrainConfigError, match=message.replace(".", r"\.")):
        load_train_config(CONFIG, overrides)


def test_official_presets_and_overrides_are_checked(dataset_root: Path) -> None:
    from endoarss_ros.data.classes import MTLESD_CLASSES
    from endoarss_ros.training.model_setup import model_config

    config = load_train_config(CONFIG, ["model.preset=vit_base_patch14_dinov2"])
    with pytest.raises(TrainConfigError, match=r"model\.preset: unknown preset .* official"):
        model_config(config.model, MTLESD_CLASSES)
    config = load_train_config(CONFIG, ["model.overrides.lora_rank=0"])
    with pytest.raises(TrainConfigError, match=r"model\.overrides: official\.lora_rank must be"):
        model_config(config.model, MTLESD_CLASSES)
    config = load_train_config(CONFIG, ["model.overrides.lora_rank=8"])
    assert model_config(config.model, MTLESD_CLASSES).lora_rank == 8


@pytest.mark.slow
def test_one_step_of_the_released_vit_b(dataset_root: Path, tmp_path: Path) -> None:
    """The full released network through one DB-MTL step (batch 2: about 15 s on one core)."""
    trainer = Trainer(official_config(dataset_root, tmp_path, "optim.batch_size=2", "threads=1"))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.steps_per_epoch = 1
    record = trainer._train_epoch(0)
    assert all(np.isfinite(v) for v in record["train_loss"].values())
    after = dict(trainer.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert len(trainable) == RELEASED_TRAINABLE_TENSORS
    assert changed == trainable
