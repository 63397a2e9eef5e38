"""int8 (issue 18, scope 4): ``splitattn export --int8`` of a classifier prints the metric change an independent
evaluation finds, stores it in the file and refuses a drop beyond the threshold (detectors and segmenters:
tests/test_task_export.py); the PT2E int8 fast path agrees with fp32; the
benchmark's cross-format table checks its runners against eager.

A small classifier is trained on imagenette-mini (real photos) by ``splitattn train``. The independent
recomputation reads the validation images with PIL and torchvision's transforms (timm's evaluation recipe),
scores the fp32 model rebuilt from the checkpoint with torch, and the int8 file with ``onnxruntime`` directly,
class by class.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from .conftest import SHARED_DATA
from .task_runs import IMAGENETTE_SIZE
from .train_helpers import cli, independent_classifier

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("nncf")

IMAGENETTE = SHARED_DATA / "imagenette-mini"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("imagenette_mini"),
]


def independent_scores(run, int8_file):
    """Per class ``(fp32 correct, int8 correct, images)`` on the val split: torch for the checkpoint's model,
    onnxruntime for the int8 file (None: fp32 only), both fed by torchvision's Resize(size / crop_pct) +
    CenterCrop + Normalize."""
    model, transform, classes = independent_classifier(run / "best.pt")
    session = int8_file and onnxruntime.InferenceSession(str(int8_file), providers=["CPUExecutionProvider"])
    scores = {}
    for label, name in enumerate(classes):
        files = sorted((IMAGENETTE / "val" / name).iterdir())
        batch = torch.stack([transform(Image.open(path).convert("RGB")) for path in files])
        with torch.no_grad():
            fp32 = model(batch).argmax(1).numpy()
        int8 = session.run(None, {"images": batch.numpy()})[0].argmax(1) if session else fp32
        scores[name] = (int((fp32 == label).sum()), int((int8 == label).sum()), len(files))
    return scores


def printed_table(stdout: str):
    """``{class: (fp32, int8, change)}`` and the overall ``(fp32, int8, change)`` from export's table."""
    rows = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"(\S+)\s+([-\d.]+)\s+([-\d.]+)\s+([-+\d.]+)", line.strip())
        if match:
            rows[match.group(1)] = tuple(float(match.group(i)) for i in (2, 3, 4))
    return rows, rows.pop("top1")


def test_the_printed_change_equals_an_independent_recomputation(imagenette_run, tmp_path):
    output = tmp_path / "int8.onnx"
    args = ["export", "--weights", str(imagenette_run / "best.pt"), "--format", "onnx", "--int8"]
    # a threshold no quantisation meets, with --force: the file is written and says it was forced
    args += ["--calibration-images", "64", "--max-metric-drop", "-100", "--force", "--output", str(output)]
    done = cli(args, threads=2)
    per_class, overall = printed_table(done.stdout)
    scores = independent_scores(imagenette_run, output)
    assert set(per_class) == set(scores)
    for name, (fp32_hits, int8_hits, images) in scores.items():
        fp32, int8 = 100 * fp32_hits / images, 100 * int8_hits / images
        assert per_class[name] == pytest.approx((fp32, int8, int8 - fp32), abs=0.006), name
    images = sum(s[2] for s in scores.values())
    fp32 = 100 * sum(s[0] for s in scores.values()) / images
    int8 = 100 * sum(s[1] for s in scores.values()) / images
    assert overall == pytest.approx((fp32, int8, int8 - fp32), abs=0.006)
    assert fp32 > 20, f"the trained model is too close to chance (10 %) for the comparison to mean much: {fp32}"
    assert "written anyway (--force)" in done.stdout

    model = onnx.load(str(output))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in model.graph.node}
    stored = {prop.key: json.loads(prop.value) for prop in model.metadata_props}
    entry = stored["int8"]
    assert entry["change"] == pytest.approx(int8 - fp32, abs=1e-9) and entry["forced"] is True
    assert entry["toolkit"] == "nncf" and entry["calibration_images"] == 64 and entry["images"] == images
    assert stored["classes"] == list(scores) and stored["model_name"] == "resnest14"


def test_a_drop_beyond_the_threshold_refuses_the_file_and_names_the_worst_classes(imagenette_run, tmp_path):
    output = tmp_path / "int8.onnx"
    args = ["export", "--weights", str(imagenette_run / "best.pt"), "--format", "onnx", "--int8"]
    args += ["--calibration-images", "16", "--max-metric-drop", "-100", "--output", str(output)]
    done = cli(args, threads=2, check=False)
    assert done.returncode == 1, done.stderr
    assert "not written" in done.stderr and "more than the -100 allowed" in done.stderr
    per_class, _ = printed_table(done.stdout)
    losses = sorted((change, name) for name, (_, _, change) in per_class.items() if change < 0)
    named = re.search(r"classes that lost most: (.*?)\. The int8", done.stderr).group(1)
    assert named == (", ".join(f"{name} {change:+.2f}" for change, name in losses[:3]) or "none singled out")
    assert not output.exists() and not list(tmp_path.iterdir())


def test_the_int8_fast_path_agrees_with_fp32_and_serves_its_image_size_only(imagenette_run):
    from splitattn.deploy.run_data import calibration_images, validation_images
    from splitattn.errors import UsageError
    from splitattn.optimize.inference import optimize_for_inference
    from splitattn.tasks.classification.checkpoint import load_trained_model, run_eval_config

    model, classes, config = load_trained_model(imagenette_run / "best.pt")
    eval_config = run_eval_config(config)
    calibration = calibration_images(IMAGENETTE, eval_config, classes, 3, 64)
    images, labels = validation_images(IMAGENETTE, eval_config, classes, 3)
    fast = optimize_for_inference(model, "int8", calibration=calibration, pad_batch=100)
    with torch.no_grad():
        fp32, int8 = model(images), fast(images)
    agreement = (int8.argmax(1) == fp32.argmax(1)).float().mean().item()
    assert agreement >= 0.85, f"int8 agrees with fp32 on only {agreement:.1%} of {len(images)} images"
    top1 = [(logits.argmax(1) == labels).float().mean().item() for logits in (fp32, int8)]
    assert abs(top1[1] - top1[0]) < 0.05, top1
    with pytest.raises(UsageError, match=f"compiled for {IMAGENETTE_SIZE}x{IMAGENETTE_SIZE}"):
        fast(torch.randn(1, 3, 64, 64))


def test_the_benchmark_table_checks_every_runner_against_eager(imagenette_run, capsys):
    """`splitattn benchmark --weights RUN` on the run's own data: eager's top-1 is the independent one, the ONNX
    Runtime file agrees with eager, the int8 file is scored and compared."""
    from splitattn.cli import main

    runners = "eager,onnxruntime-fp32,int8-onnxruntime"
    args = ["benchmark", "--weights", str(imagenette_run / "best.pt"), "--runners", runners, "--batch-size", "4"]
    assert main([*args, "--rounds", "1", "--warmup", "1", "--calibration-images", "16", "--spin"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in runners.split(","):
            rows[cells[0]] = cells
    assert set(rows) == set(runners.split(","))
    scores = independent_scores(imagenette_run, None)
    images = sum(s[2] for s in scores.values())
    assert float(rows["eager"][-3]) == pytest.approx(100 * sum(s[0] for s in scores.values()) / images, abs=0.006)
    assert float(rows["onnxruntime-fp32"][-2]) == 100.0 and float(rows["onnxruntime-fp32"][-1]) < 1e-4
    assert rows["int8-onnxruntime"][1] == "int8" and float(rows["int8-onnxruntime"][-2]) > 80
    rate_lines = [line for line in out.splitlines() if line.startswith("matmul rate at batch 4:")]
    assert "'of peak'" in out and len(rate_lines) == 1 and "fp32" in rate_lines[0] and "int8" in rate_lines[0]


def test_int8_requests_without_a_path_are_refused_before_any_export(tmp_path, monkeypatch, capsys):
    """A detector in ONNX (its If/Loop graph: OpenVINO IR only), an OpenVINO output not named .xml, TorchScript and
    no calibration image: usage errors (exit 2) before anything is exported."""
    import splitattn.deploy.export as export
    from splitattn.cli import main
    from splitattn.engine.checkpoint import atomic_save

    monkeypatch.setattr(export, "export_run", lambda *a, **k: pytest.fail("an export was started"))
    for task in ("detection", "segmentation", "classification"):
        atomic_save({"task": task, "args": {}, "model": {}}, tmp_path / f"{task}.pt")
    refused = {
        ("detection", "onnx", "x.onnx", "300"): "detectors to OpenVINO IR only",
        ("segmentation", "openvino", "x.onnx", "300"): "name --output NAME.xml",
        ("classification", "torchscript", "x.pt", "300"): "not torchscript",
        ("segmentation", "onnx", "x.onnx", "0"): "--calibration-images must be at least 1",
    }
    for (task, fmt, name, count), message in refused.items():
        args = ["export", "--weights", str(tmp_path / f"{task}.pt"), "--format", fmt, "--int8"]
        assert main([*args, "--calibration-images", count, "--output", str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / name).exists()
