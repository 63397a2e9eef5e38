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

from ..errors import CheckpointError, ConfigError
from ..weights.files import atomic_path
from ..weights.loading import read_checkpoint
from .distributed import DistContext

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

    Raises ``FileNotFoundError`` for a missing file, ``errors.WeightsError`` for a damaged,
    foreign or unsafe one, and ``errors.CheckpointError`` when the file holds no dict."""
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


def run_folder(
    output: Optional[str], default: Path, resume: Optional[str] = None, exist_ok: bool = False, name: str = "last.pt"
) -> Tuple[Path, Optional[Path]]:
    """``(run folder, checkpoint to continue from or None)``.

    Without ``output`` a fresh run goes to ``default`` or, when that already holds a run, to the first
    free ``default-2``, ``default-3`` ...; ``--resume`` without ``output`` continues ``default``. An
    explicit ``output`` that holds a run (``name``) is refused unless resumed (``--resume auto``) or
    overwritten (``--exist-ok``). ``resume``: a checkpoint path, ``"auto"`` (``folder/name`` if any) or None.
    """
    folder = Path(output) if output else default
    if not output and not resume:
        index = 1
        while (folder / name).exists() or (folder / "log.jsonl").exists():
            index += 1
            folder = default.with_name(f"{default.name}-{index}")
    last = folder / name
    if resume == "auto":
        return folder, (last if last.exists() else None)
    if resume:
        if not Path(resume).is_file():
            raise FileNotFoundError(f"--resume {resume!r}: no such checkpoint; use a path or 'auto'.")
        return folder, Path(resume)
    if last.exists() and not exist_ok:
        raise ConfigError(
            f"{str(folder)!r} already holds a run ({name}); continue it with --resume auto, "
            "replace it with --exist-ok, or pass another --output."
        )
    return folder, None


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


# The task a checkpoint's ``task`` entry names -> the command group that trains and uses it.
TASK_COMMANDS = {"classification": "classify", "detection": "detect", "segmentation": "segment"}


def checkpoint_task(checkpoint: Dict[str, Any]) -> Optional[str]:
    """The task of a run checkpoint (its ``task`` entry; recognised by its entries in checkpoints written
    before that entry existed), or None for bare weights (a state dict or another project's file)."""
    if checkpoint.get("task") in TASK_COMMANDS:
        return checkpoint["task"]
    if "args" not in checkpoint or "model" not in checkpoint:
        return None
    if "contiguous_to_coco" in checkpoint:
        return "detection"
    return "segmentation" if "best_miou" in checkpoint else "classification"


def load_task_checkpoint(path: PathLike, task: str, action: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(checkpoint, the run's options)`` of a ``splitattn <task command> train`` run, for the command
    ``splitattn <task command> <action>``. Another task's checkpoint or bare weights are a ``ValueError``
    of one line that names the command to use. The options ask for plain BatchNorm where the run used
    SyncBatchNorm (the same parameters, and no process group is needed to evaluate)."""
    checkpoint = load_checkpoint_file(path)
    found, command = checkpoint_task(checkpoint), TASK_COMMANDS[task]
    if found is None:
        raise CheckpointError(
            f"{str(path)!r} holds bare weights, not a `splitattn {command} train` checkpoint; for a "
            f"classifier's weights use `splitattn classify {action} --model NAME --weights {path}`."
        )
    if found != task:
        raise CheckpointError(
            f"{str(path)!r} is a {found} checkpoint (`splitattn {TASK_COMMANDS[found]} train`); use "
            f"`splitattn {TASK_COMMANDS[found]} {action} --weights {path}`."
        )
    options = dict(checkpoint["args"])
    if options.get("norm") == "syncbn":
        options["norm"] = "batchnorm"
    return checkpoint, options
