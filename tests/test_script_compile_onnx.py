"""Every variant scripts, compiles and exports to ONNX with dynamic batch and spatial size.

Variants share all code paths with their one-block-per-stage versions (radix, cardinality,
widths, stem and avd placement come from the registry), so those keep the suite fast; the
full resnest50 is exported once as well.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import splitattn
from splitattn.deploy.export import export_onnx
from splitattn.models import MODEL_SPECS

from .conftest import relative_error

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

NAMES = list(MODEL_SPECS)
# One variant per distinct code path: radix 0/1/2/4, cardinality 1/2/4, avd first/last/none, stem 32/64.
BLOCK_KINDS = [
    "resnest14",
    "resnest101",
    "resnest50_fast_1s1x64d",
    "resnest50_fast_4s2x40d",
    "resnest50_fast_1s4x24d",
    "resnest50_fast_0s1x64d",
    "resnet14d",
]


def _small(name: str, **kwargs) -> torch.nn.Module:
    model = splitattn.create_model(name, num_classes=10, layers=(1, 1, 1, 1), zero_init_last=False, **kwargs)
    return model.eval()


def check_onnx(model: torch.nn.Module, path, sizes) -> None:
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    op_types = {node.op_type for node in graph.graph.node}
    assert "ScatterND" not in op_types
    assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx"}  # standard ops only
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in sizes:
        x = torch.randn(*size)
        with torch.no_grad():
            expected = model(x)
        (actual,) = session.run(None, {"images": x.numpy()})
        assert relative_error(torch.from_numpy(actual), expected) < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_torchscript_and_onnx_every_variant(tmp_path, name):
    model = _small(name)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        expected = model(x)
        scripted = torch.jit.script(model)
        assert relative_error(scripted(x), expected) < 1e-6
    # Scripted models keep the input checks.
    with pytest.raises(Exception, match="input channels"):
        scripted(torch.randn(2, 1, 64, 64))
    # the legacy exporter here (fast); the dynamo exporter on the full resnest50 below
    path = export_onnx(model, tmp_path / "m.onnx", 64, exporter="legacy")
    check_onnx(model, path, sizes=[(1, 3, 64, 80), (3, 3, 97, 71)])


def test_script_and_onnx_backbone_dilated():
    backbone = splitattn.create_model("resnest14", features_only=True, output_stride=8).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = backbone(x)
        for a, b in zip(torch.jit.script(backbone)(x), expected):
            assert relative_error(a, b) < 1e-6
    # DropBlock and the training path script too: masks are drawn anew on each call, gradients reach every weight
    trained = splitattn.create_model("resnest14", drop_block_prob=0.1, zero_init_last=False).train()
    script_train = torch.jit.script(trained)
    x = torch.randn(2, 3, 64, 64)
    first = script_train(x)
    assert not torch.equal(first, script_train(x))
    first.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters() if p.dim() > 1)


@pytest.mark.slow
def test_full_resnest50_onnx(tmp_path):
    """The full resnest50 through the exporter `splitattn export` uses (dynamo when onnxscript is installed)."""
    model = splitattn.create_model("resnest50").eval()
    exporter = "dynamo" if importlib.util.find_spec("onnxscript") else "legacy"
    path = export_onnx(model, tmp_path / "r50.onnx", 96, exporter=exporter)
    check_onnx(model, path, sizes=[(1, 3, 96, 96), (2, 3, 128, 96)])


@pytest.mark.parametrize("name", BLOCK_KINDS)
def test_torch_compile_captures_one_graph(name):
    """Dynamo captures the whole model, forward and backward, with no graph break (fullgraph)."""
    torch._dynamo.reset()  # each variant recompiles the same code: stay under the recompile limit
    model = _small(name)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(compiled(x), model(x)) < 1e-5
    model.train()
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_torch_compile_inductor():
    """Inductor code generation on the widest block type: radix 4, cardinality 2, avd first."""
    torch._dynamo.reset()
    model = _small("resnest50_fast_4s2x40d")
    compiled = torch.compile(model, dynamic=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(compiled(x), model(x)) < 1e-4
