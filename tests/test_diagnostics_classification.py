"""Per-class classification diagnostics: the CSV against counts made with numpy, the figures' legibility
(no two class names overlap, none is cut off) at 2 to 100 classes, and the gallery of the worst errors on
real photos."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splitattn.errors import UsageError

from .conftest import sample_photos

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from splitattn.tasks.classification.diagnostics import (  # noqa: E402
    per_class_metrics,
    worst_errors,
    write_classification_diagnostics,
)
from splitattn.viz.diagnostics import confused_pairs, confusion_figure  # noqa: E402


def synthetic(num_classes: int, samples: int, seed: int = 0):
    """Labels (imbalanced: class 0 rare) and probabilities of a classifier that often takes class c for c+1."""
    rng = np.random.default_rng(seed)
    weights = np.ones(num_classes)
    weights[0] = 0.1
    labels = rng.choice(num_classes, size=samples, p=weights / weights.sum())
    logits = rng.normal(size=(samples, num_classes))
    logits[np.arange(samples), labels] += 2.5
    confused = rng.random(samples) < 0.2
    logits[np.flatnonzero(confused), (labels[confused] + 1) % num_classes] += 3.0
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probabilities


def read_csv(path: Path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def numpy_reference(labels, predictions, num_classes):
    """Precision, recall, F1 (percent, NaN where undefined), support and predicted count by direct counting."""
    rows = []
    for c in range(num_classes):
        tp = np.sum((predictions == c) & (labels == c))
        predicted, support = np.sum(predictions == c), np.sum(labels == c)
        precision = tp / predicted * 100 if predicted else math.nan
        recall = tp / support * 100 if support else math.nan
        if math.isnan(precision) or math.isnan(recall):
            f1 = 0.0 if (precision == 0 or recall == 0) else math.nan
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((precision, recall, f1, int(support), int(predicted)))
    return rows


def cell(text: str) -> float:
    return math.nan if text == "" else float(text)


def test_per_class_csv_equals_numpy_counts(tmp_path):
    labels, probabilities = synthetic(6, 400)
    # class 4 is never predicted (its precision is undefined), class 5 has no sample (its recall is undefined)
    probabilities[:, 4] = 0.0
    labels[labels == 5] = 3
    probabilities /= probabilities.sum(1, keepdims=True)
    names = [f"class {i}" for i in range(6)]
    result = write_classification_diagnostics(tmp_path, labels, probabilities, names)
    rows = read_csv(result.files["per_class_csv"])
    expected = numpy_reference(labels, probabilities.argmax(1), 6)
    assert [row["name"] for row in rows] == names
    for row, (precision, recall, f1, support, predicted) in zip(rows, expected):
        for column, value in (("precision", precision), ("recall", recall), ("f1", f1)):
            got = cell(row[column])
            assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value, abs=1e-4), (row, column)
        assert int(row["support"]) == support and int(row["predicted"]) == predicted
    assert rows[4]["precision"] == "" and rows[5]["recall"] == ""  # undefined, not 0
    # The rare class is what the table is for: its recall is far below the others'.
    assert cell(rows[0]["support"]) < 0.3 * cell(rows[1]["support"])


def test_printed_table_has_every_class_and_the_macro_average(tmp_path):
    labels, probabilities = synthetic(4, 300, seed=1)
    names = ["tench", "English springer", "cassette player", "chain saw"]
    table = write_classification_diagnostics(tmp_path, labels, probabilities, names).table
    lines = table.splitlines()
    for name in names:
        assert any(name in line for line in lines)
    expected = numpy_reference(labels, probabilities.argmax(1), 4)
    macro_recall = np.mean([row[1] for row in expected])
    macro_line = next(line for line in lines if "macro avg" in line)
    assert float(macro_line.split()[3]) == pytest.approx(macro_recall, abs=0.006)  # printed with 2 decimals
    accuracy = (labels == probabilities.argmax(1)).mean() * 100
    assert f"{accuracy:.2f}" in next(line for line in lines if "accuracy" in line)


def test_per_class_metrics_of_a_perfect_classifier():
    labels = np.array([0, 1, 2, 2, 1])
    rows = per_class_metrics(labels, labels, ["a", "b", "c"])
    assert [(r["precision"], r["recall"], r["f1"], r["support"]) for r in rows] == [
        (100.0, 100.0, 100.0, 1),
        (100.0, 100.0, 100.0, 2),
        (100.0, 100.0, 100.0, 2),
    ]


def _check_tick_labels_readable(figure, axis, horizontal_axis: bool) -> int:
    """Assert that the tick labels of one axis of ``axis`` do not overlap and lie inside the figure; return
    how many there are. Rotated labels are parallel lines: their distance is the tick spacing x sin(angle)."""
    renderer = figure.canvas.get_renderer()
    labels = [label for label in (axis.get_xticklabels() if horizontal_axis else axis.get_yticklabels())]
    labels = [label for label in labels if label.get_text()]
    inside = figure.bbox
    for label in labels:
        box = label.get_window_extent(renderer)
        assert inside.x0 - 1 <= box.x0 and box.x1 <= inside.x1 + 1 and inside.y0 - 1 <= box.y0, label.get_text()
    height = labels[0].get_fontsize() * figure.dpi / 72
    ticks = axis.get_xticks() if horizontal_axis else axis.get_yticks()
    pixels = axis.transData.transform([(t, t) for t in ticks[: len(labels)]])[:, 0 if horizontal_axis else 1]
    spacing = np.abs(np.diff(pixels)).min() if len(pixels) > 1 else math.inf
    angle = labels[0].get_rotation() if horizontal_axis else 0.0
    if horizontal_axis and angle == 0:
        boxes = [label.get_window_extent(renderer) for label in labels]
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), "x tick labels overlap"
    else:
        reach = spacing * (math.sin(math.radians(angle)) if horizontal_axis else 1.0)
        assert reach >= height, f"tick labels {reach:.1f} px apart for text {height:.1f} px high"
    return len(labels)


@pytest.mark.parametrize("num_classes", [2, 3, 10, 25])
def test_labelled_confusion_matrix_is_legible(num_classes):
    names = [f"{i}: " + "a long class name"[: 3 + 2 * (i % 8)] for i in range(num_classes)]
    labels, probabilities = synthetic(num_classes, 40 * num_classes, seed=num_classes)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, probabilities.argmax(1)), 1)
    figure = confusion_figure(matrix, names)
    figure.canvas.draw()
    axis = figure.axes[0]
    assert _check_tick_labels_readable(figure, axis, True) == num_classes
    assert _check_tick_labels_readable(figure, axis, False) == num_classes
    # each cell's percentage fits inside its cell, and equals the row-normalised count
    renderer = figure.canvas.get_renderer()
    cell_px = abs(axis.transData.transform((1, 0))[0] - axis.transData.transform((0, 0))[0])
    shares = matrix / matrix.sum(1, keepdims=True) * 100
    for text in axis.texts:
        assert text.get_window_extent(renderer).width < cell_px
        column, row = (round(v) for v in text.get_position())
        assert float(text.get_text()) == pytest.approx(shares[row, column], abs=0.5)


def test_hundred_classes_show_the_most_confused_pairs(tmp_path):
    names = [f"class {i:03d} " + "x" * (i % 15) for i in range(100)]
    labels, probabilities = synthetic(100, 5000, seed=3)
    result = write_classification_diagnostics(tmp_path, labels, probabilities, names)
    assert result.files["confusion_png"].stat().st_size > 0
    matrix = np.zeros((100, 100), dtype=np.int64)
    np.add.at(matrix, (labels, probabilities.argmax(1)), 1)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    pairs = confused_pairs(matrix, 20)
    # numpy reference: the 20 largest off-diagonal counts
    assert [count for _, _, count, _ in pairs] == sorted(off.ravel().tolist(), reverse=True)[:20]
    assert all(off[t, p] == count for t, p, count, _ in pairs)
    figure = confusion_figure(matrix, names)
    figure.canvas.draw()
    ranked = figure.axes[1] if len(figure.axes[1].get_yticklabels()) == 20 else figure.axes[2]
    assert _check_tick_labels_readable(figure, ranked, False) == 20
    assert ranked.get_yticklabels()[0].get_text().startswith(names[pairs[0][0]][:10])


def _photos(count: int):
    """``count`` real photos (the two sample photos in turn: the gallery only draws them)."""
    return [sample_photos()[i % 2] for i in range(count)]


def test_worst_errors_are_the_most_confident_mistakes(tmp_path):
    paths = _photos(12)
    labels = np.arange(12) % 3
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=12)
    predictions = probabilities.argmax(1)
    wrong = np.flatnonzero(predictions != labels)
    expected = wrong[np.argsort(-probabilities[wrong].max(1))][:4]
    assert worst_errors(labels, probabilities, 4).tolist() == expected.tolist()
    images = [str(p) for p in paths[:6]] + [Image.open(p) for p in paths[6:]]  # paths and PIL images alike
    result = write_classification_diagnostics(tmp_path, labels, probabilities, ["a", "b", "c"], images, max_errors=4)
    with Image.open(result.files["errors_png"]) as gallery:
        assert gallery.width > 400 and gallery.height > 300


def test_no_gallery_without_errors(tmp_path):
    paths = _photos(3)
    labels = np.array([0, 1, 2])
    result = write_classification_diagnostics(tmp_path, labels, np.eye(3), ["a", "b", "c"], paths)
    assert "errors_png" not in result.files and not (tmp_path / "worst_errors.png").exists()


@pytest.mark.parametrize(
    "labels,probabilities,names,message",
    [
        ([0, 1], [[2.0, -1.0], [0.5, 3.0]], ["a", "b"], "softmax"),  # logits, not probabilities
        ([0, 2], [[0.9, 0.1], [0.2, 0.8]], ["a", "b"], "class ids"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], ["a", "b", "c"], "names"),
        ([0, 1, 1], [[0.9, 0.1], [0.2, 0.8]], ["a", "b"], "(N,)"),
    ],
)
def test_inputs_that_do_not_fit_are_refused(tmp_path, labels, probabilities, names, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_classification_diagnostics(tmp_path, labels, probabilities, names)
