"""Every variant timm has gives timm's outputs and gradients from the same random weights.

timm's ResNeSt is an independent implementation that loads the official checkpoints, so
agreement here pins our architecture, parameter names and channel order to the official one.
"""

from __future__ import annotations

import zlib

import pytest
import torch

import splitattn
from splitattn.models import MODEL_SPECS

from .conftest import randomize_state_dict, relative_error

timm = pytest.importorskip("timm")

PAIRS = [(name, spec.timm_name) for name, spec in MODEL_SPECS.items() if spec.timm_name]
DEEP = {"resnest200", "resnest269"}


def _build_pair(name: str, timm_name: str, num_classes: int = 10):
    ours = splitattn.create_model(name, num_classes=num_classes)
    ref = timm.create_model(timm_name, num_classes=num_classes)
    state = randomize_state_dict(ref.state_dict(), seed=zlib.crc32(name.encode()) % 1000)
    ref.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)  # identical keys: strict, no renaming
    return ours, ref


def test_every_timm_resnest_is_covered():
    covered = {timm_name for _, timm_name in PAIRS}
    assert set(timm.list_models("resnest*")) <= covered


@pytest.mark.parametrize("name,timm_name", PAIRS, ids=[p[0] for p in PAIRS])
def test_same_outputs_and_gradients_as_timm(name, timm_name):
    ours, ref = _build_pair(name, timm_name)
    assert list(ours.state_dict()) == list(ref.state_dict())
    # Odd, non-square sizes exercise ceil-mode pooling and padding at every stride.
    size = (41, 33) if name in DEEP else (65, 47)

    x = torch.randn(2, 3, *size)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert relative_error(ours(x), ref(x)) < 1e-5

    ours.train(), ref.train()
    x_ours = torch.randn(4, 3, *size).requires_grad_()
    x_ref = x_ours.detach().clone().requires_grad_()
    out_ours, out_ref = ours(x_ours), ref(x_ref)
    assert relative_error(out_ours, out_ref) < 1e-5
    weights = torch.randn_like(out_ref)
    (out_ours * weights).sum().backward()
    (out_ref * weights).sum().backward()
    assert relative_error(x_ours.grad, x_ref.grad) < 1e-5
    ref_params = dict(ref.named_parameters())
    for key, param in ours.named_parameters():
        assert relative_error(param.grad, ref_params[key].grad) < 1e-5, key
    # Train mode also updated the BN running statistics identically.
    ref_state = ref.state_dict()
    for key, value in ours.state_dict().items():
        if "running" in key:
            assert relative_error(value, ref_state[key]) < 1e-5, key


@pytest.mark.parametrize("name,timm_name", [("resnest50", "resnest50d"), ("resnet50d", "resnet50d")])
def test_features_only_matches_timm(name, timm_name):
    ours = splitattn.create_model(name, features_only=True, out_indices=(0, 1, 2, 3, 4)).eval()
    ref = timm.create_model(timm_name, features_only=True, out_indices=(0, 1, 2, 3, 4)).eval()
    state = randomize_state_dict(ref.state_dict(), seed=3)
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    assert ours.channels == ref.feature_info.channels()
    assert ours.reductions == ref.feature_info.reduction()
    x = torch.randn(2, 3, 97, 64)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            assert a.shape == b.shape
            assert relative_error(a, b) < 1e-5
