"""Per-epoch run logs: JSON lines and TensorBoard scalars (``engine.plots`` draws ``curves.png`` from them).

Only the main process creates a ``RunLogger`` (the others log nothing), so a
distributed run writes each file once.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List


class RunLogger:
    """Appends one JSON object per epoch to ``log.jsonl`` and mirrors numeric values to TensorBoard."""

    def __init__(self, output_dir: Path, tensorboard: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / "log.jsonl"
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))

    def log(self, record: Dict[str, Any], step: int) -> None:
        """Write ``record`` as one line and its numbers as TensorBoard scalars at ``step``."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, step)
            self.writer.flush()

    def records(self) -> List[Dict[str, Any]]:
        """Every record written so far (also those of the run this one resumed)."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def truncate_after(self, epoch: int, key: str = "epoch") -> None:
        """Drop records whose ``key`` (the epoch, or the iteration of iteration-based runs) is past
        ``epoch`` (written by a run that died before its checkpoint)."""
        kept = [r for r in self.records() if r.get(key, -1) <= epoch]
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, sort_keys=True) + "\n" for r in kept)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def finish(self, metrics: Dict[str, Any], summary: str) -> None:
        """Write the run's final ``metrics.json``, close TensorBoard and print ``summary`` with the file's path."""
        path = self.output_dir / "metrics.json"
        path.write_text(json.dumps(metrics, indent=2))
        self.close()
        print(f"{summary} (metrics in {path})", flush=True)
