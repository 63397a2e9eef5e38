"""Export: ONNX with dynamic batch and spatial size in ONNX Runtime, standard ops only; TorchScript round trip; the CLI."""
from __future__ import annotations

import pytest
import torch

import splitattn
from splitattn.cli import main
from splitattn.deploy.export import check_inputs, export_model, onnx_op_types, onnx_session
from splitattn.weights import save_state_dict

from .conftest import randomize_state_dict, relative_error

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def trained_like():
    """resnest14 with random but well-scaled weights and BN statistics, 10 classes, and its checkpoint file."""
    model = splitattn.create_model("resnest14", num_classes=10)
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed=4))
    return model.eval()


@pytest.mark.parametrize("name,overrides", [("resnest14", {}), ("resnest14", {"radix": 1, "cardinality": 2}),
                                            ("resnest14", {"radix": 4, "avd_first": True})])
def test_onnx_has_dynamic_shapes_and_plain_ops(tmp_path, name, overrides):
    model = splitattn.create_model(name, num_classes=10, **overrides)
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed=5))
    model.eval()
    path, error = export_model(model, tmp_path / "model.onnx", "onnx", size=64)
    assert error < 1e-4
    ops = onnx_op_types(path)
    assert set(ops) <= {"", "ai.onnx"}, ops
    assert "ScatterND" not in ops[""] and "Softmax" in ops[""] or overrides.get("radix") == 1
    session = onnx_session(path)
    for shape in [(3, 3, 64, 64), (1, 3, 96, 80)]:  # other than the example's batch and size
        x = torch.randn(shape)
        (out,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            assert relative_error(torch.from_numpy(out), model(x)) < 1e-4


def test_torchscript_round_trip(tmp_path, trained_like):
    path, error = export_model(trained_like, tmp_path / "model.pt", "torchscript", size=64)
    assert error < 1e-5
    loaded = torch.jit.load(str(path))
    for x in check_inputs(3, 80):
        with torch.no_grad():
            assert relative_error(loaded(x), trained_like(x)) < 1e-5


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_cli_loads_weights_and_reports_the_check(tmp_path, capsys, trained_like, fmt):
    weights = save_state_dict(trained_like.state_dict(), tmp_path / "r14.safetensors")
    output = tmp_path / f"r14.{fmt}"
    assert main(["export", "--model", "resnest14", "--weights", str(weights), "--format", fmt,
                 "--output", str(output), "--img-size", "64"]) == 0
    printed = capsys.readouterr().out
    assert "max relative error" in printed and output.is_file()
    error = float(printed.split("max relative error")[1].split(":")[-1])
    assert error < 1e-4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = trained_like(x)
    if fmt == "torchscript":
        got = torch.jit.load(str(output))(x)
    else:
        got = torch.from_numpy(onnx_session(output).run(None, {"images": x.numpy()})[0])
    assert relative_error(got, expected) < 1e-4  # the file holds the checkpoint's weights


def test_export_without_weights_warns_and_bad_format_fails(tmp_path, capsys):
    with pytest.warns(UserWarning, match="random initial weights"):
        assert main(["export", "--model", "resnest14", "--format", "torchscript",
                     "--output", str(tmp_path / "m.pt"), "--img-size", "64"]) == 0
    with pytest.raises(ValueError, match="Unknown export format"):
        export_model(splitattn.create_model("resnest14"), tmp_path / "m.trt", "tensorrt")
    with pytest.raises(SystemExit):
        main(["export", "--model", "resnest14", "--format", "tensorrt", "--output", str(tmp_path / "m")])
