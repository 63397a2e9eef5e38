"""Fine-tuning parts the three tasks share: a ``--pretrained`` run's architecture carried into the new run's
options, and the learning-rate factor of every parameter (``--layer-decay`` composed with a task's head
multiplier).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Optional, TypeVar

from torch import nn

from ..config.schemas import RunConfig
from ..engine.optim import layer_decay_scales
from ..optimize.training import resnest_layer_ids
from ..weights.loading import read_pretrained

C = TypeVar("C", bound=RunConfig)


def with_pretrained_architecture(config: C) -> C:
    """``config`` with the model options (``model_kwargs``: widths, ``in_chans`` ...) of the training run its
    ``pretrained`` file is, where the config sets none of its own, so the new run builds the network those
    weights fit and stores it in its checkpoints' ``args``; ``config`` itself for any other ``pretrained``.

    The run's ``norm`` is not taken: ``--norm`` always has a value (a BatchNorm run fine-tuned with
    ``--norm frozenbn`` is usual); a norm whose parameters differ is reported when the weights load."""
    if not isinstance(config.pretrained, str):
        return config
    run = read_pretrained(config.model_name, config.pretrained)[2]
    if run is None:
        return config
    inherited = {key: value for key, value in run.overrides.items() if key != "norm_layer"}
    merged = {**inherited, **config.model_kwargs}
    return config if merged == config.model_kwargs else dataclasses.replace(config, model_kwargs=merged)


def learning_rate_scales(
    model: nn.Module,
    backbone: nn.Module,
    prefix: str,
    layer_decay: Optional[float],
    heads: Iterable[nn.Parameter] = (),
    head_lr_mult: float = 1.0,
) -> Dict[str, float]:
    """The learning-rate factor of each parameter name of ``model`` (``engine.optim.parameter_groups``).

    Args:
        model: the whole model.
        backbone: its ResNeSt, at ``prefix`` in ``model``'s parameter names.
        layer_decay: BEiT/timm layer-wise decay (``engine.optim.layer_decay_scales`` over
            ``optimize.training.resnest_layer_ids``: stem and blocks of the backbone decayed, every other
            parameter (classifier, FPN, RPN, RoI heads, segmentation heads) at the full rate); None: off.
        heads: parameters that learn at ``head_lr_mult`` times the rate (segmentation's 10x heads), multiplied
            with their layer factor (1 for a head).
    """
    scales: Dict[str, float] = {}
    if layer_decay is not None:
        ids, depth = resnest_layer_ids(backbone, prefix)
        scales.update(layer_decay_scales(ids, layer_decay, depth))
    head_ids = {id(p) for p in heads}
    for name, parameter in model.named_parameters():
        if id(parameter) in head_ids:
            scales[name] = scales.get(name, 1.0) * head_lr_mult
    return scales
