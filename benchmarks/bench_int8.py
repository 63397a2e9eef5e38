"""int8 post-training quantisation of a trained classifier through three toolkits: accuracy, speed, flexibility.

Toolkits (each calibrated on the same ``--calibration-images`` images of the run's *training* split, passed
through the run's evaluation transform):

* ``nncf``: NNCF ``nncf.quantize`` on the OpenVINO model read from our ONNX export (preset PERFORMANCE:
  symmetric activations, per-channel symmetric weights, fast bias correction), run by OpenVINO.
* ``ort``: ONNX Runtime ``quantize_static`` (QDQ format, per-channel s8 weights, u8 activations, MinMax
  calibration through a ``CalibrationDataReader``) after ``quant_pre_process``, run by ONNX Runtime.
* ``pt2e``: PyTorch 2 export quantisation (``torchao.quantization.pt2e``: ``prepare_pt2e`` /
  ``convert_pt2e`` with ``X86InductorQuantizer``), then ``torch.compile`` with Inductor freezing, which lowers
  the quantised convs to oneDNN int8 kernels. (``torch.ao.quantization.quantize_pt2e`` is gone from torch
  2.14: PT2E lives in ``torchao``.)

Accuracy: top-1 on the run's validation split of each int8 model, evaluated by its own runtime, against the
fp32 model evaluated by torch (eager) and by the fp32 file in the same runtime; the agreement of the int8
argmax with the fp32 one. Flexibility: whether the int8 model runs at another batch and image size
than it was calibrated at (and how far its output is from fp32 there). Speed: batch-1 latency,
interleaved rounds, median, fp32 torch eager as the reference of the same rounds.

    PYTHONPATH=. python benchmarks/bench_int8.py --weights RUN/best.pt --data ../shared/data/imagenette-mini
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

# torch's OpenMP threads sleep rather than spin while waiting (set before torch loads; OMP_WAIT_POLICY=ACTIVE
# overrides): on a shared machine with more runnable threads than cores, spinning makes eager torch 10-50x slower
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

TOOLKITS = ("nncf", "ort", "pt2e")  # also ort-entropy, ort-percentile (ONNX Runtime's other calibrations)
Runner = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------------- data
def image_arrays(folder: Path, transform, limit: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3, S, S) float32 images and (N,) labels of an ImageFolder tree (classes sorted), ``limit`` images at
    most, drawn at random (``seed``) when the folder holds more."""
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    items = [(path, label) for label, name in enumerate(classes) for path in sorted((folder / name).iterdir())]
    if limit and limit < len(items):
        order = np.random.default_rng(seed).permutation(len(items))[:limit]
        items = [items[i] for i in sorted(order)]
    images = np.stack([transform(Image.open(path).convert("RGB")).numpy() for path, _ in items])
    return images.astype(np.float32), np.array([label for _, label in items])


# ----------------------------------------------------------------------------------------------- quantisers
def calibration_samples(calibration) -> List[np.ndarray]:
    """One model input per calibration step: the images of an (N, C, H, W) array one by one, or a list's items
    as they are (inputs of different sizes, e.g. a detector's (3, H, W) images)."""
    if isinstance(calibration, np.ndarray):
        return [calibration[i : i + 1] for i in range(len(calibration))]
    return list(calibration)


def quantize_nncf(onnx_path: Path, calibration):
    """An int8 OpenVINO model (``openvino.Model``) quantised by NNCF from the fp32 ONNX file."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    dataset = nncf.Dataset(calibration_samples(calibration))
    return nncf.quantize(model, dataset, subset_size=len(calibration), preset=nncf.QuantizationPreset.PERFORMANCE)


def quantize_nncf_onnx(onnx_path: Path, out_path: Path, calibration) -> Path:
    """An int8 QDQ ONNX file written by NNCF's ONNX backend (same algorithm as ``quantize_nncf``: min-max
    ranges, fast bias correction), for ONNX Runtime."""
    import nncf
    import onnx

    model = onnx.load(str(onnx_path))
    name = model.graph.input[0].name
    samples = calibration_samples(calibration)
    dataset = nncf.Dataset([{name: sample} for sample in samples])
    quantized = nncf.quantize(model, dataset, subset_size=len(samples), preset=nncf.QuantizationPreset.PERFORMANCE)
    onnx.save(quantized, str(out_path))
    return out_path


def openvino_runner(model, threads: int, precision: str = "f32", shape: Sequence[int] = ()) -> Runner:
    """Compile an OpenVINO model (path or ``openvino.Model``) for the CPU; ``shape`` fixes the input shape."""
    import openvino as ov

    core = ov.Core()
    if isinstance(model, (str, Path)):
        model = core.read_model(str(model))
    if shape:
        model = model.clone() if hasattr(model, "clone") else model
        model.reshape({model.inputs[0].any_name: ov.PartialShape(list(shape))})
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0]


def quantize_ort(
    onnx_path: Path, out_path: Path, calibration, per_channel: bool = True, method: str = "minmax"
) -> Path:
    """An int8 QDQ ONNX file written by ONNX Runtime's static quantisation (``method``: minmax, entropy or
    percentile calibration)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.items = iter([{name: sample} for sample in calibration_samples(calibration)])

        def get_next(self):
            return next(self.items, None)

    import onnx

    name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
    pre = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)  # symbolic inference fails on dynamo exports
    quantize_static(
        str(pre),
        str(out_path),
        Reader(name),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method={
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[method],
    )
    return out_path


def ort_runner(path: Path, threads: int, level: str = "all", spinning: bool = False) -> Runner:
    """An ONNX Runtime CPU session (graph optimisation ``level``: basic, extended or all); ``spinning``: the
    intra-op threads busy-wait between ops (ONNX Runtime's default; off here, as OMP_WAIT_POLICY=PASSIVE for
    torch: on a machine with more runnable threads than cores, spinning threads steal their siblings' time)."""
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = levels[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def quantize_pt2e(model: torch.nn.Module, calibration: np.ndarray, batch: int = 0) -> torch.nn.Module:
    """The PT2E int8 model (an FX ``GraphModule``): exported, prepared with ``X86InductorQuantizer``, calibrated,
    converted. ``batch`` > 0: exported for that batch and the calibration image size only (calibrated in batches
    of that size); 0: a dynamic batch, height and width."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    step = batch or 8
    example = torch.from_numpy(calibration[: batch or 2])
    shapes = None
    if not batch:
        # min 33, not the model's MIN_INPUT_SIZE (32): at 32 px the last stage's map is 1x1, which torch.export's
        # guards treat as another case (the ONNX exporter turns those guards into runtime asserts instead)
        dim = torch.export.Dim
        shapes = ({0: dim("batch"), 2: dim("height", min=33), 3: dim("width", min=33)},)
    exported = torch.export.export(model.eval(), (example,), dynamic_shapes=shapes).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for i in range(0, len(calibration) - step + 1, step):
            prepared(torch.from_numpy(calibration[i : i + step]))
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    return converted


def torch_runner(module: Callable, compile_: bool = False) -> Runner:
    """numpy in, numpy out; ``compile_``: ``torch.compile`` with Inductor freezing (set globally, see main)."""
    fn = torch.compile(module) if compile_ else module

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return fn(torch.from_numpy(x)).float().numpy()

    return run


# ----------------------------------------------------------------------------------------------- measuring
def predict(run: Runner, images: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(images[i : i + batch]) for i in range(0, len(images), batch)])


def median_latency(runners: Dict[str, Runner], x: np.ndarray, rounds: int, repeats: int) -> Dict[str, List[float]]:
    """Seconds per call of each runner, round by round (order reversed every other round); a runner that refuses
    ``x``'s shape (a static-shape export) is left out."""
    usable = {}
    for name, run in runners.items():
        try:
            run(x)
            usable[name] = run
        except Exception:  # noqa: BLE001 - reported as a missing latency
            pass
    seconds: Dict[str, List[float]] = {name: [] for name in usable}
    order = list(usable.items())
    for index in range(rounds):
        for name, run in order if index % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(repeats):
                run(x)
            seconds[name].append((time.perf_counter() - start) / repeats)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a classification run's checkpoint (RUN/best.pt)")
    parser.add_argument("--data", required=True, help="the run's ImageFolder root (train/ and val/)")
    parser.add_argument("--toolkits", default=",".join(TOOLKITS))
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument(
        "--pt2e-batch", type=int, default=50, help="PT2E export batch (static shapes; 0: dynamic, fails on ResNeSt)"
    )
    parser.add_argument("--val-images", type=int, default=0, help="0: all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-fp32-runtimes", action="store_true", help="skip ONNX Runtime / OpenVINO fp32 rows")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", default=None, help="folder for the ONNX files (default: a temporary one)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    toolkits = [t for t in args.toolkits.split(",") if t]
    torch.set_num_threads(args.threads)
    torch._inductor.config.freezing = True  # PT2E int8 lowering needs it; also guards parameters (stale weights)

    from splitattn.data.transforms import eval_transform_for
    from splitattn.deploy.export import export_onnx
    from splitattn.tasks.classification.checkpoint import load_trained_model, run_eval_config

    model, _, options = load_trained_model(args.weights)
    config = run_eval_config(options)
    transform = eval_transform_for(config)
    root = Path(args.data)
    calibration, _ = image_arrays(root / "train", transform, args.calibration_images, seed=1)
    val, labels = image_arrays(root / "val", transform, args.val_images)
    size = val.shape[-1]
    print(f"{len(calibration)} calibration images, {len(val)} val images at {size} px, eval config {config}")
    folder = Path(args.output or tempfile.mkdtemp(prefix="int8-"))
    folder.mkdir(parents=True, exist_ok=True)
    fp32_onnx = export_onnx(model, folder / "fp32.onnx", size=size)

    results: Dict[str, dict] = {}
    runners: Dict[str, Runner] = {"torch eager fp32": torch_runner(model)}
    reference = predict(runners["torch eager fp32"], val, 50)
    if not args.no_fp32_runtimes:
        runners["ort fp32"] = ort_runner(fp32_onnx, args.threads)
        runners["openvino fp32"] = openvino_runner(fp32_onnx, args.threads)
    for toolkit in toolkits:
        start = time.perf_counter()
        if toolkit == "nncf":
            quantized = quantize_nncf(fp32_onnx, calibration)
            import openvino as ov

            ov.save_model(quantized, str(folder / "nncf_int8.xml"))
            runners["nncf int8 (openvino)"] = openvino_runner(quantized, args.threads)
        elif toolkit == "nncf-onnx":
            path = quantize_nncf_onnx(fp32_onnx, folder / "nncf_onnx_int8.onnx", calibration)
            runners["nncf-onnx int8 (QDQ, onnxruntime)"] = ort_runner(path, args.threads)
        elif toolkit.startswith("ort"):
            method = toolkit.split("-")[1] if "-" in toolkit else "minmax"
            path = quantize_ort(fp32_onnx, folder / f"{toolkit}_int8.onnx", calibration, method=method)
            runners[f"{toolkit} int8 (QDQ, {method})"] = ort_runner(path, args.threads)
        elif toolkit == "pt2e":
            try:
                converted = quantize_pt2e(model, calibration, batch=args.pt2e_batch)
            except Exception as error:  # a toolkit that cannot quantise the model is a finding
                results[toolkit] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
                continue
            runners["pt2e int8 (inductor)"] = torch_runner(converted, compile_=True)
        else:
            parser.error(f"unknown toolkit {toolkit}")
        results[toolkit] = {"quantize_s": time.perf_counter() - start}

    top1_ref = float((reference.argmax(1) == labels).mean())
    table = {}
    for name, run in runners.items():
        start = time.perf_counter()
        logits = predict(run, val, 50)
        row = {
            "top1": float((logits.argmax(1) == labels).mean()),
            "agree_fp32": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "max_rel_err": float(np.abs(logits - reference).max() / np.abs(reference).max()),
            "eval_s": time.perf_counter() - start,
        }
        row["top1_change_pts"] = 100 * (row["top1"] - top1_ref)
        # another batch and image size than calibration / export used
        x = val[:3, :, : size - 16, :]
        try:
            other = run(np.ascontiguousarray(x))
            with torch.no_grad():
                expected = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
            row["other_shape_rel_err"] = float(np.abs(other - expected).max() / np.abs(expected).max())
        except Exception as error:  # a runtime refusing the shape is the finding
            row["other_shape_rel_err"] = f"fails: {type(error).__name__}: {str(error)[:120]}"
        table[name] = row
    seconds = median_latency(runners, val[:1], args.rounds, args.repeats)
    ref = seconds["torch eager fp32"]
    for name, row in table.items():
        if name not in seconds:
            continue
        row["latency_ms_b1"] = 1e3 * statistics.median(seconds[name])
        row["speedup_vs_eager_fp32"] = statistics.median(r / s for r, s in zip(ref, seconds[name]))
        row["round_spread"] = (max(seconds[name]) - min(seconds[name])) / statistics.median(seconds[name])
    for name, row in table.items():
        print(name, json.dumps(row))
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": table, "quantize": results, "top1_fp32": top1_ref}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
