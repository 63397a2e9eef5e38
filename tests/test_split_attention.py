"""SplitAttention against a loop-by-loop transcription of the paper's definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from splitattn.layers import SplitAttention, radix_softmax

from .conftest import relative_error


def reference_split_attention(layer: SplitAttention, x: torch.Tensor) -> torch.Tensor:
    """The paper's Split-Attention written with explicit loops over cardinal groups and splits.

    The grouped conv's output holds R splits of C channels (split r = channels r*C:(r+1)*C);
    within a split, cardinal group k owns channels k*C/K:(k+1)*C/K. fc2's output for cardinal
    group k is the block k*R*C/K:(k+1)*R*C/K, split-major inside (official channel order).
    """
    radix, card, channels = layer.radix, layer.cardinality, layer.out_channels
    width = channels // card
    u = F.relu(layer.bn0(layer.conv(x)))
    splits = [u[:, r * channels : (r + 1) * channels] for r in range(radix)]
    gap = sum(splits).mean((2, 3), keepdim=True)
    logits = layer.fc2(F.relu(layer.bn1(layer.fc1(gap))))[:, :, 0, 0]
    out = torch.zeros_like(splits[0])
    for k in range(card):
        group_logits = logits[:, k * radix * width : (k + 1) * radix * width].reshape(-1, radix, width)
        weights = torch.softmax(group_logits, dim=1) if radix > 1 else torch.sigmoid(group_logits)
        for r in range(radix):
            chans = slice(k * width, (k + 1) * width)
            out[:, chans] += weights[:, r, :, None, None] * splits[r][:, chans]
    return out


@pytest.mark.parametrize("radix,cardinality", [(1, 1), (2, 1), (4, 1), (1, 4), (2, 2), (4, 2), (3, 2)])
def test_matches_loop_reference(radix, cardinality):
    layer = SplitAttention(48, 48, cardinality=cardinality, radix=radix).eval()
    for module in layer.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    x = torch.randn(3, 48, 9, 7)
    with torch.no_grad():
        assert relative_error(layer(x), reference_split_attention(layer, x)) < 1e-6


def test_shapes_stride_dilation_and_inner_width():
    layer = SplitAttention(64, 128, stride=2, dilation=2, radix=2, cardinality=2)
    assert layer.conv.groups == 4 and layer.conv.padding == (2, 2)
    assert layer.fc1.groups == 2 and layer.fc2.out_channels == 256
    assert layer(torch.randn(2, 64, 15, 16)).shape == (2, 128, 8, 8)


@pytest.mark.parametrize(
    "channels,radix,cardinality", [(64, 2, 1), (256, 2, 1), (512, 4, 1), (80, 2, 2), (96, 1, 4), (32, 1, 1)]
)
def test_same_layers_as_timms_split_attention(channels, radix, cardinality):
    """Inner width (max(C * R / 4, 32) as the official code) and every weight's shape, against timm's SplitAttn."""
    timm_layers = pytest.importorskip("timm.layers")
    ours = SplitAttention(channels, channels, radix=radix, cardinality=cardinality)
    theirs = timm_layers.SplitAttn(channels, channels, groups=cardinality, radix=radix, norm_layer=nn.BatchNorm2d)
    assert ours.inner_channels == theirs.fc1.out_channels
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_radix_softmax_orders_output_radix_major():
    # Logits laid out cardinal-major: for group k, split r, channel c at index k*R*W + r*W + c.
    batch, card, radix, width = 2, 3, 4, 5
    logits = torch.randn(batch, card, radix, width)
    out = radix_softmax(logits.reshape(batch, -1, 1, 1), radix, card).view(batch, radix, card, width)
    expected = torch.softmax(logits, dim=2).permute(0, 2, 1, 3)
    assert torch.allclose(out, expected)
    assert torch.allclose(out.sum(1), torch.ones(batch, card, width))
    gate = radix_softmax(logits[:, :, :1].reshape(batch, -1, 1, 1), 1, card)
    assert torch.allclose(gate, torch.sigmoid(logits[:, :, 0].reshape(batch, -1)))


def test_without_norm_and_with_bias():
    layer = SplitAttention(16, 32, radix=2, norm_layer=None, bias=True)
    assert isinstance(layer.bn0, nn.Identity) and layer.conv.bias is not None
    assert layer(torch.randn(1, 16, 5, 5)).shape == (1, 32, 5, 5)  # no BN: batch 1 trains fine


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"radix": 0}, "radix >= 1"),
        ({"cardinality": 3}, "divisible by cardinality"),
        ({"radix": 3}, "cardinality \\* radix"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SplitAttention(32, 32, **kwargs)


def test_batch_of_one_in_training_explains_itself():
    layer = SplitAttention(32, 32).train()
    with pytest.raises(ValueError, match="batch of at least 2"):
        layer(torch.randn(1, 32, 8, 8))
    assert layer.eval()(torch.randn(1, 32, 8, 8)).shape == (1, 32, 8, 8)
