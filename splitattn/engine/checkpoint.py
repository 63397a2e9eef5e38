"""Run checkpoints: atomic writes, safe reads, every random generator, and where a run resumes from.

A run checkpoint is a dict of tensors and plain Python values (it loads with
``torch.load(..., weights_only=True)``). ``atomic_save`` writes it through ``weights.files.atomic_path``
(a temporary file in the same folder, moved over the target with ``os.replace``), so a run killed
mid-write, a full disk or an unpicklable object never leaves a truncated checkpoint behind.
``load_checkpoint_file`` reads it through ``weights.loading.read_checkpoint`` (no pickled code runs).
RNG states are stored as tensors and plain types for the same reason.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from ..utils.distributed import DistContext
from ..weights.files import atomic_path
from ..weights.loading import read_checkpoint

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

    Raises ``FileNotFoundError`` for a missing file, ``weights.WeightsError`` (a ``RuntimeError``) for
    a damaged, foreign or unsafe one, and ``RuntimeError`` when the file holds no dict."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, expected a dict.")
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


def resume_path(resume: Optional[str], output: Path, name: str = "last.pt") -> Optional[Path]:
    """The checkpoint to continue from: ``resume`` itself, ``output/name`` for ``"auto"`` (None if
    absent), None for a fresh run; a fresh run into a folder that holds ``name`` is an error."""
    last = output / name
    if resume == "auto":
        return last if last.exists() else None
    if resume:
        if not Path(resume).is_file():
            raise FileNotFoundError(f"--resume {resume!r}: no such checkpoint; use a path or 'auto'.")
        return Path(resume)
    if last.exists():
        raise ValueError(f"{str(output)!r} already holds a run ({name}); continue it with --resume auto "
                         "or pass another --output.")
    return None


def restore_rng_states(checkpoint: Dict[str, Any], dist_ctx: DistContext, source: str) -> None:
    """Put back this rank's random generators from ``checkpoint["rng"]`` (one state per rank; with another
    process count they start fresh, and the main process says so)."""
    rng_states = checkpoint.get("rng") or []
    if len(rng_states) == dist_ctx.world_size:
        restore_rng_state(rng_states[dist_ctx.rank])
    elif dist_ctx.is_main:
        print(f"note: {source} was written by {len(rng_states)} process(es), this run has "
              f"{dist_ctx.world_size}: random states start fresh.", file=sys.stderr)


def load_task_checkpoint(path: PathLike, command: str, files: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(checkpoint, the run's options)`` of a ``splitattn <command>`` run, which must hold ``model``,
    ``classes`` and ``args``; the options ask for plain BatchNorm where the run used SyncBatchNorm (the
    same parameters, and no process group is needed to evaluate). ``files`` names the run's checkpoint
    files in the error message."""
    checkpoint = load_checkpoint_file(path)
    missing = [key for key in ("model", "classes", "args") if key not in checkpoint]
    if missing:
        raise ValueError(f"{str(path)!r} is not a `splitattn {command}` checkpoint (it lacks "
                         f"{', '.join(missing)}); pass {files}.")
    options = dict(checkpoint["args"])
    if options.get("norm") == "syncbn":
        options["norm"] = "batchnorm"
    return checkpoint, options
