"""One classifier, the same random weights, every CPU runtime a user would pick: latency, throughput, rate.

Runners (``--runners``, comma-separated; ``all`` is every one below):

===========================  ===================================================================================
``timm-eager-fp32``          timm's model (our weights loaded), eager, no_grad
``timm-compile-fp32|bf16``   timm's model, channels_last (bf16: weights and input bf16), ``torch.compile`` with
                             Inductor freezing under no_grad: the anchor a timm user gets with one line
``ours-compile-fp32|bf16``   ``splitattn.optimize_for_inference(backend="compile")``
``ours-ts-fp32|bf16``        ``splitattn.optimize_for_inference(backend="torchscript")``
``patched:P1+P2:fp32|bf16``  our fast path built with patches P1, P2 (scratch experiments, see patch_fastpath.py)
``ort-fp32[-extended]``      ONNX Runtime on ``splitattn.deploy.export.export_onnx``'s file: graph optimisation
                             ORT_ENABLE_ALL (NCHWc layout transformer on) or ORT_ENABLE_EXTENDED
``ov-onnx-fp32|bf16``        OpenVINO reading our ONNX file, input shape fixed per batch, precision hint
``ov-onnx-dyn-fp32``         the same with the dynamic shape kept (what a one-file deployment gets)
``ov-pt-fp32|bf16``          ``openvino.convert_model(torch_model, example_input=...)``, shape fixed per batch
``int8-nncf``                NNCF PTQ of the OpenVINO model (from our ONNX), OpenVINO, shape fixed per batch
``int8-ort``                 ONNX Runtime static quantisation (QDQ, per-channel), ONNX Runtime
``int8-nncf-onnx``           NNCF's ONNX backend (QDQ file), ONNX Runtime
``int8-pt2e``                PT2E ``X86InductorQuantizer`` + ``torch.compile`` (freezing)
``matmul-fp32|bf16|int8``    a square matrix product (torch fp32/bf16, ONNX Runtime int8 QDQ): the CPU's rate for
                             the precision, measured *in the same rounds*, so each runner's fraction of it is
                             a per-round ratio immune to the load of other processes
===========================  ===================================================================================

Every runner is checked against the eager fp32 model on the benchmark input (max relative error of the
logits, and whether the argmax agrees). Timing: all runners built for a batch size, warmed up, then timed
in turn for ``--rounds`` rounds (reversed order every other round), ``--repeats`` calls per round; medians,
and per-round ratios against ``--reference`` (median over rounds). The spread (max-min)/median of each
runner's rounds says how noisy the machine was. int8 calibration uses ``--calibration-images`` real images
(imagenette-mini train) when the folder exists, else random ones (speed does not depend on it).

Inductor freezing is switched on globally (``torch._inductor.config.freezing = True``) so that several
compiled models of one class in one process each keep their own weights (see ``stale_weights.py``).

    PYTHONPATH=. python benchmarks/bench_runtimes.py --model resnest50 --batches 1,16 --threads 2 --rounds 7
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see bench_int8.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from bench_int8 import (  # noqa: E402
    image_arrays,
    openvino_runner,
    ort_runner,
    quantize_nncf,
    quantize_nncf_onnx,
    quantize_ort,
    quantize_pt2e,
)
from peak_rates import qdq_matmul_onnx  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette-mini"
ALL = (
    "timm-eager-fp32,timm-compile-fp32,timm-compile-bf16,ours-compile-fp32,ours-compile-bf16,ours-ts-fp32,"
    "ours-ts-bf16,ort-fp32,ort-fp32-extended,ov-onnx-fp32,ov-onnx-bf16,ov-onnx-dyn-fp32,ov-pt-fp32,ov-pt-bf16,"
    "int8-nncf,int8-ort,int8-nncf-onnx,int8-pt2e,matmul-fp32,matmul-bf16,matmul-int8"
)
Call = Callable[[], object]


def to_numpy(out) -> np.ndarray:
    return out.float().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, dtype=np.float32)


class Bench:
    """Builds runners lazily, sharing the exported files and quantised models between batch sizes."""

    def __init__(self, args: argparse.Namespace) -> None:
        import timm

        from splitattn.models import create_model, get_model_spec

        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix="bench-runtimes-"))
        torch.manual_seed(args.seed)
        self.ours = create_model(args.model).eval()
        self.timm = timm.create_model(get_model_spec(args.model).timm_name, num_classes=self.ours.num_classes)
        self.timm.load_state_dict(self.ours.state_dict())
        self.timm.eval()
        self.cache: Dict[str, object] = {}
        size = args.img_size
        if DATA.is_dir():
            from splitattn.data.transforms import eval_transform_for

            try:
                from splitattn.models.eval_config import EvalConfig
            except ImportError:  # before the restructuring of issue 20
                from splitattn.models.registry import EvalConfig

            transform = eval_transform_for(EvalConfig(input_size=size))
            self.calibration, _ = image_arrays(DATA / "train", transform, args.calibration_images, seed=1)
        else:
            self.calibration = np.random.default_rng(0).standard_normal((args.calibration_images, 3, size, size))
            self.calibration = self.calibration.astype(np.float32)

    def once(self, key: str, make: Callable[[], object]):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def onnx_file(self) -> Path:
        from splitattn.deploy.export import export_onnx

        return self.once("onnx", lambda: export_onnx(self.ours, self.folder / "fp32.onnx", size=self.args.img_size))

    def build(self, name: str, x: torch.Tensor) -> Call:
        """A zero-argument call running ``name`` on ``x`` (N, 3, S, S) float32."""
        threads = self.args.threads
        xn = x.numpy()
        shape = list(x.shape)
        cl = torch.channels_last
        if name == "timm-eager-fp32":
            model = self.timm
            return lambda: _no_grad(model, x)
        if name.startswith("timm-compile-"):
            dtype = torch.bfloat16 if name.endswith("bf16") else torch.float32
            model = self.once(name, lambda: torch.compile(copy.deepcopy(self.timm).to(dtype, memory_format=cl)))
            xc = x.to(dtype, memory_format=cl)
            return lambda: _no_grad(model, xc)
        if name.startswith("patched:"):
            from patch_fastpath import patched_fast_path

            _, patches, precision = name.split(":")
            model = self.once(name, lambda: patched_fast_path(self.ours, precision, patches.replace("+", ",")))
            return lambda: model(x)
        if name.startswith(("ours-compile-", "ours-ts-")):
            from splitattn import optimize_for_inference

            precision = name.rsplit("-", 1)[1]
            backend = "torchscript" if name.startswith("ours-ts-") else "compile"
            model = self.once(
                name, lambda: optimize_for_inference(self.ours, precision, backend=backend, example_size=shape[-1])
            )
            return lambda: model(x)
        if name.startswith("ort-fp32"):
            run = ort_runner(self.onnx_file(), threads, "extended" if name.endswith("extended") else "all")
            return lambda: run(xn)
        if name.startswith("ov-"):
            precision = "bf16" if name.endswith("bf16") else "f32"
            if name.startswith("ov-pt-"):
                import openvino as ov

                source = self.once(
                    "ov-pt", lambda: ov.convert_model(self.ours, example_input=torch.randn(1, 3, shape[2], shape[3]))
                )
            else:
                source = self.onnx_file()
            run = openvino_runner(source, threads, precision, shape=[] if "-dyn-" in name else shape)
            return lambda: run(xn)
        if name == "int8-nncf":
            model = self.once(name, lambda: quantize_nncf(self.onnx_file(), self.calibration))
            run = openvino_runner(model, threads, "f32", shape=shape)
            return lambda: run(xn)
        if name == "int8-ort":
            path = self.once(name, lambda: quantize_ort(self.onnx_file(), self.folder / "int8.onnx", self.calibration))
            run = ort_runner(path, threads)
            return lambda: run(xn)
        if name == "int8-nncf-onnx":
            path = self.once(
                name, lambda: quantize_nncf_onnx(self.onnx_file(), self.folder / "nncf.onnx", self.calibration)
            )
            run = ort_runner(path, threads)
            return lambda: run(xn)
        if name == "int8-pt2e":
            # exported and compiled for this batch size (static shapes: Inductor's fastest int8 code)
            model = torch.compile(quantize_pt2e(self.ours, self.calibration, batch=shape[0]))
            return lambda: _no_grad(model, x)
        if name.startswith("matmul-"):
            return self.matmul(name.split("-")[1])
        raise ValueError(f"unknown runner {name}")

    def matmul(self, precision: str) -> Call:
        size = self.args.matmul_size
        if precision == "int8":
            run = ort_runner(
                self.once("qdq", lambda: qdq_matmul_onnx(self.folder / "qdq.onnx", size)), self.args.threads
            )
            a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
            return lambda: run(a)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        return lambda: a @ b


def _no_grad(model, x):
    with torch.no_grad():
        return model(x)


def measure(bench: Bench, names: List[str], batch: int) -> Dict[str, dict]:
    """Build, check and time every runner at ``batch``; returns one row per runner."""
    args = bench.args
    x = torch.randn(batch, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = bench.ours(x).numpy()
    calls: Dict[str, Call] = {}
    rows: Dict[str, dict] = {}
    for name in names:
        start = time.perf_counter()
        try:
            call = bench.build(name, x)
            out = call()  # first call: compiles where the runner compiles
        except Exception as error:  # a runner that cannot be built is a finding, not a crash
            rows[name] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            print(f"[batch {batch}] {name}: FAILED {rows[name]['error']}", flush=True)
            continue
        row = {"build_s": time.perf_counter() - start}
        if not name.startswith("matmul-"):
            got = to_numpy(out)
            row["rel_err"] = float(np.abs(got - expected).max() / np.abs(expected).max())
            row["argmax_agree"] = float((got.argmax(1) == expected.argmax(1)).mean())
        rows[name] = row
        calls[name] = call
        print(f"[batch {batch}] {name}: built in {row['build_s']:.1f}s {row}", flush=True)
    for call in calls.values():  # warm-up
        for _ in range(args.warmup):
            call()
    seconds: Dict[str, List[float]] = {name: [] for name in calls}
    order = list(calls.items())
    repeats = args.repeats if batch == 1 else max(1, args.repeats // 4)
    for index in range(args.rounds):
        for name, call in order if index % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            seconds[name].append((time.perf_counter() - start) / repeats)
        print(f"[batch {batch}] round {index + 1}/{args.rounds} done", flush=True)
    flops = bench.flops * batch
    mm = 2 * args.matmul_size**3
    reference = seconds.get(args.reference)
    for name, times in seconds.items():
        row = rows[name]
        row["ms"] = 1e3 * statistics.median(times)
        row["spread"] = (max(times) - min(times)) / statistics.median(times)
        row["rounds_ms"] = [round(1e3 * t, 2) for t in times]
        work = mm if name.startswith("matmul-") else flops
        row["gflops"] = work / statistics.median(times) / 1e9
        if reference is not None:
            row["speedup_vs_ref"] = statistics.median(r / t for r, t in zip(reference, times))
        precision = "int8" if "int8" in name else ("bf16" if name.endswith("bf16") else "fp32")
        peak = seconds.get(f"matmul-{precision}")
        if peak is not None and not name.startswith("matmul-"):
            # per round: achieved rate / matmul rate of the same round
            row["fraction_of_peak"] = statistics.median((flops / t) / (mm / p) for t, p in zip(times, peak))
            row["precision"] = precision
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--runners", default="all", help="comma-separated names (see above) or all")
    parser.add_argument("--reference", default="timm-compile-fp32", help="runner the speed-ups are relative to")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=4, help="calls per round at batch 1 (a quarter at larger)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calibration-images", type=int, default=32, help="int8 calibration (speed runs)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write every row (with per-round times) here")
    args = parser.parse_args()
    names = [n for n in (ALL if args.runners == "all" else args.runners).split(",") if n]
    torch.set_num_threads(args.threads)
    torch._inductor.config.freezing = True
    bench = Bench(args)
    from splitattn.models.complexity import count_macs

    bench.flops = 2.0 * count_macs(bench.ours, args.img_size)
    print(f"{args.model}: {bench.flops / 1e9:.2f} GFLOP per image; torch {torch.__version__}; {args.threads} threads")
    results = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        results[batch] = measure(bench, names, batch)
        print(f"\n| runner (batch {batch}) | ms | x {args.reference} | GFLOP/s | of peak | spread | rel err |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, row in results[batch].items():
            if "ms" not in row:
                print(f"| {name} | failed: {row.get('error', '')[:80]} | | | | | |")
                continue
            print(
                f"| {name} | {row['ms']:.1f} | {row.get('speedup_vs_ref', float('nan')):.2f} | {row['gflops']:.0f} | "
                f"{row.get('fraction_of_peak', float('nan')):.2f} | {row['spread']:.2f} | {row.get('rel_err', 0):.1e} |"
            )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
