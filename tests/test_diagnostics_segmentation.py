"""Per-class segmentation diagnostics on camvid-mini label maps against a perturbed copy (shifted, classes
swapped, noise): the CSV's IoU, accuracy and pixel counts equal numpy arithmetic on scikit-learn's confusion
matrix of the same pixels."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from splitattn.errors import UsageError

from .conftest import SHARED_DATA

pytest.importorskip("matplotlib")
confusion_matrix = pytest.importorskip("sklearn.metrics").confusion_matrix

from splitattn.tasks.segmentation.diagnostics import write_segmentation_diagnostics  # noqa: E402
from splitattn.tasks.segmentation.metrics import ConfusionMatrix  # noqa: E402

CAMVID_LABELS = SHARED_DATA / "camvid-mini" / "val" / "labels"
# camvid-mini's README: class ids 0..10 (2 = pole, 3 = road, 9 = pedestrian), 11 = void; the names do not matter here
NAMES = [f"camvid class {i}" for i in range(11)]
VOID = 11


def perturbed(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong prediction: shifted by a few pixels, void painted as road, pedestrians taken for
    poles on part of the image, and 5% of the pixels random."""
    prediction = np.roll(label, (3, 7), axis=(0, 1)).copy()
    prediction[prediction == VOID] = 3
    half = prediction[:, : prediction.shape[1] // 2]
    half[half == 9] = 2
    noise = rng.random(label.shape) < 0.05
    prediction[noise] = rng.integers(0, len(NAMES), int(noise.sum()))
    return prediction


@pytest.mark.usefixtures("camvid_mini")
def test_per_class_csv_equals_sklearn_confusion(tmp_path):
    paths = sorted(CAMVID_LABELS.glob("*.png"))
    rng = np.random.default_rng(0)
    confusion = ConfusionMatrix(len(NAMES), ignore_index=VOID)
    truths, predictions = [], []
    for path in paths:
        label = np.array(Image.open(path))
        prediction = perturbed(label, rng)
        confusion.update(torch.from_numpy(prediction), torch.from_numpy(label))
        keep = label != VOID
        truths.append(label[keep])
        predictions.append(prediction[keep])
    reference = confusion_matrix(np.concatenate(truths), np.concatenate(predictions), labels=range(len(NAMES)))
    assert np.array_equal(confusion.matrix.numpy(), reference)

    result = write_segmentation_diagnostics(tmp_path, confusion, NAMES)
    true_positive = np.diag(reference).astype(np.float64)
    iou = true_positive / (reference.sum(0) + reference.sum(1) - true_positive) * 100
    accuracy = true_positive / reference.sum(1) * 100
    with result.files["per_class_csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == NAMES
    for row, expected_iou, expected_acc, pixels in zip(rows, iou, accuracy, reference.sum(1)):
        assert float(row["iou"]) == pytest.approx(expected_iou, abs=1e-4), row["name"]
        assert float(row["acc"]) == pytest.approx(expected_acc, abs=1e-4), row["name"]
        assert int(row["pixels"]) == pixels
    assert iou.max() - iou.min() > 40  # varied: poles and pedestrians suffer, roads do not
    for kind in ("per_class_png", "confusion_png"):
        with Image.open(result.files[kind]) as picture:
            assert picture.width > 500 and picture.height > 300, kind
    assert all(name in result.table for name in NAMES)


def test_absent_class_is_left_empty_and_names_must_fit(tmp_path):
    confusion = ConfusionMatrix(3, ignore_index=255)
    confusion.update(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]))
    rows = write_segmentation_diagnostics(tmp_path, confusion, ["a", "b", "c"]).rows
    assert rows[2]["iou"] is None and rows[2]["acc"] is None
    with (tmp_path / "per_class.csv").open() as handle:
        assert list(csv.DictReader(handle))[2]["iou"] == ""
    with pytest.raises(UsageError, match="3 classes"):
        write_segmentation_diagnostics(tmp_path, confusion, ["a", "b"])
