"""The fast path compiles only when it pays (issue 18, scope 6): the backend chosen by the work, one compiled shape
for a ragged last batch, compiled packages kept and reused, and no stray CUDA warning on a CPU machine.
No timing here: what is checked is which code runs (counted compilations) and that outputs stay exact."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
from torch import nn

from splitattn.errors import UsageError
from splitattn.optimize import compiled
from splitattn.optimize.inference import optimize_for_inference

from .conftest import relative_error
from .train_helpers import REPO, child_env


class SmallNet(nn.Module):
    """A conv net that compiles in seconds (what is tested does not depend on the architecture)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return SmallNet().eval()


def test_the_backend_follows_the_precision_and_the_amount_of_work():
    many = compiled.COMPILE_PAYS_FROM_IMAGES
    assert compiled.choose_backend(150) == "torchscript"  # evaluate --fast on 150 images: no compile
    assert compiled.choose_backend(150, cached=True) == "aot"  # a package on disk loads in seconds
    assert compiled.choose_backend(many) == "aot"
    assert compiled.choose_backend(many, shapes=2) == "torchscript"
    # OpenVINO, where it can run: fp32 always (the fastest fp32 runtime measured); bf16 when compiling does not pay
    assert compiled.choose_backend(150, openvino=True) == compiled.choose_backend(many, cached=True, openvino=True)
    assert compiled.choose_backend(many, openvino=True) == "openvino"
    assert compiled.choose_backend(150, precision="bf16", openvino=True) == "openvino"
    assert compiled.choose_backend(many, precision="bf16", openvino=True) == "aot"
    net = small_net(0)
    fast = optimize_for_inference(net, backend="auto", images=150, example_size=32)
    installed = importlib.util.find_spec("openvino") is not None
    assert fast.backend == ("openvino" if installed else "torchscript")
    x = torch.randn(3, 3, 40, 36)
    with torch.no_grad():
        assert relative_error(fast(x), net(x)) < 1e-5
    with pytest.raises(UsageError, match="images="):
        optimize_for_inference(net, backend="auto", example_size=32)


def test_the_openvino_backend_serves_features_and_refuses_int8():
    pytest.importorskip("openvino")
    import splitattn

    features = splitattn.create_model("resnest14", features_only=True).eval()
    fast = optimize_for_inference(features, backend="openvino", example_size=64)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected, got = features(x), fast(x)
    assert isinstance(got, list) and len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape and relative_error(a, b) < 1e-5
    with pytest.raises(UsageError, match="export --int8"):
        optimize_for_inference(features, "int8", backend="openvino", calibration=x)


def test_every_openvino_model_of_the_process_compiles_with_one_core(monkeypatch, tmp_path):
    """Fast-path models and exported files all go through ``deps.openvino_core()``: with a ``Core`` made and freed
    per model, the test process crashed minutes later in unrelated code (docs/deployment.md). Counted: no
    ``openvino.Core`` is created but that one."""
    openvino = pytest.importorskip("openvino")
    from splitattn.deploy.runtime import network_call
    from splitattn.deps import openvino_core

    created = []

    class CountedCore(openvino.Core):
        def __init__(self, *args, **kwargs):
            created.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(openvino, "Core", CountedCore)
    shared = openvino_core()  # counted when no earlier test of this process made it
    x = torch.randn(2, 3, 40, 36)
    for seed in (0, 1):
        net = small_net(seed)
        fast = optimize_for_inference(net, backend="openvino", example_size=32)
        with torch.no_grad():
            assert relative_error(fast(x), net(x)) < 1e-5
        del fast
    path = tmp_path / "net.xml"  # an OpenVINO IR file, run by the exported-file runtime
    openvino.save_model(openvino.convert_model(net, example_input=x), str(path), compress_to_fp16=False)
    with torch.no_grad():
        assert relative_error(torch.from_numpy(network_call(path)(x.numpy())[0]), net(x)) < 1e-5
    assert created in ([], [shared]), f"{len(created)} openvino.Core objects were created"


def test_a_padded_ragged_batch_gives_the_same_outputs_from_one_compiled_shape():
    from torch._dynamo.utils import counters

    net = small_net(1)
    fast = optimize_for_inference(net, backend="compile", pad_batch=4)
    graphs = counters["stats"]["unique_graphs"]
    x = torch.randn(11, 3, 32, 32)
    with torch.no_grad():
        expected = net(x)
        for batch in (x[:4], x[:3], x[:1], x):  # full, ragged, single, and more than one batch (chunks of 4)
            assert relative_error(fast(batch), expected[: len(batch)]) < 1e-5
    assert counters["stats"]["unique_graphs"] - graphs == 1, "the ragged batches were compiled again"


def test_a_compiled_package_is_reused_and_never_serves_other_weights(tmp_path, monkeypatch):
    builds = []
    compile_package = compiled.compile_package

    def counting(*args, **kwargs):
        builds.append(args[2])
        return compile_package(*args, **kwargs)

    monkeypatch.setattr(compiled, "compile_package", counting)
    x = torch.randn(3, 3, 32, 32)
    first, other = small_net(2), small_net(3)
    outputs = []
    for net in (first, first, other):
        fast = optimize_for_inference(net, backend="aot", example_size=32, cache_dir=tmp_path)
        with torch.no_grad():
            outputs.append(fast(x))
            assert relative_error(outputs[-1], net(x)) < 1e-5
    assert len(builds) == 2, "the second model of the same weights compiled again instead of loading the package"
    assert builds[0] != builds[1] and sorted(tmp_path.glob("*.pt2")) == sorted(builds)
    with pytest.raises(UsageError, match="compiled for 32x32"):
        fast(torch.randn(1, 3, 40, 40))
    # the kept package is what `auto` picks next time, even for a small job (fp32: OpenVINO first, where installed)
    chosen = optimize_for_inference(first, backend="auto", images=1, example_size=32, cache_dir=tmp_path).backend
    assert chosen == ("openvino" if importlib.util.find_spec("openvino") else "aot")
    assert len(builds) == 2


def test_compiling_on_a_cpu_machine_prints_no_cuda_warning():
    """torch.utils.cpp_extension (loaded by Inductor, NNCF, torchao) logs "No CUDA runtime is found" once when a
    CUDA build of torch runs without a GPU; the fast path imports it with that message dropped."""
    plain = "import torch.utils.cpp_extension"
    quiet = "from splitattn.optimize.compiled import quiet_cpp_extension; quiet_cpp_extension()"
    runs = {
        code: subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True)
        for code in (plain, quiet)
    }
    assert all(run.returncode == 0 for run in runs.values()), {code: run.stderr for code, run in runs.items()}
    if "No CUDA runtime" not in runs[plain].stderr:
        pytest.skip("this torch build logs no CUDA warning on this machine: nothing to silence")
    assert "No CUDA runtime" not in runs[quiet].stderr
