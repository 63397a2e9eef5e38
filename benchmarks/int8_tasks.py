"""Does int8 pay for detection and segmentation? Latency of a run's fp32 and int8 files in OpenVINO (and ONNX
Runtime where the int8 file is ONNX) on the run's own validation images.

For a run (``RUN/last.pt`` of ``detect train`` or ``segment train``) it writes the fp32 file and the int8 file
with the library's own commands (``splitattn export`` and ``export --int8 --force``, which prints the metric
change on the validation split), then times each runner on the same ``--images`` validation images, one image
per call as a server receives them, in ``--rounds`` interleaved rounds after a warm-up, and prints the median
milliseconds per image, the speed-up of int8 over fp32 in the same runtime, and (detection) the detections per
image, since the box and mask heads' work depends on them.

    PYTHONPATH=. python benchmarks/int8_tasks.py --weights RUN/last.pt [--format openvino] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def export(weights: str, fmt: str, output: Path, int8: bool, calibration: int) -> None:
    command = [sys.executable, "-m", "splitattn", "export", "--weights", weights, "--format", fmt]
    if int8:
        command += ["--int8", "--force", "--calibration-images", str(calibration)]
    done = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    print(
        "\n".join(line for line in done.stdout.splitlines() if "exported" in line or "AP " in line or "mIoU " in line)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--format", default="openvino", choices=("onnx", "openvino"))
    parser.add_argument("--images", type=int, default=4, help="validation images timed per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-images", type=int, default=32)
    args = parser.parse_args()

    from splitattn.deploy.export import network_inputs
    from splitattn.deploy.runtime import load_exported

    suffix = ".xml" if args.format == "openvino" else ".onnx"
    with tempfile.TemporaryDirectory() as folder:
        files = {"fp32": Path(folder) / f"fp32{suffix}", "int8": Path(folder) / f"int8{suffix}"}
        for precision, path in files.items():
            export(args.weights, args.format, path, precision == "int8", args.calibration_images)
        runtimes = ["openvino"] + (["onnxruntime"] if args.format == "onnx" else [])
        runners = {
            f"{runtime}-{precision}": load_exported(path, threads=args.threads, runtime=runtime)
            for runtime in runtimes
            for precision, path in files.items()
        }
        first = next(iter(runners.values()))
        inputs = network_inputs(first.metadata, "val", args.images)
        shape = "x".join(map(str, inputs[0].shape[-2:]))
        print(
            f"{first.metadata['task']} {first.metadata['model_name']}, {len(inputs)} validation images ({shape} px "
            f"first), {args.threads} threads, {args.rounds} rounds"
        )
        times = {name: [] for name in runners}
        found = {name: [] for name in runners}
        for runner in runners.values():  # warm-up
            runner.run(inputs[0])
        for _ in range(args.rounds):
            for name, runner in runners.items():
                start = time.perf_counter()
                outputs = [runner.run(x) for x in inputs]
                times[name].append(1000 * (time.perf_counter() - start) / len(inputs))
                found[name] = [len(out[0]) for out in outputs]
        print("| runner | ms per image (median) | x fp32 same runtime | outputs per image |")
        print("|---|---:|---:|---|")
        for name in runners:
            median = statistics.median(times[name])
            reference = statistics.median(times[name.rsplit("-", 1)[0] + "-fp32"])
            detections = ", ".join(map(str, found[name])) if first.metadata["task"] == "detection" else "-"
            print(f"| {name} | {median:.1f} | {reference / median:.2f} | {detections} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
