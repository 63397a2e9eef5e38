"""Per-class segmentation diagnostics from the evaluation's pixel confusion matrix: IoU and accuracy of every
class as a table and a bar chart, and the confusion between classes.

The scores are those of ``metrics.ConfusionMatrix.compute`` (IoU = TP / (TP + FP + FN), accuracy = TP /
ground-truth pixels of the class, percent, ``None`` where undefined); the confusion picture is the one the
classification diagnostics draw (``viz.diagnostics.confusion_figure``), normalised by row: each true class's
pixels sum to 100%.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from ...errors import UsageError
from ...viz.diagnostics import Diagnostics, confusion_figure, per_class_bars_figure, save_figure, shortlist, write_csv
from .metrics import ConfusionMatrix, format_iou_table

COLUMNS = ("id", "name", "iou", "acc", "pixels")


def write_segmentation_diagnostics(
    folder: Union[str, Path], confusion: ConfusionMatrix, class_names: Sequence[str]
) -> Diagnostics:
    """Write the per-class diagnostics of a segmentation evaluation into ``folder``.

    Files: ``per_class.csv`` (``COLUMNS``: class id, name, IoU and accuracy in percent, ground-truth pixels),
    ``per_class_iou.png`` (IoU and accuracy bars, sorted by IoU) and ``confusion_matrix.png`` (pixels of each
    true class by predicted class, normalised by row).

    Args:
        folder: where to write (created if needed).
        confusion: the evaluation's accumulated ``ConfusionMatrix`` (ignored pixels already left out).
        class_names: the K class names in id order.

    Returns:
        ``Diagnostics``: the per-class rows of ``ConfusionMatrix.compute``, the printable table
        (``format_iou_table``; above 25 classes the 15 with the lowest IoU, see ``viz.diagnostics.shortlist``),
        the files and ``metrics["per_class"]`` (the rows).

    Raises:
        UsageError: ``class_names`` does not have one name per class of ``confusion``.
    """
    if len(class_names) != confusion.num_classes:
        raise UsageError(f"{len(class_names)} class names for a confusion matrix of {confusion.num_classes} classes.")
    folder = Path(folder)
    rows = confusion.compute(class_names)["per_class"]
    files = {"per_class_csv": write_csv(folder / "per_class.csv", rows, COLUMNS)}
    series = {"IoU": [row["iou"] for row in rows], "accuracy": [row["acc"] for row in rows]}
    bars = per_class_bars_figure(class_names, series, "Per-class IoU and pixel accuracy", "%")
    files["per_class_png"] = save_figure(bars, folder / "per_class_iou.png")
    matrix = confusion.matrix.numpy()
    figure = confusion_figure(matrix, class_names, title="Pixel confusion between classes", unit="pixels")
    files["confusion_png"] = save_figure(figure, folder / "confusion_matrix.png")
    shown, note = shortlist(rows, ("iou", "acc"))
    table = format_iou_table(shown) + (f"\n{note}" if note else "")
    return Diagnostics(rows, table, files, {"per_class": rows})
