"""This CPU's dense matrix-multiply rate per precision: the ceiling a network's achieved GFLOP/s is judged against.

* fp32, bf16: ``torch.matmul`` of two square matrices (oneDNN / MKL).
* int8: ``torch._int_mm`` (int8 x int8 -> int32), and the same product as an ONNX QDQ graph (a u8 activation
  quantised on the fly times an s8 weight: ``splitattn.deploy.benchmark.qdq_matmul_onnx``) in ONNX Runtime
  (VNNI kernels from MLAS) and in OpenVINO (oneDNN int8 brgemm). The best of them is the int8 rate.

``splitattn benchmark`` measures one rate per precision (torch fp32/bf16, ONNX Runtime's int8) *in the same
rounds* as the networks; this script says how those compare with every implementation's best.

Each rate is the best of ``--repeats`` timed products after one warm-up (the best, not the median:
this is a ceiling, and other processes only ever slow a run down). Square size ``--size`` (default 2048:
large enough to be compute-bound, small enough to stay in L2/L3-friendly blocking).

    PYTHONPATH=. python benchmarks/peak_rates.py --threads 2 [--json peaks.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def torch_rates(size: int, repeats: int) -> Dict[str, float]:
    """GFLOP/s of torch fp32, bf16 and int8 (``torch._int_mm``) square products."""
    import torch

    rates = {}
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    flops = 2 * size**3
    rates["torch fp32 matmul"] = flops / best_seconds(lambda: a @ b, repeats) / 1e9
    a16, b16 = a.bfloat16(), b.bfloat16()
    rates["torch bf16 matmul"] = flops / best_seconds(lambda: a16 @ b16, repeats) / 1e9
    a8 = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    b8 = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    rates["torch int8 _int_mm"] = flops / best_seconds(lambda: torch._int_mm(a8, b8), repeats) / 1e9
    return rates


def runtime_rates(size: int, repeats: int, threads: int) -> Dict[str, float]:
    """GFLOP/s of the QDQ int8 product in ONNX Runtime and OpenVINO, and their fp32 products for comparison."""
    rates = {}
    flops = 2 * size**3
    x = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    from splitattn.deploy.benchmark import qdq_matmul_onnx

    with tempfile.TemporaryDirectory() as folder:
        path = qdq_matmul_onnx(Path(folder) / "qdq.onnx", size)
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            rates["onnxruntime int8 QDQ matmul"] = (
                flops / best_seconds(lambda: session.run(None, {"x": x}), repeats) / 1e9
            )
        except ImportError:
            pass
        try:
            import openvino as ov

            core = ov.Core()
            compiled = core.compile_model(
                core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
            )
            request = compiled.create_infer_request()
            rates["openvino int8 QDQ matmul"] = flops / best_seconds(lambda: request.infer({0: x}), repeats) / 1e9
        except ImportError:
            pass
    return rates


def measure_peaks(size: int = 2048, repeats: int = 5, threads: int = 2) -> Dict[str, float]:
    """All rates (GFLOP/s) plus ``fp32``, ``bf16``, ``int8``: the best per precision."""
    import torch

    torch.set_num_threads(threads)
    rates = {**torch_rates(size, repeats), **runtime_rates(size, repeats, threads)}
    rates["fp32"] = rates["torch fp32 matmul"]
    rates["bf16"] = rates["torch bf16 matmul"]
    rates["int8"] = max(v for k, v in rates.items() if "int8" in k)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rates to this file")
    args = parser.parse_args()
    rates = measure_peaks(args.size, args.repeats, args.threads)
    for name, value in rates.items():
        print(f"{name:32s} {value:8.1f} GFLOP/s")
    if args.json:
        Path(args.json).write_text(json.dumps(rates, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
