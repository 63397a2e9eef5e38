"""An exponential moving average (EMA) of a model's weights: float32, warmed up, optionally fitted to the run.

After optimizer step ``n`` (1, 2, ...) every floating parameter and buffer (BatchNorm statistics included,
as timm's ``ModelEmaV3``) becomes ``ema = decay_n x ema + (1 - decay_n) x model``, in float32 whatever the
model's dtype (``torch._foreach_lerp_``); integer buffers are copied. No step reads a value back to the
host: the update count is a Python integer.

- ``decay_n`` without warm-up: 0 at the first update (a copy), then ``decay``.
- with warm-up (timm's ``ModelEmaV3(use_warmup=True, warmup_gamma=1, warmup_power=3/4)``, after
  @crowsonkb): ``min(decay, 1 - n ** -0.75)`` for ``n >= 2`` (0.82 at step 10, 0.968 at 100, 0.9944 at
  1,000, 0.9990 at 10,000), so the average follows the model closely while it changes fast and a short run
  does not end with weights averaged over a horizon longer than itself.
- ``adjusted_decay`` (torchvision's ``references/classification``, after pycls): ``--ema-decay`` read as
  the decay for one image of one epoch, ``1 - min(1, (1 - decay) x global batch / epochs)`` per step, so the
  averaging horizon stays the same fraction of the run whatever the batch, processes and epochs.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn

WARMUP_POWER = 0.75  # timm's choice for runs shorter than a million steps


def adjusted_decay(decay: float, global_batch: int, epochs: float) -> float:
    """The per-step decay of torchvision's ``references/classification`` for an EMA updated after every step:
    ``alpha = min(1, (1 - decay) x adjust)`` with ``adjust = global_batch x 1 / epochs``, decay ``1 - alpha``.

    Args:
        decay: the decay per image and epoch (torchvision's default ``--model-ema-decay`` is 0.99998).
        global_batch: images per optimizer step (torchvision's world size x batch size).
        epochs: the run's length in epochs.
    """
    return 1.0 - min(1.0, (1.0 - decay) * global_batch / epochs)


class ModelEma(nn.Module):
    """The EMA of ``model`` (see the module's text); ``module`` holds the averaged weights, in float32.

    Its ``state_dict`` is ``module.``-prefixed weights plus ``n_averaged`` (the update count), the layout of
    ``torch.optim.swa_utils.AveragedModel`` that checkpoints already hold.

    Args:
        model: the model being trained (not a DDP or compiled wrapper); the EMA starts as its copy.
        decay: the per-step decay once warmed up, in [0, 1].
        warmup: ramp the decay up as ``1 - n ** -0.75`` (timm's ``ModelEmaV3`` warm-up).

    Raises:
        ValueError: ``decay`` outside [0, 1].
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}.")
        self.module = copy.deepcopy(model).to(torch.float32).eval().requires_grad_(False)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self._source = list(model.state_dict().values())  # views of the live tensors, updated in place
        self._target = list(self.module.state_dict().values())

    def decay_at(self, n: int) -> float:
        """The decay of update ``n`` (1-based)."""
        if n <= 1:
            return 0.0
        return min(self.decay, 1.0 - n**-WARMUP_POWER) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into the average (after an optimizer step)."""
        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        floats = [(t, s) for t, s in zip(self._target, self._source) if t.is_floating_point()]
        if floats:
            targets, sources = zip(*floats)
            torch._foreach_lerp_(list(targets), [s.to(torch.float32) for s in sources], weight)
        for target, source in zip(self._target, self._source):
            if not target.is_floating_point():
                target.copy_(source)
        self.n_averaged.fill_(self.updates)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load an EMA state (``module.*`` and ``n_averaged``) and continue its update count."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.updates = int(self.n_averaged)
        return result
