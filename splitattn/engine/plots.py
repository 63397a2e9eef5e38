"""``curves.png``: the logged losses and validation metrics of a run against its epochs or iterations."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence


def _groups(records: Sequence[Dict[str, Any]]) -> Dict[str, List[str]]:
    """One panel for the losses (keys ending in ``loss``), one for the other validation metrics."""
    keys = sorted({key for record in records for key in record})
    groups = {"loss": [k for k in keys if k.endswith("loss")],
              "validation": [k for k in keys if k.startswith(("val_", "ema_val_")) and not k.endswith("loss")]}
    return {title: found for title, found in groups.items() if found}


def plot_curves(records: Sequence[Dict[str, Any]], path: Path, x_key: str = "epoch",
                num_classes: Optional[int] = None) -> None:
    """Save a PNG with one panel of losses and one of validation metrics against ``x_key``.

    ``num_classes``: the run's class count (for a chance-level reference line; unused here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(records) or {"loss": []}
    figure, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6))
    for axis, (title, keys) in zip(list(axes) if len(groups) > 1 else [axes], groups.items()):
        for key in keys:
            points = [(r[x_key], r[key]) for r in records if r.get(key) is not None and x_key in r]
            if points:
                xs, values = zip(*points)
                axis.plot(xs, values, marker="o", label=key)
        axis.set_xlabel(x_key)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
