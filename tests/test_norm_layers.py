"""Norm-layer corner cases: frozen BN from scratch, SyncBN with one image per process, instances."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import splitattn
from splitattn.layers import SplitAttention
from splitattn.layers.norm import batch_statistics_are_local, has_learnable_weight
from splitattn.models import FrozenNormWithoutWeightsWarning
from splitattn.models.resnest import Bottleneck

TINY = dict(bottleneck_width=16, stem_width=16)


def residual_branch_outputs(model: nn.Module, x: torch.Tensor) -> list:
    """The output of every block's last norm (its residual branch before the shortcut sum)."""
    outputs = []
    hooks = [
        m.bn3.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().clone()))
        for m in model.modules()
        if isinstance(m, Bottleneck)
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return outputs


def test_frozen_bn_from_scratch_warns_and_its_residual_branches_learn() -> None:
    with pytest.warns(FrozenNormWithoutWeightsWarning, match="pretrained=True.*groupnorm.*syncbn"):
        model = splitattn.create_model("resnest14", norm_layer="frozenbn", **TINY).train()
    x = torch.randn(2, 3, 64, 64)
    branches = residual_branch_outputs(model, x)
    assert len(branches) == 4 and all(b.abs().sum() > 0 for b in branches)
    model(x).logsumexp(1).sum().backward()
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert all(block.conv1.weight.grad.abs().sum() > 0 for block in blocks)  # the branches can learn
    # Learnable norms keep the recipe's zero "last gamma".
    for norm in ("batchnorm", "groupnorm"):
        assert all(
            b.bn3.weight.abs().sum() == 0
            for b in splitattn.create_model("resnest14", norm_layer=norm, **TINY).modules()
            if isinstance(b, Bottleneck)
        )


def test_frozen_bn_with_weights_does_not_warn_and_detection_backbones_warn(tmp_path: Path) -> None:
    source = splitattn.create_model("resnest14", **TINY)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FrozenNormWithoutWeightsWarning)
        splitattn.create_model("resnest14", norm_layer="frozenbn", pretrained=str(path), **TINY)
    from splitattn.tasks.detection.model import resnest_fpn_backbone

    with pytest.warns(FrozenNormWithoutWeightsWarning):
        fpn = resnest_fpn_backbone("resnest14", norm="frozenbn", **TINY)
    assert all(b.bn3.weight.abs().sum() > 0 for b in fpn.modules() if isinstance(b, Bottleneck))


def test_norm_layer_instance_is_refused_classes_and_factories_work() -> None:
    with pytest.raises(TypeError, match="module instance.*pass the class.*factory.*name"):
        splitattn.create_model("resnest14", norm_layer=nn.BatchNorm2d(64))
    assert isinstance(splitattn.create_model("resnest14", norm_layer=nn.BatchNorm2d, **TINY).bn1, nn.BatchNorm2d)
    model = splitattn.create_model("resnest14", norm_layer=lambda c: nn.GroupNorm(4, c), **TINY)
    assert model.bn1.num_groups == 4
    assert not has_learnable_weight(FrozenBatchNorm2d(4)) and has_learnable_weight(nn.BatchNorm2d(4))


@pytest.fixture
def gloo_group(tmp_path: Path):
    """A real one-process gloo process group (SyncBatchNorm's forward needs CUDA, its check does not)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_batch_of_one_check_is_for_batch_statistics_of_one_process(gloo_group, monkeypatch) -> None:
    """The check's logic, tested directly: a 2-process gloo run cannot run SyncBatchNorm on CPU."""
    assert batch_statistics_are_local(nn.BatchNorm2d(4).train())
    assert not batch_statistics_are_local(nn.BatchNorm2d(4).eval())
    assert not batch_statistics_are_local(nn.GroupNorm(2, 4)) and not batch_statistics_are_local(FrozenBatchNorm2d(4))
    sync = nn.SyncBatchNorm(4).train()
    assert batch_statistics_are_local(sync)  # a group of one process: SyncBN falls back to plain BN
    model = nn.SyncBatchNorm.convert_sync_batchnorm(splitattn.create_model("resnest14", **TINY)).train()
    attentions = [m for m in model.modules() if isinstance(m, SplitAttention)]
    assert attentions and all(isinstance(m.bn1, nn.SyncBatchNorm) for m in attentions)
    with pytest.raises(ValueError, match="batch of 1 in training mode"):
        attentions[0].check_batch(1)
    # Under torchrun with two processes the statistics span both images: one image per process runs.
    real_world_size = dist.get_world_size
    monkeypatch.setattr(
        dist, "get_world_size", lambda group=None: 2 if group in (None, dist.group.WORLD) else real_world_size(group)
    )
    assert not batch_statistics_are_local(sync)
    for attention in attentions:
        attention.check_batch(1)
    plain = splitattn.create_model("resnest14", **TINY).train()
    with pytest.raises(ValueError, match="batch of 1 in training mode"):
        plain.layer1[0].conv2.check_batch(1)  # plain BatchNorm still refuses, whatever the world size
