"""Can our detection and segmentation models be exported to ONNX and run by ONNX Runtime and OpenVINO?

For each model (``splitattn.tasks.detection.model.create_detection_model`` Faster/Mask R-CNN and
``splitattn.tasks.segmentation.model.create_segmentation_model`` DeepLabV3, resnest14, random weights with
BatchNorm statistics perturbed so folding matters) and each exporter (``legacy``: TorchScript-based
``torch.onnx.export(dynamo=False)``; ``dynamo``: ``torch.export``-based) at each opset, with dynamic image
height/width or fixed: does export succeed, which operators does the graph hold, does ONNX Runtime and OpenVINO
(reading the ONNX file, and ``openvino.convert_model`` on the torch model) run it at the export size *and*
at another, non-square size, and how close are the outputs to eager?

Detection agreement: the detector's score threshold is 0 (random weights score every class near 1/K, so the
default 0.05 would leave nothing to compare); boxes are matched by index after sorting both by score;
reported: the count of detections in each, the max |box difference| in px over the first ``--top`` boxes,
and the max score difference. Segmentation: max relative logit error and argmax pixel agreement.

int8 (``--int8``): the segmentation ONNX file and the detection one quantised by ONNX Runtime
(``quantize_static`` QDQ, per-channel) and NNCF (OpenVINO), calibrated on a few real images (camvid-mini,
coco128): does it quantise and run, pixel agreement / detections against fp32.

    PYTHONPATH=. python benchmarks/export_tasks.py --models faster_rcnn,deeplabv3 --exporters legacy,dynamo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_int8.py
import torch  # noqa: E402
from torch import nn  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Detector(nn.Module):
    """One (3, H, W) image in 0..1 -> (boxes (N, 4), labels (N,), scores (N,)[, masks (N, 1, H, W)])."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image):
        out = self.model([image])[0]
        return tuple(out[k] for k in ("boxes", "labels", "scores", "masks") if k in out)


class Segmenter(nn.Module):
    """(N, 3, H, W) normalised images -> (N, K, H, W) logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def perturb_norms(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if hasattr(module, "running_var") and module.running_var is not None:
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


def build(name: str) -> Tuple[nn.Module, List[torch.Tensor]]:
    """The wrapped model and two real inputs (export size, then another non-square size)."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    torch.manual_seed(0)
    if name in ("faster_rcnn", "mask_rcnn"):
        from splitattn.tasks.detection.model import create_detection_model

        model = create_detection_model(
            name, "resnest14", num_classes=81, min_size=320, max_size=512, box_score_thresh=0.0
        )
        wrapped = Detector(model)
        images = sorted((DATA / "coco128" / "images").glob("*.jpg"))[:2]
        inputs = [pil_to_tensor(Image.open(p).convert("RGB")).float() / 255 for p in images]
    else:
        from splitattn.tasks.segmentation.model import create_segmentation_model

        model = create_segmentation_model("resnest14", num_classes=11, aux=False)
        wrapped = Segmenter(model)
        images = sorted((DATA / "camvid-mini" / "val" / "images").glob("*.png"))[:2]
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        tensors = [(pil_to_tensor(Image.open(p).convert("RGB")).float() / 255 - mean) / std for p in images]
        inputs = [tensors[0][None, :, :256, :320], tensors[1][None, :, :192, :352]]
    with torch.no_grad():
        perturb_norms(wrapped)
    return wrapped.eval(), inputs


def export(wrapped: nn.Module, x: torch.Tensor, path: Path, exporter: str, opset: int, dynamic: bool) -> None:
    detection = isinstance(wrapped, Detector)
    h, w = (1, 2) if detection else (2, 3)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            axes = {"images": {h: "height", w: "width"}} if dynamic else None
            if dynamic and not detection:
                axes["images"][0] = "batch"
            torch.onnx.export(
                wrapped, (x,), str(path), input_names=["images"], dynamic_axes=axes, opset_version=opset, dynamo=False
            )
        else:
            from torch.export import Dim

            shapes = None
            if dynamic:
                spec = {h: Dim("height", min=64, max=2048), w: Dim("width", min=64, max=2048)}
                if not detection:
                    spec[0] = Dim("batch", max=64)
                shapes = (spec,)
            program = torch.onnx.export(
                wrapped, (x,), dynamo=True, input_names=["images"], dynamic_shapes=shapes, opset_version=opset
            )
            program.save(str(path), external_data=False)


def compare(expected, got, detection: bool, top: int) -> Dict[str, float]:
    """Agreement of runtime outputs ``got`` (numpy list) with eager ``expected`` (tensor tuple or tensor)."""
    if not detection:
        e, g = expected.numpy(), np.asarray(got[0])
        return {
            "rel_err": float(np.abs(g - e).max() / np.abs(e).max()),
            "pixel_agree": float((g.argmax(1) == e.argmax(1)).mean()),
        }
    boxes_e, scores_e = expected[0].numpy(), expected[2].numpy()
    boxes_g, scores_g = np.asarray(got[0]), np.asarray(got[2])
    n = min(top, len(boxes_e), len(boxes_g))
    oe, og = np.argsort(-scores_e)[:n], np.argsort(-scores_g)[:n]
    row = {"n_eager": int(len(boxes_e)), "n_runtime": int(len(boxes_g))}
    if n:
        row["max_box_px"] = float(np.abs(boxes_e[oe] - boxes_g[og]).max())
        row["max_score_diff"] = float(np.abs(scores_e[oe] - scores_g[og]).max())
    return row


def run_onnx(path: Path, inputs: List[torch.Tensor], runtime: str):
    if runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return [session.run(None, {name: x.numpy()}) for x in inputs]
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path)) if isinstance(path, (str, Path)) else path
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [list(compiled({0: x.numpy()}).values()) for x in inputs]


def op_summary(path: Path) -> Dict[str, object]:
    import onnx

    proto = onnx.load(str(path))
    ops = sorted({(n.domain, n.op_type) for n in proto.graph.node})
    opset = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    inputs = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    custom = [f"{d}::{t}" for d, t in ops if d not in ("", "ai.onnx")]
    return {"opset_written": opset, "n_op_types": len(ops), "custom_ops": custom, "input_dims": inputs}


def calibration_inputs(name: str, count: int) -> List[torch.Tensor]:
    """``count`` training images of the model's data set, prepared as ``build``'s inputs."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    if name in ("faster_rcnn", "mask_rcnn"):
        paths = sorted((DATA / "coco128" / "images").glob("*.jpg"))[10 : 10 + count]
        return [pil_to_tensor(Image.open(p).convert("RGB")).float() / 255 for p in paths]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    paths = sorted((DATA / "camvid-mini" / "train" / "images").glob("*.png"))[:count]
    return [
        ((pil_to_tensor(Image.open(p).convert("RGB")).float() / 255 - mean) / std)[None, :, :256, :320] for p in paths
    ]


def int8_rows(name: str, path: Path, inputs: List[torch.Tensor], expected, count: int, top: int) -> List[dict]:
    """``path`` quantised by ONNX Runtime (QDQ, per-channel) and by NNCF (OpenVINO), compared with eager fp32."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_int8 import quantize_nncf, quantize_ort

    detection = name in ("faster_rcnn", "mask_rcnn")
    calibration = calibration_inputs(name, count)
    rows = []
    for toolkit in ("ort", "nncf"):
        row = {"model": name, "int8": toolkit, "from": path.name}
        start = time.perf_counter()
        try:
            if toolkit == "ort":
                quantized = quantize_ort(path, path.with_suffix(".int8.onnx"), [c.numpy() for c in calibration])
                runtime = "onnxruntime"
            else:
                quantized = quantize_nncf(path, [c.numpy() for c in calibration])
                runtime = "openvino"
            row["quantize_s"] = round(time.perf_counter() - start, 1)
            for index, x in enumerate(inputs):
                (got,) = run_onnx(quantized, [x], runtime)
                row["other_size" if index else "export_size"] = compare(expected[index], got, detection, top)
        except Exception as error:
            row["error"] = f"FAILED {type(error).__name__}: {str(error).splitlines()[0][:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="faster_rcnn,deeplabv3")
    parser.add_argument("--exporters", default="legacy,dynamo")
    parser.add_argument("--opsets", default="17,18")
    parser.add_argument("--fixed", action="store_true", help="also export with fixed image sizes")
    parser.add_argument("--convert-model", action="store_true", help="also openvino.convert_model(torch model)")
    parser.add_argument("--int8", action="store_true", help="quantise the last dynamic export (ORT, NNCF)")
    parser.add_argument("--calibration-images", type=int, default=16)
    parser.add_argument("--top", type=int, default=20, help="detections compared")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="export-tasks-"))
    results = []
    for name in args.models.split(","):
        wrapped, inputs = build(name)
        detection = isinstance(wrapped, Detector)
        with torch.no_grad():
            expected = [wrapped(x) for x in inputs]
        combos = [(e, int(o), True) for e in args.exporters.split(",") for o in args.opsets.split(",")]
        if args.fixed:
            combos += [(e, int(args.opsets.split(",")[-1]), False) for e in args.exporters.split(",")]
        for exporter, opset, dynamic in combos:
            row = {"model": name, "exporter": exporter, "opset": opset, "dynamic": dynamic}
            path = folder / f"{name}-{exporter}-{opset}-{int(dynamic)}.onnx"
            start = time.perf_counter()
            try:
                export(wrapped, inputs[0], path, exporter, opset, dynamic)
                row["export_s"] = round(time.perf_counter() - start, 1)
                row.update(op_summary(path))
            except Exception as error:
                row["export"] = f"FAILED {type(error).__name__}: {str(error)[:400]}"
                results.append(row)
                print(json.dumps(row), flush=True)
                continue
            for runtime in ("onnxruntime", "openvino"):
                for index, x in enumerate(inputs):
                    key = f"{runtime}_{'export_size' if index == 0 else 'other_size'}"
                    try:
                        (got,) = run_onnx(path, [x], runtime)
                        row[key] = compare(expected[index], got, detection, args.top)
                    except Exception as error:
                        row[key] = f"FAILED {type(error).__name__}: {str(error).splitlines()[0][:300]}"
            results.append(row)
            print(json.dumps(row), flush=True)
        dynamic_files = [folder / f"{name}-{e}-{o}-1.onnx" for e, o, d in combos if d]
        dynamic_files = [f for f in dynamic_files if f.exists()]
        if args.int8 and dynamic_files:
            results += int8_rows(name, dynamic_files[0], inputs, expected, args.calibration_images, args.top)
        if args.convert_model:
            import openvino as ov

            row = {"model": name, "exporter": "openvino.convert_model"}
            try:
                converted = ov.convert_model(wrapped, example_input=inputs[0])
                for index, x in enumerate(inputs):
                    (got,) = run_onnx(converted, [x], "openvino")
                    row["other_size" if index else "export_size"] = compare(expected[index], got, detection, args.top)
            except Exception as error:
                row["convert"] = f"FAILED {type(error).__name__}: {str(error).splitlines()[0][:300]}"
                traceback.print_exc()
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
