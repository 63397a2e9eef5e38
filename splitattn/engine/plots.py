"""``curves.png``: the training curves of a run, one function for classification, detection and segmentation.

A run's records (one dict per logged epoch or iteration, as in ``log.jsonl``) become panels:
the training and validation loss together, the detection loss components, the learning rate
and the validation metrics in percent. Only panels whose keys appear in the records are drawn.
Matplotlib's object API is used without ``pyplot``, so plotting changes no process-wide state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Panel = Tuple[str, List[Tuple[str, str]], bool]  # title, (record key, legend label) pairs, values in percent

LOSS_COMPONENT_PREFIX = "train_loss_"  # detection: train_loss_classifier, train_loss_box_reg, ...
TOP5_KEYS = ("val_top5", "ema_val_top5")
X_LABELS = {"iter": "iteration"}
MAX_COLUMNS = 3


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def curve_panels(records: Sequence[Dict[str, Any]], num_classes: Optional[int] = None) -> List[Panel]:
    """The panels ``records`` can fill, in drawing order, each with the keys present in some record.

    Top-5 accuracy is left out when ``num_classes`` is 5 or less (it is 100% by definition).
    """
    present = {key for record in records for key, value in record.items() if _number(value)}
    components = sorted(key for key in present if key.startswith(LOSS_COMPONENT_PREFIX))
    candidates: List[Panel] = [
        ("loss", [("train_loss", "train"), ("val_loss", "val")], False),
        ("loss components (train)", [(key, key[len("train_") :]) for key in components], False),
        ("learning rate", [("lr", "learning rate")], False),
        (
            "accuracy (%)",
            [
                ("train_top1", "train top-1"),
                ("val_top1", "val top-1"),
                ("val_top5", "val top-5"),
                ("ema_val_top1", "EMA val top-1"),
                ("ema_val_top5", "EMA val top-5"),
            ],
            True,
        ),
        ("box AP (%)", [("val_bbox_AP", "AP"), ("val_bbox_AP50", "AP50"), ("val_bbox_AP75", "AP75")], True),
        ("mask AP (%)", [("val_segm_AP", "AP"), ("val_segm_AP50", "AP50"), ("val_segm_AP75", "AP75")], True),
        ("mIoU / pixel accuracy (%)", [("val_miou", "val mIoU"), ("val_pixel_acc", "val pixel acc.")], True),
    ]
    hidden = set(TOP5_KEYS) if num_classes is not None and num_classes <= 5 else set()
    panels = []
    for title, keys, percent in candidates:
        kept = [(key, label) for key, label in keys if key in present and key not in hidden]
        if kept:
            panels.append((title, kept, percent))
    return panels


def curves_figure(
    records: Sequence[Dict[str, Any]], x_key: str = "epoch", num_classes: Optional[int] = None
) -> Optional[Figure]:
    """A matplotlib ``Figure`` of ``records`` against ``x_key`` (``epoch`` or ``iter``), or None when
    no record holds a value to plot.

    Every series is a line with markers (a single evaluation is a visible point); x ticks are
    integers; losses and the learning rate start at 0 (or their lowest value if negative); percentages run up to 100, from 0 or from
    10 points below the lowest value.
    """
    rows = [record for record in records if _number(record.get(x_key))]
    panels = curve_panels(rows, num_classes)
    if not panels:
        return None
    xs = [record[x_key] for record in rows]
    margin = max(0.5, 0.04 * (max(xs) - min(xs)))
    columns = min(MAX_COLUMNS, len(panels))
    lines = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.8 * columns, 3.4 * lines), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (title, keys, percent) in enumerate(panels):
        axis = figure.add_subplot(lines, columns, index + 1)
        lowest = math.inf
        for key, label in keys:
            points = [(record[x_key], record[key]) for record in rows if _number(record.get(key))]
            if points:
                x, y = zip(*points)
                # unclipped: a marker on the axis' edge (100%, a learning rate of 0) shows whole
                axis.plot(x, y, marker="o", markersize=4 if len(points) > 30 else 6, label=label, clip_on=False)
                lowest = min(lowest, min(y))
        if percent:
            axis.set_ylim(max(0.0, 10 * math.floor(lowest / 10) - 10), 100)
        else:
            axis.set_ylim(bottom=min(0.0, lowest))
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        axis.set_xlim(min(xs) - margin, max(xs) + margin)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one point: one tick
        axis.set_xlabel(X_LABELS.get(x_key, x_key))
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if [label for _, label in keys] != [title]:  # a legend unless the title already names the one line
            axis.legend(fontsize="small")
    return figure


def plot_curves(
    records: Sequence[Dict[str, Any]], path: Path, x_key: str = "epoch", num_classes: Optional[int] = None
) -> None:
    """Save ``curves_figure(records, x_key, num_classes)`` as a PNG at ``path`` (100 dpi); nothing is
    written when the records hold nothing to plot."""
    figure = curves_figure(records, x_key, num_classes)
    if figure is not None:
        figure.savefig(path, dpi=100)
