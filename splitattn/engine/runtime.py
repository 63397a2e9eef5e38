"""Runtime setup shared by the training commands: ``configure_runtime`` sets CPU threads, deterministic
kernels and seeds; ``autocast`` is the ``--amp`` context; stop signals become a request the loop reads
(``handle_stop_signals``, ``stop_requested``); ``run_in_process_group`` wraps a job in torchrun's process
group with the stop signals handled.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Dict, Iterator, Optional, TypeVar

import torch

from ..errors import UsageError
from .checkpoint import seed_everything
from .distributed import DistContext, cleanup_distributed, init_distributed

T = TypeVar("T")
AMP_DTYPES: Dict[str, Optional[torch.dtype]] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Slurm sends SIGTERM (or, with ``--signal=USR1@SECONDS``, SIGUSR1) before it kills a job; SIGINT is Ctrl-C.
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

_stop: Optional[str] = None  # the first stop signal received inside ``handle_stop_signals``


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


def stop_requested() -> Optional[str]:
    """The name of the stop signal received inside ``handle_stop_signals`` (``"SIGTERM"``, ``"SIGUSR1"``,
    ``"SIGINT"``), or None."""
    return _stop


@contextmanager
def handle_stop_signals() -> Iterator[None]:
    """Turn SIGTERM, SIGUSR1 and SIGINT into a request to stop (``stop_requested``) instead of an immediate death;
    the previous handlers come back on exit. Outside the main thread (where handlers cannot be set) it does
    nothing."""
    global _stop
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: object) -> None:
        global _stop
        _stop = _stop or signal.Signals(signum).name

    numbers = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    previous, _stop = {number: signal.getsignal(number) for number in numbers}, None
    try:
        for number in numbers:
            signal.signal(number, request_stop)
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _stop = None


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
    visible), run ``job(context)`` with the stop signals handled and leave the group however the job ends."""
    dist_ctx = init_distributed(device)
    try:
        with handle_stop_signals():
            return job(dist_ctx)
    finally:
        cleanup_distributed()
