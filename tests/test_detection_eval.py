"""The COCO evaluator against pycocotools run directly: perfect predictions, perturbed ones, none, and merging."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from splitattn.data.detection import CocoDetectionDataset
from splitattn.tasks.detection import evaluation
from splitattn.tasks.detection.evaluation import STAT_NAMES, CocoEvaluator

from .conftest import SHARED_DATA

COCO128 = SHARED_DATA / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances.json"
needs_coco128 = pytest.mark.usefixtures("coco128")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2


def _quiet(function, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def _tiny_gt() -> COCO:
    """Two 20x30 images, category ids 5 and 9, three objects."""
    mask = np.zeros((20, 30), dtype=np.uint8, order="F")
    mask[2:8, 3:12] = 1
    rle = mask_utils.encode(mask)
    rle["counts"] = rle["counts"].decode("ascii")
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 30, "height": 20}, {"id": 2, "width": 30, "height": 20}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 5,
                "bbox": [3, 2, 9, 6],
                "area": 54,
                "iscrowd": 0,
                "segmentation": rle,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 9,
                "bbox": [15, 10, 10, 8],
                "area": 80,
                "iscrowd": 0,
                "segmentation": [[15, 10, 25, 10, 25, 18, 15, 18]],
            },
            {
                "id": 3,
                "image_id": 2,
                "category_id": 5,
                "bbox": [0, 0, 30, 20],
                "area": 600,
                "iscrowd": 0,
                "segmentation": [[0, 0, 30, 0, 30, 20, 0, 20]],
            },
        ],
        "categories": [{"id": 5, "name": "five"}, {"id": 9, "name": "nine"}],
    }
    _quiet(coco.createIndex)
    return coco


def _empty(with_masks: bool = False) -> dict:
    output = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    if with_masks:
        output["masks"] = torch.zeros(0, 1, 20, 30)
    return output


@needs_coco128
def test_ground_truth_as_predictions_scores_100():
    dataset = CocoDetectionDataset(COCO128 / "images", COCO128_JSON, with_masks=False)
    boxes_only = CocoEvaluator(dataset.coco, ("bbox",), dataset.contiguous_to_coco)
    for index in range(len(dataset)):  # every image, boxes only
        target = dataset.target(index)
        keep = target["iscrowd"] == 0
        boxes_only.update(
            {
                target["image_id"]: {
                    "boxes": target["boxes"][keep],
                    "labels": target["labels"][keep],
                    "scores": torch.ones(int(keep.sum())),
                }
            }
        )
    assert boxes_only.summarize() == {"bbox": {name: 100.0 for name in STAT_NAMES}}
    assert (
        "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in boxes_only.reports["bbox"]
    )
    dataset.with_masks = True
    with_masks = CocoEvaluator(dataset.coco, ("bbox", "segm"), dataset.contiguous_to_coco)
    for index in range(0, len(dataset), 4):  # a quarter of the images, with masks: only those are scored
        target = dataset.target(index)
        keep = target["iscrowd"] == 0
        with_masks.update(
            {
                target["image_id"]: {
                    "boxes": target["boxes"][keep],
                    "labels": target["labels"][keep],
                    "scores": torch.ones(int(keep.sum())),
                    "masks": target["masks"][keep, None].float(),
                }
            }
        )
    scores = with_masks.summarize()
    assert [scores["bbox"]["AP"], scores["segm"]["AP"], scores["segm"]["AP75"]] == [100.0, 100.0, 100.0]


def _perturbed(raw: dict, rng: np.random.Generator, image_ids, labels_of, with_masks: bool):
    """Raw model-style numbers: per image, jittered boxes of most objects (some relabelled), false positives,
    random scores and, optionally, probability masks shifted a little from the truth."""
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO()
        reference.dataset = raw
        reference.createIndex()
    outputs = {}
    for image_id in image_ids:
        info = reference.imgs[image_id]
        height, width = info["height"], info["width"]
        boxes, labels, masks = [], [], []
        for ann in reference.imgToAnns[image_id]:
            if ann["iscrowd"] or rng.random() < 0.2:  # 20% missed
                continue
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
            boxes.append([x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]])
            labels.append(labels_of[ann["category_id"]] if rng.random() > 0.1 else int(rng.integers(1, 81)))
            if with_masks:
                masks.append(
                    np.roll(reference.annToMask(ann), int(rng.integers(-3, 4)), axis=1) * 0.8
                    + rng.random((height, width)) * 0.3
                )
        for _ in range(int(rng.integers(0, 4))):  # false positives
            x1, y1 = rng.random() * width * 0.8, rng.random() * height * 0.8
            boxes.append([x1, y1, x1 + 5 + rng.random() * width * 0.2, y1 + 5 + rng.random() * height * 0.2])
            labels.append(int(rng.integers(1, 81)))
            if with_masks:
                masks.append(rng.random((height, width)) * 0.6)
        output = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.from_numpy(rng.random(len(boxes)).astype(np.float32)),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
        if with_masks:
            output["masks"] = torch.from_numpy(
                np.stack(masks).astype(np.float32)[:, None] if masks else np.zeros((0, 1, height, width), np.float32)
            )
        outputs[image_id] = output
    return outputs


def _direct_cocoeval(gt: COCO, outputs: dict, coco_id_of: dict, iou_type: str, image_ids) -> list:
    """COCOeval run here on results written out independently from the same raw numbers."""
    results = []
    for image_id, output in outputs.items():
        masks = output["masks"][:, 0].numpy() > 0.5 if iou_type == "segm" else [None] * len(output["labels"])
        for (x1, y1, x2, y2), score, label, mask in zip(
            output["boxes"].tolist(), output["scores"].tolist(), output["labels"].tolist(), masks
        ):
            result = {"image_id": image_id, "category_id": coco_id_of[label], "score": score}
            if iou_type == "bbox":
                result["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            else:
                result["segmentation"] = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            results.append(result)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(results), iou_type)
        coco_eval.params.imgIds = sorted(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [float(v) * 100 if v >= 0 else None for v in coco_eval.stats[:6]]


@needs_coco128
@pytest.mark.parametrize("iou_types, step", [(("bbox",), 1), (("bbox", "segm"), 6)])
def test_summarize_equals_cocoeval_run_directly(iou_types, step):
    raw = json.loads(COCO128_JSON.read_text())
    category_ids = sorted(cat["id"] for cat in raw["categories"])
    labels_of = {coco_id: i + 1 for i, coco_id in enumerate(category_ids)}
    coco_id_of = {label: coco_id for coco_id, label in labels_of.items()}
    image_ids = sorted(image["id"] for image in raw["images"])[::step]
    outputs = _perturbed(raw, np.random.default_rng(1), image_ids, labels_of, "segm" in iou_types)
    if step == 1:  # images where nothing is detected are passed (empty) and scored too
        assert any(len(output["labels"]) == 0 for output in outputs.values())
    gt = _quiet(COCO, str(COCO128_JSON))
    evaluator = CocoEvaluator(gt, iou_types, coco_id_of)
    evaluator.update(outputs)
    scores = evaluator.summarize()
    for iou_type in iou_types:
        expected = _direct_cocoeval(gt, outputs, coco_id_of, iou_type, image_ids)
        ours = [scores[iou_type][name] for name in STAT_NAMES]
        assert ours == expected  # exactly (None where COCOeval has no ground truth)
        assert 10.0 < ours[0] < 90.0  # the perturbation makes a real difference


def test_results_json_has_coco_ids_xywh_and_str_rle(tmp_path):
    gt = _tiny_gt()
    evaluator = CocoEvaluator(gt, ("bbox", "segm"), {1: 5, 2: 9})
    masks = torch.zeros(2, 1, 20, 30)
    masks[0, 0, 2:8, 3:12] = 0.9
    masks[1, 0, 10:18, 15:25] = 0.7
    masks[1, 0, 0, 0] = 0.4  # below the threshold
    evaluator.update(
        {
            1: {
                "boxes": torch.tensor([[3.0, 2.0, 12.0, 8.0], [15.0, 10.0, 25.0, 18.0]]),
                "scores": torch.tensor([0.9, 0.8]),
                "labels": torch.tensor([1, 2]),
                "masks": masks,
            },
            2: _empty(with_masks=True),
        }
    )
    path = evaluator.write_results(tmp_path / "out" / "results.json")
    written = json.loads(path.read_text())
    assert written == evaluator.results and len(written) == 2
    assert [(r["image_id"], r["category_id"], r["bbox"]) for r in written] == [
        (1, 5, [3, 2, 9, 6]),
        (1, 9, [15, 10, 10, 8]),
    ]
    assert all(isinstance(r["segmentation"]["counts"], str) for r in written)
    assert mask_utils.area(written[1]["segmentation"]) == 80
    assert len(_quiet(gt.loadRes, str(path)).anns) == 2  # COCO reads the file back
    scores = evaluator.summarize()  # image 2's object is missed: 2 of 3 found, at full precision
    assert scores["bbox"]["AP"] == scores["segm"]["AP"] == pytest.approx(100 * (1 + 0.5) / 2, abs=1.0)


def test_no_detections_give_zeros_with_a_note():
    evaluator = CocoEvaluator(_tiny_gt(), ("bbox", "segm"), {1: 5, 2: 9})
    evaluator.update({1: _empty(with_masks=True), 2: _empty(with_masks=True)})
    assert evaluator.summarize() == {t: {name: 0.0 for name in STAT_NAMES} for t in ("bbox", "segm")}
    assert evaluator.notes == ["no detections on the 2 evaluated images: every score is 0."]
    evaluator.summarize()
    assert len(evaluator.notes) == 1
    assert CocoEvaluator(_tiny_gt(), ("bbox",), {1: 5, 2: 9}).summarize()["bbox"]["AP"] == 0.0


def test_bad_outputs_are_clear_errors():
    gt = _tiny_gt()
    evaluator = CocoEvaluator(gt, ("bbox", "segm"), {1: 5, 2: 9})
    one = {"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([3])}
    with pytest.raises(ValueError, match=r"labels \[3\] are not the data set's contiguous ids 1..2; .* 3 classes"):
        evaluator.update({1: one})
    one["labels"] = torch.tensor([1])
    with pytest.raises(ValueError, match="image id 7 is not in the ground truth"):
        evaluator.update({7: one})
    with pytest.raises(ValueError, match="needs 'masks'"):
        evaluator.update({1: one})
    with pytest.raises(ValueError, match=r"masks are \(10, 10\) but the image is \(20, 30\)"):
        evaluator.update({1: {**one, "masks": torch.ones(1, 10, 10)}})
    with pytest.raises(ValueError, match="iou_types"):
        CocoEvaluator(gt, ("keypoints",), {1: 5, 2: 9})


def test_gather_merges_processes_and_keeps_the_first_copy_of_an_image(tmp_path, monkeypatch):
    gt = _tiny_gt()
    mapping = {1: 5, 2: 9}
    box = {"boxes": torch.tensor([[3.0, 2.0, 12.0, 8.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    rank0, rank1 = CocoEvaluator(gt, ("bbox",), mapping), CocoEvaluator(gt, ("bbox",), mapping)
    rank0.update({1: box})
    rank1.update({2: box, 1: _empty()})  # image 1 again (a padded shard): rank 0's copy wins
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:  # the real collective, one process
        rank0.gather()
    finally:
        dist.destroy_process_group()
    assert rank0.results == [
        {"image_id": 1, "category_id": 5, "bbox": [3.0, 2.0, 9.0, 6.0], "score": pytest.approx(0.9)}
    ]
    monkeypatch.setattr(evaluation, "all_gather_object", lambda obj: [obj, rank1.predictions])
    rank0.gather()
    assert [(r["image_id"], r["category_id"]) for r in rank0.results] == [(1, 5), (2, 5)]
    assert sorted(rank0.predictions) == [1, 2]
