"""The evaluation ground truth is the cleaned data training saw (issue 12.1, 12.2): a perfect detector
scores exactly 100 on any file the loader accepts, checked against COCOeval run here on ground truth
written independently; malformed files fail when the data set is built, naming the file and the field;
converter output without ``iscrowd``/``area`` trains and evaluates."""

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
from pycocotools.cocoeval import COCOeval

from splitattn.cli import main
from splitattn.data.detection import CocoDetectionDataset, DetectionDataError, build_detection_dataset
from splitattn.tasks.detection import evaluation
from splitattn.tasks.detection.engine import format_metrics
from splitattn.tasks.detection.evaluation import STAT_NAMES, CocoEvaluator, check_ground_truth

from .conftest import SHARED_DATA
from .train_helpers import cli

COCO128 = SHARED_DATA / "coco128"
needs_coco128 = pytest.mark.usefixtures("coco128")
CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}, {"id": 17, "name": "cat"}]
# (image id, category id, bbox x y w h as written, crowd, the box a correct loader keeps (x y w h) or None)
OBJECTS = [
    (1, 17, [5, 5, 10, 10], 0, [5, 5, 10, 10]),  # ordinary
    (1, 3, [1, 1, -4, 5], 0, None),  # negative width
    (1, 3, [1, 1, 5, -2], 0, None),  # negative height
    (1, 3, [8, 8, 0, 0], 0, None),  # zero area
    (1, 90, [50, 40, 5, 5], 0, None),  # entirely outside the 40x30 image
    (1, 90, [-5, -5, 4, 4], 0, None),  # outside, above left
    (1, 90, [35, 20, 10, 20], 0, [35, 20, 5, 10]),  # partly outside: clipped
    (1, 3, [-2, 12, 6, 6], 0, [0, 12, 4, 6]),  # partly outside on the left: clipped
    (1, 3, [0, 0, 12, 12], 1, [0, 0, 12, 12]),  # crowd region
    (2, 17, [2, 3, 6, 5], 0, [2, 3, 6, 5]),  # second image
    (2, 17, [2, 3, 6, 5], 0, [2, 3, 6, 5]),  # the same object twice (duplicate box)
    (2, 90, [10, 10, 9, 9], 0, [10, 10, 9, 9]),
]


def _image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3)).astype(np.uint8)).save(path)


def _write(tmp_path: Path, annotation_ids, categories=CATEGORIES, name: str = "instances.json", drop=()) -> Path:
    """The OBJECTS as a COCO json over a.jpg (40x30) and b.jpg (20x20); ``drop``: keys left out of every annotation."""
    _image(tmp_path / "images" / "a.jpg", 40, 30)
    _image(tmp_path / "images" / "b.jpg", 20, 20)
    annotations = [
        {
            "id": ann_id,
            "image_id": image_id,
            "category_id": cat,
            "bbox": bbox,
            "iscrowd": crowd,
            "area": float(abs(bbox[2] * bbox[3])),
            "segmentation": [],
        }
        for ann_id, (image_id, cat, bbox, crowd, _) in zip(annotation_ids, OBJECTS)
    ]
    for annotation in annotations:
        for key in drop:
            annotation.pop(key)
    spec = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.jpg", "width": 20, "height": 20},
        ],
        "annotations": annotations,
        "categories": categories,
    }
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


def _independent_ground_truth() -> COCO:
    """The cleaned objects as a COCO ground truth written here from OBJECTS' expected boxes, ids from 1."""
    kept = [(image_id, cat, box, crowd) for image_id, cat, _, crowd, box in OBJECTS if box is not None]
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 40, "height": 30}, {"id": 2, "width": 20, "height": 20}],
        "categories": CATEGORIES,
        "annotations": [
            {
                "id": i,
                "image_id": image_id,
                "category_id": cat,
                "bbox": box,
                "iscrowd": crowd,
                "area": float(box[2] * box[3]),
            }
            for i, (image_id, cat, box, crowd) in enumerate(kept, start=1)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _perfect_results() -> list:
    """A perfect detector's COCO results: every kept non-crowd object, score 1."""
    return [
        {"image_id": image_id, "category_id": cat, "bbox": box, "score": 1.0}
        for image_id, cat, _, crowd, box in OBJECTS
        if box is not None and not crowd
    ]


def _cocoeval(gt: COCO, results: list) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats[:6]


def _our_scores(dataset, results: list) -> dict:
    """The results (in the json's category ids) through CocoEvaluator with the data set's label mapping."""
    evaluator = CocoEvaluator(dataset.coco, ("bbox",), dataset.contiguous_to_coco)
    for image_id in (1, 2):
        mine = [r for r in results if r["image_id"] == image_id]
        boxes = torch.tensor([r["bbox"] for r in mine], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        evaluator.update(
            {
                image_id: {
                    "boxes": boxes,
                    "scores": torch.ones(len(mine)),
                    "labels": torch.tensor(
                        [dataset.coco_to_contiguous[r["category_id"]] for r in mine], dtype=torch.int64
                    ),
                }
            }
        )
    return evaluator.summarize()["bbox"]


@pytest.mark.parametrize(
    "annotation_ids", [range(12), [5] * 12, range(1, 13)], ids=["ids-from-0", "duplicate-ids", "ids-from-1"]
)
def test_perfect_detector_scores_100_on_every_kind_of_degenerate_box(tmp_path, annotation_ids):
    dataset = CocoDetectionDataset(tmp_path / "images", _write(tmp_path, annotation_ids))
    assert {k: dataset.stats[k] for k in ("boxes_degenerate", "boxes_outside", "boxes_clipped", "crowd_regions")} == {
        "boxes_degenerate": 3,
        "boxes_outside": 2,
        "boxes_clipped": 2,
        "crowd_regions": 1,
    }
    reference = _cocoeval(_independent_ground_truth(), _perfect_results())
    assert reference[0] == 1.0  # COCOeval itself: the cleaned objects detected perfectly are AP 100
    ours = _our_scores(dataset, _perfect_results())
    assert ours["AP"] == ours["AP50"] == ours["AP75"] == 100.0
    assert [ours[name] for name in STAT_NAMES] == [float(v) * 100 if v >= 0 else None for v in reference]
    assert ours["APm"] is None and ours["APl"] is None  # no medium or large objects: null, not NaN
    assert json.loads(json.dumps(ours)) == ours and "APm n/a" in format_metrics({"bbox": ours})
    # scoring the raw json instead (what evaluation did before): the same detector loses points
    with contextlib.redirect_stdout(io.StringIO()):
        raw = COCO(str(tmp_path / "instances.json"))
    assert _cocoeval(raw, _perfect_results())[0] < 1.0


def test_validation_json_numbering_categories_differently_is_mapped_by_name(tmp_path):
    train = CocoDetectionDataset(tmp_path / "images", _write(tmp_path, range(1, 13)), train=True)
    renumbered = [{"id": 7, "name": "cat"}, {"id": 1, "name": "toothbrush"}, {"id": 2, "name": "car"}]
    relabel = {17: 7, 90: 1, 3: 2}
    val_file = _write(tmp_path, range(1, 13), renumbered, "val.json")
    spec = json.loads(val_file.read_text())
    for annotation in spec["annotations"]:
        annotation["category_id"] = relabel[annotation["category_id"]]
    val_file.write_text(json.dumps(spec))
    val = build_detection_dataset(
        "coco", tmp_path, "val", False, annotation_file=val_file, images=tmp_path / "images", classes=train.classes[1:]
    )
    assert val.classes == train.classes == ["__background__", "car", "cat", "toothbrush"]
    assert val.contiguous_to_coco == {1: 2, 2: 7, 3: 1}  # labels of the training set, ids of the val json
    results = [dict(r, category_id=relabel[r["category_id"]]) for r in _perfect_results()]
    assert _our_scores(val, results)["AP"] == 100.0
    alone = CocoDetectionDataset(tmp_path / "images", val_file)  # numbered by its own ids: classes differ
    assert alone.classes == ["__background__", "toothbrush", "car", "cat"]
    with pytest.raises(DetectionDataError, match=r"val.json has none of the classes \['dog'\]"):
        CocoDetectionDataset(tmp_path / "images", val_file, classes=["dog"])


def test_missing_iscrowd_and_area_get_coco_defaults(tmp_path):
    path = _write(tmp_path, range(1, 13), drop=("iscrowd", "area"))
    spec = json.loads(path.read_text())
    polygon = [[5, 5, 15, 5, 15, 15, 5, 15]]
    spec["annotations"][0]["segmentation"] = polygon
    path.write_text(json.dumps(spec))
    dataset = CocoDetectionDataset(tmp_path / "images", path)
    target = dataset.target(0)
    assert target["iscrowd"].tolist() == [0, 0, 0, 0]  # the crowd flag was dropped too: an ordinary object now
    expected_mask_area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygon, 30, 40))))
    assert target["area"].tolist() == [expected_mask_area, 5 * 10, 4 * 6, 12 * 12]  # mask, else the clipped box
    assert {a["area"] for a in dataset.coco.anns.values()} >= {expected_mask_area, 50.0}


def test_evaluation_set_without_objects_to_detect_builds(tmp_path):
    """The dry evaluation has nothing to score (only a crowd region, an unknown category): the set still builds."""
    path = _write(tmp_path, range(1, 13))
    spec = json.loads(path.read_text())
    spec["annotations"] = [dict(spec["annotations"][8]), dict(spec["annotations"][0], category_id=5)]
    path.write_text(json.dumps(spec))
    dataset = CocoDetectionDataset(tmp_path / "images", path)
    assert len(dataset) == 2 and [a["iscrowd"] for a in dataset.coco.anns.values()] == [1]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["images"][0].update(id="a"), r"images\[0\] has 'id' 'a'.*integers"),
        (lambda s: s["images"][1].pop("height"), r"images\[1\] \(id 2\) has 'height' None"),
        (lambda s: s["annotations"][3].update(image_id=9), r"annotations\[3\] has 'image_id' 9, which is not an image"),
        (lambda s: s["categories"].append({"id": 4, "name": "cat"}), r"categories\[3\] repeats the name 'cat'"),
        (lambda s: s["images"].append(dict(s["images"][0])), r"images\[2\] repeats image 'id' 1"),
    ],
)
def test_malformed_json_fails_when_built_naming_file_and_field(tmp_path, change, message):
    path = _write(tmp_path, range(1, 13))
    spec = json.loads(path.read_text())
    change(spec)
    path.write_text(json.dumps(spec))
    with pytest.raises(DetectionDataError, match=r"instances.json: " + message):
        CocoDetectionDataset(tmp_path / "images", path)


def test_the_task_scores_each_evaluation_set_it_builds_on_itself(tmp_path, monkeypatch, capsys):
    """The dry evaluation (the ground truth of the first images, detected perfectly, must score AP 100) belongs to
    the detection task: it runs where the task builds an evaluation set, before any training step, and a scorer
    that disagrees with itself stops the run naming the data set; building a data set alone does not score it."""
    annotations = _write(tmp_path, range(1, 13))
    dataset = CocoDetectionDataset(tmp_path / "images", annotations)
    check_ground_truth(dataset)  # box and mask AP 100 on the cleaned objects

    perfect = evaluation.perfect_detections

    def one_object_missed(coco, image_id, coco_to_contiguous, with_masks):
        return {k: v[1:] for k, v in perfect(coco, image_id, coco_to_contiguous, with_masks).items()}

    monkeypatch.setattr(evaluation, "perfect_detections", one_object_missed)
    with pytest.raises(DetectionDataError, match=r"COCO instances.json: its own ground truth scores .* instead of AP"):
        check_ground_truth(dataset)
    CocoDetectionDataset(tmp_path / "images", annotations)  # the data layer does not evaluate
    run = tmp_path / "run"
    argv = ["detect", "train", "--data", str(tmp_path), "--annotations", str(annotations), "--images"]
    argv += [str(tmp_path / "images"), "--backbone", "resnest14", "--norm", "groupnorm", "--batch-size", "2"]
    argv += ["--max-iter", "1", "--workers", "0", "--device", "cpu", "--no-progress", "--no-tensorboard"]
    assert main([*argv, "--output", str(run)]) == 1
    error = capsys.readouterr().err
    assert "splitattn detect train: error: COCO instances.json: its own ground truth scores" in error
    assert not (run / "last.pt").exists() and not (run / "log.jsonl").exists()  # no step ran


def _strip_coco128(tmp_path: Path, malformed: bool) -> Path:
    """coco128's json without iscrowd and area (as converters write it), or with a string image id."""
    spec = json.loads((COCO128 / "annotations" / "instances.json").read_text())
    for annotation in spec["annotations"]:
        annotation.pop("iscrowd", None)
        annotation.pop("area", None)
    if malformed:
        spec["images"][5]["id"] = str(spec["images"][5]["id"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(spec))
    return path


def _train_args(annotations: Path, output: Path) -> list:
    return [
        "detect",
        "train",
        "--data",
        str(COCO128),
        "--annotations",
        str(annotations),
        "--images",
        str(COCO128 / "images"),
        "--backbone",
        "resnest14",
        "--model-kwargs",
        "bottleneck_width=16",
        "stem_width=16",
        "--norm",
        "groupnorm",
        "--min-size",
        "96",
        "--max-size",
        "128",
        "--max-images",
        "2",
        "--batch-size",
        "2",
        "--max-iter",
        "2",
        "--warmup-iters",
        "1",
        "--eval-every",
        "2",
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
        str(output),
    ]


@needs_coco128
@pytest.mark.slow
def test_converter_json_trains_and_evaluates_and_malformed_json_fails_before_training(tmp_path):
    run = tmp_path / "run"
    result = cli(_train_args(_strip_coco128(tmp_path, malformed=False), run))
    metrics = json.loads((run / "metrics.json").read_text())  # strict JSON: a missing score is null
    assert set(metrics["bbox"]) == set(STAT_NAMES) and all(
        value is None or 0.0 <= value <= 100.0 for value in metrics["bbox"].values()
    ), result.stdout
    assert (run / "last.pt").is_file()

    bad = tmp_path / "bad"
    bad.mkdir()
    failed = cli(_train_args(_strip_coco128(bad, malformed=True), bad / "run"), check=False)
    assert failed.returncode != 0
    assert "instances.json: images[5] has 'id' '" in failed.stdout + failed.stderr
    assert not (bad / "run" / "log.jsonl").exists() and not (bad / "run" / "last.pt").exists()  # no step ran
