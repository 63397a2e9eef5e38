"""Which int8 toolkit keeps a trained classifier's accuracy: the measurement behind ``splitattn export --int8``.

Each toolkit quantises the same run's model on the same ``--calibration-images`` images of its *training*
split (through its evaluation transform) and is scored on the whole validation split by its own runtime,
against the fp32 model (torch):

* ``nncf``: NNCF's ONNX backend (``splitattn.deploy.quantize.quantize_onnx``, what ``export --int8`` writes),
  a QDQ ONNX file run by ONNX Runtime;
* ``ort``: ONNX Runtime's ``quantize_static`` (QDQ, per-channel s8 weights, u8 activations; ``ort-entropy``,
  ``ort-percentile``: its other calibration methods), run by ONNX Runtime;
* ``pt2e``: PT2E ``X86InductorQuantizer`` behind the fast path (``optimize_for_inference(precision="int8")``).

Printed per toolkit: top-1, its change against fp32 in points, the agreement of the int8 and fp32 argmax
(the sharper measure on a model with near ties), and the seconds quantisation took. The library's own
commands cover the rest: ``splitattn export --int8`` (the gate) and ``splitattn benchmark`` (speed).

    PYTHONPATH=. python benchmarks/bench_int8.py --weights RUN/best.pt [--toolkits nncf,ort,pt2e]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see splitattn.deploy.runners: idle threads must not spin
import torch  # noqa: E402


def quantize_ort(fp32: Path, output: Path, calibration: torch.Tensor, method: str) -> Path:
    """ONNX Runtime's static quantisation of ``fp32`` (QDQ, per channel) with ``method`` calibration."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": image[None].numpy()} for image in calibration])

        def get_next(self):
            return next(self.items, None)

    prepared = output.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # symbolic inference fails on dynamo files
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}
    quantize_static(
        str(prepared),
        str(output),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods.get(method, CalibrationMethod.Percentile),
    )
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a classification run's checkpoint (RUN/best.pt)")
    parser.add_argument("--data", default=None, help="the run's data folder (default: the one it names)")
    parser.add_argument("--toolkits", default="nncf,ort,pt2e", help="nncf, ort, ort-entropy, ort-percentile, pt2e")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from splitattn.deploy.export import export_onnx, onnx_session
    from splitattn.deploy.quantize import quantize_onnx
    from splitattn.deploy.run_data import calibration_images, validation_images
    from splitattn.optimize.inference import optimize_for_inference
    from splitattn.tasks.classification.checkpoint import load_trained_model, run_eval_config

    model, classes, config = load_trained_model(args.weights)
    eval_config, data = run_eval_config(config), args.data or config.data
    calibration = calibration_images(data, eval_config, classes, model.in_chans, args.calibration_images)
    images, labels = validation_images(data, eval_config, classes, model.in_chans)
    folder = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    fp32_file = export_onnx(model, folder / "fp32.onnx", eval_config.input_size)
    with torch.no_grad():
        reference = model(images).argmax(1)
    print(f"{len(calibration)} calibration images, {len(images)} validation images at {eval_config.input_size} px")
    print(f"fp32 (torch): top-1 {100 * (reference == labels).float().mean():.2f}")

    def onnx_predict(path: Path) -> torch.Tensor:
        session = onnx_session(path, args.threads)
        return torch.cat([torch.from_numpy(session.run(None, {"images": b.numpy()})[0]) for b in images.split(50)])

    for toolkit in [t.strip() for t in args.toolkits.split(",") if t.strip()]:
        start = time.perf_counter()
        if toolkit == "nncf":
            int8 = quantize_onnx(fp32_file, folder / "nncf.onnx", (image[None].numpy() for image in calibration))
            seconds = time.perf_counter() - start
            predicted = onnx_predict(int8).argmax(1)
        elif toolkit.startswith("ort"):
            method = toolkit.partition("-")[2] or "minmax"
            int8 = quantize_ort(fp32_file, folder / f"{toolkit}.onnx", calibration, method)
            seconds = time.perf_counter() - start
            predicted = onnx_predict(int8).argmax(1)
        elif toolkit == "pt2e":
            fast = optimize_for_inference(model, "int8", calibration=calibration, pad_batch=50)
            seconds = time.perf_counter() - start
            predicted = fast(images).argmax(1)  # the first batch compiles
        else:
            parser.error(f"unknown toolkit {toolkit}")
        top1 = 100 * (predicted == labels).float().mean().item()
        change = top1 - 100 * (reference == labels).float().mean().item()
        agree = 100 * (predicted == reference).float().mean().item()
        print(f"{toolkit}: top-1 {top1:.2f} ({change:+.2f} points), agrees with fp32 on {agree:.1f} %, {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
