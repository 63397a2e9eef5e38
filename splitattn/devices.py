"""The device a command runs on (``--device``): one rule for every task, the engine and the benchmarks."""

from __future__ import annotations

from typing import Optional

import torch

from .errors import DeviceError


def pick_device(name: Optional[str]) -> torch.device:
    """The ``torch.device`` for ``--device``.

    Args:
        name: ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``, or ``None`` for a GPU when one is visible, else the CPU.

    Returns:
        The device.

    Raises:
        DeviceError: a CUDA device was asked for but no GPU is visible.
    """
    if name is not None and torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} was asked for but no GPU is visible; use --device cpu.")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
