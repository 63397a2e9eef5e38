"""Samplers and loaders of a run: the training order resumes mid-pass, evaluation sees each sample once.

The training data is drawn in passes (epochs): pass ``e`` is ``DistributedSampler``'s shuffled shard
for epoch ``e`` (seeded by ``--seed``), and the loader's worker seeds come from a generator seeded per
pass, so a run resumed at any step sees the same remaining batches as an uninterrupted one.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import UsageError
from .balance import WeightedShardSampler
from .distributed import DistContext


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order: every sample evaluated exactly once across ranks."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableSampler(Sampler[int]):
    """``DistributedSampler``'s shuffled shard of pass ``epoch``, from batch ``start_batch`` on: a run
    resumed mid-pass sees the same remaining samples, in the same order, as an uninterrupted one."""

    def __init__(self, sampler: Union[DistributedSampler, WeightedShardSampler], batch_size: int) -> None:
        self.sampler, self.batch_size, self.start_batch = sampler, batch_size, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return len(self.sampler) - self.start_batch * self.batch_size


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
    """Full batches of this rank's shuffled shard, drawn by a ``ResumableSampler`` (``loader.sampler``); with
    ``sample_weights`` (one per sample) each pass draws the samples with those weights instead
    (``balance.WeightedShardSampler``: class-balanced or repeat-factor sampling)."""
    if sample_weights is not None:
        shard: Union[DistributedSampler, WeightedShardSampler] = WeightedShardSampler(
            sample_weights, dist_ctx.world_size, dist_ctx.rank, seed
        )
    else:
        shard = DistributedSampler(dataset, dist_ctx.world_size, dist_ctx.rank, shuffle=True, seed=seed, drop_last=True)
    sampler = ResumableSampler(shard, batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=dist_ctx.device.type == "cuda",
        generator=torch.Generator(),
    )


def eval_loader(
    dataset: Dataset, batch_size: int, dist_ctx: DistContext, workers: int, collate_fn: Optional[Callable] = None
) -> DataLoader:
    """Batches of this rank's ``ShardSampler`` share, in order. Its own generator seeds the workers, so an
    evaluation draws nothing from the global generators a resumed run restores."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), dist_ctx.rank, dist_ctx.world_size),
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=dist_ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
