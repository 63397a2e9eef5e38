"""Runtime setup shared by the training commands: ``configure_runtime`` sets CPU threads, deterministic
kernels and seeds; ``autocast`` is the ``--amp`` context; ``run_in_process_group`` wraps a job in
torchrun's process group.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Callable, ContextManager, Dict, Optional, TypeVar

import torch

from ..errors import UsageError
from .checkpoint import seed_everything
from .distributed import DistContext, cleanup_distributed, init_distributed

T = TypeVar("T")
AMP_DTYPES: Dict[str, Optional[torch.dtype]] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def configure_runtime(
    dist_ctx: DistContext, seed: int, threads: Optional[int] = None, deterministic: bool = False
) -> None:
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
    """``torch.autocast`` for ``amp`` in ``AMP_DTYPES`` (``"none"``: a no-op context).

    Raises:
        UsageError: ``amp`` is not a key of ``AMP_DTYPES``.
    """
    if amp not in AMP_DTYPES:
        raise UsageError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}.")
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def run_in_process_group(job: Callable[[DistContext], T], device: Optional[str]) -> T:
    """Join torchrun's process group (if any) on ``device`` (``"cpu"``, ``"cuda"`` or None: a GPU when one is
    visible), run ``job(context)`` and leave the group however the job ends."""
    dist_ctx = init_distributed(device)
    try:
        return job(dist_ctx)
    finally:
        cleanup_distributed()
