"""Classification data: the model's channel count, CSV headers, hidden files, too few classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN  # timm's constants, not ours
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD

from splitattn.data import build_eval_transform, build_train_transform, channel_stats, digits_datasets, load_split

from .conftest import sample_photos


def _csv(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB"), (4, "RGBA")])
def test_load_split_gives_the_models_channel_count(tmp_path, channels, mode):
    photos = list(zip(sample_photos(), ("china", "flower")))
    listing = _csv(tmp_path / "train.csv", [f"{path},{name}" for path, name in photos])
    dataset = load_split(listing, build_eval_transform(32, 1.0, channels=channels), channels=channels)
    image, label, bad = dataset[0]
    assert image.shape == (channels, 32, 32) and not bad
    raw = load_split(listing, channels=channels)[0][0]
    with Image.open(photos[0][0]) as reference:  # PIL's own conversion (these JPEGs carry no orientation tag)
        assert np.array_equal(np.asarray(raw), np.asarray(reference.convert(mode)))


def test_channel_stats_and_digits_in_one_and_four_channels():
    assert channel_stats(3) == (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    grey_mean, grey_std = channel_stats(1)
    assert grey_mean == pytest.approx((np.mean(IMAGENET_MEAN),)) and grey_std == pytest.approx((np.mean(IMAGENET_STD),))
    assert channel_stats(4)[0] == pytest.approx(tuple(IMAGENET_MEAN) + grey_mean)
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        channel_stats(2)
    for channels in (1, 4):
        train_tf = build_train_transform(32, channels=channels, color_jitter=0.4, pca_lighting=0.1)
        train, test = digits_datasets(train_tf, build_eval_transform(32, 1.0, channels=channels), channels=channels)
        assert train[0][0].shape == (channels, 32, 32) and test[0][0].shape == (channels, 32, 32)
    with pytest.raises(ValueError, match="AutoAugment .* not 4"):
        build_train_transform(32, channels=4, auto_augment=True)


def test_pca_lighting_shifts_rgb_and_leaves_alpha(tmp_path):
    from splitattn.data import Lighting

    torch.manual_seed(0)
    rgb = Lighting(0.1)(torch.zeros(3, 2, 2))
    torch.manual_seed(0)
    rgba = Lighting(0.1)(torch.zeros(4, 2, 2))
    assert torch.equal(rgba[:3], rgb) and torch.equal(rgba[3], torch.zeros(2, 2))
    torch.manual_seed(0)
    assert torch.allclose(Lighting(0.1)(torch.zeros(1, 2, 2)), rgb.mean(0, keepdim=True))


def _folder(root: Path, classes=("cat", "dog")) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / name / f"{name}1.jpg")
    return root


def test_fewer_than_two_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has 1 class .*at least 2"):
        load_split(_folder(tmp_path / "train", ("cat",)))
    listing = _csv(tmp_path / "train.csv", ["path,label", "train/cat/cat1.jpg,cat"])
    with pytest.raises(ValueError, match="has 1 class .*at least 2"):
        load_split(listing)
    assert len(load_split(tmp_path / "train", classes=["cat", "dog"])) == 1  # an evaluation split may hold one


def test_csv_header_recognised_by_names_by_content_or_given(tmp_path):
    _folder(tmp_path / "img")
    rows = ["img/cat/cat1.jpg,cat", "img/dog/dog1.jpg,dog"]
    expected = [
        (str((tmp_path / "img/cat/cat1.jpg").resolve()), 0),
        (str((tmp_path / "img/dog/dog1.jpg").resolve()), 1),
    ]
    for header in ([], ["path,label"], ["filename,class"], ["Image,Category"], ["picture,species"]):
        dataset = load_split(_csv(tmp_path / "list.csv", header + rows))
        assert dataset.classes == ["cat", "dog"] and dataset.samples == expected, header
    swapped = _csv(tmp_path / "swapped.csv", ["class,filename", "cat,img/cat/cat1.jpg", "dog,img/dog/dog1.jpg"])
    assert load_split(swapped).samples == expected
    named = _csv(tmp_path / "named.csv", ["id,y,file", "1,cat,img/cat/cat1.jpg", "2,dog,img/dog/dog1.jpg"])
    assert load_split(named, path_column="file", label_column="y").samples == expected
    with pytest.raises(ValueError, match="has no column 'label'"):
        load_split(named, path_column="file")
    # a first row whose image is missing but whose label is a class stays a data row (reported when read)
    missing = _csv(tmp_path / "missing.csv", ["img/cat/gone.jpg,cat"] + rows)
    assert len(load_split(missing)) == 3


def test_hidden_files_and_folders_are_not_samples_or_classes(tmp_path):
    root = _folder(tmp_path / "train")
    for name in (
        ".DS_Store",
        "cat/._cat1.jpg",
        "cat/.ipynb_checkpoints/cat1-checkpoint.jpg",
        ".ipynb_checkpoints/x.jpg",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / name, format="JPEG")
    dataset = load_split(root)
    assert dataset.classes == ["cat", "dog"]
    assert [Path(path).name for path, _ in dataset.samples] == ["cat1.jpg", "dog1.jpg"]
    listing = _csv(
        tmp_path / "list.csv", ["train/cat/cat1.jpg,cat", "train/cat/._cat1.jpg,cat", "train/dog/dog1.jpg,dog"]
    )
    with pytest.warns(UserWarning, match="1 hidden file"):
        assert len(load_split(listing)) == 2
