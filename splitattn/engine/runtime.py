"""Runtime setup shared by the training commands: ``configure_runtime`` sets CPU threads, deterministic
kernels and seeds; ``autocast`` is the ``--amp`` context; ``run_in_process_group`` wraps a job in
torchrun's process group.
"""
from __future__ import annotations

import argparse
import os
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Dict, List, Optional, TypeVar

import torch

from ..utils.distributed import DistContext, cleanup_distributed, init_distributed
from ..utils.options import OptionRow
from .checkpoint import seed_everything

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
