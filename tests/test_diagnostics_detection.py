"""Per-class detection diagnostics on coco128: per-category AP equals COCOeval run on that category alone,
and the missed/false counts equal what the test's own detections were built to contain.

The detections are made from the ground truth, independently of any model: every non-crowd object is dropped
(seeded, 20%) or kept with a slightly moved box (IoU with its object above 0.7) and a random score; each image
gets up to two false detections of a category absent from it. So the APs differ from category to category and
the test knows every miss and false detection in advance.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import warnings
from collections import Counter

import numpy as np
import pytest

from splitattn.errors import UsageError

from .conftest import SHARED_DATA

pytest.importorskip("matplotlib")
COCO = pytest.importorskip("pycocotools.coco").COCO
COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval

from splitattn.tasks.detection.diagnostics import per_category_scores, write_detection_diagnostics  # noqa: E402

COCO128 = SHARED_DATA / "coco128"
THRESHOLD = 0.4


@pytest.fixture(scope="module")
def coco_gt(coco128):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(coco128 / "annotations" / "instances.json"))


@pytest.fixture(scope="module")
def built(coco_gt):
    """(detections, expected counts per category: found, missed, false at score >= THRESHOLD)."""
    rng = np.random.default_rng(0)
    detections, expected = [], {c: Counter() for c in coco_gt.cats}
    for image_id, info in sorted(coco_gt.imgs.items()):
        present = {a["category_id"] for a in coco_gt.imgToAnns.get(image_id, [])}
        for annotation in coco_gt.imgToAnns.get(image_id, []):
            if annotation.get("iscrowd", 0):
                continue
            category = annotation["category_id"]
            if rng.random() < 0.2:
                expected[category]["missed"] += 1
                continue
            x, y, w, h = annotation["bbox"]
            dx, dy, dw, dh = rng.uniform(-0.05, 0.05, 4)
            score = float(rng.random())
            box = [x + dx * w, y + dy * h, w * (1 + dw), h * (1 + dh)]
            detections.append({"image_id": image_id, "category_id": category, "bbox": box, "score": score})
            expected[category]["found" if score >= THRESHOLD else "missed"] += 1
        absent = sorted(set(coco_gt.cats) - present)
        for _ in range(rng.integers(0, 3)):
            category = int(rng.choice(absent))
            w, h = rng.uniform(20, 150, 2)
            x, y = rng.uniform(0, info["width"] - w), rng.uniform(0, info["height"] - h)
            score = float(rng.random())
            detections.append({"image_id": image_id, "category_id": category, "bbox": [x, y, w, h], "score": score})
            if score >= THRESHOLD:
                expected[category]["false"] += 1
    return detections, expected


def evaluated(coco_gt, detections, categories=None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), "bbox")
        if categories is not None:
            coco_eval.params.catIds = categories
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@pytest.fixture(scope="module")
def coco_eval(coco_gt, built):
    return evaluated(coco_gt, built[0])


def test_per_category_ap_equals_cocoeval_of_that_category(coco_gt, built, coco_eval):
    rows = per_category_scores(coco_eval)
    assert [row["id"] for row in rows] == sorted(coco_gt.cats)
    with_gt = [row for row in rows if coco_gt.getAnnIds(catIds=[row["id"]], iscrowd=False)]
    assert len(with_gt) >= 60
    for row in rows:
        alone = evaluated(coco_gt, built[0], [row["id"]]).stats
        if alone[0] < 0:  # no ground truth of the category: COCOeval's -1
            assert row["AP"] is None and row["AP50"] is None
            continue
        assert row["AP"] == pytest.approx(alone[0] * 100, abs=1e-9), row["name"]
        assert row["AP50"] == pytest.approx(alone[1] * 100, abs=1e-9), row["name"]
        assert row["AP75"] == pytest.approx(alone[2] * 100, abs=1e-9), row["name"]
    aps = [row["AP"] for row in with_gt]
    assert max(aps) - min(aps) > 30  # varied: the comparison is not between constants
    # the mean over categories is COCOeval's overall AP
    assert np.mean(aps) == pytest.approx(coco_eval.stats[0] * 100, abs=1e-9)


def test_csv_counts_equal_the_construction(tmp_path, coco_gt, built, coco_eval):
    result = write_detection_diagnostics(tmp_path, coco_eval, COCO128 / "images", score_threshold=THRESHOLD)
    with result.files["per_class_csv"].open() as handle:
        rows = {int(row["id"]): row for row in csv.DictReader(handle)}
    expected = built[1]
    for category, row in rows.items():
        counts = expected[category]
        ground_truth = len(coco_gt.getAnnIds(catIds=[category], iscrowd=False))
        assert int(row["gt"]) == ground_truth, row["name"]
        assert int(row["missed"]) == counts["missed"], row["name"]
        assert int(row["false"]) == counts["false"], row["name"]
        assert int(row["detections"]) == counts["found"] + counts["false"], row["name"]
        if row["AP"]:
            assert float(row["AP"]) == pytest.approx(
                next(r["AP"] for r in result.rows if r["id"] == category), abs=1e-4
            )
    assert sum(c["false"] for c in expected.values()) > 20 and sum(c["missed"] for c in expected.values()) > 100
    for kind in ("per_class_png", "pr_curves_png", "errors_png"):
        assert result.files[kind].stat().st_size > 10_000, kind
    # 80 categories: the printed table holds the 15 with the lowest AP, worst first, and says so
    worst = sorted((row for row in result.rows if row["AP"] is not None), key=lambda row: (row["AP"], row["AP50"]))
    lines = result.table.splitlines()
    assert len(lines) == 17 and [line.split()[0] for line in lines[1:16]] == [str(row["id"]) for row in worst[:15]]
    assert lines[-1].startswith("the 15 of 80 classes with the lowest AP") and "per_class.csv" in lines[-1]


def test_an_unaccumulated_cocoeval_is_refused(coco_gt, built):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(built[0][:50]), "bbox")
    with pytest.raises(UsageError, match="accumulate"):
        per_category_scores(coco_eval)


def test_detect_evaluate_writes_the_ap_cocoeval_gives_its_detections(tmp_path, coco_gt, one_thread):
    """Command level: `detect train` (a few iterations on six coco128 images) then `detect evaluate`; each category's
    AP, AP50 and AP75 in the per_class.csv it writes equal COCOeval run here on that category alone, from the
    detections.json the command wrote, against the original annotation file."""
    from splitattn.cli import main

    keep = sorted(coco_gt.imgs)[:6]
    original = json.loads((COCO128 / "annotations" / "instances.json").read_text())
    subset = dict(
        original,
        images=[image for image in original["images"] if image["id"] in keep],
        annotations=[a for a in original["annotations"] if a["image_id"] in keep],
    )
    annotations = tmp_path / "six.json"
    annotations.write_text(json.dumps(subset))
    run = tmp_path / "run"
    train = ["detect", "train", "--data", str(COCO128), "--annotations", str(annotations)]
    train += ["--images", str(COCO128 / "images"), "--arch", "faster_rcnn", "--backbone", "resnest14"]
    train += ["--model-kwargs", "bottleneck_width=16", "stem_width=16", "--norm", "groupnorm"]
    train += ["--min-size", "128", "--max-size", "160", "--detections-per-img", "20", "--detector-kwargs"]
    train += ["rpn_pre_nms_top_n_train=300", "rpn_post_nms_top_n_train=150", "rpn_pre_nms_top_n_test=150"]
    train += ["rpn_post_nms_top_n_test=100", "box_batch_size_per_image=64", "box_score_thresh=0.0"]
    train += ["--batch-size", "2", "--lr", "0.005", "--max-iter", "16", "--steps", "14", "--warmup-iters", "4"]
    train += ["--eval-every", "100", "--checkpoint-every", "16", "--workers", "0", "--threads", "1"]
    train += ["--device", "cpu", "--no-progress", "--no-tensorboard", "--no-diagnostics", "--output", str(run)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shortened schedule's warning
        assert main(train) == 0
    assert not (run / "diagnostics").exists()  # --no-diagnostics
    assert main(["detect", "evaluate", "--weights", str(run / "last.pt"), "--device", "cpu", "--workers", "0"]) == 0
    written = run / "eval-val"
    with (written / "bbox" / "per_class.csv").open() as handle:
        rows = {int(row["id"]): row for row in csv.DictReader(handle)}
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotations))
        detections = ground_truth.loadRes(str(written / "detections.json"))
    assert sorted(rows) == sorted(ground_truth.cats)
    for category, row in rows.items():
        with contextlib.redirect_stdout(io.StringIO()):
            alone = COCOeval(ground_truth, detections, "bbox")
            alone.params.catIds, alone.params.imgIds = [category], keep
            alone.evaluate()
            alone.accumulate()
            alone.summarize()
        for column, value in zip(("AP", "AP50", "AP75"), alone.stats[:3]):
            assert row[column] == ("" if value < 0 else f"{value * 100:.4f}"), (row["name"], column)
    scored = [float(row[column]) for row in rows.values() for column in ("AP", "AP50") if row[column]]
    assert len(set(scored)) > 3, f"AP/AP50 values {sorted(set(scored))}: too few distinct ones to compare"
    metrics = json.loads((written / "metrics.json").read_text())
    assert [row["AP"] for row in metrics["per_class"]["bbox"]] == pytest.approx(
        [float(rows[c]["AP"]) if rows[c]["AP"] else None for c in sorted(rows)], abs=1e-4
    )
