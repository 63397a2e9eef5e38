"""Every compiled fast-path model computes what its own weights say (issue 18, scope 0).

timm's ResNeSt (an independent implementation) with the same weights is the reference. Before the fix, a
second ``optimize_for_inference`` model of the same class returned the first one's outputs (Dynamo shared one
compiled graph, with the first model's weights frozen into it, across instances).
"""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch
from torch import nn

import splitattn
from splitattn.optimize.inference import optimize_for_inference

from .conftest import randomize_state_dict, relative_error

timm = pytest.importorskip("timm")


def timm_twin(model: nn.Module) -> nn.Module:
    twin = timm.create_model("resnest14d", num_classes=model.num_classes)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["compile", "openvino"])
def test_two_models_and_a_retrained_one_each_compute_their_own_weights(backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    models = []
    for seed in (1, 2):
        model = splitattn.create_model("resnest14", num_classes=10)
        model.load_state_dict(randomize_state_dict(model.state_dict(), seed=seed))
        models.append(model.eval())
    fast = [optimize_for_inference(model, "fp32", backend=backend) for model in models]
    with torch.no_grad():
        references = [timm_twin(model)(x) for model in models]
        assert relative_error(references[0], references[1]) > 0.1, "the two models must differ"
        for model, reference in zip(fast, references):
            assert relative_error(model(x), reference) < 1e-5
        assert relative_error(fast[0](x), references[0]) < 1e-5  # the first one after the second was built

    # one training step on the first model, then optimised again: the new weights' outputs, not the old ones
    model = models[0].train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    optimizer.step()
    model.eval()
    retrained = optimize_for_inference(model, "fp32", backend=backend)
    with torch.no_grad():
        expected = timm_twin(model)(x)
        assert relative_error(expected, references[0]) > 1e-3, "the training step must change the outputs"
        assert relative_error(retrained(x), expected) < 1e-5
        assert relative_error(fast[0](x), references[0]) < 1e-5  # the old fast model keeps its own weights


class SmallNet(nn.Module):
    """A conv net that compiles in seconds (the property under test does not depend on the architecture)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


def test_more_models_than_the_recompile_limit_all_compile_and_dead_ones_are_freed():
    """Eleven models (Dynamo's recompile limit is 8 per code object): each one is compiled (no silent eager
    fallback, no stale graph) and right; a deleted model's compiled graph and frozen weights are freed."""
    from torch._dynamo.utils import counters

    x = torch.randn(2, 3, 32, 32)
    models = 11
    assert models > torch._dynamo.config.recompile_limit
    graphs = counters["stats"]["unique_graphs"]
    alive = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a recompile-limit warning (Dynamo's fallback) fails the test
        for seed in range(models):
            torch.manual_seed(seed)
            net = SmallNet().eval()
            fast = optimize_for_inference(net, "fp32", backend="compile")
            with torch.no_grad():
                assert relative_error(fast(x), net(x)) < 1e-5, f"model {seed} does not compute its own weights"
            alive.append(weakref.ref(next(fast.parameters())))
            del fast
    assert counters["stats"]["unique_graphs"] - graphs == models, "a model ran without being compiled"
    gc.collect()  # collects the models (their finalisers drop the compiled code) ...
    gc.collect()  # ... then the compiled graphs, which reference themselves
    assert not [ref for ref in alive if ref() is not None], "deleted models' frozen weights are still held"
