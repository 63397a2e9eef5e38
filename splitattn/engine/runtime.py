"""The process around a training job: threads, determinism and seeds (``configure_runtime``), the ``--amp``
context (``autocast``), stop signals (``handle_stop_signals``, ``stop_requested``) and the process group
(``run_in_process_group``).

A library call borrows the process and gives it back as it found it: ``run_in_process_group`` joins the
caller's process group if there is one (and leaves it alone), creates one only for a launcher
(torchrun, srun) and destroys only that one, and restores on return every process-wide setting the run
changes (``preserved_runtime``: threads, deterministic algorithms, cuDNN flags, ``CUBLAS_WORKSPACE_CONFIG``,
the current CUDA device, the global random generators and the signal handlers).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import Callable, ContextManager, Dict, Iterator, Optional, TypeVar

import torch
import torch.distributed as dist

from ..errors import DistributedError, SplitAttnError, UsageError
from .checkpoint import capture_rng_state, restore_rng_state, seed_everything
from .distributed import DistContext, init_distributed, launch_environment

T = TypeVar("T")
AMP_DTYPES: Dict[str, Optional[torch.dtype]] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Slurm sends SIGTERM (or, with ``--signal=USR1@SECONDS``, SIGUSR1) before it kills a job; SIGINT is Ctrl-C.
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"

_stop: Optional[str] = None  # the first stop signal received inside ``handle_stop_signals``


def configure_runtime(
    dist_ctx: DistContext, seed: int, threads: Optional[int] = None, deterministic: bool = False
) -> None:
    """CPU threads (default: cores / processes on this machine), deterministic kernels or cuDNN autotuning, and
    the per-rank seed ``seed + rank``. Process-wide: call it inside ``preserved_runtime``."""
    if not threads and dist_ctx.device.type == "cpu":
        threads = max(1, (os.cpu_count() or 1) // launch_environment().local_world_size)
    if threads:
        torch.set_num_threads(int(threads))
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
    elif dist_ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(seed + dist_ctx.rank)


@contextmanager
def preserved_runtime() -> Iterator[None]:
    """Restore, on exit, the process-wide settings a training run changes: ``torch.get_num_threads()``,
    ``torch.are_deterministic_algorithms_enabled()`` with its ``warn_only``, ``torch.backends.cudnn.benchmark``
    and ``.deterministic``, the ``CUBLAS_WORKSPACE_CONFIG`` environment variable, the current CUDA device and
    the Python, NumPy, torch and CUDA random generators (a caller's seeded stream continues as if the run had
    not happened, as ``torch.random.fork_rng`` does for torch's)."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    workspace = os.environ.get(CUBLAS_WORKSPACE)
    cuda_device = torch.cuda.current_device() if torch.cuda.is_initialized() else 0  # 0: CUDA's default
    rng = capture_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        if workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = workspace
        if torch.cuda.is_initialized():
            torch.cuda.set_device(cuda_device)
        restore_rng_state(rng)


def stop_requested() -> Optional[str]:
    """The name of the stop signal received (``"SIGTERM"``, ``"SIGUSR1"``, ``"SIGINT"``) inside
    ``handle_stop_signals``, or None. The training loop reads it after each optimizer step, saves ``last.pt`` and
    raises ``splitattn.errors.TrainingInterrupted``."""
    return _stop


@contextmanager
def handle_stop_signals(announce: bool = True) -> Iterator[None]:
    """Turn SIGTERM, SIGUSR1 and SIGINT into a request to stop (``stop_requested``) instead of an immediate death,
    so the run can save ``last.pt`` at the step it reached; a SIGINT after a stop was requested (a second Ctrl-C)
    raises ``KeyboardInterrupt`` at once. The previous handlers come back on exit.

    Handlers can only be installed from the main thread: elsewhere (a caller's worker thread) this does nothing
    and the signals keep their handlers. Data-loader workers forked inside inherit the handler; in them a signal
    only sets their own copy of the flag, so they keep serving batches until the step ends.

    Args:
        announce: print one line to stderr when a signal arrives (the main process of a job; the others stay
            quiet).
    """
    global _stop
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def request_stop(signum: int, frame: object) -> None:
        global _stop
        name = signal.Signals(signum).name
        if name == "SIGINT" and _stop is not None:
            raise KeyboardInterrupt
        if _stop is None:
            _stop = name
            if announce and os.getpid() == owner:  # os.write: no buffered stream re-entered from a handler
                os.write(2, f"{name} received: saving last.pt after this step (Ctrl-C again stops at once)\n".encode())

    signals = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    previous_stop, previous = _stop, {number: signal.getsignal(number) for number in signals}
    _stop = None
    try:
        for number in signals:
            signal.signal(number, request_stop)
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _stop = previous_stop


def autocast(device: torch.device, amp: str) -> ContextManager:
    """``torch.autocast`` for ``amp`` in ``AMP_DTYPES`` (``"none"``: a no-op context).

    Raises:
        UsageError: ``amp`` is not a key of ``AMP_DTYPES``.
    """
    if amp not in AMP_DTYPES:
        raise UsageError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}.")
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def run_in_process_group(job: Callable[[DistContext], T], device: Optional[str], timeout: float = 1800.0) -> T:
    """Run ``job(context)`` in the job's process group, with stop signals handled and the process's settings
    restored afterwards (``preserved_runtime``).

    The group is the caller's when one exists (``torch.distributed`` already initialised: it is used and left
    as it is), else the launcher's (torchrun's ``RANK``/``WORLD_SIZE``, or srun's ``SLURM_*``: see
    ``distributed.launch_environment``), created here and destroyed however the job ends.

    Args:
        job: the work, given where this process sits in the job.
        device: ``"cpu"``, ``"cuda"`` or None (a GPU when one is visible).
        timeout: seconds a collective of a group created here waits for the other processes before it fails,
            so a lost peer ends the job instead of hanging it.
    """
    owned = not dist.is_initialized()
    with preserved_runtime():
        dist_ctx = init_distributed(device, timedelta(seconds=timeout))
        try:
            with handle_stop_signals(announce=dist_ctx.is_main):
                return job(dist_ctx)
        except RuntimeError as error:
            lost = lost_peer(error, timeout) if dist_ctx.distributed else None
            if lost is None:
                raise
            raise lost from error
        finally:
            if owned and dist.is_initialized():
                dist.destroy_process_group()


# What Gloo and NCCL say when the other end of a collective is gone or silent (plain RuntimeErrors for Gloo).
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "pair closure", "remote worker")
TIMED_OUT = ("Timed out waiting", "timed out connecting", "Watchdog caught collective operation timeout")


def lost_peer(error: BaseException, timeout: float) -> Optional[DistributedError]:
    """``error`` of a collective, said as what happened to the job (another process ended, or did not answer
    within ``timeout`` seconds), or None for any other error."""
    if isinstance(error, SplitAttnError):
        return None
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, dist.DistError) or any(word in text for word in PEER_GONE + TIMED_OUT):
        if isinstance(error, dist.DistStoreError) or any(word in text for word in TIMED_OUT):
            return DistributedError(
                f"a process of the job did not answer within the distributed timeout (dist_timeout, {timeout:g} s): "
                f"it stopped or hangs, so this one ends the job ({text})"
            )
        return DistributedError(f"another process of the job ended; see its own error above ({text})")
    return None
