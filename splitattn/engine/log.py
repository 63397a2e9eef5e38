"""Run logs: JSON lines, TensorBoard scalars and the final ``metrics.json``.

Only the main process creates a ``RunLogger`` (the others log nothing), so a distributed run
writes each file once. Both JSON files are strict JSON: NaN and infinities are written as ``null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by None, for ``json.dumps(allow_nan=False)``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``value`` (see ``strict_json``)."""
    return json.dumps(strict_json(value), allow_nan=False, **kwargs)


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
            handle.write(dumps(record, sort_keys=True) + "\n")
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

    def truncate_after(self, step: int, images_seen: int) -> None:
        """Drop records past the checkpoint a run resumes from (written by a run that died before it): past
        ``images_seen`` images trained, or for records without that entry, past optimizer step ``step``."""
        kept = [
            r
            for r in self.records()
            if (r["images_seen"] <= images_seen if "images_seen" in r else r.get("step", -1) <= step)
        ]
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(dumps(r, sort_keys=True) + "\n" for r in kept)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def finish(self, metrics: Dict[str, Any], summary: str) -> None:
        """Write the run's final ``metrics.json``, close TensorBoard and print ``summary`` with the file's path."""
        path = self.output_dir / "metrics.json"
        path.write_text(dumps(metrics, indent=2))
        self.close()
        print(f"{summary} (metrics in {path})", flush=True)
