"""Gradient checkpointing for ``nn.Sequential`` stages without changing parameter names."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class CheckpointedSequential(nn.Sequential):
    """``nn.Sequential`` that recomputes each child's activations in the backward pass while training.

    Trades compute for memory. State-dict keys are those of the plain ``nn.Sequential``.
    BatchNorm running statistics see each batch twice (forward and recompute), the usual
    cost of checkpointing BN networks.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self:
            if self.training and torch.is_grad_enabled():
                x = checkpoint(module, x, use_reentrant=False)
            else:
                x = module(x)
        return x


def enable_gradient_checkpointing(model: nn.Module, stage_names: Iterable[str]) -> nn.Module:
    """Replace the named ``nn.Sequential`` children of ``model`` by ``CheckpointedSequential`` ones."""
    for name in stage_names:
        stage = getattr(model, name)
        if not isinstance(stage, nn.Sequential):
            raise TypeError(
                f"gradient checkpointing needs {name!r} to be an nn.Sequential, got {type(stage).__name__}."
            )
        setattr(model, name, CheckpointedSequential(*stage))
    return model
