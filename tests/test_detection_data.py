"""Detection data: COCO json (coco128 and synthetic bad input), VOC XML, masks, the flip transform, collation."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision import tv_tensors

from splitattn.data.detection import (
    STATS_KEYS,
    CocoDetectionDataset,
    DetectionDataError,
    build_detection_dataset,
    collate_detection,
    segmentation_to_mask,
)
from splitattn.data.detection.transforms import build_detection_train_transform
from splitattn.tasks.detection.evaluation import CocoEvaluator

from .conftest import SHARED_DATA

COCO128 = SHARED_DATA / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances.json"
# pycocotools' decode trips numpy 2's copy-keyword deprecation on every mask; it is theirs and harmless
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
needs_coco128 = pytest.mark.usefixtures("coco128")


def _coco128_json() -> dict:
    return json.loads(COCO128_JSON.read_text())


def _xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


@needs_coco128
def test_coco128_counts_and_category_mapping():
    raw = _coco128_json()
    annotations_of = {image["id"]: [] for image in raw["images"]}
    for ann in raw["annotations"]:
        annotations_of[ann["image_id"]].append(ann)
    names = {cat["id"]: cat["name"] for cat in raw["categories"]}
    crowd = sum(ann["iscrowd"] for ann in raw["annotations"])
    dataset = build_detection_dataset("coco", COCO128, "train", train=False, with_masks=False)
    assert set(dataset.stats) == set(STATS_KEYS)
    assert (dataset.stats["images"], dataset.stats["images_used"], len(dataset)) == (len(raw["images"]),) * 3
    assert dataset.stats["annotations"] == len(raw["annotations"]) == 939
    assert dataset.stats["crowd_regions"] == crowd == 10
    assert dataset.stats["images_without_annotations"] == sum(not a for a in annotations_of.values()) == 2
    assert dataset.summary().startswith("COCO instances.json: 128 of 128 images, 939 annotations, 80 classes")
    k = len(raw["categories"])
    assert dataset.num_classes == k + 1 and dataset.classes[0] == "__background__"
    assert sorted(dataset.contiguous_to_coco) == list(range(1, k + 1))
    assert sorted(dataset.contiguous_to_coco.values()) == sorted(names)
    assert all(dataset.coco_to_contiguous[c] == label for label, c in dataset.contiguous_to_coco.items())
    assert dataset.contiguous_to_coco[12] == 13 and dataset.classes[12] == "stop sign"  # COCO has no id 12
    for index in range(len(dataset)):  # every annotation: its box is in the target with a label naming its category
        target = dataset.target(index)
        expected = annotations_of[target["image_id"]]
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert target["boxes"].shape == (len(expected), 4)
        for ann, box, label, iscrowd in zip(expected, target["boxes"], target["labels"].tolist(), target["iscrowd"]):
            assert torch.allclose(box, torch.tensor(_xyxy(ann["bbox"]), dtype=torch.float32), atol=1e-3)
            assert dataset.contiguous_to_coco[label] == ann["category_id"]
            assert dataset.classes[label] == names[ann["category_id"]]
            assert int(iscrowd) == ann["iscrowd"]
    train = build_detection_dataset("coco", COCO128, "train", train=True, with_masks=False)
    with_objects = [i for i, anns in annotations_of.items() if any(not a["iscrowd"] for a in anns)]
    assert len(train) == len(with_objects) and train.stats["images_filtered_for_training"] == 128 - len(with_objects)
    targets = [train.target(i) for i in range(len(train))]
    assert sum(len(t["labels"]) for t in targets) == 939 - crowd
    assert all((t["iscrowd"] == 0).all() for t in targets)


@needs_coco128
def test_coco128_images_are_rgb_floats_with_their_targets():
    raw = _coco128_json()
    grey = next(image for image in raw["images"] if Image.open(COCO128 / "images" / image["file_name"]).mode == "L")
    dataset = CocoDetectionDataset(COCO128 / "images", COCO128_JSON)
    index = next(i for i, record in enumerate(dataset.records) if record.image_id == grey["id"])
    image, target = dataset[index]
    assert image.shape == (3, grey["height"], grey["width"]) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5
    assert torch.equal(image[0], image[1])  # grey copied into three channels
    assert target["image_id"] == grey["id"] and target["orig_size"] == (grey["height"], grey["width"])
    assert target["masks"].shape == (len(target["labels"]), grey["height"], grey["width"])
    assert target["masks"].dtype == torch.uint8


@needs_coco128
def test_coco128_masks_match_pycocotools_and_round_trip():
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(COCO128_JSON))
    dataset = CocoDetectionDataset(COCO128 / "images", COCO128_JSON)
    crowd_images = {ann["image_id"] for ann in reference.anns.values() if ann["iscrowd"]}
    chosen = [i for i, r in enumerate(dataset.records) if r.image_id in crowd_images or i % 8 == 0]
    kinds = set()
    for index in chosen:
        target = dataset.target(index)
        anns = reference.imgToAnns[target["image_id"]]
        assert len(anns) == len(target["masks"])
        for ann, mask in zip(anns, target["masks"].numpy()):
            kinds.add("rle" if ann["iscrowd"] else "polygon")
            expected = reference.annToMask(ann)
            assert mask.sum() == expected.sum() > 0
            assert np.array_equal(mask, expected)
            rle = mask_utils.encode(np.asfortranarray(mask))
            assert np.array_equal(mask_utils.decode(rle), mask)
            assert mask_utils.area(rle) == mask.sum()
    assert kinds == {"rle", "polygon"}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE written out here: run lengths over the column-major pixels, zeros first."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def test_uncompressed_and_compressed_rle_decode_identically():
    mask = np.zeros((7, 9), dtype=np.uint8)
    mask[1:4, 2:6] = 1
    mask[5, 0] = mask[6, 8] = 1
    compressed = mask_utils.encode(np.asfortranarray(mask))
    as_str = {"size": compressed["size"], "counts": compressed["counts"].decode("ascii")}
    for segmentation in (_uncompressed_rle(mask), compressed, as_str):
        assert np.array_equal(segmentation_to_mask(segmentation, 7, 9), mask)
    polygon = [[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]]
    assert segmentation_to_mask(polygon, 7, 9).sum() == mask_utils.area(
        mask_utils.merge(mask_utils.frPyObjects(polygon, 7, 9))
    )


def _image(path: Path, width: int, height: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": (height, width, 3), "L": (height, width)}[mode]
    Image.fromarray(np.random.default_rng(0).integers(0, 255, channels).astype(np.uint8), mode=mode).save(path)


def _bad_coco(tmp_path: Path) -> Path:
    """Images a (40x30), b (20x20, no annotations), c (only a crowd region), missing (no file); category ids
    90, 3, 17 (listed unsorted); annotations covering every kind of bad input."""
    _image(tmp_path / "images" / "a.jpg", 40, 30)
    _image(tmp_path / "images" / "b.png", 20, 20, "L")
    _image(tmp_path / "images" / "c.jpg", 16, 12)
    crowd = np.zeros((30, 40), dtype=np.uint8)
    crowd[0:10, 0:10] = 1
    crowd_c = np.zeros((12, 16), dtype=np.uint8)
    crowd_c[2:5, 3:9] = 1
    compressed = mask_utils.encode(np.asfortranarray(crowd_c))
    anns = [  # (image id, category id, bbox, iscrowd, segmentation)
        (1, 17, [5, 5, 10, 10], 0, [[5, 5, 15, 5, 15, 15, 5, 15]]),  # valid -> label 2
        (1, 3, [1, 1, 0, 5], 0, []),  # zero width
        (1, 3, [1, 1, 5, -2], 0, []),  # negative height
        (1, 90, [50, 40, 5, 5], 0, []),  # entirely outside
        (1, 90, [35, 20, 10, 20], 0, []),  # partly outside -> [35, 20, 40, 30], no mask -> its box
        (1, 3, [0, 0, 10, 10], 1, _uncompressed_rle(crowd)),  # crowd, uncompressed RLE
        (1, 5, [2, 2, 4, 4], 0, []),  # unknown category
        (3, 17, [3, 2, 6, 3], 1, {"size": [12, 16], "counts": compressed["counts"].decode("ascii")}),  # crowd only
        (4, 17, [1, 1, 4, 4], 0, []),  # on the missing image
    ]
    spec = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 20, "height": 20},
            {"id": 3, "file_name": "c.jpg", "width": 16, "height": 12},
            {"id": 4, "file_name": "missing.jpg", "width": 10, "height": 10},
        ],
        "annotations": [
            {
                "id": i + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": bbox,
                "iscrowd": crowd,
                "segmentation": seg,
                "area": float(bbox[2] * bbox[3]),
            }
            for i, (image_id, cat, bbox, crowd, seg) in enumerate(anns)
        ],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}, {"id": 17, "name": "cat"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(spec))
    return path


def test_bad_coco_input_is_handled_and_counted(tmp_path):
    annotation_file = _bad_coco(tmp_path)
    with pytest.raises(DetectionDataError, match=r"missing.jpg does not exist; .*--skip-bad"):
        CocoDetectionDataset(tmp_path / "images", annotation_file, skip_bad=False)
    dataset = CocoDetectionDataset(tmp_path / "images", annotation_file)
    assert dataset.classes == ["__background__", "car", "cat", "toothbrush"]
    assert dataset.contiguous_to_coco == {1: 3, 2: 17, 3: 90}
    assert dataset.stats == {
        "images": 4,
        "images_used": 4,  # an evaluation set keeps missing.jpg: its object is a miss, not left out
        "images_missing": 1,
        "annotation_files_bad": 0,
        "images_without_annotations": 1,
        "images_filtered_for_training": 0,
        "annotations": 9,
        "unknown_category": 1,
        "boxes_degenerate": 2,
        "boxes_outside": 1,
        "boxes_clipped": 1,
        "crowd_regions": 2,
        "masks_from_box": 2,
    }
    assert "1 image files missing (skipped in training, their objects missed in evaluation)" in dataset.summary()
    assert dataset[3][0] is None and "missing.jpg" in dataset[3][1]["unreadable"]
    image, target = dataset[0]
    assert image.shape == (3, 30, 40)
    assert target["boxes"].tolist() == [[5, 5, 15, 15], [35, 20, 40, 30], [0, 0, 10, 10]]
    assert target["labels"].tolist() == [2, 3, 1] and target["iscrowd"].tolist() == [0, 0, 1]
    assert target["masks"][1].sum() == 5 * 10 and target["masks"][1, 20:30, 35:40].all()  # the clipped box
    assert target["masks"][2].sum() == 100 and target["masks"][2, :10, :10].all()  # the uncompressed crowd RLE
    assert dataset[1][0].shape == (3, 20, 20) and len(dataset[1][1]["labels"]) == 0  # kept for evaluation
    assert dataset[1][1]["masks"].shape == (0, 20, 20)
    assert dataset[2][1]["masks"][0, 2:5, 3:9].all() and dataset[2][1]["masks"].sum() == 18  # compressed RLE
    train = CocoDetectionDataset(tmp_path / "images", annotation_file, train=True)
    assert len(train) == 1 and train.stats["images_filtered_for_training"] == 2
    left_out = {"annotations": 1, "masks_from_box": 1}  # the missing image's object: a training set leaves it out
    assert {k: v for k, v in train.stats.items() if k not in ("images_used", "images_filtered_for_training")} == {
        k: v - left_out.get(k, 0)
        for k, v in dataset.stats.items()
        if k not in ("images_used", "images_filtered_for_training")
    }
    _, target = train[0]
    assert target["labels"].tolist() == [2, 3] and target["iscrowd"].tolist() == [0, 0]
    assert target["boxes"].tolist() == [[5, 5, 15, 15], [35, 20, 40, 30]] and target["masks"].shape == (2, 30, 40)


def test_unreadable_or_resized_image_is_skipped_at_load_time_or_named(tmp_path):
    annotation_file = _bad_coco(tmp_path)
    (tmp_path / "images" / "a.jpg").write_bytes(b"not a jpeg")
    _image(tmp_path / "images" / "b.png", 21, 20)  # the json says 20x20
    dataset = CocoDetectionDataset(tmp_path / "images", annotation_file)
    assert len(dataset) == 4  # existence is all that is checked up front; evaluation keeps missing.jpg too
    # an evaluation sample keeps its target and says what is wrong: the evaluation scores it or names it
    image, target = dataset[0]
    assert image is None and "a.jpg cannot be read" in target["unreadable"]
    image, target = dataset[1]
    assert image is None and "b.png is 21x20 but its annotation says 20x20" in target["unreadable"]
    images, targets = collate_detection([dataset[2], dataset[0]])
    assert images[1] is None and [t["image_id"] for t in targets] == [3, 1]
    train = CocoDetectionDataset(tmp_path / "images", annotation_file, train=True)  # only a.jpg is left ...
    with pytest.warns(UserWarning), pytest.raises(DetectionDataError, match="no image of .* can be read"):
        train[0]
    _image(tmp_path / "images" / "missing.jpg", 10, 10)
    strict = CocoDetectionDataset(tmp_path / "images", annotation_file, skip_bad=False, train=True)
    with pytest.raises(DetectionDataError, match=r"a.jpg cannot be read .*--skip-bad"):
        strict[0]
    _image(tmp_path / "images" / "b.png", 20, 20)
    _image(tmp_path / "images" / "a.jpg", 40, 30)
    (tmp_path / "images" / "c.jpg").write_bytes(b"")
    spec = json.loads(annotation_file.read_text())
    spec["annotations"][7]["iscrowd"] = 0  # c.jpg now has an object but cannot be read: the next image replaces it
    annotation_file.write_text(json.dumps(spec))
    train = CocoDetectionDataset(tmp_path / "images", annotation_file, train=True)
    assert [r.image_id for r in train.records] == [1, 3, 4]
    with pytest.warns(UserWarning, match="c.jpg cannot be read"):
        _, target = train[1]
    assert target["image_id"] == 4


def test_build_detection_dataset_finds_files_or_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"instances_val2017.json.*--annotations"):
        build_detection_dataset("coco", tmp_path, "val", train=False)
    (tmp_path / "images").mkdir()
    (tmp_path / "broken.json").write_text("[1, 2")
    with pytest.raises(DetectionDataError, match=r"broken.json is not a COCO instances json .*--annotations"):
        CocoDetectionDataset(tmp_path / "images", tmp_path / "broken.json")
    (tmp_path / "annotations").mkdir()
    _bad_coco(tmp_path).rename(tmp_path / "annotations" / "instances_val2017.json")
    dataset = build_detection_dataset("coco", tmp_path, "val", train=False)  # falls back to images/
    assert len(dataset) == 4 and dataset.records[0].path == tmp_path / "images" / "a.jpg"
    with pytest.raises(ValueError, match="unknown detection data set kind 'kitti'"):
        build_detection_dataset("kitti", tmp_path, "val", train=False)


def _box_masks(boxes, height, width):
    masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        mask[y1:y2, x1:x2] = 1
    return masks


def _mask_boxes(masks):
    """x1 y1 x2 y2 of each mask's pixels (pixel edges, so a full-width mask spans 0..W)."""
    out = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        out.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
    return out


def test_horizontal_flip_keeps_boxes_masks_and_image_together():
    """The v2 pipeline on tv_tensors: boxes, masks and image mirrored together (x1, x2 -> W - x2, W - x1,
    checked against the masks' own pixels), the per-box entries kept in step, the input left alone."""
    boxes = [[0, 1, 3, 4], [5, 0, 10, 6], [2, 2, 3, 3]]
    image = tv_tensors.Image(torch.rand(3, 6, 10))
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(6, 10)),
        "masks": tv_tensors.Mask(_box_masks(boxes, 6, 10)),
        "labels": torch.tensor([1, 2, 3]),
        "area": torch.tensor([9.0, 30.0, 1.0]),
        "iscrowd": torch.tensor([0, 0, 0]),
        "image_id": 7,
    }
    flip = build_detection_train_transform(1.0)
    flipped_image, flipped = flip(image, target)
    assert flipped["boxes"].tolist() == [[7, 1, 10, 4], [0, 0, 5, 6], [7, 2, 8, 3]]
    assert _mask_boxes(flipped["masks"]) == flipped["boxes"].int().tolist()
    assert isinstance(flipped["boxes"], tv_tensors.BoundingBoxes) and isinstance(flipped["masks"], tv_tensors.Mask)
    assert torch.equal(flipped_image[:, :, 0], image[:, :, 9])
    assert torch.equal(flipped_image[:, 1:4, 7:10], image[:, 1:4, 0:3].flip(-1))  # the pixels under box 0
    assert flipped["labels"].tolist() == [1, 2, 3] and flipped["image_id"] == 7
    assert target["boxes"].tolist() == boxes  # input left alone
    back_image, back = flip(flipped_image, flipped)
    assert torch.equal(back_image, image) and torch.equal(back["boxes"], target["boxes"])
    assert torch.equal(back["masks"], target["masks"])
    kept_image, kept = build_detection_train_transform(0.0)(image, target)
    assert torch.equal(kept_image, image) and kept["boxes"].tolist() == boxes
    draws = [torch.equal(build_detection_train_transform(0.5)(image, target)[0], image) for _ in range(64)]
    assert 10 < sum(draws) < 54
    with pytest.raises(ValueError, match="flip probability"):
        build_detection_train_transform(1.5)


def test_sanitize_drops_a_degenerate_box_with_its_label_area_crowd_flag_and_mask():
    boxes = [[0, 1, 3, 4], [5, 0, 5.5, 6], [2, 2, 3, 3]]  # box 1 is half a pixel wide
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes), format="XYXY", canvas_size=(6, 10)),
        "masks": tv_tensors.Mask(_box_masks([[0, 1, 3, 4], [5, 0, 6, 6], [2, 2, 3, 3]], 6, 10)),
        "labels": torch.tensor([1, 2, 3]),
        "area": torch.tensor([9.0, 3.0, 1.0]),
        "iscrowd": torch.tensor([0, 1, 0]),
    }
    _, kept = build_detection_train_transform(0.0)(tv_tensors.Image(torch.rand(3, 6, 10)), target)
    assert kept["boxes"].tolist() == [[0, 1, 3, 4], [2, 2, 3, 3]] and kept["labels"].tolist() == [1, 3]
    assert kept["area"].tolist() == [9.0, 1.0] and kept["iscrowd"].tolist() == [0, 0]
    assert torch.equal(kept["masks"], target["masks"][[0, 2]])


def _write_voc(root: Path) -> Path:
    """VOCdevkit/VOC2007 with 000001 (50x40: a dog covering it all, a difficult dog, a unicorn), 000002
    (30x20: a person partly outside, a box with xmax < xmin) and 000003 (listed, no image)."""
    base = root / "VOCdevkit" / "VOC2007"
    objects = {
        "000001": (50, 40, [("dog", 0, (1, 1, 50, 40)), ("dog", 1, (11, 6, 20, 15)), ("unicorn", 0, (1, 1, 5, 5))]),
        "000002": (30, 20, [("person", 0, (21, 5, 40, 12)), ("car", 0, (9, 2, 4, 8))]),
        "000003": (10, 10, [("dog", 0, (1, 1, 5, 5))]),
    }
    (base / "Annotations").mkdir(parents=True)
    for name, (width, height, objs) in objects.items():
        if name != "000003":
            _image(base / "JPEGImages" / f"{name}.jpg", width, height)
        xml = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}"
            f"</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, d, b in objs
        )
        (base / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{xml}</annotation>"
        )
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "train.txt").write_text("000001\n000002\n000003\n")
    return base


def test_voc_tree_loads_converts_coordinates_and_treats_difficult_as_crowd(tmp_path):
    base = _write_voc(tmp_path)
    dataset = build_detection_dataset("voc", tmp_path / "VOCdevkit", "train", train=False)  # finds VOC2007
    assert dataset.num_classes == 21 and dataset.classes[12] == "dog" and dataset.classes[8] == "cat"
    assert {k: v for k, v in dataset.stats.items() if v} == {
        "images": 3,
        "images_used": 3,  # 000003 has no image: kept for evaluation, its dog a miss
        "images_missing": 1,
        "annotations": 6,
        "unknown_category": 1,
        "boxes_degenerate": 1,
        "boxes_clipped": 1,
        "crowd_regions": 1,
    }
    image, target = dataset[0]
    assert image.shape == (3, 40, 50) and "masks" not in target
    assert target["boxes"].tolist() == [[0, 0, 50, 40], [10, 5, 20, 15]]  # 1-based inclusive -> pixel edges
    assert target["labels"].tolist() == [12, 12] and target["iscrowd"].tolist() == [0, 1]
    assert dataset.target(1)["boxes"].tolist() == [[20, 4, 30, 12]] and dataset.target(1)["labels"].tolist() == [15]
    assert dataset[2][0] is None and "000003.jpg" in dataset[2][1]["unreadable"]
    train = build_detection_dataset("voc", base, "train", train=True)
    assert train.target(0)["labels"].tolist() == [12] and train.target(0)["iscrowd"].tolist() == [0]
    gt = dataset.coco
    assert sorted((a["category_id"], a["bbox"], a["iscrowd"]) for a in gt.anns.values()) == [
        (12, [0, 0, 5, 5], 0),
        (12, [0, 0, 50, 40], 0),
        (12, [10, 5, 10, 10], 1),
        (15, [20, 4, 10, 8], 0),
    ]
    with pytest.raises(ValueError, match="no segmentations"):
        CocoEvaluator(gt, ("bbox", "segm"), dataset.contiguous_to_coco)

    def score(extra_boxes, extra_labels):
        evaluator = CocoEvaluator(gt, ("bbox",), dataset.contiguous_to_coco)
        for i in range(len(dataset)):
            t = dataset.target(i)
            keep = t["iscrowd"] == 0
            boxes = torch.cat([t["boxes"][keep], torch.tensor(extra_boxes[i]).reshape(-1, 4)])
            labels = torch.cat([t["labels"][keep], torch.tensor(extra_labels[i], dtype=torch.int64)])
            evaluator.update({t["image_id"]: {"boxes": boxes, "labels": labels, "scores": torch.ones(len(labels))}})
        return evaluator.summarize()["bbox"]["AP"]

    assert score([[], [], []], [[], [], []]) == pytest.approx(100.0)
    assert score([[[10, 5, 20, 15]], [], []], [[12], [], []]) == pytest.approx(100.0)  # the difficult dog: ignored
    assert score([[[30, 20, 40, 30]], [], []], [[12], [], []]) < 100.0  # a false dog elsewhere counts against
    (base / "Annotations" / "000002.xml").write_text("<annotation><size>")
    (base / "ImageSets" / "Main" / "train.txt").write_text("000001\n000002\n")
    with pytest.raises(DetectionDataError, match=r"000002.xml cannot be used .*--skip-bad"):
        build_detection_dataset("voc", base, "train", train=False, skip_bad=False)
    assert build_detection_dataset("voc", base, "train", train=False).stats["annotation_files_bad"] == 1
