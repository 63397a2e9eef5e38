"""``curves.png``: the training curves of a run, drawn from the panels its task names.

A run's records (one dict per logged epoch or iteration, as in ``log.jsonl``) are drawn as the
``Panel``s the task hands the engine (``TrainingRun.panels``): each a title and the record keys it
plots (with a key prefix for series known only from the records, such as the loss components of a
detector). Only the series whose keys appear in the records are drawn, and only panels with one.
Matplotlib's object API is used without ``pyplot``, so plotting changes no process-wide state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

X_LABELS = {"iter": "iteration"}
MAX_COLUMNS = 3


@dataclass(frozen=True)
class Panel:
    """One plot of ``curves.png``.

    Args:
        title: the plot's title.
        series: ``(record key, legend label)`` pairs, in drawing order.
        percent: values in percent (the y axis runs up to 100).
        prefix: also every record key starting with this, after ``series``, sorted, labelled without its
            first word (``train_loss_box_reg`` -> ``loss_box_reg``).
    """

    title: str
    series: Tuple[Tuple[str, str], ...] = ()
    percent: bool = False
    prefix: Optional[str] = None


# The records every run logs (``engine.loop``): the learning rate, and the training and validation loss.
LOSS = Panel("loss", (("train_loss", "train"), ("val_loss", "val")))
LEARNING_RATE = Panel("learning rate", (("lr", "learning rate"),))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def curve_panels(records: Sequence[Dict[str, Any]], panels: Sequence[Panel]) -> List[Panel]:
    """``panels`` that ``records`` can fill, in their order, each with only the series present in some record."""
    present = {key for record in records for key, value in record.items() if _number(value)}
    filled = []
    for panel in panels:
        prefixed = sorted(key for key in present if panel.prefix and key.startswith(panel.prefix))
        series = list(panel.series) + [(key, key.split("_", 1)[1]) for key in prefixed]
        kept = tuple((key, label) for key, label in series if key in present)
        if kept:
            filled.append(Panel(panel.title, kept, panel.percent))
    return filled


def curves_figure(records: Sequence[Dict[str, Any]], panels: Sequence[Panel], x_key: str = "epoch") -> Optional[Figure]:
    """A matplotlib ``Figure`` of ``records`` against ``x_key`` (``epoch`` or ``iter``) in ``panels``, or None
    when no record holds a value to plot.

    Every series is a line with markers (a single evaluation is a visible point); x ticks are
    integers; losses and the learning rate start at 0 (or their lowest value if negative); percentages run
    up to 100, from 0 or from 10 points below the lowest value.
    """
    rows = [record for record in records if _number(record.get(x_key))]
    panels = curve_panels(rows, panels)
    if not panels:
        return None
    xs = [record[x_key] for record in rows]
    margin = max(0.5, 0.04 * (max(xs) - min(xs)))
    columns = min(MAX_COLUMNS, len(panels))
    lines = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.8 * columns, 3.4 * lines), layout="constrained")
    FigureCanvasAgg(figure)
    for index, panel in enumerate(panels):
        axis = figure.add_subplot(lines, columns, index + 1)
        lowest = math.inf
        for key, label in panel.series:
            points = [(record[x_key], record[key]) for record in rows if _number(record.get(key))]
            if points:
                x, y = zip(*points)
                # unclipped: a marker on the axis' edge (100%, a learning rate of 0) shows whole
                axis.plot(x, y, marker="o", markersize=4 if len(points) > 30 else 6, label=label, clip_on=False)
                lowest = min(lowest, min(y))
        if panel.percent:
            axis.set_ylim(max(0.0, 10 * math.floor(lowest / 10) - 10), 100)
        else:
            axis.set_ylim(bottom=min(0.0, lowest))
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        axis.set_xlim(min(xs) - margin, max(xs) + margin)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one point: one tick
        axis.set_xlabel(X_LABELS.get(x_key, x_key))
        axis.set_title(panel.title)
        axis.grid(alpha=0.3)
        if [label for _, label in panel.series] != [
            panel.title
        ]:  # a legend unless the title already names the one line
            axis.legend(fontsize="small")
    return figure


def plot_curves(records: Sequence[Dict[str, Any]], path: Path, panels: Sequence[Panel], x_key: str = "epoch") -> None:
    """Save ``curves_figure(records, panels, x_key)`` as a PNG at ``path`` (100 dpi); nothing is written when
    the records hold nothing to plot."""
    figure = curves_figure(records, panels, x_key)
    if figure is not None:
        figure.savefig(path, dpi=100)
