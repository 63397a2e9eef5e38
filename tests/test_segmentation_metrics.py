"""Pixel accuracy and mIoU against a hand-computed confusion matrix and a plain numpy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splitattn.tasks.segmentation.metrics import ConfusionMatrix, format_iou_table

IGNORE = 255


def test_hand_computed_example_with_ignore():
    # gt:   0 0 1 1 2 2 ignore ignore
    # pred: 0 1 1 1 2 0 2      0
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, IGNORE]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(3, IGNORE)
    cm.update(pred, target)
    # rows = ground truth, columns = prediction; the two ignored pixels count nowhere
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    result = cm.compute(["a", "b", "c"])
    assert result["labelled_pixels"] == 6
    assert result["pixel_acc"] == pytest.approx(4 / 6 * 100)
    # IoU = TP / (gt + pred - TP): a 1/(2+2-1), b 2/(2+3-2), c 1/(2+1-1)
    ious = [row["iou"] for row in result["per_class"]]
    assert ious == pytest.approx([100 / 3, 200 / 3, 50.0])
    assert result["miou"] == pytest.approx(50.0)
    assert [row["acc"] for row in result["per_class"]] == pytest.approx([50.0, 100.0, 50.0])
    assert [row["pixels"] for row in result["per_class"]] == [2, 2, 2]
    table = format_iou_table(result["per_class"])
    assert "b" in table and "66.67" in table


def test_absent_class_is_left_out_but_false_positive_class_counts_zero():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 2])  # class 2: predicted once, never in the ground truth; class 3: nowhere
    cm = ConfusionMatrix(4, IGNORE)
    cm.update(pred, target)
    result = cm.compute()
    ious = [row["iou"] for row in result["per_class"]]
    assert ious[0] == pytest.approx(100.0) and ious[1] == pytest.approx(50.0)
    assert ious[2] == 0.0 and ious[3] is None
    assert result["miou"] == pytest.approx((100 + 50 + 0) / 3)


def test_whole_set_accumulation_differs_from_per_image_average():
    # image 1: 1 pixel of class 0, wrong; image 2: 9 pixels of class 0, right
    cm = ConfusionMatrix(2, IGNORE)
    cm.update(torch.tensor([1]), torch.tensor([0]))
    cm.update(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long))
    result = cm.compute()
    assert result["pixel_acc"] == pytest.approx(90.0)  # the per-image mean would be 50
    # class 0: TP 9, gt 10, pred 9 -> 90; class 1: TP 0, gt 0, pred 1 -> 0
    assert result["miou"] == pytest.approx((90.0 + 0.0) / 2)


def _numpy_scores(preds, targets, k, ignore):
    pred = np.concatenate([p.ravel() for p in preds])
    gt = np.concatenate([t.ravel() for t in targets])
    valid = gt != ignore
    pred, gt = pred[valid], gt[valid]
    ious = []
    for c in range(k):
        tp = np.sum((pred == c) & (gt == c))
        fp = np.sum((pred == c) & (gt != c))
        fn = np.sum((pred != c) & (gt == c))
        ious.append(tp / (tp + fp + fn) * 100 if tp + fp + fn else None)
    present = [i for i in ious if i is not None]
    return np.mean(pred == gt) * 100, np.mean(present), ious


@pytest.mark.parametrize("seed", range(5))
def test_randomized_against_numpy(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    cm = ConfusionMatrix(k, IGNORE)
    preds, targets = [], []
    for _ in range(int(rng.integers(1, 5))):
        shape = tuple(int(s) for s in rng.integers(1, 40, size=2))
        target = rng.integers(0, k, size=shape)
        target[rng.random(shape) < 0.2] = IGNORE
        # predictions right 60% of the time, so IoUs are far from 0 and 1
        pred = np.where(rng.random(shape) < 0.6, np.where(target == IGNORE, 0, target), rng.integers(0, k, size=shape))
        preds.append(pred)
        targets.append(target)
        cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    acc, miou, ious = _numpy_scores(preds, targets, k, IGNORE)
    result = cm.compute()
    assert result["pixel_acc"] == pytest.approx(acc)
    assert result["miou"] == pytest.approx(miou)
    for row, iou in zip(result["per_class"], ious):
        assert (row["iou"] is None) == (iou is None)
        if iou is not None:
            assert row["iou"] == pytest.approx(iou)


def test_bad_inputs_are_clear_errors():
    cm = ConfusionMatrix(3, IGNORE)
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"target holds \[7\]"):
        cm.update(torch.zeros(2), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="predictions must be class ids"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    assert math.isnan(cm.compute()["miou"])  # nothing counted yet
