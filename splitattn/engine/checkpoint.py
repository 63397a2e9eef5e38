"""Run checkpoints: atomic writes, safe reads, every random generator, and where a run resumes from.

A run checkpoint is a dict of tensors and plain Python values (it loads with
``torch.load(..., weights_only=True)``). ``atomic_save`` writes it through ``weights.files.atomic_path``
(a temporary file in the same folder, moved over the target with ``os.replace``), so a run killed
mid-write, a full disk or an unpicklable object never leaves a truncated checkpoint behind.
``load_checkpoint_file`` reads it through ``weights.loading.read_checkpoint`` (no pickled code runs).
RNG states are stored as tensors and plain types for the same reason.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import CheckpointError, UsageError
from ..weights.files import atomic_path
from ..weights.loading import read_checkpoint
from .distributed import DistContext, decided_by_main

PathLike = Union[str, os.PathLike]


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` that either fully replaces ``path`` (flushed to disk) or leaves it untouched."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())


def load_checkpoint_file(path: PathLike) -> Dict[str, Any]:
    """A run checkpoint (a dict) read on the CPU with tensors and plain Python types only.

    Raises:
        FileNotFoundError: no file at ``path``.
        WeightsError: a damaged, foreign or unsafe file.
        CheckpointError: the file holds no dict.
    """
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, expected a dict.")
    return checkpoint


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> Dict[str, Any]:
    """The current state of the Python, NumPy, torch CPU and CUDA generators."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Put back the generators saved by ``capture_rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def holds_run(folder: Path, name: str = "last.pt") -> bool:
    """Whether ``folder`` holds a run: its checkpoint ``name``, options or log (written from a run's first step)."""
    return any((folder / entry).exists() for entry in (name, "options.json", "log.jsonl"))


def is_finished(folder: Path) -> bool:
    """Whether the run in ``folder`` finished: it wrote ``metrics.json`` (``log.RunLogger.finish``)."""
    return (folder / "metrics.json").exists()


def runs_named(default: Path, name: str = "last.pt") -> List[Path]:
    """The run folders ``default``, ``default-2``, ``default-3`` ... that hold a run, most recently active last
    (by the newest of their checkpoint, options and log)."""
    pattern = re.compile(re.escape(default.name) + r"(-[0-9]+)?")
    siblings = default.parent.iterdir() if default.parent.is_dir() else iter(())
    found = [p for p in siblings if pattern.fullmatch(p.name) and p.is_dir() and holds_run(p, name)]

    def last_active(folder: Path) -> float:
        files = [folder / entry for entry in (name, "options.json", "log.jsonl")]
        return max(f.stat().st_mtime for f in files if f.exists())

    return sorted(found, key=last_active)


def _choose_run_folder(
    output: Optional[str], default: Path, resume: Optional[str], exist_ok: bool, name: str
) -> Tuple[Path, Optional[Path]]:
    if output:
        folder = Path(output)
        if resume is None and (folder / name).exists() and not exist_ok:
            raise UsageError(
                f"{str(folder)!r} already holds a run ({name}): resume it, allow replacing it (exist_ok) "
                "or write to another folder."
            )
    elif resume == "auto":
        runs = runs_named(default, name)
        unfinished = [run for run in runs if not is_finished(run)]
        if unfinished:
            folder = unfinished[-1]
        elif runs:
            raise UsageError(
                f"resume auto: every run named {default.name!r} is finished ({', '.join(str(r) for r in runs)} "
                "hold metrics.json); start a new run without resume, or name the run to continue with output."
            )
        else:
            folder = default
    else:  # a fresh run (or one started from a checkpoint) never writes into another run's folder
        folder, index = default, 1
        while holds_run(folder, name):
            index += 1
            folder = default.with_name(f"{default.name}-{index}")
    if resume == "auto":
        return folder, (folder / name if (folder / name).exists() else None)
    if resume:
        if not Path(resume).is_file():
            raise FileNotFoundError(f"no checkpoint to resume from at {resume!r}.")
        return folder, Path(resume)
    return folder, None


def finished_metrics(folder: Path, announce: bool = True) -> Optional[Dict[str, Any]]:
    """The metrics a finished run recorded (``folder/metrics.json``, read by rank 0 and handed to every rank), or
    None; ``announce``: say that the run is left as it is."""

    def read() -> Optional[Dict[str, Any]]:
        path = folder / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None

    metrics = decided_by_main(read)
    if metrics is not None and announce:
        print(f"{folder} is finished (metrics.json): nothing to train, its results are kept as they are", flush=True)
    return metrics


def run_folder(
    output: Optional[str], default: Path, resume: Optional[str] = None, exist_ok: bool = False, name: str = "last.pt"
) -> Tuple[Path, Optional[Path]]:
    """``(run folder, checkpoint to continue from or None)``, chosen by rank 0 and handed to every rank
    (``distributed.decided_by_main``), so the processes of a job never pick different folders or checkpoints.

    An explicit ``output`` is the folder; when it holds a run (``name``), it is refused unless resumed or
    overwritten (``exist_ok``). Without ``output``: ``resume="auto"`` continues the most recently active
    unfinished run of ``default``'s name (``default``, ``default-2`` ...: see ``runs_named``; finished runs hold
    ``metrics.json`` and are never continued, and if every run of the name is finished the error lists them),
    or starts ``default`` when there is none; a fresh run, or one started from a checkpoint path, goes to the
    first of ``default``, ``default-2`` ... that holds no run. ``resume``: a checkpoint path, ``"auto"``
    (``folder/name`` if any) or None.

    Raises:
        FileNotFoundError: ``resume`` names no file.
        UsageError: ``output`` holds a run that is neither resumed nor to be replaced; ``resume="auto"`` without
            ``output`` when every run of the name is finished.
    """
    return decided_by_main(lambda: _choose_run_folder(output, default, resume, exist_ok, name))


def restore_rng_states(checkpoint: Dict[str, Any], dist_ctx: DistContext, source: str) -> None:
    """Put back this rank's random generators from ``checkpoint["rng"]`` (one state per rank; with another
    process count they start fresh, and the main process says so)."""
    rng_states = checkpoint.get("rng") or []
    if len(rng_states) == dist_ctx.world_size:
        restore_rng_state(rng_states[dist_ctx.rank])
    elif dist_ctx.is_main:
        print(
            f"note: {source} was written by {len(rng_states)} process(es), this run has "
            f"{dist_ctx.world_size}: random states start fresh.",
            file=sys.stderr,
        )


def holds_bare_weights(checkpoint: Dict[str, Any]) -> bool:
    """Whether ``checkpoint`` holds bare weights (a state dict or another project's file): no ``task`` entry and
    not the ``args`` and ``model`` of a training run."""
    return "task" not in checkpoint and not ("args" in checkpoint and "model" in checkpoint)


def require_task(
    checkpoint: Dict[str, Any],
    path: PathLike,
    task: str,
    command: str,
    usage: Callable[[str], str],
    bare_weights_hint: str = "",
) -> Dict[str, Any]:
    """``checkpoint`` (read from ``path``) if its ``task`` entry is ``task``, for a command of the group
    ``command`` (``splitattn <command> ...``).

    The command names in the messages come from the caller (``command``; ``usage(group)``: how to run this
    action with another group's checkpoint) and from the checkpoint (its ``command`` entry, written with the
    ``task`` entry by every run's trainer): the engine holds no table of tasks.

    Raises:
        CheckpointError: another task's checkpoint (naming its own command), bare weights (followed by
            ``bare_weights_hint``), or a run's checkpoint without a ``task`` entry (saying how to add it).
    """
    if holds_bare_weights(checkpoint):
        raise CheckpointError(
            f"{str(path)!r} holds bare weights, not a `splitattn {command} train` checkpoint"
            + (f"; {bare_weights_hint}" if bare_weights_hint else ".")
        )
    if "task" not in checkpoint:
        raise CheckpointError(
            f"{str(path)!r} is a training run's checkpoint (it holds `args` and `model`) without the `task` entry "
            "that names the task that trained it (written before checkpoints had one). If it is a "
            f'`splitattn {command} train` run, add the entry and rerun: python -c "import torch; '
            f"p = {str(path)!r}; c = torch.load(p, weights_only=True); c['task'] = {task!r}; torch.save(c, p)\""
        )
    if checkpoint["task"] != task:
        other = str(checkpoint["command"]).split()[0]  # "<command> train"
        raise CheckpointError(
            f"{str(path)!r} is a {checkpoint['task']} checkpoint (`splitattn {other} train`); use {usage(other)}."
        )
    return checkpoint


def load_task_checkpoint(
    path: PathLike, task: str, command: str, usage: Callable[[str], str], bare_weights_hint: str = ""
) -> Dict[str, Any]:
    """``require_task`` of the checkpoint at ``path`` (see ``load_checkpoint_file`` for reading errors)."""
    return require_task(load_checkpoint_file(path), path, task, command, usage, bare_weights_hint)
