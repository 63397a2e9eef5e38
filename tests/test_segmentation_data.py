"""Segmentation data sets (ADE20K, Cityscapes, VOC, folders), bad inputs and the joint transforms."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN  # timm's constants, not ours
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD

from splitattn.data.segmentation import (
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    CAMVID_IGNORE_VALUE,
    IGNORE_INDEX,
    SegmentationDataError,
    build_dataset,
    cityscapes_dataset,
    parse_classes,
    voc_dataset,
)
from splitattn.data.segmentation.transforms import SegmentationEvalTransform, SegmentationTrainTransform

from .conftest import SHARED_DATA

CAMVID = SHARED_DATA / "camvid-mini"


def _save(path: Path, array: np.ndarray, mode: str = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path)
    return path


def _rgb(h=6, w=8):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3))


def test_ade20k_layout_shifts_labels_and_ignores_zero(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _save(root / "images" / "validation" / "ADE_val_1.jpg", _rgb(2, 2))
    _save(root / "annotations" / "validation" / "ADE_val_1.png", np.array([[0, 1], [150, 75]]))
    dataset = build_dataset("ade20k", tmp_path, "val")  # the folder above ADEChallengeData2016 works too
    assert len(ADE20K_CLASSES) == 150 and dataset.num_classes == 150
    image, target = dataset.load(0)
    assert image.mode == "RGB"
    assert target.tolist() == [[IGNORE_INDEX, 0], [149, 74]]
    _save(root / "annotations" / "validation" / "ADE_val_1.png", np.array([[0, 1], [151, 75]]))
    with pytest.raises(SegmentationDataError, match=r"ADE_val_1.png holds value\(s\) \[151\]"):
        dataset.load(0)


def test_cityscapes_maps_label_ids_to_19_train_ids(tmp_path):
    stem = "aachen_000000_000019"
    _save(tmp_path / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", _rgb(2, 3))
    _save(tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", np.array([[7, 26, 0], [33, 24, 4]]))
    _save(tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_color.png", _rgb(2, 3))  # not a label map
    dataset = cityscapes_dataset(tmp_path, "train")
    assert len(dataset) == 1 and dataset.num_classes == 19
    assert dataset.classes[0] == "road" and dataset.classes[18] == "bicycle"
    assert dataset.load(0)[1].tolist() == [[0, 13, IGNORE_INDEX], [18, 11, IGNORE_INDEX]]


def test_voc_palette_labels_with_boundary_ignore(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    _save(base / "JPEGImages" / "2007_000032.jpg", _rgb(2, 2))
    label = Image.fromarray(np.array([[0, 15], [255, 20]], dtype=np.uint8), mode="P")
    label.putpalette([0, 0, 0] * 256)
    (base / "SegmentationClass").mkdir(parents=True)
    label.save(base / "SegmentationClass" / "2007_000032.png")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    dataset = voc_dataset(tmp_path, "val")
    assert dataset.num_classes == 21
    assert dataset.load(0)[1].tolist() == [[0, 15], [IGNORE_INDEX, 20]]
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n2007_000033\n")
    with pytest.raises(SegmentationDataError, match="2007_000033 is listed in val.txt"):
        voc_dataset(tmp_path, "val")
    assert len(voc_dataset(tmp_path, "val", skip_bad=True).skipped) == 1


def _folder(tmp_path: Path, names=("a", "b")) -> Path:
    for name in names:
        _save(tmp_path / "train" / "images" / f"{name}.png", _rgb(4, 5))
        _save(tmp_path / "train" / "labels" / f"{name}.png", np.array([[0, 1, 2, 11, 3]] * 4))
    return tmp_path


def test_folder_dataset_maps_ignore_value(tmp_path):
    dataset = build_dataset("folder", _folder(tmp_path), "train", classes="w,x,y,z", ignore_value=11)
    assert dataset.classes == ["w", "x", "y", "z"] and len(dataset) == 2
    assert dataset.load(1)[1][0].tolist() == [0, 1, 2, IGNORE_INDEX, 3]


def test_label_value_outside_class_list_names_file_when_built(tmp_path):
    # issue 12.2: found when the data set is built, not mid-epoch
    _folder(tmp_path)
    _save(tmp_path / "train" / "labels" / "b.png", np.array([[0, 1, 2, 11, 2]] * 4))
    with pytest.raises(SegmentationDataError, match=r"labels/a.png holds value\(s\) \[3\].*--ignore-value"):
        build_dataset("folder", tmp_path, "train", classes="w,x,y", ignore_value=11)
    dataset = build_dataset("folder", tmp_path, "train", classes="w,x,y", ignore_value=11, skip_bad=True)
    assert [pair[1].name for pair in dataset.pairs] == ["b.png"] and "a.png holds value(s) [3]" in dataset.skipped[0]


def test_ignore_value_inside_class_list_is_refused(tmp_path):
    with pytest.raises(ValueError, match="ignore value 1 is also a class id"):
        build_dataset("folder", _folder(tmp_path), "train", classes="w,x,y,z", ignore_value=1)


def test_missing_pair_is_an_error_or_skipped_and_counted(tmp_path):
    _folder(tmp_path)
    (tmp_path / "train" / "labels" / "b.png").unlink()
    _save(tmp_path / "train" / "labels" / "orphan.png", np.zeros((4, 5)))
    with pytest.raises(SegmentationDataError, match=r"images/b.png has no label map \(and 1 more"):
        build_dataset("folder", tmp_path, "train", classes="w,x,y,z", ignore_value=11)
    dataset = build_dataset("folder", tmp_path, "train", classes="w,x,y,z", ignore_value=11, skip_bad=True)
    assert len(dataset) == 1
    assert len(dataset.skipped) == 2 and "orphan.png has no image" in dataset.skipped[1]


def test_size_mismatch_is_an_error_or_skipped(tmp_path):
    _folder(tmp_path)
    _save(tmp_path / "train" / "labels" / "a.png", np.zeros((4, 6)))
    with pytest.raises(SegmentationDataError, match=r"labels/a.png is 6x4 but its image .*a.png is 5x4"):
        build_dataset("folder", tmp_path, "train", classes="w,x,y,z", ignore_value=11)
    dataset = build_dataset("folder", tmp_path, "train", classes="w,x,y,z", ignore_value=11, skip_bad=True)
    assert len(dataset) == 1 and "6x4" in dataset.skipped[0]


def test_colour_label_maps_and_missing_class_list_are_clear_errors(tmp_path):
    _folder(tmp_path)
    _save(tmp_path / "train" / "labels" / "a.png", _rgb(4, 5))
    with pytest.raises(SegmentationDataError, match="a.png is RGB, not a single-channel.*palette"):
        build_dataset("folder", tmp_path, "train", classes="w,x,y,z", ignore_value=11)  # issue 12.2: at build
    with pytest.raises(ValueError, match="needs its class list"):
        build_dataset("folder", tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset("folder", tmp_path / "nowhere", "train", classes="a")


def test_parse_classes_from_file_list_and_string(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("sky\nroad\n\n")
    assert parse_classes(str(names)) == ["sky", "road"]
    assert parse_classes(["a", "b"]) == ["a", "b"]
    assert parse_classes("a, b") == ["a", "b"]


def _two_colour(h: int, w: int):
    """Left part red = class 0, right part blue = class 1."""
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, : w // 3, 0] = 255
    image[:, w // 3 :, 2] = 255
    target = np.ones((h, w), dtype=np.uint8)
    target[:, : w // 3] = 0
    return Image.fromarray(image), target


def _classes_from_pixels(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    raw = image * std + mean
    return (raw[2] > raw[0]).long()


def test_train_transform_keeps_image_and_mask_aligned():
    image, target = _two_colour(30, 40)
    transform = SegmentationTrainTransform(base_size=40, crop_size=32, scale_range=(0.5, 2.0), hflip=0.5)
    for seed in range(12):
        torch.manual_seed(seed)
        x, y = transform(image, target)
        assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == torch.int64
        valid = y != IGNORE_INDEX
        agreement = (_classes_from_pixels(x)[valid] == y[valid]).float().mean()
        assert agreement > 0.95  # only pixels on the resized boundary may differ (bilinear vs nearest)


def test_train_transform_pads_labels_with_ignore_and_images_with_zero():
    image, target = _two_colour(10, 20)
    transform = SegmentationTrainTransform(base_size=20, crop_size=32, scale_range=(1.0, 1.0), hflip=0.0)
    x, y = transform(image, target)
    valid = y != IGNORE_INDEX
    assert int(valid.sum()) == 10 * 20  # the whole image is inside the crop, the rest is padding
    zero = ((torch.zeros(3) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))[:, None]
    assert torch.allclose(x[:, ~valid], zero.expand(3, int((~valid).sum())), atol=1e-6)
    assert torch.equal(_classes_from_pixels(x)[valid], y[valid])


def test_flip_moves_image_and_mask_together():
    image, target = _two_colour(24, 24)
    transform = SegmentationTrainTransform(base_size=24, crop_size=24, scale_range=(1.0, 1.0), hflip=1.0)
    x, y = transform(image, target)
    assert torch.equal(y, torch.from_numpy(target[:, ::-1].copy()).long())
    assert torch.equal(_classes_from_pixels(x), y)


def test_eval_transform_keeps_full_size():
    image, target = _two_colour(7, 9)
    x, y = SegmentationEvalTransform()(image, target)
    assert x.shape == (3, 7, 9) and torch.equal(y, torch.from_numpy(target).long())


@pytest.mark.usefixtures("camvid_mini")
def test_camvid_mini_loads_with_void_ignored():
    train = build_dataset("folder", CAMVID, "train", classes=list(CAMVID_CLASSES), ignore_value=CAMVID_IGNORE_VALUE)
    val = build_dataset("folder", CAMVID, "val", classes=list(CAMVID_CLASSES), ignore_value=CAMVID_IGNORE_VALUE)
    assert (len(train), len(val)) == (100, 30) and not train.skipped
    image, target = val.load(0)
    assert image.size == (480, 360) and target.shape == (360, 480)
    assert set(np.unique(target).tolist()) <= set(range(11)) | {IGNORE_INDEX}
    assert (target == IGNORE_INDEX).any()  # CamVid's void (11) is present and ignored


# CamVid's original label colours (Brostow et al.) for the 11 SegNet classes, and black for void.
CAMVID_COLOURS = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)


def _palette_file(path: Path, extra=("ignore,0,0,0",)) -> Path:
    rows = ["name,r,g,b"] + [f"{name},{r},{g},{b}" for name, (r, g, b) in zip(CAMVID_CLASSES, CAMVID_COLOURS)]
    path.write_text("\n".join(rows + list(extra)) + "\n")
    return path


def _colour_twin(index_root: Path, colour_root: Path, count: int) -> None:
    """A copy of ``count`` CamVid pairs (images linked) whose label maps are written as RGB colours."""
    colours = np.array(CAMVID_COLOURS + ((0, 0, 0),), dtype=np.uint8)  # value 11 (void) -> black
    for kind in ("images", "labels"):
        (index_root / "train" / kind).mkdir(parents=True)
        (colour_root / "train" / kind).mkdir(parents=True)
    for image in sorted((CAMVID / "train" / "images").glob("*.png"))[:count]:
        label = CAMVID / "train" / "labels" / image.name
        for root in (index_root, colour_root):
            (root / "train" / "images" / image.name).symlink_to(image)
        (index_root / "train" / "labels" / image.name).symlink_to(label)
        Image.fromarray(colours[np.asarray(Image.open(label))]).save(colour_root / "train" / "labels" / image.name)


@pytest.mark.usefixtures("camvid_mini")
def test_colour_coded_twin_gives_identical_training_targets(tmp_path):
    _colour_twin(tmp_path / "index", tmp_path / "colour", 4)
    index = build_dataset(
        "folder", tmp_path / "index", "train", classes=list(CAMVID_CLASSES), ignore_value=CAMVID_IGNORE_VALUE
    )
    colour = build_dataset("folder", tmp_path / "colour", "train", palette=_palette_file(tmp_path / "camvid.csv"))
    assert colour.classes == list(CAMVID_CLASSES) and len(colour) == len(index) == 4
    transform = SegmentationTrainTransform(base_size=120, crop_size=64)
    for i in range(4):
        assert np.array_equal(colour.load(i)[1], index.load(i)[1])
        random.seed(i), torch.manual_seed(i)  # the scale comes from random, the crop and flip from torch
        x_index, y_index = transform(*index.load(i))
        random.seed(i), torch.manual_seed(i)
        x_colour, y_colour = transform(*colour.load(i))
        assert torch.equal(y_index, y_colour) and torch.equal(x_index, x_colour)
    stored = np.asarray(Image.open(CAMVID / "train" / "labels" / index.pairs[0][1].name))
    assert np.array_equal(colour.load(0)[1], np.where(stored == CAMVID_IGNORE_VALUE, IGNORE_INDEX, stored))


def test_unknown_colour_names_file_colour_and_pixel_or_is_ignored(tmp_path):
    _save(tmp_path / "train" / "images" / "a.png", _rgb(4, 5))
    label = np.zeros((4, 5, 3), dtype=np.uint8)
    label[:, :, 0] = 128  # (128, 0, 0) = building
    label[2, 3] = (1, 2, 3)
    _save(tmp_path / "train" / "labels" / "a.png", label)
    palette = _palette_file(tmp_path / "palette.csv")
    with pytest.raises(
        SegmentationDataError,
        match=r"labels/a.png has colour\(s\) \[\(1, 2, 3\)\] .*palette.csv "
        r"\(first at pixel x=3, y=2\)",
    ):
        build_dataset("folder", tmp_path, "train", palette=palette)
    lenient = _palette_file(tmp_path / "lenient.csv", ("ignore,0,0,0", "ignore,*,*,*"))
    target = build_dataset("folder", tmp_path, "train", palette=lenient).load(0)[1]
    expected = np.full((4, 5), 1)
    expected[2, 3] = IGNORE_INDEX
    assert target.tolist() == expected.tolist()
    _save(tmp_path / "train" / "labels" / "a.png", np.ones((4, 5)))
    with pytest.raises(SegmentationDataError, match="a.png is L, not a colour image"):
        build_dataset("folder", tmp_path, "train", palette=palette)


def test_palette_file_errors_name_the_line(tmp_path):
    from splitattn.data.segmentation import read_palette

    bad = tmp_path / "bad.csv"
    bad.write_text("sky,128,128,128\nroad,300,0,0\n")
    with pytest.raises(SegmentationDataError, match=r"bad.csv, line 2: r,g,b must be integers 0..255"):
        read_palette(bad)
    bad.write_text("sky,128,128,128\nroad,128,128,128\n")
    with pytest.raises(SegmentationDataError, match=r"line 2: colour \(128,128,128\) is already on line 1"):
        read_palette(bad)
    shared = tmp_path / "shared.csv"
    shared.write_text("# two colours for one class\nroad,1,1,1\ncar,2,2,2\nroad,3,3,3\n")
    palette = read_palette(shared)
    assert palette.classes == ("road", "car") and palette.ids.tolist() == [0, 1, 0]


def test_hidden_files_in_segmentation_folders_are_not_pairs(tmp_path):
    _folder(tmp_path)
    _save(tmp_path / "train" / "images" / "._a.png", _rgb(4, 5))
    _save(tmp_path / "train" / "labels" / ".ipynb_checkpoints" / "a-checkpoint.png", np.zeros((4, 5)))
    (tmp_path / "train" / "images" / ".DS_Store").write_bytes(b"\0")
    dataset = build_dataset("folder", tmp_path, "train", classes="w,x,y,z", ignore_value=11)
    assert [pair[0].name for pair in dataset.pairs] == ["a.png", "b.png"] and not dataset.skipped


@pytest.mark.usefixtures("camvid_mini")
def test_camvid_build_checks_every_label_map(capsys):
    import time

    start = time.perf_counter()
    train = build_dataset("folder", CAMVID, "train", classes=list(CAMVID_CLASSES), ignore_value=CAMVID_IGNORE_VALUE)
    with capsys.disabled():
        print(f"\ncamvid-mini train: {len(train)} pairs checked in {time.perf_counter() - start:.2f} s")
    # one class fewer: the maps holding class 10 (bicyclist) are found at build
    with pytest.raises(SegmentationDataError, match=r"holds value\(s\) \[10\].*more pair\(s\) have problems"):
        build_dataset("folder", CAMVID, "train", classes=list(CAMVID_CLASSES[:10]), ignore_value=CAMVID_IGNORE_VALUE)
