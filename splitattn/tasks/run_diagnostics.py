"""The per-class diagnostics of the three tasks at the end of training and after ``evaluate``: where they go,
and the lines printed about them.

A run writes them into ``RUN/diagnostics/`` (``detect``: one folder per IoU type), from the final evaluation
only (the engine tells the task's evaluator which evaluation is the final one): the periodic evaluations
collect nothing more. ``--no-diagnostics`` skips them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..viz.diagnostics import Diagnostics

DIAGNOSTICS_FOLDER = "diagnostics"


def diagnostics_folder(state: Mapping[str, Any]) -> Path:
    """``RUN/diagnostics`` of the run whose end-of-training ``state`` (``engine.loop``) is given."""
    return Path(state["run_folder"]) / DIAGNOSTICS_FOLDER


def describe(diagnostics: Diagnostics, folder: Path, title: str = "per-class diagnostics") -> str:
    """The lines a command prints: the per-class table, then where its files are."""
    return f"{title}:\n{diagnostics.table}\n({', '.join(p.name for p in diagnostics.files.values())} in {folder})"
