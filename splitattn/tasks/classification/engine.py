"""One training epoch and one evaluation pass, readable top to bottom.

Both work in a single process and under torchrun: sums are all-reduced across ranks so
every rank reports the same global numbers.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Sampler

from ...data import mixup_batch
from ...utils.distributed import all_reduce_sum


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order: every sample evaluated exactly once across ranks."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy with per-class target probabilities (label smoothing, mixup): mean over the batch."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def accuracy_counts(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> List[int]:
    """How many of ``labels`` are among the top-k ``logits`` for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


@dataclass
class StepContext:
    """What a training epoch needs besides the model and the data."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    num_classes: int
    accum_steps: int = 1
    steps_per_epoch: int = 0
    mixup_alpha: float = 0.0
    label_smoothing: float = 0.0
    autocast_dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    ema: Optional[nn.Module] = None
    on_step: Optional[Callable[[int], None]] = None  # called with the global step as each step's first forward starts
    bad_paths: List[str] = field(default_factory=list)


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _to_device(images: Tensor, labels: Tensor, ctx: StepContext):
    memory_format = torch.channels_last if ctx.channels_last else torch.contiguous_format
    images = images.to(ctx.device, non_blocking=True, memory_format=memory_format)
    return images, labels.to(ctx.device, non_blocking=True)


def _all_finite(loss: Tensor) -> bool:
    flag = torch.isfinite(loss.detach()).all().to(torch.float32).reshape(1)
    if dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def train_one_epoch(
    model: nn.Module, loader: Iterable, ctx: StepContext, epoch: int, global_step: int, progress=None
) -> Dict[str, float]:
    """Train for ``ctx.steps_per_epoch`` optimizer steps of ``ctx.accum_steps`` micro-batches each.

    Returns global (all-rank) ``loss``, ``top1`` (against each sample's dominant label),
    ``images_per_sec``, ``images`` and ``steps``. Raises ``NonFiniteLossError`` before the
    optimizer step that a NaN/inf loss would have poisoned.
    """
    model.train()
    ctx.optimizer.zero_grad(set_to_none=True)
    loss_sum, correct, seen = 0.0, 0, 0
    micro_batches = ctx.steps_per_epoch * ctx.accum_steps
    start = time.perf_counter()
    for index, (images, labels, bad) in enumerate(loader):
        if index >= micro_batches:
            break
        ctx.bad_paths.extend(bad)
        if ctx.on_step is not None and index % ctx.accum_steps == 0:
            ctx.on_step(global_step)
        images, labels = _to_device(images, labels, ctx)
        inputs, targets = mixup_batch(images, labels, ctx.num_classes, ctx.mixup_alpha, ctx.label_smoothing)
        last_micro = (index + 1) % ctx.accum_steps == 0
        sync = model.no_sync() if (not last_micro and hasattr(model, "no_sync")) else nullcontext()
        with sync:
            with _autocast(ctx.device, ctx.autocast_dtype):
                logits = model(inputs)
            loss = soft_cross_entropy(logits, targets)
            if not _all_finite(loss):
                raise NonFiniteLossError(
                    f"the training loss became {loss.item()} at epoch {epoch + 1}, step {global_step + 1}; "
                    "the run stopped and the last checkpoint is intact. Lower --lr, add warm-up epochs "
                    "(--warmup-epochs) or train without --amp fp16."
                )
            ctx.scaler.scale(loss / ctx.accum_steps).backward()
        if last_micro:
            ctx.scaler.step(ctx.optimizer)
            ctx.scaler.update()
            ctx.optimizer.zero_grad(set_to_none=True)
            ctx.scheduler.step()
            if ctx.ema is not None:
                ctx.ema.update_parameters(model.module if hasattr(model, "module") else model)
            global_step += 1
        batch = labels.shape[0]
        loss_sum += loss.item() * batch
        correct += int((logits.argmax(1) == targets.argmax(1)).sum())
        seen += batch
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress.update(1)
            progress.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                                 img_s=f"{seen / max(elapsed, 1e-9):.0f}", refresh=False)
    elapsed = time.perf_counter() - start
    loss_sum, correct, seen, elapsed_total = all_reduce_sum([loss_sum, correct, seen, elapsed], ctx.device)
    world = dist.get_world_size() if dist.is_initialized() else 1
    return {
        "loss": loss_sum / max(seen, 1),
        "top1": 100.0 * correct / max(seen, 1),
        "images": int(seen),
        "images_per_sec": seen / max(elapsed_total / world, 1e-9),
        "steps": ctx.steps_per_epoch,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable, device: torch.device, autocast_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False, progress=None,
) -> Dict[str, float]:
    """Global ``loss``, ``top1``, ``top5`` (in %), ``images`` and ``bad_images`` over ``loader``."""
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, top1, top5, seen, bad_count = 0.0, 0, 0, 0, 0
    for images, labels, bad in loader:
        bad_count += len(bad)
        if progress is not None:
            progress.update(1)
        if labels.numel() == 0:
            continue
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with _autocast(device, autocast_dtype):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        hits1, hits5 = accuracy_counts(logits, labels)
        top1, top5, seen = top1 + hits1, top5 + hits5, seen + labels.shape[0]
    loss_sum, top1, top5, seen, bad_count = all_reduce_sum([loss_sum, top1, top5, seen, bad_count], device)
    if seen == 0:
        return {"loss": math.nan, "top1": math.nan, "top5": math.nan, "images": 0, "bad_images": int(bad_count)}
    return {"loss": loss_sum / seen, "top1": 100.0 * top1 / seen, "top5": 100.0 * top5 / seen,
            "images": int(seen), "bad_images": int(bad_count)}
