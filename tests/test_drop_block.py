"""DropBlock as published: per-channel masks, torchvision's statistics, a ramp that never recompiles."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import drop_block2d

import splitattn
from splitattn.layers import DropBlock2d

TINY = dict(bottleneck_width=16, stem_width=16)


def dropped_masks(y: torch.Tensor) -> torch.Tensor:
    return (y == 0).float()


def test_masks_are_per_channel_with_torchvisions_statistics() -> None:
    torch.manual_seed(0)
    x = torch.ones(16, 32, 28, 28)
    p = 0.2
    ours = dropped_masks(DropBlock2d(p, block_size=3).train()(x))
    theirs = dropped_masks(drop_block2d(x, p, block_size=3, training=True))
    # Dropped fraction: torchvision's implementation of the paper's gamma gives the reference.
    assert abs(ours.mean() - theirs.mean()) < 0.01
    # Channels of one image differ: for a pair of channels both are dropped at a unit about
    # p_drop^2 of the time (independent masks), not p_drop (one mask shared by all channels).
    both_ours = (ours[:, ::2] * ours[:, 1::2]).mean()
    both_theirs = (theirs[:, ::2] * theirs[:, 1::2]).mean()
    assert abs(both_ours - both_theirs) < 0.01
    assert abs(both_ours - ours.mean() ** 2) < 0.01 and both_ours < 0.5 * ours.mean()
    differs = (ours[:, :1] != ours[:, 1:]).flatten(2).any(-1)  # (image, channel) pairs with another mask
    assert differs.float().mean() > 0.99
    # Same rescaling as torchvision: kept units carry all units / kept units of the batch.
    y = DropBlock2d(p, block_size=3).train()(x)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, y.numel() / kept.numel()))


def test_probability_is_validated_everywhere() -> None:
    for bad in (1.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="0 <= p < 1"):
            splitattn.create_model("resnest14", drop_block_prob=bad, **TINY)
        with pytest.raises(ValueError, match="0 <= p < 1"):
            DropBlock2d(bad)
    model = splitattn.create_model("resnest14", drop_block_prob=0.1, **TINY)
    with pytest.raises(ValueError, match="0 <= p < 1"):
        model.set_drop_block_prob(1.0)
    assert not any("drop_prob" in key for key in model.state_dict())  # checkpoints keep the official keys
    model.set_drop_block_prob(0.0)
    x = torch.randn(2, 3, 64, 64)
    layer = next(m for m in model.modules() if isinstance(m, DropBlock2d))
    assert torch.equal(layer.train()(x), x)  # p = 0 in training: identity


def test_ramping_the_probability_does_not_recompile() -> None:
    model = splitattn.create_model("resnest14", num_classes=4, drop_block_prob=0.1, **TINY).train()
    graphs = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting_backend)
    x = torch.randn(2, 3, 64, 64)
    for step in range(6):  # the trainer's linear ramp
        model.set_drop_block_prob(0.1 * step / 5)
        compiled(x).sum().backward()
    assert len(graphs) == 1  # one graph, no graph break, no recompilation as the probability changes
    torch._dynamo.reset()


def test_scripting_keeps_drop_block() -> None:
    model = splitattn.create_model("resnest14", drop_block_prob=0.2, **TINY)
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(scripted.eval()(x), model.eval()(x))
    layer = next(m for m in scripted.modules() if m.original_name == "DropBlock2d")
    y = layer.train()(torch.ones(4, 8, 16, 16))
    assert 0 < (y == 0).float().mean() < 0.5
