"""SGD parameter groups and learning-rate schedules built from ``torch.optim.lr_scheduler`` classes.

Every schedule is stepped once per optimizer step. A resumed run does not load the saved scheduler:
it builds this run's schedule (``--epochs``/``--max-iter``/``--steps`` may have changed) and
``fast_forward``s it over the steps already taken, so it continues on the new schedule and, when
nothing changed, with the very same learning rates (the same float operations in the same order).
"""

from __future__ import annotations

import re
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    PolynomialLR,
    SequentialLR,
)


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    lr: Optional[float] = None,
    lr_groups: Sequence[Tuple[Sequence[nn.Parameter], float]] = (),
) -> List[Dict]:
    """SGD groups without weight decay on biases and norm parameters (tensors of one dimension or fewer).

    ``lr_groups``: ``(parameters, factor)`` pairs that learn at ``lr x factor`` (segmentation heads at 10x,
    PyTorch-Encoding); every other trainable parameter learns at ``lr`` (the optimizer's default when None).
    Empty groups are left out."""
    special = {id(p) for params, _ in lr_groups for p in params}
    rest = [p for p in model.parameters() if id(p) not in special]
    groups = []
    for params, factor in ((rest, 1.0), *lr_groups):
        params = [p for p in params if p.requires_grad]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                group = {"params": chosen, "weight_decay": weight_decay if decay else 0.0}
                if lr is not None:
                    group["lr"] = lr * factor
                groups.append(group)
    return groups


def warmup_cosine(optimizer: Optimizer, warmup: int, total: int) -> LRScheduler:
    """Linear warm-up to the full lr over ``warmup`` steps (factor ``(step + 1) / warmup``), then cosine
    decay to 0 at step ``total`` (the ResNeSt recipe, Bag of Tricks section 3.1)."""
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    if warmup < 1:
        return cosine
    ramp = LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=max(1, warmup - 1))
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def warmup_multistep(
    optimizer: Optimizer, steps: Sequence[int], gamma: float, warmup: int, warmup_factor: float
) -> LRScheduler:
    """``gamma ** (milestones passed)`` times a linear ramp from ``warmup_factor`` to 1 over ``warmup``
    steps (detectron2's ``WarmupMultiStepLR``, the product of the two factors)."""
    decay = MultiStepLR(optimizer, milestones=sorted(int(s) for s in steps), gamma=gamma)
    if warmup < 1:
        return decay
    return ChainedScheduler(
        [LinearLR(optimizer, start_factor=warmup_factor, total_iters=warmup), decay], optimizer=optimizer
    )


def poly(optimizer: Optimizer, total: int, power: float) -> LRScheduler:
    """``(1 - step / total) ** power`` (DeepLab's poly schedule)."""
    return PolynomialLR(optimizer, total_iters=max(1, total), power=power)


def fast_forward(scheduler: LRScheduler, steps: int) -> List[float]:
    """Step a freshly built ``scheduler`` ``steps`` times and return the learning rate of each group
    (the optimizer steps were taken by the run that wrote the checkpoint: torch's order warning is moot)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        for _ in range(steps):
            scheduler.step()
    return [group["lr"] for group in scheduler.optimizer.param_groups]
