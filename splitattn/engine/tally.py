"""What the training processes keep on the device between check points, and what they agree on there.

A training step reads nothing back to the host (timm's and torchvision's loops do the same): the loss
values of each micro-batch are summed on the device, and whether a loss was NaN or infinite is a device
flag too (``Tally.add``). At a check point (a log record, a checkpoint, an evaluation, and under torchrun
every ``AGREE_EVERY`` steps so that the processes agree on a stop signal) one all-reduce of a few
numbers and one read to the host (``Tally.agree``) settle three things for every process at once:

- a non-finite loss since the last check point stops the run (``NonFiniteLossError``) before anything is
  saved or evaluated, so no checkpoint ever holds a poisoned step (the steps since the last checkpoint
  are lost, as with any failure);
- a stop signal received by any process stops all of them after the same step;
- at a log point, the loss sums of all processes.

``distribute_bn`` makes the BatchNorm statistics of all processes equal before a checkpoint or an
evaluation (timm's ``distribute_bn``), so the metric logged is the one of the weights saved.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import NonFiniteLossError
from .distributed import all_gather_object

AGREE_EVERY = 10  # steps between the processes' agreements on a stop signal under torchrun
DIST_BN = ("broadcast", "reduce")  # rank 0's BatchNorm statistics for all, or their mean

Number = Union[int, float]


class Tally:
    """Per-micro-batch loss values summed on ``device`` (``add``) and settled at check points (``agree``).

    Args:
        device: the device of the losses.
        distributed: whether processes of a job must agree (a ``torch.distributed`` group is initialised).
        where: words for the optimizer step (1-based) at which a loss was first non-finite, for the error.
    """

    def __init__(self, device: torch.device, distributed: bool, where: Callable[[int], str]) -> None:
        self.device, self.distributed, self.where = device, distributed, where
        self.sums: Dict[str, Union[Tensor, Number]] = {}
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)

    def add(self, loss: Tensor, values: Dict[str, Union[Tensor, Number]], step: int) -> None:
        """Add a micro-batch's ``values`` (device tensors or host numbers) to the sums and note whether
        ``loss`` is finite, at optimizer step ``step`` (0-based), without reading anything back."""
        finite = torch.isfinite(loss.detach()).all() | (self.bad_step >= 0)
        self.bad_step = torch.where(finite, self.bad_step, step)
        for key, value in values.items():
            value = value.detach().to(torch.float64) if isinstance(value, Tensor) else value
            self.sums[key] = self.sums[key] + value if key in self.sums else value

    def agree(self, stop: bool, with_sums: bool) -> Tuple[bool, Optional[Dict[str, float]]]:
        """Settle the check point: ``(whether any process asked to stop, the loss sums over all processes
        when ``with_sums``, which then start again from zero)``.

        Args:
            stop: whether this process received a stop signal.
            with_sums: a log point: reduce and return the sums.

        Raises:
            NonFiniteLossError: a loss of any process was NaN or infinite since the last check point.
        """
        keys = sorted(self.sums) if with_sums else []
        parts: List[Any] = [(self.bad_step >= 0), float(stop)] + [self.sums[key] for key in keys]
        vector = torch.stack([torch.as_tensor(p, dtype=torch.float64, device=self.device).reshape(()) for p in parts])
        if self.distributed:
            dist.all_reduce(vector)
        numbers = vector.tolist()
        if numbers[0] > 0:
            steps = all_gather_object(int(self.bad_step)) if self.distributed else [int(self.bad_step)]
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite at {self.where(min(s for s in steps if s >= 0) + 1)}; "
                "the run stopped and the last checkpoint is intact. Lower the learning rate, lengthen the "
                "warm-up or train without fp16 mixed precision."
            )
        if with_sums:
            self.sums = {}
            return numbers[1] > 0, dict(zip(keys, numbers[2:]))
        return numbers[1] > 0, None


@torch.no_grad()
def distribute_bn(model: nn.Module, mode: str) -> None:
    """Make the BatchNorm statistics (``running_mean``, ``running_var``) of ``model`` equal on every process
    of the group: rank 0's (``"broadcast"``) or their mean (``"reduce"``), as timm's ``distribute_bn``.

    Raises:
        ValueError: ``mode`` is not one of ``DIST_BN``.
    """
    if mode not in DIST_BN:
        raise ValueError(f"dist_bn must be one of {', '.join(DIST_BN)}, got {mode!r}.")
    if not dist.is_initialized():
        return
    buffers = [b for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))]
    for dtype in sorted({b.dtype for b in buffers}, key=str):  # one collective per dtype
        group = [b for b in buffers if b.dtype == dtype]
        flat = torch.cat([b.reshape(-1) for b in group])
        if mode == "broadcast":
            dist.broadcast(flat, 0)
        else:
            dist.all_reduce(flat)
            flat.div_(dist.get_world_size())
        offset = 0
        for buffer in group:
            buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()
