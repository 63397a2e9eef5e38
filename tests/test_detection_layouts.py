"""The annotation layouts people have (issue 12.3, 12.4): VOC XML naming its image in <filename>, a folder
of VOC XML files as labelImg/CVAT/Roboflow export them, the YOLO layout (boxes and polygons), each read
from small files written here and compared with the same objects read from a COCO json; coco128 converted
here to YOLO and to a labelImg folder gives the COCO json's targets; the layout is found from the files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from splitattn.data.detection import (
    CocoDetectionDataset,
    DetectionDataError,
    build_detection_dataset,
    detect_layout,
)

from .conftest import SHARED_DATA
from .train_helpers import cli

COCO128 = SHARED_DATA / "coco128"
needs_coco128 = pytest.mark.usefixtures("coco128")
# image name -> (width, height, [(class name, x1, y1, x2, y2) in pixel edges, integers])
IMAGES = {
    "train": {
        "a": (40, 30, [("cat", 5, 5, 15, 15), ("dog", 20, 4, 38, 28)]),
        "b": (32, 24, [("bird", 0, 0, 8, 6), ("cat", 10, 12, 32, 24), ("cat", 3, 9, 9, 20)]),
    },
    "val": {"c": (36, 28, [("dog", 2, 2, 30, 26)])},
}
CLASSES = ["bird", "cat", "dog"]  # sorted, as read from the files; COCO ids below follow this order
COCO_IDS = {"bird": 16, "cat": 17, "dog": 18}


def _image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3)).astype(np.uint8)).save(path)


def _voc_xml(filename: str, width: int, height: int, objects) -> str:
    """A labelImg-style annotation: 1-based inclusive pixel indices (xmin = x1 + 1, xmax = x2)."""
    body = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}"
        f"</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for name, x1, y1, x2, y2 in objects
    )
    return (
        f"<annotation><folder>x</folder><filename>{filename}</filename><path>/home/someone/{filename}</path>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{body}</annotation>"
    )


def _write_coco(root: Path, split: str) -> Path:
    images, annotations = [], []
    for image_id, (name, (width, height, objects)) in enumerate(IMAGES[split].items(), start=1):
        _image(root / "images" / f"{name}.jpg", width, height)
        images.append({"id": image_id, "file_name": f"{name}.jpg", "width": width, "height": height})
        annotations += [
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": COCO_IDS[c],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "iscrowd": 0,
                "area": float((x2 - x1) * (y2 - y1)),
            }
            for c, x1, y1, x2, y2 in objects
        ]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": i, "name": n} for n, i in COCO_IDS.items()],
            }
        )
    )
    return path


def _write_labelimg(root: Path) -> Path:
    """labelImg / Roboflow: train/ and val/ with each image and its XML side by side."""
    for split, images in IMAGES.items():
        for name, (width, height, objects) in images.items():
            _image(root / split / f"{name}.jpg", width, height)
            (root / split / f"{name}.xml").write_text(_voc_xml(f"{name}.jpg", width, height, objects))
    return root


def _yolo_line(index: int, x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> str:
    return (
        f"{index} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
        f"{(y2 - y1) / height:.6f}"
    )


def _write_yolo(root: Path) -> Path:
    for split, images in IMAGES.items():
        for name, (width, height, objects) in images.items():
            _image(root / "images" / split / f"{name}.jpg", width, height)
            label = root / "labels" / split / f"{name}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(
                "\n".join(_yolo_line(CLASSES.index(c), x1, y1, x2, y2, width, height) for c, x1, y1, x2, y2 in objects)
                + "\n"
            )
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnc: 3\nnames: ['bird', 'cat', 'dog']\n"
    )
    return root


def _named_boxes(dataset, index: int) -> list:
    target = dataset.target(index)
    return [(dataset.classes[label], *box) for label, box in zip(target["labels"].tolist(), target["boxes"].tolist())]


def _assert_same_targets(a, b, atol: float = 1e-3) -> None:
    """Same images (by file name), and per image the same class names with boxes within ``atol`` pixels, in the
    order the objects were written."""
    assert [r.path.name for r in a.records] == [r.path.name for r in b.records]
    for index in range(len(a)):
        left, right = _named_boxes(a, index), _named_boxes(b, index)
        assert [x[0] for x in left] == [x[0] for x in right], (a.records[index].path, left, right)
        np.testing.assert_allclose([x[1:] for x in left], [x[1:] for x in right], atol=atol)


@pytest.mark.parametrize("split", ["train", "val"])
def test_labelimg_and_yolo_folders_equal_the_coco_json_of_the_same_objects(tmp_path, split):
    """As the trainer builds them: the training split first, its class list passed to the evaluation split."""
    _write_coco(tmp_path / "coco", "train")
    _write_coco(tmp_path / "coco", "val")
    roots = {
        "coco": tmp_path / "coco",
        "labelimg": _write_labelimg(tmp_path / "labelimg"),
        "yolo": _write_yolo(tmp_path / "yolo"),
    }
    train = {kind: build_detection_dataset(None, root, "train", True) for kind, root in roots.items()}
    assert all(dataset.classes[1:] == CLASSES for dataset in train.values())
    assert train["labelimg"].classes_from_files
    assert "(read from the files, sorted: bird, cat, dog)" in train["labelimg"].summary()
    coco, labelimg, yolo = (
        build_detection_dataset(None, root, split, False, classes=train[kind].classes[1:])
        for kind, root in roots.items()
    )
    assert coco.classes[1:] == labelimg.classes[1:] == yolo.classes[1:] == CLASSES
    assert "labelimg" in labelimg.name.lower() and "yolo" in yolo.name.lower()
    _assert_same_targets(coco, labelimg)
    _assert_same_targets(coco, yolo)
    written = sorted(
        (c, x1, y1, x2 - x1, y2 - y1)
        for c, x1, y1, x2, y2 in [o for _, _, objects in IMAGES[split].values() for o in objects]
    )
    for dataset in (coco, labelimg, yolo):  # each evaluation ground truth holds exactly the written objects
        held = sorted(
            (dataset.classes[dataset.coco_to_contiguous[a["category_id"]]], *a["bbox"])
            for a in dataset.coco.anns.values()
        )
        assert [h[0] for h in held] == [w[0] for w in written]
        np.testing.assert_allclose([h[1:] for h in held], [w[1:] for w in written], atol=1e-3)


def test_labelimg_and_yolo_layouts_give_the_same_training_targets(tmp_path):
    labelimg = build_detection_dataset("voc-folder", _write_labelimg(tmp_path / "labelimg"), "train", True)
    yolo = build_detection_dataset("yolo", _write_yolo(tmp_path / "yolo"), "train", True)
    assert len(labelimg) == len(yolo) == 2
    for index in range(2):
        (image_a, a), (image_b, b) = labelimg[index], yolo[index]
        assert torch.equal(image_a, image_b) and torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(
            a["boxes"].as_subclass(torch.Tensor), b["boxes"].as_subclass(torch.Tensor), atol=1e-3, rtol=0
        )
        assert a["iscrowd"].tolist() == b["iscrowd"].tolist() and a["image_id"] == b["image_id"]


def test_voc_xml_names_its_image_in_filename(tmp_path):
    """<filename> says .JPG / .png; a wrong <filename> falls back to <name>.jpg; neither: an error naming both."""
    base = tmp_path / "VOC2012"
    (base / "Annotations").mkdir(parents=True)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    files = {
        "p1": ("p1.JPG", "p1.JPG"),
        "p2": ("p2.png", "p2.png"),
        "p3": ("renamed.jpeg", "p3.jpg"),
        "p4": ("p4.jpeg", None),
    }
    for name, (filename, actual) in files.items():
        if actual:
            _image(base / "JPEGImages" / actual, 20, 10)
        (base / "Annotations" / f"{name}.xml").write_text(_voc_xml(filename, 20, 10, [("cat", 2, 2, 8, 8)]))
    (base / "ImageSets" / "Main" / "val.txt").write_text("p1\np2\np3\np4\n")
    with pytest.raises(DetectionDataError, match=r"JPEGImages/p4.jpeg does not exist \(nor .*JPEGImages/p4.jpg"):
        build_detection_dataset("voc", base, "val", False, classes=["cat"], skip_bad=False)
    dataset = build_detection_dataset(None, tmp_path, "val", False, classes=["cat"])
    # evaluation keeps the missing image in the ground truth (its cat is missed, never left out of the score)
    assert [r.path.name for r in dataset.records] == ["p1.JPG", "p2.png", "p3.jpg", "p4.jpeg"]
    assert dataset.stats["images_missing"] == 1
    trained = build_detection_dataset(None, tmp_path, "val", True, classes=["cat"])
    assert [r.path.name for r in trained.records] == ["p1.JPG", "p2.png", "p3.jpg"]
    image, target = dataset[1]
    assert image.shape == (3, 10, 20) and target["boxes"].tolist() == [[2, 2, 8, 8]]


def test_voc_folder_split_by_list_files_with_images_apart(tmp_path):
    """CVAT-like: XML files in annotations/, images in images/ (upper-case suffix), train.txt / val.txt."""
    root = tmp_path / "export"
    for name, (width, height, objects) in {**IMAGES["train"], **IMAGES["val"]}.items():
        _image(root / "images" / f"{name}.JPG", width, height)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{name}.xml").write_text(_voc_xml(f"{name}.JPG", width, height, objects))
    (root / "train.txt").write_text("a\nimages/b.JPG\n")
    (root / "val.txt").write_text("c.xml\n")
    assert detect_layout(root) == "voc-folder"
    train = build_detection_dataset(None, root, "train", True)
    val = build_detection_dataset(None, root, "val", False, classes=train.classes[1:])
    assert train.classes[1:] == CLASSES and val.classes == train.classes  # val has only dogs: the train list kept
    assert [r.path.name for r in train.records] == ["a.JPG", "b.JPG"]
    assert val.target(0)["labels"].tolist() == [3] and val.target(0)["boxes"].tolist() == [[2, 2, 30, 26]]
    with pytest.raises(
        FileNotFoundError,
        match=r"neither a test/ folder of XML files nor a test.txt list; found "
        r"\['annotations', 'images', 'train.txt', 'val.txt'\]",
    ):
        build_detection_dataset("voc-folder", root, "test", False)


def test_yolo_polygons_become_masks_and_boxes(tmp_path):
    root = tmp_path / "seg"
    _image(root / "images" / "val" / "s.png", 40, 20)
    polygon = [4, 2, 20, 2, 20, 12, 4, 16]  # pixels
    label = root / "labels" / "val" / "s.txt"
    label.parent.mkdir(parents=True)
    label.write_text(
        "1 " + " ".join(f"{v / (40 if i % 2 == 0 else 20):.6f}" for i, v in enumerate(polygon)) + "\n"
        "0 0.5 0.5 0.1 0.2\n"  # a box line in a segmentation set: its box is its mask
        "7 0.5 0.5 0.1 0.1\n"  # no class 7
        "0 0.5 0.5\n"
    )  # too short
    (root / "data.yaml").write_text("train: images/val\nval: images/val\nnames:\n  0: plate\n  1: leaf\n")
    dataset = build_detection_dataset(None, root, "val", False)
    target = dataset.target(0)
    assert dataset.classes == ["__background__", "plate", "leaf"]
    assert target["labels"].tolist() == [2, 1]
    assert target["boxes"].tolist()[0] == pytest.approx([4, 2, 20, 16], abs=1e-3)
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], 20, 40)))
    assert (target["masks"][0].numpy() == expected).mean() > 0.995  # the written polygon, to the 6-digit rounding
    assert target["masks"][1].sum() == 4 * 4 and target["area"][1] == pytest.approx(16.0)
    assert target["area"][0] == pytest.approx(float(expected.sum()), abs=2)
    assert {
        k: v for k, v in dataset.stats.items() if k in ("unknown_category", "boxes_degenerate", "masks_from_box")
    } == {"unknown_category": 1, "boxes_degenerate": 1, "masks_from_box": 0}
    assert sorted(dataset.coco.anns[i]["category_id"] for i in dataset.coco.anns) == [1, 2]


def test_layout_is_found_or_the_error_says_what_was_there(tmp_path):
    assert detect_layout(_write_yolo(tmp_path / "yolo")) == "yolo"
    assert detect_layout(_write_labelimg(tmp_path / "labelimg")) == "voc-folder"
    _write_coco(tmp_path / "coco", "val")
    assert detect_layout(tmp_path / "coco") == "coco"
    (tmp_path / "odd" / "pictures").mkdir(parents=True)
    (tmp_path / "odd" / "notes.txt").write_text("")
    with pytest.raises(
        FileNotFoundError,
        match=r"cannot tell the layout of .*odd: found \['notes.txt', 'pictures/'\]"
        r".*pass --dataset",
    ):
        build_detection_dataset(None, tmp_path / "odd", "val", False)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)


@needs_coco128
def test_coco128_converted_to_yolo_and_labelimg_gives_the_json_targets(tmp_path):
    """Converted here with the formats' own conventions: YOLO normalised centre/size lines of class
    index = position of the category id, labelImg XML with 1-based integer corners; boxes within 1 px."""
    spec = json.loads((COCO128 / "annotations" / "instances.json").read_text())
    coco = CocoDetectionDataset(
        COCO128 / "images", COCO128 / "annotations" / "instances.json", train=True, with_masks=False
    )
    category_ids = sorted(c["id"] for c in spec["categories"])
    names = {c["id"]: c["name"] for c in spec["categories"]}
    by_image = {}
    for annotation in spec["annotations"]:
        if not annotation["iscrowd"]:  # neither format has crowd regions
            by_image.setdefault(annotation["image_id"], []).append(annotation)
    yolo, labelimg = tmp_path / "yolo", tmp_path / "labelimg"
    for image in spec["images"]:
        source, width, height = COCO128 / "images" / image["file_name"], image["width"], image["height"]
        stem = Path(image["file_name"]).stem
        _link(source, yolo / "images" / "train" / image["file_name"])
        _link(source, labelimg / "train" / image["file_name"])
        objects = [(a["category_id"], a["bbox"]) for a in by_image.get(image["id"], [])]
        (yolo / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (yolo / "labels" / "train" / f"{stem}.txt").write_text(
            "".join(
                _yolo_line(category_ids.index(c), x, y, x + w, y + h, width, height) + "\n"
                for c, (x, y, w, h) in objects
            )
        )
        (labelimg / "train" / f"{stem}.xml").write_text(
            _voc_xml(
                image["file_name"],
                width,
                height,
                [(names[c], round(x), round(y), round(x + w), round(y + h)) for c, (x, y, w, h) in objects],
            )
        )
    (yolo / "data.yaml").write_text(
        json.dumps({"train": "images/train", "val": "images/train", "names": [names[i] for i in category_ids]})
    )  # JSON is YAML
    from_yolo = build_detection_dataset(None, yolo, "train", True, with_masks=False)
    from_labelimg = build_detection_dataset(None, labelimg, "train", True)
    assert len(coco) == len(from_yolo) == len(from_labelimg) == 126
    assert from_yolo.classes == coco.classes
    used = sorted({names[a["category_id"]] for annotations in by_image.values() for a in annotations})
    assert from_labelimg.classes[1:] == used  # read from the files: the names that occur, sorted
    _assert_same_targets(coco, from_yolo, atol=1e-3)
    _assert_same_targets(coco, from_labelimg, atol=1.0)


def test_roboflow_valid_folder_serves_the_val_split(tmp_path):
    root = _write_labelimg(tmp_path / "roboflow")
    (root / "val").rename(root / "valid")
    assert [r.path.name for r in build_detection_dataset(None, root, "val", False, classes=CLASSES).records] == [
        "c.jpg"
    ]


@pytest.mark.slow
def test_cli_trains_on_a_labelimg_folder_found_without_dataset(tmp_path):
    """No --dataset: the folder is recognised, the class list read from the training files is printed and
    passed to the val split (which holds only dogs), and the run evaluates with it."""
    root = _write_labelimg(tmp_path / "labelimg")
    result = cli(
        [
            "detect",
            "train",
            "--data",
            str(root),
            "--backbone",
            "resnest14",
            "--model-kwargs",
            "bottleneck_width=16",
            "stem_width=16",
            "--norm",
            "groupnorm",
            "--min-size",
            "64",
            "--max-size",
            "96",
            "--batch-size",
            "2",
            "--max-iter",
            "1",
            "--warmup-iters",
            "1",
            "--workers",
            "0",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--no-tensorboard",
            "--detections-per-img",
            "10",
            "--output",
            str(tmp_path / "run"),
        ]
    )
    assert (
        "VOC folder labelimg train: 2 of 2 images, 5 annotations, 3 classes (read from the files, sorted: bird, "
        "cat, dog)" in result.stdout
    )
    assert "VOC folder labelimg val: 1 of 1 images, 1 annotations, 3 classes." in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}


def test_yolo_sizes_are_those_of_the_upright_photo(tmp_path):
    """A phone photo stored 40x20 with EXIF orientation 6 (rotate 90) is 20x40 upright: YOLO's normalised
    boxes are scaled by the upright size, as PIL's exif_transpose gives it."""
    from PIL import ImageOps

    stored = tmp_path / "phone" / "images" / "val" / "p.jpg"
    stored.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8)).save(stored, exif=exif)
    label = tmp_path / "phone" / "labels" / "val" / "p.txt"
    label.parent.mkdir(parents=True)
    label.write_text("0 0.5 0.25 0.5 0.25\n")
    dataset = build_detection_dataset(None, tmp_path / "phone", "val", False, classes=["cup"])
    with Image.open(stored) as image:
        upright = ImageOps.exif_transpose(image).size
    assert upright == (20, 40) and (dataset.records[0].width, dataset.records[0].height) == upright
    assert dataset.target(0)["boxes"].tolist() == [[5, 5, 15, 15]]
