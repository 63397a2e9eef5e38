"""Export: ONNX (dynamo and the legacy fallback) with dynamic batch and spatial size in ONNX Runtime, standard
ops only; TorchScript round trip; the metadata both carry; the CLI; a missing optional dependency."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys

import pytest
import torch

import splitattn
from splitattn.cli import main
from splitattn.config import ClassifyConfig
from splitattn.deploy.export_classification import export_metadata, export_model, random_inputs
from splitattn.deploy.formats import resolve_onnx_exporter
from splitattn.deploy.metadata import read_export_metadata
from splitattn.deploy.runtime import onnx_session
from splitattn.deps import MissingDependencyError
from splitattn.models import EvalConfig
from splitattn.tasks.classification.checkpoint import run_eval_config
from splitattn.weights import save_state_dict

from .conftest import randomize_state_dict, relative_error

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
DYNAMO_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="the dynamo ONNX exporter needs onnxscript"),
]
PIP_EXPORT = "pip install 'splitattn[export]'"


@pytest.fixture(scope="module")
def trained_like():
    """resnest14 with random but well-scaled weights and BN statistics, 10 classes."""
    model = splitattn.create_model("resnest14", num_classes=10)
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed=4))
    return model.eval()


@pytest.mark.parametrize(
    "overrides,exporter",
    [
        ({}, "legacy"),
        ({"radix": 1, "cardinality": 2}, "legacy"),
        ({"radix": 4, "avd_first": True}, "legacy"),
        pytest.param({"radix": 1, "cardinality": 2}, "dynamo", marks=DYNAMO_MARKS),
        pytest.param({"radix": 4, "avd_first": True}, "dynamo", marks=DYNAMO_MARKS),
    ],
)
def test_onnx_has_dynamic_shapes_and_plain_ops(tmp_path, overrides, exporter):
    model = splitattn.create_model("resnest14", num_classes=10, **overrides)
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed=5))
    model.eval()
    path, error = export_model(model, tmp_path / "model.onnx", "onnx", size=64, exporter=exporter)
    assert error < 1e-4
    proto = onnx.load(str(path))
    assert {prop.key: json.loads(prop.value) for prop in proto.metadata_props} == {"exporter": exporter, "opset": 18}
    graph = proto.graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    ops = {node.op_type for node in graph.node}
    assert "ScatterND" not in ops
    # The paper's split attention (Sec. 3.1): a softmax across the splits for radix > 1, a sigmoid for radix 1.
    if overrides.get("radix", 2) > 1:
        assert "Softmax" in ops and "Sigmoid" not in ops, ops
    else:
        assert "Sigmoid" in ops and "Softmax" not in ops, ops
    dims = [dim.dim_param or dim.dim_value for dim in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
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
    for x in map(torch.from_numpy, random_inputs(3, 80)):
        with torch.no_grad():
            assert relative_error(loaded(x), trained_like(x)) < 1e-5


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_metadata_is_stored_and_read_back(tmp_path, trained_like, fmt):
    from torchvision.models import ResNet50_Weights

    weights = save_state_dict(trained_like.state_dict(), tmp_path / "r14.safetensors")
    classes = [f"class {i}" for i in range(10)]
    config = run_eval_config(ClassifyConfig(model="resnest14", data="folder", img_size=64, crop_pct=0.9))
    metadata = export_metadata("resnest14", trained_like, config, classes, weights)
    path, _ = export_model(trained_like, tmp_path / f"r14.{fmt}", fmt, 64, metadata, exporter="legacy")
    # read with each format's own tools, not with read_export_metadata
    if fmt == "onnx":
        stored = {prop.key: json.loads(prop.value) for prop in onnx.load(str(path)).metadata_props}
        runtime_map = onnx_session(path).get_modelmeta().custom_metadata_map
        assert {key: json.loads(value) for key, value in runtime_map.items()} == stored
    else:
        extra = {"splitattn.json": ""}
        torch.jit.load(str(path), _extra_files=extra)
        stored = json.loads(extra["splitattn.json"])
    assert stored["model_name"] == "resnest14" and stored["classes"] == classes and stored["num_classes"] == 10
    assert stored["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert stored["in_chans"] == 3 and stored["input_size"] == 64
    imagenet = ResNet50_Weights.IMAGENET1K_V2.transforms()  # torchvision's ImageNet normalisation
    assert stored["mean"] == pytest.approx(imagenet.mean) and stored["std"] == pytest.approx(imagenet.std)
    protocol = stored["eval_config"]
    assert (protocol["input_size"], protocol["crop_pct"], protocol["interpolation"]) == (64, 0.9, "bilinear")
    assert stored["exporter"] == ("legacy" if fmt == "onnx" else "torch.jit.trace")
    assert read_export_metadata(path) == {**stored, "format": fmt}


def test_metadata_refuses_wrong_class_names_and_files_without_it(tmp_path, trained_like):
    config = EvalConfig()
    with pytest.raises(ValueError, match="3 class names for a model with 10 outputs"):
        export_metadata("resnest14", trained_like, config, ["a", "b", "c"])
    assert len(export_metadata("resnest14", trained_like, config)["classes"]) == 10
    bare = tmp_path / "bare.pt"
    torch.jit.trace(trained_like, torch.randn(1, 3, 64, 64)).save(str(bare))
    with pytest.raises(ValueError, match="carries no splitattn export metadata"):
        read_export_metadata(bare)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_cli_loads_weights_and_reports_the_check(tmp_path, capsys, trained_like, fmt):
    weights = save_state_dict(trained_like.state_dict(), tmp_path / "r14.safetensors")
    output = tmp_path / f"r14.{fmt}"
    assert (
        main(
            [
                "export",
                "--model",
                "resnest14",
                "--weights",
                str(weights),
                "--format",
                fmt,
                "--output",
                str(output),
                "--img-size",
                "64",
                "--exporter",
                "legacy",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "max relative error" in printed and output.is_file()
    error = float(re.search(r"max relative error ([0-9.e+-]+) \(tolerance", printed).group(1))
    assert error < 1e-4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = trained_like(x)
    if fmt == "torchscript":
        got = torch.jit.load(str(output))(x)
    else:
        got = torch.from_numpy(onnx_session(output).run(None, {"images": x.numpy()})[0])
    assert relative_error(got, expected) < 1e-4  # the file holds the checkpoint's weights
    assert read_export_metadata(output)["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_export_without_weights_warns_and_bad_format_fails(tmp_path, capsys):
    with pytest.warns(UserWarning, match="random initial weights"):
        assert (
            main(
                [
                    "export",
                    "--model",
                    "resnest14",
                    "--format",
                    "torchscript",
                    "--output",
                    str(tmp_path / "m.pt"),
                    "--img-size",
                    "64",
                ]
            )
            == 0
        )
    with pytest.raises(ValueError, match="Unknown export format"):
        export_model(splitattn.create_model("resnest14"), tmp_path / "m.trt", "tensorrt")
    with pytest.raises(SystemExit):
        main(["export", "--model", "resnest14", "--format", "tensorrt", "--output", str(tmp_path / "m")])


def test_missing_export_packages_name_the_pip_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert resolve_onnx_exporter("auto") == "legacy"
    with pytest.raises(MissingDependencyError, match=re.escape(PIP_EXPORT)):
        resolve_onnx_exporter("dynamo")
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert (
        main(
            [
                "export",
                "--model",
                "resnest14",
                "--format",
                "onnx",
                "--output",
                str(tmp_path / "m.onnx"),
                "--img-size",
                "64",
            ]
        )
        == 1
    )  # a run error (exit 2 is for usage errors)
    error = capsys.readouterr().err
    assert "ONNX export needs the Python package 'onnx'" in error and PIP_EXPORT in error
    assert not (tmp_path / "m.onnx").exists()


def test_predict_refuses_mixed_sources(tmp_path, capsys):
    assert main(["predict", "--onnx", str(tmp_path / "m.onnx"), "--weights", "last.pt", "x.jpg"]) == 2
    assert "give --weights (a checkpoint) or --exported FILE" in capsys.readouterr().err
    assert main(["predict", "--onnx", str(tmp_path / "m.onnx"), "--model", "resnest14", "x.jpg"]) == 2
    assert "drop --model" in capsys.readouterr().err
    assert main(["predict", "x.jpg"]) == 2
    assert "give --weights (a checkpoint) or --exported FILE" in capsys.readouterr().err
