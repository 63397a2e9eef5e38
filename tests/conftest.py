"""Shared test helpers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def randomize_state_dict(state: dict, seed: int = 0) -> dict:
    """Fill every float tensor of a ResNet-style state dict with well-scaled random values.

    Conv/linear weights get He-scaled normals, norm gammas U(0.5, 1), the last gamma of each
    block U(0, 0.2) (so deep residual stacks stay finite), betas and running means N(0, 0.1),
    running variances U(0.5, 1). Returns a new dict; the input is not modified.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value.clone()
            continue
        shape = value.shape
        if value.dim() >= 2:
            fan_in = value[0].numel()
            new = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
        elif key.endswith("running_var"):
            new = torch.rand(shape, generator=gen) * 0.5 + 0.5
        elif key.endswith("bn3.weight"):
            new = torch.rand(shape, generator=gen) * 0.2
        elif key.endswith(".weight"):
            new = torch.rand(shape, generator=gen) * 0.5 + 0.5
        else:
            new = torch.randn(shape, generator=gen) * 0.1
        out[key] = new.to(value.dtype)
    return out


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (0 when both are all zeros)."""
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    return diff / scale if scale > 0 else diff


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (detection steps on a shared 2-core machine are much faster so)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
