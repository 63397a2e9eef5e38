"""Run-folder and runtime helpers shared by the training commands (task-agnostic).

``resume_path`` implements the ``--resume PATH|auto`` convention (a run folder that already
holds ``last.pt`` is never overwritten silently); ``configure_runtime`` sets CPU threads,
deterministic kernels and seeds; ``autocast`` is the ``--amp`` context; ``run_in_process_group`` wraps a
job in torchrun's process group; ``restore_run_state`` loads a resumed run's state and random generators.
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, TypeVar

import torch
from torch import Tensor

from .distributed import DistContext, cleanup_distributed, init_distributed
from .options import OptionRow
from .rng import restore_rng_state, seed_everything

T = TypeVar("T")
AMP_DTYPES: Dict[str, Optional[torch.dtype]] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# The run options of the segment and detect training commands (rows of a ``utils.options`` table).
RUN_OPTIONS: List[OptionRow] = [
    (("--resume",), None, dict(metavar="PATH|auto", help="continue from a checkpoint; auto: OUTPUT/last.pt if any")),
    (("--device",), None, dict(choices=("cpu", "cuda"), help="default: cuda when available")),
    (("--amp",), "none", dict(choices=tuple(AMP_DTYPES), help="mixed precision")),
    (("--workers",), 2, dict(type=int, help="data-loading processes per training process")),
    (("--threads",), None, dict(type=int, help="torch CPU threads (default: cores / processes)")),
    (("--seed",), 0, dict(type=int)),
    (("--deterministic",), False, dict(action=argparse.BooleanOptionalAction)),
    (("--progress",), True, dict(action=argparse.BooleanOptionalAction, help="progress bar")),
    (("--tensorboard",), True, dict(action=argparse.BooleanOptionalAction, help="TensorBoard event files")),
]


@dataclass
class TrainStep:
    """What an optimizer step needs besides the model and the batch."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: str = "none"

    def apply(self, loss: Tensor) -> None:
        """Backward of ``loss`` (scaled for fp16), one optimizer step and one scheduler step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()


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


def configure_runtime(dist_ctx: DistContext, seed: int, threads: Optional[int] = None,
                      deterministic: bool = False) -> None:
    """CPU threads (default: cores / local processes), deterministic kernels or cuDNN autotuning, and the
    per-rank seed ``seed + rank``."""
    if not threads and dist_ctx.device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist_ctx.world_size))
        threads = max(1, (os.cpu_count() or 1) // local_world)
    if threads:
        torch.set_num_threads(int(threads))
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif dist_ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(seed + dist_ctx.rank)


def autocast(device: torch.device, amp: str) -> ContextManager:
    """``torch.autocast`` for ``amp`` in ``AMP_DTYPES`` (``"none"``: a no-op context)."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"--amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}.")
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def run_in_process_group(job: Callable[[Dict[str, Any], DistContext], T], options: Dict[str, Any]) -> T:
    """Join torchrun's process group (if any) on ``options["device"]``, run ``job(copy of options, context)``
    and leave the group however the job ends."""
    dist_ctx = init_distributed(options.get("device"))
    try:
        return job(dict(options), dist_ctx)
    finally:
        cleanup_distributed()


def restore_run_state(checkpoint: Dict[str, Any], parts: Dict[str, Any], dist_ctx: DistContext, source: str) -> None:
    """Load ``checkpoint[name]`` into each of ``parts`` (anything with ``load_state_dict``) and put back this
    rank's random generators from ``checkpoint["rng"]`` (one state per rank; with another process count
    they start fresh, and the main process says so)."""
    for name, part in parts.items():
        part.load_state_dict(checkpoint[name])
    rng_states = checkpoint.get("rng") or []
    if len(rng_states) == dist_ctx.world_size:
        restore_rng_state(rng_states[dist_ctx.rank])
    elif dist_ctx.is_main:
        print(f"note: {source} was written by {len(rng_states)} process(es), this run has "
              f"{dist_ctx.world_size}: random states start fresh.", file=sys.stderr)
