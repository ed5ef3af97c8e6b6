"""Official-layout and generic-layout readers: loading, the official mask mapping, and a named
error for every kind of bad dataset."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoarss_ros.data.classes import (
    MTLESD_CLASSES,
    ClassInfo,
    ClassInfoError,
    placeholder_class_info,
)
from endoarss_ros.data.dataset import DatasetError, Sample
from endoarss_ros.data.generic import (
    LABELS_FILE,
    GenericLayoutDataset,
    LabelRecord,
    write_index,
    write_sample_files,
)
from endoarss_ros.data.image_io import read_label_mask, read_rgb_image
from endoarss_ros.data.official import OfficialLayoutDataset

HEIGHT, WIDTH = 12, 16


def rgb_image(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_official_frame(
    root: Path, split: str, folder: str, name: str, image: np.ndarray, raw_mask: np.ndarray
) -> tuple[Path, Path]:
    image_path = root / split / folder / "image" / name
    mask_path = root / split / folder / "mask" / name
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert cv2.imwrite(str(mask_path), raw_mask)
    return image_path, mask_path


def raises_naming(path: Path):
    """Expect a DatasetError whose message contains `path`."""
    return pytest.raises(DatasetError, match=re.escape(str(path)))


@pytest.fixture
def official_root(tmp_path: Path) -> Path:
    """MTLESD-like: train with activities 1 and 3, test with activity 2; raw ids 0, 1, 2..7."""
    root = tmp_path / "mtlesd"
    raw = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    raw[:, 4:8] = 1
    raw[:, 8:10] = 2
    raw[:, 10:12] = 5
    raw[:, 12:] = 7
    write_official_frame(root, "train", "1", "f001.png", rgb_image(1), raw)
    write_official_frame(root, "train", "1", "f002.png", rgb_image(2), raw)
    write_official_frame(root, "train", "3", "f100.png", rgb_image(3), raw)
    write_official_frame(root, "test", "2", "f050.png", rgb_image(4), raw)
    return root


def test_official_layout_loads_rgb_images_and_activities_from_folders(official_root: Path):
    dataset = OfficialLayoutDataset(official_root, "train")
    assert len(dataset) == 3
    assert dataset.activities() == [0, 0, 2]
    sample = dataset[2]
    assert isinstance(sample, Sample)
    assert sample.sample_id == "train/3/image/f100.png"
    assert sample.path == official_root / "train" / "3" / "image" / "f100.png"
    np.testing.assert_array_equal(sample.image, rgb_image(3))
    assert sample.image.dtype == np.uint8 and sample.image.shape == (HEIGHT, WIDTH, 3)
    assert OfficialLayoutDataset(official_root, "test").activities() == [1]
    assert dataset.verify() == 3


def test_official_mask_mapping_decrements_values_above_zero(official_root: Path):
    mask = OfficialLayoutDataset(official_root, "train", mask_mapping="official")[0].mask
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask[0], [0] * 8 + [1] * 2 + [4] * 2 + [6] * 4)


def test_identity_mask_mapping_keeps_values_and_ignore(tmp_path: Path):
    raw = np.array([[0, 1, 6, 255]] * 3, dtype=np.uint8)
    write_official_frame(tmp_path, "train", "1", "a.png", rgb_image(0, 3, 4), raw)
    sample = OfficialLayoutDataset(tmp_path, "train", mask_mapping="identity")[0]
    np.testing.assert_array_equal(sample.mask, raw)


def test_official_mask_may_have_png_suffix_for_jpeg_images(tmp_path: Path):
    image_path = tmp_path / "train" / "1" / "image" / "a.jpg"
    image_path.parent.mkdir(parents=True)
    assert cv2.imwrite(str(image_path), rgb_image(0))
    mask_path = tmp_path / "train" / "1" / "mask" / "a.png"
    mask_path.parent.mkdir(parents=True)
    assert cv2.imwrite(str(mask_path), np.zeros((HEIGHT, WIDTH), np.uint8))
    assert OfficialLayoutDataset(tmp_path, "train")[0].mask.shape == (HEIGHT, WIDTH)


def test_unknown_mask_mapping_is_rejected(official_root: Path):
    with pytest.raises(ValueError, match="mask_mapping"):
        OfficialLayoutDataset(official_root, "train", mask_mapping="shifted")  # type: ignore[arg-type]


# --- official layout: bad datasets --------------------------------------------------------


def test_official_image_without_mask(official_root: Path):
    orphan = official_root / "train" / "1" / "mask" / "f002.png"
    orphan.unlink()
    with raises_naming(official_root / "train" / "1" / "image" / "f002.png"):
        OfficialLayoutDataset(official_root, "train")


def test_official_mask_without_image(official_root: Path):
    (official_root / "train" / "1" / "image" / "f002.png").unlink()
    with raises_naming(official_root / "train" / "1" / "mask" / "f002.png"):
        OfficialLayoutDataset(official_root, "train")


def test_official_mask_of_other_size(tmp_path: Path):
    _, mask_path = write_official_frame(
        tmp_path, "train", "1", "a.png", rgb_image(0), np.zeros((HEIGHT, WIDTH + 1), np.uint8)
    )
    dataset = OfficialLayoutDataset(tmp_path, "train")
    with raises_naming(mask_path):
        dataset[0]


def test_official_class_id_out_of_range(tmp_path: Path):
    raw = np.zeros((HEIGHT, WIDTH), np.uint8)
    raw[0, 0] = 8  # 7 after the mapping; MTLESD has classes 0..6
    _, mask_path = write_official_frame(tmp_path, "train", "1", "a.png", rgb_image(0), raw)
    with raises_naming(mask_path) as caught:
        OfficialLayoutDataset(tmp_path, "train")[0]
    assert "[7]" in str(caught.value) and "raw values present: [0, 8]" in str(caught.value)


def test_official_raw_ignore_value_is_out_of_range_under_official_mapping(tmp_path: Path):
    raw = np.full((HEIGHT, WIDTH), 255, np.uint8)
    _, mask_path = write_official_frame(tmp_path, "train", "1", "a.png", rgb_image(0), raw)
    with raises_naming(mask_path):
        OfficialLayoutDataset(tmp_path, "train")[0]


def test_official_identity_class_id_out_of_range(tmp_path: Path):
    raw = np.full((HEIGHT, WIDTH), 7, np.uint8)
    _, mask_path = write_official_frame(tmp_path, "train", "1", "a.png", rgb_image(0), raw)
    with raises_naming(mask_path):
        OfficialLayoutDataset(tmp_path, "train", mask_mapping="identity")[0]


def test_official_empty_split(tmp_path: Path):
    (tmp_path / "train" / "1" / "image").mkdir(parents=True)
    (tmp_path / "train" / "1" / "mask").mkdir(parents=True)
    with raises_naming(tmp_path / "train") as caught:
        OfficialLayoutDataset(tmp_path, "train")
    assert "no images" in str(caught.value)


def test_official_missing_split(official_root: Path):
    with raises_naming(official_root / "val"):
        OfficialLayoutDataset(official_root, "val")


@pytest.mark.parametrize("folder", ["0", "4", "marking"])
def test_official_unknown_activity_folder(official_root: Path, folder: str):
    write_official_frame(
        official_root, "train", folder, "x.png", rgb_image(9), np.zeros((HEIGHT, WIDTH), np.uint8)
    )
    with raises_naming(official_root / "train" / folder) as caught:
        OfficialLayoutDataset(official_root, "train")
    assert "unknown activity" in str(caught.value)


def test_official_activity_folder_without_mask_folder(tmp_path: Path):
    write_official_frame(
        tmp_path, "train", "1", "a.png", rgb_image(0), np.zeros((HEIGHT, WIDTH), np.uint8)
    )
    (tmp_path / "train" / "2" / "image").mkdir(parents=True)
    with raises_naming(tmp_path / "train" / "2" / "mask"):
        OfficialLayoutDataset(tmp_path, "train")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_official_corrupt_image(official_root: Path, damage: str):
    path = official_root / "train" / "1" / "image" / "f001.png"
    data = path.read_bytes()
    path.write_bytes(
        {"garbage": b"not a png" * 20, "truncated": data[: len(data) // 2]}.get(damage, b"")
    )
    dataset = OfficialLayoutDataset(official_root, "train")
    with raises_naming(path):
        dataset[0]


def test_official_corrupt_mask(official_root: Path):
    path = official_root / "train" / "3" / "mask" / "f100.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with raises_naming(path):
        OfficialLayoutDataset(official_root, "train")[2]


def test_official_colour_mask_is_rejected(tmp_path: Path):
    colour = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    colour[:, :, 2] = 3
    _, mask_path = write_official_frame(tmp_path, "train", "1", "a.png", rgb_image(0), colour)
    with raises_naming(mask_path) as caught:
        OfficialLayoutDataset(tmp_path, "train")[0]
    assert "single-channel" in str(caught.value)


def test_official_stray_file_in_image_folder(official_root: Path):
    stray = official_root / "train" / "1" / "image" / "notes.txt"
    stray.write_text("x")
    with raises_naming(stray):
        OfficialLayoutDataset(official_root, "train")


# --- generic layout -----------------------------------------------------------------------

CLASSES = ClassInfo(
    name="tiny",
    activities=("idle", "cutting", "suturing"),
    segmentation=("background", "tool", "needle"),
    colors=((0, 0, 0), (255, 0, 0), (0, 255, 0)),
)


def generic_mask(value: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[2:6, 3:9] = value
    mask[0, 0] = 255
    return mask


@pytest.fixture
def generic_root(tmp_path: Path) -> Path:
    root = tmp_path / "generic"
    records = [
        LabelRecord("case1/000.png", 0, "train", {"clip": "case1", "frame": "0"}),
        LabelRecord("case1/001.jpg", 1, "train", {"clip": "case1", "frame": "1"}),
        LabelRecord("case2/000.png", 2, "val", {"clip": "case2", "frame": "0"}),
        LabelRecord("single.png", 1, "test"),
    ]
    for index, record in enumerate(records):
        write_sample_files(root, record.file, rgb_image(index), generic_mask(index % 3))
    write_index(root, CLASSES, records)
    return root


def test_generic_layout_round_trip(generic_root: Path):
    train = GenericLayoutDataset(generic_root, "train")
    assert len(train) == 2
    assert train.class_info == CLASSES
    assert train.activities() == [0, 1]
    first = train[0]
    np.testing.assert_array_equal(first.image, rgb_image(0))
    np.testing.assert_array_equal(first.mask, generic_mask(0))
    assert first.sample_id == "case1/000.png"
    assert first.path == generic_root / "images" / "case1" / "000.png"
    assert train.records[1].extra == {"clip": "case1", "frame": "1"}
    jpeg = train[1]
    assert jpeg.image.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(jpeg.mask, generic_mask(1))
    assert [r.file for r in GenericLayoutDataset(generic_root, "test").records] == ["single.png"]
    everything = GenericLayoutDataset(generic_root, split=None)
    assert len(everything) == 4 and everything.splits == ["test", "train", "val"]
    assert everything.verify() == 4
    header = (generic_root / LABELS_FILE).read_text().splitlines()[0]
    assert header == "file,activity,split,clip,frame"


def test_generic_image_without_mask(generic_root: Path):
    (generic_root / "masks" / "case1" / "001.png").unlink()
    with raises_naming(generic_root / "images" / "case1" / "001.jpg") as caught:
        GenericLayoutDataset(generic_root, "train")
    assert "without mask" in str(caught.value)


def test_generic_listed_image_missing(generic_root: Path):
    (generic_root / "images" / "single.png").unlink()
    (generic_root / "masks" / "single.png").unlink()
    with raises_naming(generic_root / "images" / "single.png"):
        GenericLayoutDataset(generic_root, "train")


def test_generic_unlisted_image(generic_root: Path):
    write_sample_files(generic_root, "extra.png", rgb_image(7), generic_mask(0))
    with raises_naming(generic_root / "images" / "extra.png") as caught:
        GenericLayoutDataset(generic_root, "train")
    assert "not listed" in str(caught.value)


def test_generic_mask_without_image(generic_root: Path):
    cv2.imwrite(str(generic_root / "masks" / "lonely.png"), generic_mask(0))
    with raises_naming(generic_root / "masks" / "lonely.png"):
        GenericLayoutDataset(generic_root, "train")


def test_generic_mask_of_other_size(generic_root: Path):
    mask_path = generic_root / "masks" / "case1" / "000.png"
    cv2.imwrite(str(mask_path), generic_mask(0, HEIGHT + 2, WIDTH))
    dataset = GenericLayoutDataset(generic_root, "train")
    with raises_naming(mask_path) as caught:
        dataset[0]
    assert "16x14" in str(caught.value) and "16x12" in str(caught.value)


def test_generic_class_id_out_of_range(generic_root: Path):
    mask_path = generic_root / "masks" / "case2" / "000.png"
    cv2.imwrite(str(mask_path), generic_mask(3))
    with raises_naming(mask_path) as caught:
        GenericLayoutDataset(generic_root, "val")[0]
    assert "[3]" in str(caught.value)


def test_generic_empty_split(generic_root: Path):
    with raises_naming(generic_root / LABELS_FILE) as caught:
        GenericLayoutDataset(generic_root, "holdout")
    assert "'holdout' is empty" in str(caught.value)


def test_generic_unknown_activity(generic_root: Path):
    labels = generic_root / LABELS_FILE
    labels.write_text(labels.read_text().replace("suturing", "stapling"))
    with raises_naming(labels) as caught:
        GenericLayoutDataset(generic_root, "train")
    assert ":4:" in str(caught.value) and "stapling" in str(caught.value)


def test_generic_duplicate_row(generic_root: Path):
    labels = generic_root / LABELS_FILE
    labels.write_text(labels.read_text() + "single.png,idle,train,,\n")
    with raises_naming(labels) as caught:
        GenericLayoutDataset(generic_root, "train")
    assert "line 5" in str(caught.value)


def test_generic_missing_column(generic_root: Path):
    labels = generic_root / LABELS_FILE
    labels.write_text("file,activity\nsingle.png,idle\n")
    with raises_naming(labels):
        GenericLayoutDataset(generic_root, "train")


def test_generic_path_escaping_images_folder(generic_root: Path):
    labels = generic_root / LABELS_FILE
    labels.write_text(labels.read_text() + "../outside.png,idle,train,,\n")
    with raises_naming(labels):
        GenericLayoutDataset(generic_root, "train")


@pytest.mark.parametrize("content", ["activities: [a]\n", "::: not yaml", ""])
def test_generic_bad_classes_file(generic_root: Path, content: str):
    (generic_root / "classes.yaml").write_text(content)
    with raises_naming(generic_root / "classes.yaml"):
        GenericLayoutDataset(generic_root, "train")


def test_generic_missing_classes_file(generic_root: Path):
    (generic_root / "classes.yaml").unlink()
    with raises_naming(generic_root / "classes.yaml"):
        GenericLayoutDataset(generic_root, "train")


def test_generic_corrupt_image(generic_root: Path):
    path = generic_root / "images" / "case2" / "000.png"
    path.write_bytes(b"\x00" * 64)
    dataset = GenericLayoutDataset(generic_root, "val")
    with raises_naming(path):
        dataset[0]


def test_reading_a_folder_as_image_names_it(tmp_path: Path):
    with raises_naming(tmp_path) as caught:
        read_rgb_image(tmp_path)
    assert "cannot read" in str(caught.value)


def test_reading_a_missing_mask_names_it(tmp_path: Path):
    with raises_naming(tmp_path / "gone.png") as caught:
        read_label_mask(tmp_path / "gone.png")
    assert "does not exist" in str(caught.value)


# --- class descriptions -------------------------------------------------------------------


def test_class_info_yaml_round_trip_and_palette(tmp_path: Path):
    MTLESD_CLASSES.to_yaml(tmp_path / "classes.yaml")
    loaded = ClassInfo.from_yaml(tmp_path / "classes.yaml")
    assert loaded == MTLESD_CLASSES
    assert loaded.num_activities == 3 and loaded.num_segmentation_classes == 7
    assert loaded.segmentation[0] == "Background"
    assert "not documented" in loaded.notes
    palette = loaded.palette(ignore_color=(9, 9, 9))
    mask = np.array([[0, 2, 255]], np.uint8)
    np.testing.assert_array_equal(palette[mask][0], [(0, 0, 0), loaded.colors[2], (9, 9, 9)])
    assert loaded.activity_id("Submucosal Dissection") == 2


def test_placeholder_class_info_has_distinct_colours():
    info = placeholder_class_info(12, 7, name="MTLEndovis")
    assert info.activities[0] == "activity_1" and info.segmentation[0] == "background"
    assert len(set(info.colors)) == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activities": ("a", "a")}, "appears twice"),
        ({"activities": ()}, "no activity"),
        ({"colors": ((0, 0, 0),)}, "1 colours for 2"),
        ({"colors": ((0, 0, 0), (0, 0, 256))}, "three integers"),
        ({"segmentation": ("x", "")}, "has no name"),
    ],
)
def test_class_info_rejects_inconsistent_descriptions(kwargs: dict, message: str):
    arguments = {
        "activities": ("a", "b"),
        "segmentation": ("x", "y"),
        "colors": ((0, 0, 0), (1, 2, 3)),
    }
    with pytest.raises(ClassInfoError, match=message):
        ClassInfo(**{**arguments, **kwargs})


# --- symbolic links -----------------------------------------------------------------------


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "elsewhere"
    outside.mkdir(exist_ok=True)
    assert cv2.imwrite(str(outside / "secret.png"), rgb_image(9))
    assert cv2.imwrite(str(outside / "mask.png"), np.zeros((HEIGHT, WIDTH), np.uint8))
    return outside


def test_official_file_linked_outside_the_root_is_refused(official_root: Path, tmp_path: Path):
    outside = _outside(tmp_path)
    link = official_root / "train" / "1" / "image" / "f003.png"
    link.symlink_to(outside / "secret.png")
    (official_root / "train" / "1" / "mask" / "f003.png").write_bytes(
        (official_root / "train" / "1" / "mask" / "f001.png").read_bytes()
    )
    with raises_naming(link) as info:
        OfficialLayoutDataset(official_root, "train")
    assert "outside the dataset root" in str(info.value)
    assert "\n" not in str(info.value)


def test_official_folder_linked_outside_the_root_is_refused(official_root: Path, tmp_path: Path):
    outside = tmp_path / "other_dataset"
    write_official_frame(
        outside, "train", "2", "x.png", rgb_image(5), np.zeros((HEIGHT, WIDTH), np.uint8)
    )
    link = official_root / "train" / "2"
    link.symlink_to(outside / "train" / "2", target_is_directory=True)
    with raises_naming(
        link,
    ) as info:
        OfficialLayoutDataset(official_root, "train")
    assert "outside the dataset root" in str(info.value)


def test_official_links_inside_the_root_are_fine(official_root: Path):
    image_dir = official_root / "train" / "1" / "image"
    (image_dir / "f004.png").symlink_to(image_dir / "f001.png")
    (official_root / "train" / "1" / "mask" / "f004.png").symlink_to("f001.png")
    dataset = OfficialLayoutDataset(official_root, "train")
    assert len(dataset) == 4


@pytest.mark.parametrize("which", ["image", "mask", "labels", "classes", "folder"])
def test_generic_link_outside_the_root_is_refused(generic_root: Path, tmp_path: Path, which: str):
    outside = _outside(tmp_path)
    if which == "image":
        link = generic_root / "images" / "single.png"
        link.unlink()
        link.symlink_to(outside / "secret.png")
    elif which == "mask":
        link = generic_root / "masks" / "single.png"
        link.unlink()
        link.symlink_to(outside / "mask.png")
    elif which in ("labels", "classes"):
        link = generic_root / ("labels.csv" if which == "labels" else "classes.yaml")
        copy = outside / link.name
        copy.write_bytes(link.read_bytes())
        link.unlink()
        link.symlink_to(copy)
    else:
        link = generic_root / "images" / "case2"
        moved = outside / "case2"
        link.rename(moved)
        link.symlink_to(moved, target_is_directory=True)
    with raises_naming(link) as info:
        GenericLayoutDataset(generic_root, "train")
    assert "outside the dataset root" in str(info.value)
    assert "\n" not in str(info.value)


def test_generic_links_inside_the_root_are_fine_and_loops_are_refused(generic_root: Path):
    images = generic_root / "images"
    (generic_root / "store").mkdir()
    (images / "case2").rename(generic_root / "store" / "case2")
    (images / "case2").symlink_to(generic_root / "store" / "case2", target_is_directory=True)
    assert len(GenericLayoutDataset(generic_root, "val")) == 1
    loop = images / "case1" / "again"
    loop.symlink_to(images, target_is_directory=True)
    with raises_naming(loop) as info:
        GenericLayoutDataset(generic_root, "val")
    assert "loop" in str(info.value)
