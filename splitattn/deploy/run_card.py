"""What a run folder recorded, gathered as the model card's facts (``weights.model_card.RunFacts``) of a pushed run.

Read, never invented: the evaluation of the pushed weights (the ``log.jsonl`` record of the checkpoint's
step, else ``metrics.json`` for ``last.pt``), the newest per-class table the run wrote, the training time,
and the run's typed config: its options and the ``splitattn <task> train`` command that gives them (the
options that differ from their field defaults).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config.schemas import RunConfig, field_default
from ..config.values import flag
from ..weights.files import sha256_file
from ..weights.model_card import RunFacts

# options that describe the machine or the run folder, not how the model was trained (fields of RunConfig)
LOCAL_OPTIONS = ("config", "output", "exist_ok", "resume", "device", "workers", "threads", "progress", "tensorboard")
POSITION_KEYS = ("step", "iter", "epoch")  # checkpoint entries saying where in training it was written
MAX_CARD_CLASSES = 100  # per-class rows shown in the card


@dataclass(frozen=True)
class RunSource:
    """The checkpoint a push reads, and what of it the card needs besides the model.

    Attributes:
        path: the checkpoint file, in its run folder (``run_dir``).
        task: its ``task`` entry (``classification``, ``detection``, ``segmentation``).
        position: its ``step``/``iter``/``epoch`` entries, as ``log.jsonl`` records them.
        has_ema: whether it holds EMA weights.
        trained_norm: the ``norm`` the run trained with (a SyncBatchNorm run is rebuilt with BatchNorm).
    """

    path: Path
    task: str
    position: Dict[str, Any]
    has_ema: bool
    trained_norm: Optional[str]

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return self.path.parent


def _read_json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _log_records(run_dir: Path) -> List[Dict[str, Any]]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metrics(source: RunSource, ema: bool, final: Mapping[str, Any]) -> Tuple[Dict[str, float], str]:
    """(the evaluation of the pushed weights as the run logged it, where it was read): the ``val_``
    (``ema_val_``) entries of the ``log.jsonl`` record of the checkpoint's position, else ``metrics.json``
    (the final evaluation of the model weights) for ``last.pt``; nothing when neither says."""
    prefix = "ema_val_" if ema else "val_"
    records = _log_records(source.run_dir)
    for key, value in source.position.items():
        logged = [r for r in records if r.get(key) == value and any(k.startswith(prefix) for k in r)]
        if logged:
            metrics = {k[len(prefix) :]: v for k, v in logged[-1].items() if k.startswith(prefix)}
            return metrics, f"log.jsonl, {key} {value}, {'EMA' if ema else 'model'} weights"
    if final and not ema and source.path.name == "last.pt":
        numbers = {k: v for k, v in final.items() if isinstance(v, (int, float)) and not k.endswith(("_s", "images"))}
        return numbers, "metrics.json"
    return {}, ""


def _per_class(run_dir: Path) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """The newest per-class table the run wrote (a CSV in the run folder or one level down whose columns
    include recall, IoU or AP), at most ``MAX_CARD_CLASSES`` rows."""

    def header(path: Path) -> str:
        with path.open() as handle:
            return handle.readline().lower()

    tables = [
        p
        for p in list(run_dir.glob("*.csv")) + list(run_dir.glob("*/*.csv"))
        if any(w in header(p) for w in ("recall", "iou", "ap"))
    ]
    if not tables:
        return [], None
    newest = max(tables, key=lambda p: p.stat().st_mtime)
    with newest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows[:MAX_CARD_CLASSES], str(newest.relative_to(run_dir))


def command_line(command: str, config: RunConfig) -> str:
    """The ``splitattn <command> train`` command line giving ``config``: a flag for each option (but the
    machine's, ``LOCAL_OPTIONS``) that differs from its default, with the defaults that follow ``--data``
    (classification's ``DATA_DEPENDENT_DEFAULTS``) taken for the run's ``data``."""
    cls = type(config)
    defaults = dataclasses.replace(cls(data=config.data), data=field_default(cls, "data"))  # but --data itself
    words = [f"splitattn {command} train"]
    for item in dataclasses.fields(config):
        value, default = getattr(config, item.name), getattr(defaults, item.name)
        if item.name in LOCAL_OPTIONS or value == default or value is None:
            continue
        name = (item.metadata["flags"] or (flag(item.name),))[0]  # the flag the help shows first
        if isinstance(value, bool):  # BooleanOptionalAction; --pretrained alone is True
            if value or isinstance(default, bool):
                words.append(name if value else "--no-" + name[2:])
        elif isinstance(value, dict):
            words.append(name + "".join(f" {k}={v}" for k, v in value.items()))
        elif isinstance(value, (list, tuple)):
            words.append(name + "".join(f" {v}" for v in value))
        else:
            words.append(f"{name} {value}")
    return " \\\n  ".join(words)


def run_facts(
    source: RunSource,
    config: RunConfig,
    command: str,
    classes: Sequence[Any],
    ema: bool,
    data_format: Optional[str],
    **card: Any,
) -> RunFacts:
    """The card's facts of the run whose checkpoint ``source`` was rebuilt as ``config``.

    Args:
        source: the checkpoint read.
        config: the run's config (as its task's checkpoint loader returns it).
        command: the task's command group (``classify`` ...).
        classes: the class names by label.
        ema: whether the EMA weights are pushed.
        data_format: the data set's layout, if the run names one (``coco``, ``folder`` ...).
        **card: the task's own facts: ``title``, ``weights``, ``loaders``, ``preprocessing``, ``usage``.

    Returns:
        The facts; ``weights_sha256`` is filled in once ``model.safetensors`` is written.
    """
    if source.trained_norm is not None and source.trained_norm != config.norm:
        config = dataclasses.replace(config, norm=source.trained_norm)  # the card says how the run trained
    final = _read_json(source.run_dir / "metrics.json")
    metrics, metrics_source = _metrics(source, ema, final)
    per_class, per_class_source = _per_class(source.run_dir)
    data: Dict[str, Any] = {"data set": Path(config.data).name if config.data else "scikit-learn digits (built in)"}
    if data_format:
        data["format"] = data_format
    data["classes"] = len(classes)
    data.update({key.replace("_", " "): final[key] for key in ("train_images", "eval_images") if key in final})
    return RunFacts(
        task=source.task,
        label_names=[str(c) for c in classes],
        metrics=metrics,
        metrics_source=metrics_source,
        command=command_line(command, config),
        options={k: v for k, v in dataclasses.asdict(config).items() if k not in LOCAL_OPTIONS},
        data=data,
        wall_time_s=final.get("wall_time_s"),
        source_file=source.path.name,
        source_sha256=sha256_file(source.path),
        weights_sha256="",
        per_class=per_class,
        per_class_source=per_class_source,
        **card,
    )
