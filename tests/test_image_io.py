"""One image reader for every task (splitattn.data.io): high-bit-depth greyscale scaled as torchvision scales it,
EXIF orientation applied in classification, segmentation (image and label map) and detection, hidden files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

from splitattn.data.detection import CocoDetectionDataset
from splitattn.data.io import image_files, image_size, is_hidden, read_image
from splitattn.data.segmentation import (
    CAMVID_CLASSES,
    CAMVID_IGNORE_VALUE,
    IGNORE_INDEX,
    SegmentationDataError,
    build_dataset,
)

from .conftest import SHARED_DATA, sample_photos

CAMVID = SHARED_DATA / "camvid-mini"
needs_camvid = pytest.mark.usefixtures("camvid_mini")
ORIENTATION = 0x0112
# What a camera does when it stores a picture turned, for each EXIF orientation (the tag says how to undo it).
STORED_TURN = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.fixture
def photo() -> Image.Image:
    """A real photo (640x427 RGB)."""
    return Image.open(sample_photos()[0]).convert("RGB")


def _store_turned(picture: Image.Image, orientation: int, path: Path, **save) -> Path:
    """Save ``picture`` as a camera does: pixels turned, with the EXIF tag that says how to show it upright."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    picture.transpose(STORED_TURN[orientation]).save(path, exif=exif, **save)
    return path


def test_16_and_32_bit_greyscale_scaled_as_torchvision_to_dtype(tmp_path, photo):
    grey = np.asarray(photo.convert("L"))
    low_bits = np.random.default_rng(0).integers(0, 256, grey.shape)
    deep = (grey.astype(np.int64) * 256 + low_bits).astype(np.uint16)  # a real photo at 16 bits, full range
    Image.fromarray(deep).save(tmp_path / "deep16.png")
    with Image.open(tmp_path / "deep16.png") as stored:
        assert stored.mode.startswith("I;16")
    reference = TF.to_dtype(torch.from_numpy(deep.astype(np.int32)).to(torch.uint16), torch.uint8, scale=True).numpy()
    assert np.array_equal(np.asarray(read_image(tmp_path / "deep16.png", channels=1)), reference)
    rgb = np.asarray(read_image(tmp_path / "deep16.png"))
    assert rgb.shape == grey.shape + (3,) and all(np.array_equal(rgb[..., c], reference) for c in range(3))
    assert np.array_equal(reference, grey)  # not clipped at 255 (convert("RGB") made nearly every pixel 255)

    wide = (deep.astype(np.int64) << 15).astype(np.int32)  # 32-bit signed, as TIFF mode I stores it
    Image.fromarray(wide, "I").save(tmp_path / "deep32.tif")
    reference32 = TF.to_dtype(torch.from_numpy(wide), torch.uint8, scale=True).numpy()
    assert np.array_equal(np.asarray(read_image(tmp_path / "deep32.tif", channels=1)), reference32)
    assert np.array_equal(reference32, grey)

    floats = (deep / 65535.0).astype(np.float32)  # 32-bit float TIFF (mode F), 0..1
    Image.fromarray(floats, "F").save(tmp_path / "float.tif")
    reference_f = TF.to_dtype(torch.from_numpy(floats), torch.uint8, scale=True).numpy()
    assert np.array_equal(np.asarray(read_image(tmp_path / "float.tif", channels=1)), reference_f)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_gives_the_upright_photo_and_header_size(tmp_path, orientation, photo):
    upright = photo.crop((0, 0, 224, 160))  # not square, so a quarter turn changes the size
    stored = _store_turned(upright, orientation, tmp_path / "phone.jpg", quality=95)
    assert image_size(stored) == upright.size
    read = read_image(stored)
    assert read.size == upright.size
    difference = np.abs(np.asarray(read, dtype=np.int16) - np.asarray(upright, dtype=np.int16)).mean()
    assert difference < 3  # JPEG re-encoding only; a wrong turn differs by tens of levels
    png = _store_turned(upright, orientation, tmp_path / "phone.png")
    assert image_size(png) == upright.size and np.array_equal(np.asarray(read_image(png)), np.asarray(upright))


def _camvid_pair():
    name = sorted((CAMVID / "train" / "images").glob("*.png"))[0].name
    with (
        Image.open(CAMVID / "train" / "images" / name) as image,
        Image.open(CAMVID / "train" / "labels" / name) as label,
    ):
        return name, image.convert("RGB"), label.copy()


@needs_camvid
@pytest.mark.parametrize("label_stored", ["upright", "turned with the same tag"])
def test_segmentation_image_and_label_map_agree_under_exif_orientation(tmp_path, label_stored):
    name, image, label = _camvid_pair()
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "labels").mkdir(parents=True)
    _store_turned(image, 6, tmp_path / "train" / "images" / name)
    if label_stored == "upright":  # what labelling tools write: the mask of the picture as it is shown
        label.save(tmp_path / "train" / "labels" / name)
    else:
        _store_turned(label, 6, tmp_path / "train" / "labels" / name)
    dataset = build_dataset("folder", tmp_path, "train", classes=list(CAMVID_CLASSES), ignore_value=CAMVID_IGNORE_VALUE)
    loaded, target = dataset.load(0)
    assert np.array_equal(np.asarray(loaded), np.asarray(image))
    stored = np.asarray(label)
    expected = np.where(stored == CAMVID_IGNORE_VALUE, IGNORE_INDEX, stored)
    assert np.array_equal(target, expected)  # pixel for pixel, values never converted


@needs_camvid
def test_label_map_turned_without_tag_is_a_size_error_at_build(tmp_path):
    name, image, label = _camvid_pair()
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "labels").mkdir(parents=True)
    _store_turned(image, 6, tmp_path / "train" / "images" / name)
    label.transpose(STORED_TURN[6]).save(tmp_path / "train" / "labels" / name)  # turned, tag lost
    with pytest.raises(SegmentationDataError, match=rf"labels/{name} is 360x480 but its image .* is 480x360"):
        build_dataset("folder", tmp_path, "train", classes=list(CAMVID_CLASSES), ignore_value=CAMVID_IGNORE_VALUE)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_detection_box_drawn_on_upright_photo_covers_the_object(tmp_path, orientation, photo):
    upright = np.array(photo.crop((0, 0, 224, 160)))
    x, y, w, h = 150, 20, 50, 30  # the "object": a pure red patch, annotated on the upright picture
    upright[y : y + h, x : x + w] = (255, 0, 0)
    (tmp_path / "images").mkdir()
    _store_turned(Image.fromarray(upright), orientation, tmp_path / "images" / "phone.png")
    coco = {
        "images": [{"id": 1, "file_name": "phone.png", "width": 224, "height": 160}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            }
        ],
        "categories": [{"id": 1, "name": "patch"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    image, target = CocoDetectionDataset(tmp_path / "images", tmp_path / "instances.json", skip_bad=False)[0]
    assert image.shape == (3, 160, 224)
    x1, y1, x2, y2 = target["boxes"][0].round().int().tolist()
    under_box = image[:, y1:y2, x1:x2]
    assert torch.equal(under_box, torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand_as(under_box))
    assert not torch.equal(image[:, y1:y2, :w], under_box)  # the same rows elsewhere are not the patch


def test_hidden_files_are_never_samples(tmp_path):
    for name in ("a.jpg", ".DS_Store", "._a.jpg", ".ipynb_checkpoints/a-checkpoint.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="JPEG")
    assert image_files([str(tmp_path)]) == [tmp_path / "a.jpg"]
    assert is_hidden(tmp_path / ".ipynb_checkpoints" / "a.jpg", tmp_path) and not is_hidden(
        tmp_path / "a.jpg", tmp_path
    )


@pytest.mark.parametrize("suffix", ["jpg", "png", "tif", "webp"])
def test_header_size_is_the_size_of_the_upright_image(tmp_path, suffix):
    stored = Image.fromarray(np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        stored.save(tmp_path / f"o{orientation}.{suffix}", exif=exif)
        with Image.open(tmp_path / f"o{orientation}.{suffix}") as opened:  # PIL's own transpose as reference
            opened.load()
            upright = ImageOps.exif_transpose(opened)
        assert image_size(tmp_path / f"o{orientation}.{suffix}") == upright.size, orientation
