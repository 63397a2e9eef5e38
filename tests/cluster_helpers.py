"""Launching tiny training jobs the way clusters do (torchrun, srun, two launchers), and killing their workers.

Used by tests/test_clusters.py and benchmarks/elastic_restart.py (the repetitions of the elastic restart).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .train_helpers import REPO, TINY_MODEL, child_env

EPOCHS = 3


# Every random consumer on (crops and flips in 2 loader workers, mixup, DropBlock), deterministic, on CPUs.
RUN_OPTIONS = (
    "--norm groupnorm --batch-size 4 --lr 0.01 --warmup-epochs 1 --mixup 0.2 --drop-block 0.1 --rrc-scale 0.5 1 "
    "--workers 2 --seed 5 --deterministic --threads 1 --no-progress --no-tensorboard --device cpu"
).split()


def train_args(data: Path, output: Path, epochs: int = EPOCHS) -> List[str]:
    """A tiny deterministic classification run (``RUN_OPTIONS``), checkpointed every epoch: ``train ...`` without
    the launcher."""
    return ["train", "--data", str(data), "--output", str(output), *TINY_MODEL, *RUN_OPTIONS, "--epochs", str(epochs)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(*launcher: str) -> List[str]:
    """``python -m torch.distributed.run LAUNCHER... -m splitattn``."""
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "splitattn"]


def weights(run: Path) -> Dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]


def same_weights(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def launcher_env(threads: int = 1, code: Path = REPO) -> Dict[str, str]:
    """``child_env`` without any launcher variable of the test's own process (torchrun's, Slurm's); ``code``: the
    checkout whose splitattn runs."""
    env = child_env(threads)
    env["PYTHONPATH"] = str(code)
    for key in list(env):
        if key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            del env[key]
        elif key.startswith(("SLURM_", "TORCHELASTIC_")):
            del env[key]
    env["PYTHONFAULTHANDLER"] = "1"  # a hung worker sent SIGABRT prints every thread's stack
    return env


def workers_of(agent: int) -> Dict[int, int]:
    """``{rank: pid}`` of the training processes torchrun's agent ``agent`` runs now (read from /proc)."""
    found = {}
    for child in Path(f"/proc/{agent}/task/{agent}/children").read_text().split():
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        variables = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if b"RANK" in variables:
            found[int(variables[b"RANK"])] = int(child)
    return found


@dataclass
class Outcome:
    returncode: Optional[int]  # None: still running at the deadline (killed then)
    output: str
    seconds: float


def start(command: List[str], log: Path, code: Path = REPO, cwd: Optional[Path] = None) -> subprocess.Popen:
    """``command`` run in ``cwd`` (default: the checkout ``code``, whose splitattn ``python -m splitattn`` then
    imports) with ``launcher_env``, in its own session (so all its processes can be signalled), its output into
    ``log``."""
    with open(log, "w") as handle:
        return subprocess.Popen(
            command,
            cwd=cwd or code,
            env=launcher_env(code=code),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def descendants(pid: int) -> List[int]:
    """The processes below ``pid`` (torchrun starts its workers in sessions of their own)."""
    found: List[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def finish(process: subprocess.Popen, log: Path, started: float, deadline: float) -> Outcome:
    """Wait for ``process`` (from ``start``) until ``deadline`` seconds after ``started``; past it, it and every
    process below it get SIGABRT (Python's faulthandler prints every thread's stack into ``log``), then
    SIGKILL."""
    try:
        process.wait(timeout=max(1.0, started + deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGABRT, signal.SIGKILL):
            for pid in [*reversed(descendants(process.pid)), process.pid]:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(3)
        process.wait()
        return Outcome(None, log.read_text(errors="replace"), time.monotonic() - started)
    return Outcome(process.returncode, log.read_text(errors="replace"), time.monotonic() - started)


def kill_worker_after_first_checkpoint(
    command: List[str],
    output: Path,
    rank: int,
    deadline: float = 900.0,
    sig: int = signal.SIGKILL,
    code: Path = REPO,
    delay: float = 0.0,
) -> Outcome:
    """Start ``command`` (a torchrun launcher line), wait for ``output/last.pt``, send ``sig`` to the worker of
    ``rank`` ``delay`` seconds later and wait for the launcher to end (at most ``deadline`` seconds in all); its
    output is kept in ``OUTPUT.log``."""
    log = output.with_name(output.name + ".log")
    started = time.monotonic()
    process = start(command, log, code)
    while process.poll() is None and not (output / "last.pt").exists() and time.monotonic() - started < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    victim = workers_of(process.pid).get(rank) if process.poll() is None else None
    if victim is None:
        outcome = finish(process, log, started, deadline)
        return Outcome(outcome.returncode, "no worker to kill\n" + outcome.output, outcome.seconds)
    os.kill(victim, sig)
    return finish(process, log, started, deadline)
