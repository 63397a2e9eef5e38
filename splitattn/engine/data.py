"""Samplers and loaders of a run: training resumes at any image of a pass, evaluation sees each sample once.

Training draws the data in passes (epochs). Pass ``e`` has one global order, the same on every rank (by
default ``DistributedSampler``'s shuffle seeded by ``seed + e``). A run's place in it is the number of images
already trained, ``start``; rank ``r`` of ``W`` takes the positions ``start + r, start + r + W, ...`` in full
batches. So one optimizer step trains the next ``global batch`` positions of the order whatever the number
of processes, the batch per process or the accumulation, and a run resumed with another number of
processes or batch size trains exactly the images its pass has left (``engine.progress``).

Every sample is augmented from its own seed, a hash of (``seed``, pass, position): Python's, NumPy's and
torch's CPU generators are seeded with it around the sample's read and transform (``SeededSamples``). The
random draws therefore differ on every rank and in every data-loading worker, do not depend on
``--workers``, and a run resumed mid-pass draws for its remaining samples exactly what the uninterrupted
run draws. (timm and torchvision seed each worker once per pass instead, from a per-rank seed: the
draws then depend on which worker reads a sample and on how far its stream has run, which a resume
mid-pass cannot restore.)
"""

from __future__ import annotations

import random
import signal
from typing import Any, Callable, Iterator, Optional, Sequence, Sized, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info

from ..errors import UsageError
from .balance import WeightedSampler
from .distributed import DistContext
from .runtime import STOP_SIGNALS

MASK64 = (1 << 64) - 1


def mixed_seed(*words: int) -> int:
    """A 64-bit seed hashed from ``words`` (``numpy.random.SeedSequence``): close inputs give unrelated seeds.
    A caller tags its own uses with a distinct non-zero last word (SeedSequence ignores trailing zeros)."""
    low, high = np.random.SeedSequence([w & MASK64 for w in words]).generate_state(2, np.uint32)
    return int(low) | int(high) << 32


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of the sample at ``position`` of pass ``epoch``'s global order (the run's ``seed``)."""
    return mixed_seed(seed, epoch, position, 1)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order: every sample evaluated exactly once across ranks."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableSampler(Sampler[Tuple[int, int]]):
    """This rank's share of a pass's global order, from image ``start`` on, as ``(index, sample seed)`` pairs
    for ``SeededSamples``.

    Args:
        order: yields one pass's global order, the same on every rank; its ``set_epoch(epoch)``, if any, is
            called for each pass (``DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=s)``
            is the default of ``train_loader``; a balanced sampler fits as well).
        batch_size: images per process per micro-batch; each rank gets the same number of full batches.
        rank: this process's rank.
        world_size: processes in the job.
        seed: the run's seed, hashed into each sample's seed (``sample_seed``).
    """

    def __init__(self, order: Sampler[int], batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.order, self.batch_size, self.rank, self.world_size, self.seed = order, batch_size, rank, world_size, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw pass ``epoch`` from its image ``start`` on (the images of its order already trained)."""
        if hasattr(self.order, "set_epoch"):
            self.order.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    @property
    def pass_length(self) -> int:
        """Images in one pass of the global order."""
        assert isinstance(self.order, Sized)
        return len(self.order)

    def _end(self) -> int:
        round_size = self.batch_size * self.world_size
        return self.start + max(0, self.pass_length - self.start) // round_size * round_size

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order = list(self.order)
        for position in range(self.start + self.rank, self._end(), self.world_size):
            yield order[position], sample_seed(self.seed, self.epoch, position)

    def __len__(self) -> int:
        return (self._end() - self.start) // self.world_size


class SeededSamples(Dataset):
    """``dataset`` read by ``(index, seed)`` pairs: ``dataset[index]`` with Python's, NumPy's and torch's CPU
    generators seeded from ``seed``. In the main process (``--workers 0``) their states are put back
    afterwards, so the model's own draws (dropout, mixup) continue their stream; a worker's generators serve
    only the samples, which reseed them."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: Tuple[int, int]) -> Any:
        index, seed = item
        if get_worker_info() is not None:
            return self._seeded(index, seed)
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            return self._seeded(index, seed)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])

    def _seeded(self, index: int, seed: int) -> Any:
        random.seed(seed)
        np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
        torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's are the model's
        return self.dataset[index]


def ignore_stop_signals(worker_id: int) -> None:
    """A data-loading worker's ``worker_init_fn``: ignore SIGTERM, SIGUSR1 and SIGINT. A cluster (Slurm,
    ``kill`` of the process group) or a Ctrl-C signals every process, workers included; torch's workers would
    die of SIGTERM (and the run with them) before the training process saves ``last.pt``. The training
    process decides and shuts its workers down; they also exit when it dies."""
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def accumulation_steps(batch_size: int, global_batch: Optional[int], world_size: int) -> Tuple[int, int]:
    """``(global batch, micro-batches per optimizer step)``: ``global_batch`` images per step (None:
    ``batch_size`` x processes) are reached by gradient accumulation.

    Raises:
        UsageError: ``global_batch`` is not a whole multiple of ``batch_size`` x ``world_size``.
    """
    per_step = batch_size * world_size
    wanted = global_batch or per_step
    if wanted % per_step:
        raise UsageError(
            f"a global batch of {wanted} images is not a multiple of the batch size x processes = {per_step}; "
            "gradient accumulation needs a whole number of micro-batches."
        )
    return wanted, wanted // per_step


def train_loader(
    dataset: Dataset,
    batch_size: int,
    dist_ctx: DistContext,
    seed: int,
    workers: int,
    collate_fn: Optional[Callable] = None,
    sample_weights: Optional[Sequence[float]] = None,
) -> DataLoader:
    """Full batches of this rank's share of each pass, drawn by a ``ResumableSampler`` (``loader.sampler``)
    from a shuffle seeded by ``seed + pass`` or, with ``sample_weights`` (one per sample), from a weighted draw
    (``balance.WeightedSampler``: class-balanced or repeat-factor sampling); each sample is augmented from its
    own seed (``SeededSamples``); ``start_pass`` starts a pass."""
    order: Sampler[int] = (
        WeightedSampler(sample_weights, seed)
        if sample_weights is not None
        else DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    )
    return DataLoader(
        SeededSamples(dataset),
        batch_size=batch_size,
        sampler=ResumableSampler(order, batch_size, dist_ctx.rank, dist_ctx.world_size, seed),
        drop_last=True,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=dist_ctx.device.type == "cuda",
        generator=torch.Generator(),
        worker_init_fn=ignore_stop_signals,
    )


def start_pass(loader: DataLoader, epoch: int, start: int = 0) -> Iterator[Any]:
    """The batches of ``loader`` (from ``train_loader``) for pass ``epoch`` from its image ``start`` on. The
    workers' own seeds (every sample reseeds their generators, so only code that draws before the first
    sample would see them) come from the run's seed, the pass and the rank."""
    sampler = loader.sampler
    assert isinstance(sampler, ResumableSampler) and loader.generator is not None
    sampler.set_epoch(epoch, start)
    loader.generator.manual_seed(mixed_seed(sampler.seed, epoch, sampler.rank, 2))
    return iter(loader)


def eval_loader(
    dataset: Dataset, batch_size: int, dist_ctx: DistContext, workers: int, collate_fn: Optional[Callable] = None
) -> DataLoader:
    """Batches of this rank's ``ShardSampler`` share, in order. Its own generator seeds the workers, so an
    evaluation draws nothing from the global generators a resumed run restores; the workers ignore stop
    signals (``ignore_stop_signals``)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), dist_ctx.rank, dist_ctx.world_size),
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=dist_ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=ignore_stop_signals,
    )
