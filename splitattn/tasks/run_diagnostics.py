"""The per-class diagnostics of the three tasks at the end of training and after ``evaluate``: when the final
evaluation of a run is under way, where its diagnostics go, and the lines printed about them.

A run writes them into ``RUN/diagnostics/`` (``detect``: one folder per IoU type), from the final evaluation
only: the per-epoch evaluations collect nothing more than before. ``--no-diagnostics`` skips them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from ..viz.diagnostics import Diagnostics

DIAGNOSTICS_FOLDER = "diagnostics"


class FinalEvaluation:
    """Tells a task's evaluator whether it runs the final evaluation of a run, the one whose result the task's
    ``summarize`` receives, so that it collects what the diagnostics need then and only then.

    The engine (``engine.loop``) evaluates after the last optimizer step, and once without training when a
    finished run is resumed. The task's loss callback reports each step it trains (``trained``): an evaluation
    after step ``total_steps - 1``, or in a process that trained no step, is the final one.

    Args:
        total_steps: the run's optimizer steps.
        enabled: the run writes diagnostics (``--diagnostics``, the default); when off, ``now`` is never true.
    """

    def __init__(self, total_steps: int, enabled: bool) -> None:
        self.total_steps = total_steps
        self.enabled = enabled
        self.step: Optional[int] = None

    def trained(self, step: int) -> None:
        """Record that the optimizer step ``step`` (0-based) is being trained."""
        self.step = step

    @property
    def now(self) -> bool:
        """Whether an evaluation started now is the run's final one (and diagnostics are on)."""
        return self.enabled and (self.step is None or self.step + 1 >= self.total_steps)


def diagnostics_folder(state: Mapping[str, Any]) -> Path:
    """``RUN/diagnostics`` of the run whose end-of-training ``state`` (``engine.loop``) is given."""
    return Path(state["run_folder"]) / DIAGNOSTICS_FOLDER


def describe(diagnostics: Diagnostics, folder: Path, title: str = "per-class diagnostics") -> str:
    """The lines a command prints: the per-class table, then where its files are."""
    return f"{title}:\n{diagnostics.table}\n({', '.join(p.name for p in diagnostics.files.values())} in {folder})"
