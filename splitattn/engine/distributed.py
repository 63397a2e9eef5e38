"""The process group of a training job and the collectives the engine and the tasks use.

Three ways in (``launch_environment``), tried in this order:

- **a caller's group**: ``torch.distributed`` already initialised by the program that calls ``train()``; it is
  used as it is (its backend must fit the run's device) and never destroyed;
- **torchrun** (or any launcher of PyTorch's ``env://`` protocol): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``;
- **srun** without torchrun: one process per Slurm task, read from the variables srun gives every task
  (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``, ``SLURM_STEP_TASKS_PER_NODE``,
  ``SLURM_NODEID``, ``SLURM_STEP_NODELIST``), the address of the step's first node (``MASTER_ADDR`` if set)
  and ``MASTER_PORT`` or 29500 + ``SLURM_JOB_ID`` mod 1000. As TensorFlow's ``SlurmClusterResolver``, the
  step's own task count is read, not the job's ``SLURM_NTASKS``, which an ``sbatch`` script's single shell
  also carries; timm's and torchvision's ``init_distributed_mode`` read ``SLURM_PROCID`` and ``SLURM_NTASKS``.

Without any of them everything runs in one process and the helpers below are no-ops.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, List, Mapping, Optional, TypeVar

import torch
import torch.distributed as dist

from ..devices import pick_device

T = TypeVar("T")
DEFAULT_PORT = 29500  # torchrun's default MASTER_PORT


@dataclass
class DistContext:
    """Where this process sits in the job and which device it drives."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class LaunchEnvironment:
    """What the launcher told this process (``launch_environment``)."""

    launcher: str  # "torchrun" (WORLD_SIZE set), "srun" (SLURM_* of a step of several tasks) or "none"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this machine
    init_method: Optional[str] = None  # "tcp://HOST:PORT" under srun; torchrun's processes read env://


def first_host(nodelist: str) -> str:
    """The first host name of a Slurm host list: ``"gpu[07-09,12],cpu3"`` -> ``"gpu07"``."""
    depth, end = 0, len(nodelist)
    for index, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = index
            break
    return re.sub(r"\[([^\]]*)\]", lambda match: re.split("[,-]", match.group(1))[0], nodelist[:end].strip())


def _tasks_on_node(tasks_per_node: str, node: int) -> Optional[int]:
    """Entry ``node`` of a Slurm task count list such as ``"4(x2),2"`` (4, 4, 2), or None."""
    counts: List[int] = []
    for item in filter(None, tasks_per_node.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if match is None:
            return None
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts[node] if 0 <= node < len(counts) else None


def launch_environment(environ: Optional[Mapping[str, str]] = None) -> LaunchEnvironment:
    """This process's place in the job as torchrun or srun describe it (``os.environ`` by default): torchrun's
    variables when ``WORLD_SIZE`` is set, else srun's when it started a step of several tasks,
    else a single process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return LaunchEnvironment(
            "torchrun",
            int(env.get("RANK", 0)),
            int(env.get("LOCAL_RANK", 0)),
            world,
            int(env.get("LOCAL_WORLD_SIZE", world)),
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1:
        world = int(env["SLURM_STEP_NUM_TASKS"])
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "")
        local_world = _tasks_on_node(per_node, int(env.get("SLURM_NODEID", 0))) or world
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")
        host = env.get("MASTER_ADDR") or first_host(nodes) or "127.0.0.1"
        port = int(env.get("MASTER_PORT") or DEFAULT_PORT + int(env.get("SLURM_JOB_ID", 0)) % 1000)
        return LaunchEnvironment(
            "srun",
            int(env["SLURM_PROCID"]),
            int(env.get("SLURM_LOCALID", 0)),
            world,
            local_world,
            f"tcp://{host}:{port}",
        )
    return LaunchEnvironment("none")


def init_distributed(device: Optional[str] = None, timeout: Optional[timedelta] = None) -> DistContext:
    """Join the job's process group (the caller's, or a new one for torchrun's or srun's processes: NCCL on
    GPUs, Gloo on CPUs) and pick the device. The caller destroys a group created here (``runtime.
    run_in_process_group``).

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (a GPU when one is visible); see ``devices.pick_device``.
        timeout: how long a collective of a new group waits for the others (torch's default: 30 minutes for
            Gloo, 10 for NCCL); a caller's group keeps its own.
    """
    launch = launch_environment()
    use_cuda = pick_device(device).type == "cuda"
    if dist.is_initialized():  # the caller's group: its ranks, its current device
        index = torch.cuda.current_device() if use_cuda else None
        target = torch.device("cuda", index) if use_cuda else torch.device("cpu")
        return DistContext(dist.get_rank(), launch.local_rank, dist.get_world_size(), target)
    # a task that sees fewer GPUs than tasks on its machine (srun --gpus-per-task) takes its share, as torchvision
    index = launch.local_rank % torch.cuda.device_count() if use_cuda else 0
    if use_cuda:
        torch.cuda.set_device(index)
    target = torch.device("cuda", index) if use_cuda else torch.device("cpu")
    if launch.world_size > 1:
        options: dict = {"timeout": timeout} if timeout is not None else {}
        if launch.init_method is not None:
            options.update(init_method=launch.init_method, rank=launch.rank, world_size=launch.world_size)
        elif os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            store = generation_store(launch, timeout or timedelta(minutes=30))
            options.update(store=store, rank=launch.rank, world_size=launch.world_size)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", **options)
    return DistContext(launch.rank, launch.local_rank, launch.world_size, target)


def generation_store(launch: LaunchEnvironment, timeout: timedelta) -> dist.Store:
    """A key-value store that only this generation of torchrun's workers uses, to build the process group in.

    torchrun's agent keeps one store (``MASTER_ADDR:MASTER_PORT``, ``TORCHELASTIC_USE_AGENT_STORE``) for every
    restart of the workers, and the keys a process group writes there (each rank's address) outlive the workers:
    a restarted worker can read a dead one's address and wait for it until the timeout (the hang of an elastic
    restart), or reach a socket that a killed worker's data-loader process still holds and fail when that
    process exits (pytorch/pytorch#135712 describes this reuse for NCCL). So rank 0 hosts a new store on a free
    port, and every other rank learns its address under a key no earlier generation can have written: the rank
    publishes a random token in the agent's store, rank 0 answers every token it reads there with the address
    (an old token's answer is never read), until each rank has joined the new store.

    Raises:
        torch.distributed.DistStoreError: a rank did not join, or got no answer, within ``timeout``.
    """
    host = os.environ["MASTER_ADDR"]
    prefix = f"splitattn/{os.environ.get('TORCHELASTIC_RUN_ID', '')}"
    agent = dist.TCPStore(host, int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    if launch.rank != 0:
        token = secrets.token_hex(16)
        agent.set(f"{prefix}/hello/{launch.rank}", token)
        address, port = agent.get(f"{prefix}/answer/{token}").decode().rsplit(":", 1)
        store = dist.TCPStore(address, int(port), is_master=False, timeout=timeout)
        store.set(f"joined/{launch.rank}", token)
        return store
    store = dist.TCPStore(host, 0, launch.world_size, is_master=True, timeout=timeout, wait_for_workers=False)
    waiting, answered = set(range(1, launch.world_size)), set()
    deadline = time.monotonic() + timeout.total_seconds()
    while waiting:
        for rank in sorted(waiting):
            hello = f"{prefix}/hello/{rank}"
            token = agent.get(hello).decode() if agent.check([hello]) else None
            if token is not None and token not in answered:
                agent.set(f"{prefix}/answer/{token}", f"{host}:{store.port}")
                answered.add(token)
            if store.check([f"joined/{rank}"]):
                waiting.discard(rank)
        if waiting and time.monotonic() > deadline:
            raise dist.DistStoreError(f"ranks {sorted(waiting)} did not join the process group within {timeout}.")
        time.sleep(0.05)
    return store


def all_reduce_sum(values: List[float], device: torch.device) -> List[float]:
    """Sum a list of numbers over all processes (identity in a single process)."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_object(obj: Any) -> List[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not dist.is_initialized():
        return [obj]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def decided_by_main(decide: Callable[[], T]) -> T:
    """``decide()`` run by rank 0 alone, its result handed to every process (in a single process: ``decide()``).

    For a choice every rank must make alike from files that may change meanwhile (the run folder, the checkpoint
    to resume, whether a run is finished): the other ranks never look for themselves. An exception ``decide``
    raises is raised on every rank, so none waits for a broadcast that never comes.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return decide()
    outcome: List[Any] = [None]
    if dist.get_rank() == 0:
        try:
            outcome = [(True, decide())]
        except Exception as error:  # handed on, then raised on every rank
            outcome = [(False, error)]
    dist.broadcast_object_list(outcome, src=0)
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value
