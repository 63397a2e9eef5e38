"""Crash-safe checkpoint files.

A checkpoint is first written to a temporary file in the same folder, flushed to disk,
then moved over the target with ``os.replace`` (atomic on POSIX and Windows). A run
killed mid-write, a full disk or an unpicklable object therefore never leaves a
truncated checkpoint behind: the previous file stays intact.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

PathLike = Union[str, os.PathLike]


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` that either fully replaces ``path`` or leaves it untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def load_checkpoint_file(path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint saved by ``atomic_save`` on the CPU, tensors and plain Python types only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; check the path.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise RuntimeError(
            f"could not read checkpoint {str(path)!r} ({type(error).__name__}: {error}); "
            "it is damaged or not a splitattn/PyTorch checkpoint."
        ) from error
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, expected a dict.")
    return checkpoint


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
