"""An evaluation image that cannot be read is never left out of the score: its objects are misses (training with
skip_bad) or the evaluation stops naming it (``evaluate`` commands)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader

from splitattn.data.detection.coco import CocoDetectionDataset
from splitattn.data.detection.dataset import collate_detection
from splitattn.errors import DetectionDataError
from splitattn.tasks.detection.engine import evaluate
from splitattn.tasks.detection.evaluation import CocoEvaluator

from .conftest import SHARED_DATA

COCO128 = SHARED_DATA / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances.json"
pytestmark = [
    pytest.mark.usefixtures("coco128"),  # skip where absent, fail under CI (conftest)
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # pycocotools vs numpy 2
]


class Lookup(nn.Module):
    """A detector that answers each image with detections fixed in advance (found by the image's bytes)."""

    def __init__(self, answers: dict) -> None:
        super().__init__()
        self.answers = answers

    def forward(self, images: list) -> list:
        return [self.answers[image.numpy().tobytes()] for image in images]


def _detections(raw: dict, rng: np.random.Generator) -> dict:
    """``{image_id: (COCO result dicts)}``: each non-crowd object found with probability 0.8, its box moved by up
    to 15% of its size, a random score; one false positive per image."""
    found: dict = {image["id"]: [] for image in raw["images"]}
    for ann in raw["annotations"]:
        if ann.get("iscrowd") or rng.random() > 0.8:
            continue
        x, y, w, h = ann["bbox"]
        dx, dy, dw, dh = rng.uniform(-0.15, 0.15, 4) * [w, h, w, h]
        box = [x + dx, y + dy, max(1.0, w + dw), max(1.0, h + dh)]
        found[ann["image_id"]].append({"category_id": ann["category_id"], "bbox": box, "score": float(rng.random())})
    for image in raw["images"]:
        box = [float(v) for v in rng.uniform(0, 0.5, 4) * np.array([image["width"], image["height"]] * 2)]
        found[image["id"]].append({"category_id": raw["categories"][0]["id"], "bbox": box, "score": 0.3})
    return found


def _cocoeval_ap(gt: COCO, detections: dict, image_ids: list) -> float:
    """pycocotools' box AP (%) of ``detections`` over ``image_ids``, computed directly."""
    results = [dict(result, image_id=image_id) for image_id in image_ids for result in detections[image_id]]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.params.imgIds = sorted(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return float(coco_eval.stats[0]) * 100


def test_an_unreadable_detection_image_counts_its_objects_as_missed(tmp_path: Path) -> None:
    raw = json.loads(COCO128_JSON.read_text())
    objects = {image["id"]: 0 for image in raw["images"]}
    for ann in raw["annotations"]:
        objects[ann["image_id"]] += not ann.get("iscrowd")
    victim = max(raw["images"], key=lambda image: (objects[image["id"]], -image["id"]))  # the most objects
    images = tmp_path / "coco128" / "images"
    images.mkdir(parents=True)
    for image in raw["images"]:
        source = COCO128 / "images" / image["file_name"]
        if image is victim:  # a truncated copy: the header reads, the pixels do not
            (images / image["file_name"]).write_bytes(source.read_bytes()[: source.stat().st_size // 3])
        else:
            (images / image["file_name"]).symlink_to(source)
    dataset = CocoDetectionDataset(images, COCO128_JSON, with_masks=False)

    detections = _detections(raw, np.random.default_rng(0))
    answers = {}
    for index, record in enumerate(dataset.records):
        image, problem = dataset.decode(index)
        if record.image_id == victim["id"]:
            assert image is None and "cannot be read" in problem
            continue
        found = detections[record.image_id]
        boxes = torch.tensor([r["bbox"] for r in found], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        answers[image.numpy().tobytes()] = {
            "boxes": boxes,
            "scores": torch.tensor([r["score"] for r in found]),
            "labels": torch.tensor([dataset.coco_to_contiguous[r["category_id"]] for r in found]),
        }
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_detection)
    evaluator = CocoEvaluator(dataset.coco, ("bbox",), dataset.contiguous_to_coco)
    with pytest.warns(
        UserWarning, match=rf"{victim['file_name']} cannot be read .*\({objects[victim['id']]} objects missed\)"
    ):
        ours = evaluate(Lookup(answers), loader, evaluator, torch.device("cpu"))["bbox"]["AP"]

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(COCO128_JSON))  # the annotation file itself, not our ground truth
    all_ids = [image["id"] for image in raw["images"]]
    detections[victim["id"]] = []  # an image that could not be read: nothing found there
    assert ours == pytest.approx(_cocoeval_ap(gt, detections, all_ids), abs=1e-9)
    left_out = _cocoeval_ap(gt, detections, [i for i in all_ids if i != victim["id"]])
    assert left_out > ours + 0.5, "leaving the image out would have raised the AP: the test could not tell"

    strict = CocoEvaluator(dataset.coco, ("bbox",), dataset.contiguous_to_coco)
    with pytest.raises(DetectionDataError, match=rf"{victim['file_name']} cannot be read"):
        evaluate(Lookup(answers), loader, strict, torch.device("cpu"), unreadable="error")


def test_a_missing_evaluation_image_stays_in_the_ground_truth(tmp_path: Path) -> None:
    """A COCO evaluation image whose file is gone is counted and kept (its objects are misses); a training set
    leaves it out; without skip_bad it is an error naming the file."""
    raw = json.loads(COCO128_JSON.read_text())
    images = tmp_path / "images"
    images.mkdir()
    for image in raw["images"][1:]:
        (images / image["file_name"]).symlink_to(COCO128 / "images" / image["file_name"])
    gone = raw["images"][0]
    evaluation = CocoDetectionDataset(images, COCO128_JSON, with_masks=False)
    assert evaluation.stats["images_missing"] == 1 and len(evaluation) == len(raw["images"])
    image, target = evaluation[[r.image_id for r in evaluation.records].index(gone["id"])]
    assert image is None and gone["file_name"] in target["unreadable"]
    training = CocoDetectionDataset(images, COCO128_JSON, train=True, with_masks=False)
    assert gone["id"] not in {r.image_id for r in training.records}
    with pytest.raises(DetectionDataError, match=rf"{gone['file_name']} does not exist"):
        CocoDetectionDataset(images, COCO128_JSON, with_masks=False, skip_bad=False)


CAMVID = SHARED_DATA / "camvid-mini"


@pytest.mark.usefixtures("camvid_mini")
def test_an_unreadable_segmentation_image_is_named_when_it_is_loaded(tmp_path: Path) -> None:
    """A truncated PNG passes the header check of the build; loading it is an error naming the file (not an
    unnamed OSError from PIL, nor a pair quietly left out of the score)."""
    from splitattn.data.segmentation.layouts import build_dataset
    from splitattn.errors import SegmentationDataError

    for kind in ("images", "labels"):
        (tmp_path / "val" / kind).mkdir(parents=True)
        for source in sorted((CAMVID / "val" / kind).iterdir())[:2]:
            (tmp_path / "val" / kind / source.name).symlink_to(source)
    victim = sorted((tmp_path / "val" / "images").iterdir())[1]
    data = victim.resolve().read_bytes()
    victim.unlink()
    victim.write_bytes(data[: len(data) // 2])
    classes = "sky,building,pole,road,pavement,tree,sign,fence,car,pedestrian,bicyclist"
    dataset = build_dataset("folder", tmp_path, "val", classes=classes, ignore_value=11)
    assert len(dataset) == 2 and not dataset.skipped
    with pytest.raises(SegmentationDataError, match=rf"image {victim} cannot be read"):
        dataset[1]
