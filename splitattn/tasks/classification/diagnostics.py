"""Per-class classification diagnostics: precision, recall, F1 and support, the confusion between classes and
the worst errors, from the labels and the predicted probabilities of an evaluation.

The scores come from scikit-learn (``precision_recall_fscore_support``, ``confusion_matrix``), in percent like
the other metrics of the library. A score with no defined value (the precision of a class never predicted,
the recall of a class with no sample) is left empty (``None``), not written as 0, and left out of the
macro average (scikit-learn's ``zero_division=np.nan``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ...data.classification import ArrayImageDataset, ImageListDataset
from ...errors import UsageError
from ...viz.diagnostics import Diagnostics, confusion_figure, format_table, save_figure, shortlist, write_csv
from ...viz.gallery import GalleryTile, ImageLike, gallery_figure
from .engine import Predictions

COLUMNS = ("id", "name", "precision", "recall", "f1", "support", "predicted")
MAX_ERRORS = 16
PROBABILITY_TOLERANCE = 1e-3  # how far a row of probabilities may sum from 1 (float16/bfloat16 softmax)


def _percent(value: float) -> Optional[float]:
    return None if np.isnan(value) else float(value) * 100


def check_predictions(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> None:
    """Check that ``labels`` (N,) and ``probabilities`` (N, C) fit the ``class_names`` (C).

    Raises:
        UsageError: shapes that differ, labels outside 0..C-1, or rows that are not probabilities (logits
            passed by mistake: apply a softmax first).
    """
    if probabilities.ndim != 2 or labels.ndim != 1 or len(labels) != len(probabilities):
        raise UsageError(f"labels {labels.shape} and probabilities {probabilities.shape} must be (N,) and (N, C).")
    if probabilities.shape[1] != len(class_names):
        raise UsageError(f"probabilities have {probabilities.shape[1]} classes but {len(class_names)} names are given.")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise UsageError(f"labels must be class ids 0..{len(class_names) - 1}, got {labels.min()}..{labels.max()}.")
    sums = probabilities.sum(1)
    if len(sums) and (probabilities.min() < 0 or np.abs(sums - 1).max() > PROBABILITY_TOLERANCE):
        raise UsageError(
            f"probabilities must be >= 0 and sum to 1 per sample (rows sum to {sums.min():.3f}..{sums.max():.3f}); "
            "pass softmax(logits), not logits."
        )


def per_class_metrics(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]) -> List[Dict[str, Any]]:
    """Precision, recall and F1 (percent), support and predicted count of every class.

    Args:
        labels: (N,) true class ids.
        predictions: (N,) predicted class ids.
        class_names: C names; every class gets a row, also those absent from ``labels``.

    Returns:
        C dicts with keys ``COLUMNS``: ``support`` = samples of the class, ``predicted`` = samples predicted as
        it; ``precision``/``recall``/``f1`` are ``None`` where undefined.
    """
    ids = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=ids, zero_division=np.nan
    )
    predicted = np.bincount(predictions, minlength=len(ids))
    return [
        {
            "id": i,
            "name": class_names[i],
            "precision": _percent(precision[i]),
            "recall": _percent(recall[i]),
            "f1": _percent(f1[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i in ids
    ]


def average_rows(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> List[Dict[str, Any]]:
    """The summary lines of the per-class table.

    Args:
        labels: (N,) true class ids.
        predictions: (N,) predicted class ids.
        num_classes: C.

    Returns:
        Three rows: the macro and support-weighted averages of precision, recall and F1 (scikit-learn's
        ``average=``; undefined per-class values left out), and the accuracy (in the ``f1`` column, as in
        scikit-learn's ``classification_report``), in percent.
    """
    rows = []
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            labels, predictions, labels=list(range(num_classes)), average=average, zero_division=np.nan
        )
        row = {"name": f"{average} avg", "precision": _percent(p), "recall": _percent(r), "f1": _percent(f)}
        rows.append(dict(row, support=len(labels)))
    accuracy = float((labels == predictions).mean()) * 100 if len(labels) else None
    rows.append({"name": "accuracy", "f1": accuracy, "support": len(labels)})
    return rows


def worst_errors(labels: np.ndarray, probabilities: np.ndarray, count: int = MAX_ERRORS) -> np.ndarray:
    """The highest-confidence mistakes.

    Args:
        labels: (N,) true class ids.
        probabilities: (N, C) predicted probabilities.
        count: how many to return at most.

    Returns:
        Indices of misclassified samples, the highest predicted probability first (ties: lower index first).
    """
    predictions = probabilities.argmax(1)
    wrong = np.flatnonzero(predictions != labels)
    confidence = probabilities[wrong, predictions[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]


def errors_figure(
    images: Sequence[ImageLike], labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], count: int
) -> Optional[Figure]:
    """A gallery of ``worst_errors``.

    Args:
        images: N image paths or PIL images, in the order of ``labels``.
        labels: (N,) true class ids.
        probabilities: (N, C) predicted probabilities.
        class_names: C names.
        count: how many mistakes to show.

    Returns:
        The figure, each image captioned with its file name, true class (with the probability it was given)
        and predicted class (with its probability); ``None`` when nothing is misclassified.
    """
    chosen = worst_errors(labels, probabilities, count)
    if not len(chosen):
        return None
    tiles = []
    for index in chosen:
        predicted = int(probabilities[index].argmax())
        truth = int(labels[index])
        caption = (
            f"true: {class_names[truth]} ({probabilities[index, truth] * 100:.1f}%)\n"
            f"predicted: {class_names[predicted]} ({probabilities[index, predicted] * 100:.1f}%)"
        )
        name = Path(images[index]).name if isinstance(images[index], (str, Path)) else f"sample {index}"
        tiles.append(GalleryTile(images[index], f"{name}\n{caption}"))
    wrong = int((probabilities.argmax(1) != labels).sum())
    title = f"The {len(tiles)} most confident of {wrong} errors in {len(labels)} samples"
    return gallery_figure(tiles, title)


def write_classification_diagnostics(
    folder: Union[str, Path],
    labels: Sequence[int],
    probabilities: Any,
    class_names: Sequence[str],
    images: Optional[Sequence[ImageLike]] = None,
    max_errors: int = MAX_ERRORS,
) -> Diagnostics:
    """Write the per-class diagnostics of a classification evaluation into ``folder``.

    Files: ``per_class.csv`` (``COLUMNS``, scores in percent, empty where undefined), ``confusion_matrix.png``
    (``viz.diagnostics.confusion_figure``: labelled up to 25 classes, else the most confused pairs) and, when
    ``images`` are given and some sample is misclassified, ``worst_errors.png`` (the ``max_errors``
    highest-confidence mistakes).

    Args:
        folder: where to write (created if needed), e.g. the run's ``eval-val`` folder.
        labels: (N,) true class ids.
        probabilities: (N, C) predicted probabilities (softmax of the logits), a numpy array or tensor.
        class_names: C class names in label order.
        images: N image paths or PIL images in the order of ``labels``, for the gallery.
        max_errors: how many mistakes the gallery shows.

    Returns:
        ``Diagnostics``: the per-class rows, the printable table (``per_class_table``), the files, and for
        ``metrics.json`` the rows (``per_class``) and the averages (``macro_avg``, ``weighted_avg``: precision,
        recall and F1 in percent).

    Raises:
        UsageError: inputs whose shapes or values do not fit (see ``check_predictions``), or ``images`` of
            another length than ``labels``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    check_predictions(labels, probabilities, class_names)
    if images is not None and len(images) != len(labels):
        raise UsageError(f"{len(images)} images for {len(labels)} labels.")
    folder = Path(folder)
    predictions = probabilities.argmax(1)
    rows = per_class_metrics(labels, predictions, class_names)
    averages = average_rows(labels, predictions, len(class_names))
    table = per_class_table(rows, averages)
    files = {"per_class_csv": write_csv(folder / "per_class.csv", rows, COLUMNS)}
    matrix = confusion_matrix(labels, predictions, labels=list(range(len(class_names))))
    files["confusion_png"] = save_figure(confusion_figure(matrix, class_names), folder / "confusion_matrix.png")
    if images is not None:
        figure = errors_figure(images, labels, probabilities, class_names, max_errors)
        if figure is not None:
            files["errors_png"] = save_figure(figure, folder / "worst_errors.png")
    metrics: Dict[str, Any] = {"per_class": rows}
    for row in averages[:2]:  # macro and weighted
        metrics[row["name"].replace(" ", "_")] = {key: row[key] for key in ("precision", "recall", "f1")}
    return Diagnostics(rows, table, files, metrics)


def per_class_table(rows: Sequence[Dict[str, Any]], averages: Sequence[Dict[str, Any]] = ()) -> str:
    """The table ``write_classification_diagnostics`` returns for printing.

    Args:
        rows: ``per_class_metrics`` rows; above 25 classes only the 15 with the lowest recall (then F1) are
            shown, worst first, with a line saying so (``viz.diagnostics.shortlist``).
        averages: ``average_rows`` rows, appended below.

    Returns:
        The text table (id, name, precision, recall, F1 in percent, support).
    """
    header = ("id", "name", "precision", "recall", "f1", "support")
    shown, note = shortlist(rows, ("recall", "f1"))
    table = format_table(list(shown) + [dict(row, id="") for row in averages], header)
    return f"{table}\n{note}" if note else table


def sample_images(dataset: Any, positions: Sequence[int]) -> Optional[List[ImageLike]]:
    """The images of ``positions`` of an evaluation set, for the gallery of the worst errors.

    Args:
        dataset: the evaluated data set.
        positions: indices into it (``Predictions.positions``).

    Returns:
        The files of an ``ImageListDataset`` (image folder, CSV list), the in-memory pictures of an
        ``ArrayImageDataset`` (the digits), ``None`` for another kind of data set (no gallery).
    """
    if isinstance(dataset, ImageListDataset):
        return [dataset.samples[position][0] for position in positions]
    if isinstance(dataset, ArrayImageDataset):
        return [dataset.images[position].numpy() for position in positions]
    return None


def diagnose(
    folder: Union[str, Path], predictions: Predictions, dataset: Any, class_names: Sequence[str]
) -> Diagnostics:
    """``write_classification_diagnostics`` of an evaluation pass (``engine.evaluate(..., collect=True)``).

    Args:
        folder: where to write.
        predictions: the pass's ``Predictions``, gathered from every rank.
        dataset: the evaluated data set (its images go into the gallery).
        class_names: the model's class names.

    Returns:
        See ``write_classification_diagnostics``.
    """
    images = sample_images(dataset, predictions.positions.tolist())
    return write_classification_diagnostics(
        folder, predictions.labels, predictions.probabilities, class_names, images=images
    )
