"""Diagnostic figures read at a glance, and the CSV and text tables written beside them.

Task-independent: the confusion between classes (a row-normalised matrix, or for many classes the matrix as
an image beside the most confused pairs ranked), per-class bars and precision-recall curves (image galleries:
``viz.gallery``). The tasks' ``diagnostics`` modules compute the numbers and choose the files.
Matplotlib's object API (``Figure`` on the Agg canvas) is used without ``pyplot``, so drawing changes no
process-wide state.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import UsageError

MAX_MATRIX_CLASSES = 25  # above this a labelled matrix has cells too small to read: see confusion_figure
TOP_PAIRS = 20
MAX_NAME_LENGTH = 28  # class names longer than this are shortened with an ellipsis on the axes
ANNOTATE_CELLS_UP_TO = 25  # classes; each cell of the labelled matrix shows its percentage
PRINTED_CLASSES = 25  # a terminal table of more classes shows only the worst ones (the CSV has every class)
WORST_PRINTED = 15


@dataclass
class Diagnostics:
    """What a ``write_*_diagnostics`` function produced.

    Attributes:
        rows: one dict per class (the CSV's rows), in class order.
        table: the per-class table as text, for the command to print.
        files: kind of file (``"per_class_csv"``, ``"confusion_png"``, ...) -> path written.
        metrics: what the evaluation's ``metrics.json`` gains (``per_class``: the rows; averages where the task
            has them), strict JSON (``None`` for an undefined score).
    """

    rows: List[Dict[str, Any]]
    table: str
    files: Dict[str, Path] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout ``Figure`` of ``width`` x ``height`` inches on its own Agg canvas."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Union[str, Path], dpi: int = 100) -> Path:
    """Write ``figure`` as a PNG at ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def _short_name(name: str, length: int = MAX_NAME_LENGTH) -> str:
    """``name`` cut to ``length`` characters, the cut marked with an ellipsis."""
    return name if len(name) <= length else name[: length - 1] + "\u2026"


def _row_normalise(matrix: np.ndarray) -> np.ndarray:
    """(K, K) counts -> each row divided by its sum (a row without samples stays 0)."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confused_pairs(matrix: np.ndarray, top: int = TOP_PAIRS) -> List[Tuple[int, int, int, float]]:
    """The ``top`` off-diagonal cells with the most samples (fastai's ``most_confused`` order).

    Args:
        matrix: (K, K) counts, rows = true class, columns = predicted class.
        top: how many pairs to return at most.

    Returns:
        ``(true, predicted, count, share)`` tuples, ``share`` = ``count`` over the true class's samples (the
        row-normalised value); ties in count broken by the larger share, then by class ids. Cells with no
        sample are never listed.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    shares = _row_normalise(counts)
    off = [(int(t), int(p)) for t, p in zip(*np.nonzero(counts)) if t != p]
    off.sort(key=lambda cell: (-counts[cell], -shares[cell], cell))
    return [(t, p, int(counts[t, p]), float(shares[t, p])) for t, p in off[:top]]


def _check_matrix(matrix: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise UsageError(f"a confusion matrix of shape {counts.shape} does not fit {len(class_names)} class names.")
    return counts


def confusion_figure(
    matrix: np.ndarray,
    class_names: Sequence[str],
    title: str = "Confusion matrix",
    max_classes: int = MAX_MATRIX_CLASSES,
    top_pairs: int = TOP_PAIRS,
    unit: str = "samples",
) -> Figure:
    """The confusion between classes, normalised by row (each true class sums to 100%).

    Up to ``max_classes`` classes: the matrix with every class name on both axes (the number of samples of
    each true class beside its name) and each cell's percentage written in it. Above that, cells and names
    would be too small to read (100 names at a legible 8 pt need 14 inches per axis), so the figure has two
    panels instead: the whole matrix as an image (class ids on the axes, a square-root colour scale so that
    small confusions show next to the diagonal) and the ``top_pairs`` most confused pairs ranked by count,
    each labelled "true [id] -> predicted [id]" with its count and share of the true class. A ranked list keeps every
    name whole and horizontal for any number of classes and puts the largest errors first, where a reduced
    matrix would still mix unrelated classes on its axes.

    Args:
        matrix: (K, K) counts, rows = true class, columns = predicted class.
        class_names: K names in class order.
        title: the figure's title (the normalisation is appended).
        max_classes: the largest K drawn as a labelled matrix.
        top_pairs: how many pairs the ranked panel lists.
        unit: what the counts count ("samples", "pixels"), for the labels.

    Returns:
        The figure (save it with ``save_figure``).

    Raises:
        UsageError: ``matrix`` is not (K, K) for the K names.
    """
    counts = _check_matrix(matrix, class_names)
    if len(class_names) <= max_classes:
        return _labelled_matrix(counts, class_names, title, unit)
    return _matrix_and_pairs(counts, class_names, title, top_pairs, unit)


def _labelled_matrix(counts: np.ndarray, class_names: Sequence[str], title: str, unit: str) -> Figure:
    k = len(class_names)
    shares = _row_normalise(counts) * 100
    names = [_short_name(name) for name in class_names]
    label_inches = 0.075 * max(len(name) for name in names) + 0.6
    cell = 0.45 if k > 6 else 0.9
    size = k * cell
    figure = new_figure(size + label_inches + 1.6, size + 0.7 * label_inches + 1.0)
    axis = figure.add_subplot()
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
    rotate = k > 3 or max(len(name) for name in names) > 10
    axis.set_xticks(range(k), names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    if rotate:
        for label in axis.get_xticklabels():
            label.set_rotation_mode("anchor")
    axis.set_yticks(range(k), [f"{name} ({int(total):,})" for name, total in zip(names, counts.sum(1))])
    axis.set_xlabel("predicted class")
    axis.set_ylabel(f"true class ({unit})")
    axis.set_title(f"{title}\n(% of each true class; {int(counts.sum()):,} {unit})")
    if k <= ANNOTATE_CELLS_UP_TO:
        font = 9 if k <= 10 else 7
        for (row, column), value in np.ndenumerate(shares):
            if counts[row, column]:
                text = f"{value:.0f}" if value >= 9.5 or value == 0 else f"{value:.1f}"
                colour = "white" if value > 55 else "black"
                axis.text(column, row, text, ha="center", va="center", fontsize=font, color=colour)
    figure.colorbar(image, ax=axis, shrink=0.8, label="% of the true class")
    return figure


def _matrix_and_pairs(counts: np.ndarray, class_names: Sequence[str], title: str, top_pairs: int, unit: str) -> Figure:
    k = len(class_names)
    pairs = confused_pairs(counts, top_pairs)
    figure = new_figure(17, max(7.5, 0.34 * len(pairs) + 2))
    left, right = figure.subplots(1, 2, width_ratios=[1, 1.15])
    image = left.imshow(
        _row_normalise(counts) * 100, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=100), interpolation="nearest"
    )
    for axis in (left.xaxis, left.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    if pairs:  # the ranked pairs circled on the matrix
        true, predicted = zip(*[(t, p) for t, p, _, _ in pairs])
        left.scatter(predicted, true, s=40, facecolors="none", edgecolors="tab:red", label="ranked pairs")
        left.legend(loc="upper right", fontsize="small")
    left.set_xlabel("predicted class id")
    left.set_ylabel("true class id")
    left.set_title(f"all {k} classes, % of each true class")
    figure.colorbar(image, ax=left, shrink=0.8, label="% of the true class (square-root scale)")
    if pairs:
        # the class ids in brackets find the pair on the matrix, whose axes carry ids
        labels = [
            f"{_short_name(class_names[t])} [{t}] \u2192 {_short_name(class_names[p])} [{p}]" for t, p, _, _ in pairs
        ]
        values = [count for _, _, count, _ in pairs]
        positions = np.arange(len(pairs))
        right.barh(positions, values, color="tab:red", alpha=0.75)
        right.set_yticks(positions, labels)
        right.invert_yaxis()
        supports = counts.sum(1)
        for position, (t, _, count, share) in zip(positions, pairs):
            right.text(
                count, position, f" {count:,} ({share * 100:.0f}% of {int(supports[t]):,})", va="center", fontsize=8
            )
        right.set_xlim(0, max(values) * 1.3)
    else:
        right.text(0.5, 0.5, "no confusion: every sample is on the diagonal", ha="center", transform=right.transAxes)
        right.set_yticks([])
    right.set_xlabel(f"{unit} (true \u2192 predicted)")
    right.set_title(f"the {len(pairs)} most confused pairs, by count")
    figure.suptitle(f"{title}: {k} classes, {int(counts.sum()):,} {unit}")
    return figure


def per_class_bars_figure(
    class_names: Sequence[str],
    series: Mapping[str, Sequence[Optional[float]]],
    title: str,
    xlabel: str,
    xmax: float = 100.0,
) -> Figure:
    """Horizontal bars, one row per class and one bar per series, sorted by the first series (best on top).

    A value of ``None`` (a score that cannot be computed, e.g. a class absent from the data) is written as
    "n/a" and sorted last. Each bar carries its value.

    Args:
        class_names: K names.
        series: legend label -> K values (e.g. ``{"IoU": ..., "accuracy": ...}``), in percent by default.
        title: the figure's title.
        xlabel: the value axis' label.
        xmax: the value axis' end (100 for percentages).

    Raises:
        UsageError: a series does not have one value per class.
    """
    k = len(class_names)
    for label, values in series.items():
        if len(values) != k:
            raise UsageError(f"series {label!r} has {len(values)} values for {k} classes.")
    first = list(series.values())[0]
    order = sorted(range(k), key=lambda i: (first[i] is None, -(first[i] or 0.0), i))
    height = 0.8 / len(series)
    figure = new_figure(8, 1.4 + 0.32 * k * max(1, len(series) / 2))
    axis = figure.add_subplot()
    for index, (label, values) in enumerate(series.items()):
        positions = np.arange(k) + (index - (len(series) - 1) / 2) * height
        ordered = [values[i] for i in order]
        axis.barh(positions, [value or 0.0 for value in ordered], height=height, label=label)
        for position, value in zip(positions, ordered):
            text = " n/a" if value is None else f" {value:.1f}"
            axis.text(value or 0.0, position, text, va="center", fontsize=7)
    axis.set_yticks(range(k), [_short_name(class_names[i]) for i in order])
    axis.invert_yaxis()
    axis.set_xlim(0, xmax * 1.1)
    axis.set_ylim(k - 0.5, -0.5)
    axis.set_xlabel(xlabel)
    axis.set_title(f"{title} (sorted by {list(series)[0]})")
    axis.grid(axis="x", alpha=0.3)
    if len(series) > 1:
        axis.legend(loc="lower right", fontsize="small")
    return figure


@dataclass
class CurvePanel:
    """One panel of ``curves_grid_figure``: its title and lines, each label -> (x, y); NaN y values are gaps."""

    title: str
    lines: Mapping[str, Tuple[np.ndarray, np.ndarray]]


def curves_grid_figure(panels: Sequence[CurvePanel], title: str, xlabel: str, ylabel: str, columns: int = 5) -> Figure:
    """Small multiples of curves on the unit square (precision-recall curves).

    Args:
        panels: one ``CurvePanel`` per small plot, drawn row by row.
        title: the figure's title.
        xlabel: the x-axis label (written on the bottom panels).
        ylabel: the y-axis label (written on the left panels).
        columns: panels per row.

    Returns:
        The figure; the legend of the first panel names the lines of all.
    """
    columns = max(1, min(columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure = new_figure(3.1 * columns, 2.8 * rows + 0.6)
    axes = np.atleast_1d(figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    for axis, panel in zip(axes, panels):
        for label, (x, y) in panel.lines.items():
            axis.plot(x, y, label=label)
        axis.set_title(panel.title, fontsize=9)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    for axis in axes[len(panels) :]:
        axis.set_axis_off()
    for axis in axes[(rows - 1) * columns :]:
        axis.set_xlabel(xlabel)
    for axis in axes[::columns]:
        axis.set_ylabel(ylabel)
    if panels:
        axes[0].legend(fontsize="x-small", loc="lower left")
    figure.suptitle(title)
    return figure


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return value


def write_csv(path: Union[str, Path], rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` as a CSV file.

    Args:
        path: the file (parent folders created).
        rows: dicts; keys outside ``columns`` are left out, missing keys written empty.
        columns: the header, in order.

    Returns:
        ``path``. Floats are written with 4 decimals, ``None`` and NaN as empty cells.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([[_cell(row.get(column)) for column in columns] for row in rows])
    return path


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], decimals: int = 2) -> str:
    """``rows`` as a plain-text table for the terminal.

    Args:
        rows: dicts, one per line.
        columns: the keys shown, in order (the header).
        decimals: digits after the point of float values.

    Returns:
        The table: columns of numbers right-aligned, others left-aligned, ``None``/NaN as "-".
    """

    def text(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)

    cells = [[text(row.get(column)) for column in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) for c in columns]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(list(columns))] + [line(values) for values in cells])


def shortlist(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], limit: int = PRINTED_CLASSES, count: int = WORST_PRINTED
) -> Tuple[List[Mapping[str, Any]], str]:
    """The rows of a per-class table worth printing: all of them up to ``limit``, else the ``count`` worst.

    Args:
        rows: one dict per class.
        keys: the scores that rank the classes, lowest (worst) first, e.g. ``("recall", "f1")``: ties in the
            first broken by the next. A class whose first score is ``None`` (undefined: no sample) is not ranked.
        limit: the most rows printed whole.
        count: how many of the worst are printed above ``limit``.

    Returns:
        ``(rows, note)``: every row in order and ``""``, or the worst ``count`` rows, worst first, and a line
        saying which rows these are (for the caller to print under the table).
    """
    if len(rows) <= limit:
        return list(rows), ""

    def rank(row: Mapping[str, Any]) -> Tuple[float, ...]:
        return tuple(math.inf if row.get(key) is None else float(row[key]) for key in keys)

    scored = sorted((row for row in rows if row.get(keys[0]) is not None), key=rank)
    unscored = len(rows) - len(scored)
    if len(scored) <= count:
        note = f"the {len(scored)} classes scored by {keys[0]}, worst first ({unscored} without a score: no sample)"
    else:
        note = f"the {count} of {len(rows)} classes with the lowest {keys[0]}, worst first"
    return scored[:count], note + "; every class in per_class.csv"
