"""The memory-lean training path: gradients equal autograd's, less memory saved, the benchmark CLI."""
from __future__ import annotations

import copy

import pytest
import torch

import splitattn
from splitattn.cli import main
from splitattn.deploy.benchmark import peak_step_memory
from splitattn.layers import SplitAttention
from splitattn.layers.split_attention import trains_lean


@pytest.mark.parametrize("radix,cardinality", [(1, 1), (2, 1), (4, 2)])
def test_split_attention_gradcheck_float64(radix, cardinality):
    layer = SplitAttention(8, 8, radix=radix, cardinality=cardinality, min_inner_channels=4).double().train()
    layer.memory_efficient = True
    x = torch.randn(3, 8, 5, 4, dtype=torch.double, requires_grad=True)
    with torch.enable_grad():
        assert trains_lean(layer.bn0, layer.drop_block)
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def run(x, *weights):  # the layer with gradcheck's copies of its parameters, so they get checked too
        return torch.func.functional_call(layer, dict(zip(names, weights)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"radix": 1, "avd_first": True, "cardinality": 2, "bottleneck_width": 32}])
def test_lean_blocks_equal_plain_autograd_and_save_less(overrides):
    lean = splitattn.create_model("resnest14", num_classes=10, memory_efficient=True, **overrides).train()
    plain = copy.deepcopy(lean)
    plain.set_memory_efficient(False)
    x = torch.randn(4, 3, 48, 40)
    outputs, grads = [], []
    for model in (lean, plain):
        out = model(x)
        (out * torch.linspace(-1, 1, 10)).sum().backward()
        outputs.append(out.detach())
        grads.append({k: p.grad for k, p in model.named_parameters()})
    assert torch.equal(outputs[0], outputs[1])
    for key, grad in grads[1].items():
        assert torch.allclose(grads[0][key], grad, rtol=1e-5, atol=1e-7), key
    for a, b in zip(lean.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)  # running statistics and batch counters updated alike

    def step(model):
        return lambda: model(x).sum().backward()

    # The parameter gradients already exist (from above), so the peak is the step's activations and temporaries.
    lean_peak, plain_peak = peak_step_memory(step(lean), torch.device("cpu")), peak_step_memory(step(plain), torch.device("cpu"))
    assert lean_peak < 0.97 * plain_peak, (lean_peak, plain_peak)  # 0.91-0.96 here; 0.78 for resnest50 at 224


def test_benchmark_cli_end_to_end(capsys):
    assert main(["benchmark", "--model", "resnest14", "--img-size", "64", "--batch-size", "2", "--rounds", "1",
                 "--warmup", "1", "--mode", "infer,train", "--compare", "timm", "--fast", "--onnx"]) == 0
    printed = capsys.readouterr().out
    assert "matmul rate: fp32" in printed
    for row in ["latency b1", "throughput b2", "train b2", "splitattn eager fp32", "splitattn fast fp32",
                "splitattn onnxruntime fp32", "timm resnest14d eager fp32", "(ref: timm resnest14d eager fp32)"]:
        assert row in printed, row
    train_rows = [line for line in printed.splitlines() if line.startswith("train b2")]
    assert all(line.rstrip().endswith("x") for line in train_rows)  # peak memory and its ratio printed
    with pytest.raises(ValueError, match="Unknown precision"):
        main(["benchmark", "--model", "resnest14", "--precision", "fp8", "--debug"])
