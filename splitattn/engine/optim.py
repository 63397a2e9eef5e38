"""Parameter groups (weight-decay rules, learning-rate factors, layer-wise decay), the optimizers (SGD, AdamW)
and learning-rate schedules built from ``torch.optim.lr_scheduler`` classes.

Every schedule is stepped once per optimizer step. A resumed run does not load the saved scheduler:
it builds this run's schedule (``--epochs``/``--max-iter``/``--steps`` may have changed) and
``fast_forward``s it over the steps already taken, so it continues on the new schedule and, when
nothing changed, with the very same learning rates (the same float operations in the same order).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import nn
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    PolynomialLR,
    SequentialLR,
)

from ..errors import UsageError

OPTIMIZERS = ("sgd", "adamw")


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    lr: Optional[float] = None,
    lr_scales: Optional[Mapping[str, float]] = None,
) -> List[Dict[str, Any]]:
    """Optimizer groups of the trainable parameters: no weight decay on biases and norm parameters (tensors of
    one dimension or fewer, timm's ``weight_decay_exclude_1d``), and a learning rate per group.

    Args:
        model: the model; frozen parameters (``requires_grad=False``) are left out.
        weight_decay: the decay of the other (conv and linear) weights.
        lr: the peak learning rate; each group gets ``lr x lr_scale`` (None: the optimizer's ``lr`` argument,
            which then must be the same for every group).
        lr_scales: learning-rate factor per parameter name (``model.named_parameters()``), e.g. the heads of a
            segmenter at 10x or layer-wise decay (``layer_decay_scales``); missing names learn at 1x.

    Returns:
        One group per (factor, decay), each ``{"params", "weight_decay", "lr_scale"[, "lr"]}``: the factor 1
        first (its ``lr`` is the one the training log reports), then the larger factors before the smaller, and
        within a factor the decayed weights before the others. Empty groups are left out.
    """
    scales = lr_scales or {}
    grouped: Dict[Tuple[float, bool], List[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            grouped.setdefault((float(scales.get(name, 1.0)), parameter.ndim > 1), []).append(parameter)
    groups = []
    for scale, decay in sorted(grouped, key=lambda key: (key[0] != 1.0, -key[0], not key[1])):
        group: Dict[str, Any] = {
            "params": grouped[(scale, decay)],
            "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": scale,
        }
        if lr is not None:
            group["lr"] = lr * scale
        groups.append(group)
    return groups


def layer_decay_scales(layer_ids: Mapping[str, int], decay: float, num_layers: int) -> Dict[str, float]:
    """Layer-wise learning-rate decay (BEiT, Bao et al. 2022, section 2.4; timm's ``param_groups_layer_decay``):
    the parameter of layer ``i`` of ``num_layers`` learns at ``decay ** (num_layers - 1 - i)`` times the peak
    rate, so the last layer (the head: id ``num_layers - 1``) at 1x and every layer below it ``decay`` times
    slower than the one above.

    Args:
        layer_ids: layer id (0 = the stem) per parameter name; names left out are the heads (1x).
        decay: the factor per layer, in (0, 1].
        num_layers: the depth: the largest id + 1, the heads included.
    """
    return {name: decay ** (num_layers - 1 - layer) for name, layer in layer_ids.items()}


def create_optimizer(
    name: str,
    groups: List[Dict[str, Any]],
    lr: float,
    momentum: float,
    betas: Sequence[float],
    eps: float,
) -> Optimizer:
    """The optimizer ``name`` (``OPTIMIZERS``) over ``groups`` (``parameter_groups``; their own ``lr`` and
    ``weight_decay`` win over ``lr``).

    ``sgd``: ``torch.optim.SGD`` with ``momentum`` (Nesterov off, as the ResNeSt recipe); ``adamw``:
    ``torch.optim.AdamW`` (Loshchilov and Hutter 2019: the decay decoupled from the gradient) with ``betas``
    and ``eps``. Their state (momentum buffers; the moments and step of AdamW) is saved with every checkpoint
    and restored on resume.

    Raises:
        UsageError: an unknown ``name``.
    """
    if name == "sgd":
        return SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return AdamW(groups, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps)
    raise UsageError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")


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
