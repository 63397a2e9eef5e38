"""DropBlock as published: per-channel masks, torchvision's statistics, a ramp that never recompiles, and
the same statistics in fp16/bf16 (plain, under autocast, scripted)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import drop_block2d

import splitattn
from splitattn.layers import DropBlock2d

TINY = dict(bottleneck_width=16, stem_width=16)


LOW_PRECISION = (torch.float16, torch.bfloat16)
# The shapes DropBlock meets in stages 3-4 (ResNeSt-50 at 224 px: 28x28 after a stride-8 stage, 14x14, 7x7).
# Each holds far more than 65,504 kept units, the largest count fp16 can hold.
SHAPES = [(8, 512, 28, 28), (2, 256, 56, 56), (32, 1024, 7, 7)]


def dropped_masks(y: torch.Tensor) -> torch.Tensor:
    return (y == 0).float()


def kept_fraction(y: torch.Tensor) -> float:
    return (y != 0).double().mean().item()


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
    reference = kept_fraction(drop_block2d(torch.ones(8, 512, 28, 28), 0.2, block_size=3, training=True))
    for dtype in LOW_PRECISION:  # the scripted layer draws its mask in float32 too
        y = layer(torch.rand(8, 512, 28, 28).add(0.5).to(dtype))
        assert y.dtype == dtype and abs(kept_fraction(y) - reference) < 0.005


def drop_block_seeded(x: torch.Tensor, seed: int, p: float = 0.1) -> torch.Tensor:
    torch.manual_seed(seed)
    return DropBlock2d(p, block_size=3).train()(x)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_keeps_fp32_and_torchvision_statistics(shape, dtype) -> None:
    torch.manual_seed(0)
    x32 = torch.rand(shape) + 0.5  # no zeros, so every zero of the output is a dropped unit
    x = x32.to(dtype)
    y = drop_block_seeded(x, 1)
    assert y.dtype == dtype
    kept = kept_fraction(y)
    # Reference statistics: ours and torchvision's drop_block2d in float32 (torchvision's draws its mask
    # in the input's dtype too, so it is only a reference in float32).
    torch.manual_seed(2)
    reference = kept_fraction(drop_block2d(x32, 0.1, block_size=3, training=True))
    assert abs(kept - kept_fraction(drop_block_seeded(x32, 3))) < 0.005
    assert abs(kept - reference) < 0.005
    # Mean preserved: the kept units carry all / kept of the batch. Over these shapes the float32 output
    # mean differs from the input's by a std of at most 1.1e-4 relative (block sampling, 10 seeds each),
    # and rounding every output to fp16/bf16 (to nearest) adds no bias; a scale rounded to bf16 would
    # shift the mean by up to 2**-8 / 1.11 = 0.35%. So 1e-3 is ~9 std and below any rounding bias.
    ratio = y.double().mean() / x.double().mean()
    assert abs(ratio.item() - 1.0) < 1e-3
    # Same seed, same mask as float32: the output is the float32 output rounded once to `dtype`.
    assert torch.equal(y, drop_block_seeded(x.float(), 1).to(dtype))


def autocast_devices() -> list:
    """(device, dtype) pairs autocast supports here: CPU bf16 and fp16 (torch >= 2.4), CUDA fp16 and bf16."""
    pairs = [("cpu", torch.bfloat16), ("cpu", torch.float16)]
    if torch.cuda.is_available():
        pairs += [("cuda", torch.float16), ("cuda", torch.bfloat16)]
    return pairs


@pytest.mark.parametrize("device,dtype", autocast_devices())
def test_under_autocast_after_a_conv(device, dtype) -> None:
    """Under autocast DropBlock gets the conv's fp16/bf16 output; it keeps its statistics and its dtype."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 512, 3, padding=1).to(device)
    x = torch.randn(8, 64, 28, 28, device=device)
    layer = DropBlock2d(0.1, block_size=3).train()
    with torch.autocast(device, dtype=dtype):
        features = conv(x)
        torch.manual_seed(1)
        y = layer(features)
    assert features.dtype == dtype and y.dtype == dtype
    kept = ((y != 0) | (features == 0)).double().mean().item()
    torch.manual_seed(2)
    reference = kept_fraction(drop_block2d(torch.ones(8, 512, 28, 28), 0.1, block_size=3, training=True))
    assert abs(kept - reference) < 0.005
    # The mask of the same seed outside autocast in float32, the product rounded once to `dtype`.
    torch.manual_seed(1)
    assert torch.equal(y, layer(features.float()).to(dtype))


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_compiled_under_autocast(dtype) -> None:
    """torch.compile (aot_eager: the graph autograd and Inductor see) keeps the float32 mask under CPU autocast."""
    torch._dynamo.reset()
    conv = torch.nn.Conv2d(16, 512, 3, padding=1)
    layer = DropBlock2d(0.1, block_size=3).train()
    compiled = torch.compile(lambda x: layer(conv(x)), backend="aot_eager")
    with torch.autocast("cpu", dtype=dtype):
        y = compiled(torch.randn(8, 16, 28, 28))
    torch._dynamo.reset()
    assert y.dtype == dtype
    reference = kept_fraction(drop_block2d(torch.ones(8, 512, 28, 28), 0.1, block_size=3, training=True))
    assert abs(kept_fraction(y) - reference) < 0.005
