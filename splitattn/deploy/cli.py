"""``splitattn benchmark`` and ``splitattn export``: their flags and what each command prints.

About 430 lines because the two commands take many flags (the benchmark's three modes, export's formats and
int8 gate); the work itself is in ``export.py``, ``export_int8.py``, ``benchmark.py`` and ``compare.py``.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..devices import pick_device
from ..errors import DeviceError, UsageError
from ..models.factory import create_model
from ..models.registry import get_model_spec
from ..optimize.inference import precision_dtype
from ..optimize.training import compile_for_training
from . import benchmark as bench
from .formats import ONNX_EXPORTERS, ONNX_OPSET
from .metadata import EXPORT_FORMATS
from .quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_METRIC_DROP
from .runners import DEFAULT_RUNNERS, RUNNERS

COMPARABLE = ("timm", "torchvision")
EAGER_PRECISIONS = ("fp32", "bf16", "fp16")  # autocast of the eager model (--mode infer/train)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="time a model in every deployment form (compiled, ONNX Runtime, OpenVINO, int8) against timm",
        description="--mode formats (the default, CPU): one table of the model in every form a user would deploy "
        "it (--runners: eager, our fast path fp32/bf16, timm's model under torch.compile, ONNX Runtime, OpenVINO "
        "fp32/bf16, int8 as NNCF's QDQ file in ONNX Runtime and OpenVINO and as PT2E behind our fast path): "
        "latency at batch 1, throughput at --batch-size, the share of this CPU's matmul rate for the precision, "
        "each row checked against the eager model, and with a run's data its top-1 on the validation split. "
        "All runners are timed in the same interleaved rounds; medians of per-round ratios. Compiled runners "
        "compile once per batch size (minutes on a CPU). --mode infer / train: eager inference (GPUs: CUDA "
        "graphs) and a training step against timm's and torchvision's eager models, with peak memory.",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="a `splitattn classify train` checkpoint: its model, weights and evaluation size, and its data "
        "for int8 calibration (training split) and the top-1 column (validation split)",
    )
    parser.add_argument("--model", default=None, help="registered model without --weights (default resnest50)")
    parser.add_argument("--batch-size", type=int, default=16, help="throughput/training batch (latency uses 1)")
    parser.add_argument("--img-size", type=int, default=None, help="default: the run's evaluation size, else 224")
    parser.add_argument("--mode", default="formats", help="formats (default), infer, train, or a comma list")
    parser.add_argument(
        "--runners",
        default=",".join(DEFAULT_RUNNERS),
        help=f"--mode formats: comma-separated, from {', '.join(RUNNERS)} (default: all but aot-*)",
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="--mode formats: the runner speeds are relative to (default: timm-compile-fp32 when run, else eager)",
    )
    parser.add_argument("--data", default=None, help="--mode formats: the run's data folder (default: the run's)")
    parser.add_argument("--val-images", type=int, default=0, help="validation images scored (0: all)")
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=DEFAULT_CALIBRATION_IMAGES,
        help="int8 calibration images from the run's training split (random images without a run's data)",
    )
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the matmul giving the CPU's rate")
    parser.add_argument(
        "--spin",
        action="store_true",
        help="let idle threads busy-wait (OpenMP's and ONNX Runtime's default). Without it the benchmark runs "
        "with OMP_WAIT_POLICY=PASSIVE and ONNX Runtime's spinning off: on a machine busier than its core count "
        "spinning threads steal each other's time (eager torch at 2 threads 10-50x slower)",
    )
    parser.add_argument("--json", default=None, help="--mode formats: also write every measurement here")
    parser.add_argument(
        "--precision",
        default="fp32",
        help=f"--mode infer/train: comma-separated list of {', '.join(EAGER_PRECISIONS)} "
        "(autocast) for our model (compared models run fp32)",
    )
    parser.add_argument("--channels-last", action="store_true", help="--mode infer/train: NHWC activations")
    parser.add_argument("--compare", default="", help="--mode infer/train: timm (same model), torchvision (ResNet-50)")
    parser.add_argument("--cuda-graphs", action="store_true", help="on CUDA, also time our eager model as a CUDA graph")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each model once per round)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per model before the rounds")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="--mode infer/train: cpu or cuda (default: cuda when available)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak training memory measurement")
    parser.add_argument(
        "--compile-train",
        action="store_true",
        help="also time our training step compiled (splitattn.optimize.compile_for_training)",
    )
    parser.add_argument(
        "--memory-budget", type=float, default=0.7, help="activation memory budget of --compile-train, in (0, 1]"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(func=run_benchmark)

    export = subparsers.add_parser(
        "export",
        help="export a classification, detection or segmentation run to ONNX, OpenVINO or TorchScript",
        description="Exports a run's model (its task read from the checkpoint) with its preprocessing, class names "
        "and thresholds in the file's metadata, runs the file on images of the run's data in its runtime (ONNX "
        "Runtime, OpenVINO, torch.jit), compares it with the eager model and writes it only within the task's "
        "tolerance. Classifiers and segmenters: dynamic batch, height and width (dynamo exporter, opset 18); "
        "detectors: one image of any size with the resizing inside the graph (legacy exporter, which torchvision's "
        "detectors need).",
    )
    export.add_argument(
        "--weights",
        default=None,
        help="last.pt/best.pt of `splitattn classify|detect|segment train` (its model and options are used), or a "
        "classifier's bare weights with --model (without --weights: random weights, with a warning)",
    )
    export.add_argument("--model", help="classifiers: the registered model of bare weights (a run names its own)")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("--output", required=True, help="the file to write (OpenVINO: NAME.xml, with NAME.bin)")
    export.add_argument("--ema", action="store_true", help="export the run's EMA weights (classify train --ema)")
    export.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="classifiers: evaluation crop stored in the file and used for the check (default: the run's, else "
        "the model's)",
    )
    export.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifiers' bare weights: the classifier size (default: read from the file)",
    )
    export.add_argument(
        "--exporter",
        default="auto",
        choices=ONNX_EXPORTERS,
        help="ONNX and OpenVINO: dynamo (torch.export; needs onnxscript; opset >= 18), legacy (TorchScript-based; "
        "any opset; the one detectors take), auto: dynamo where it works, else legacy",
    )
    export.add_argument(
        "--opset",
        type=int,
        default=ONNX_OPSET,
        help=f"ONNX opset written (default {ONNX_OPSET}; < 18: legacy exporter)",
    )
    export.add_argument("--data", help="where to find the check and calibration images (default: the run's data)")
    int8 = export.add_argument_group(
        "int8",
        "post-training quantisation by NNCF to a QDQ ONNX file (ONNX Runtime and OpenVINO run it; no torch needed) "
        "for every task (classifiers and segmenters whole, detectors' backbone and FPN), calibrated on the run's "
        "training images through its evaluation preprocessing, then scored against the fp32 file on the run's "
        "validation split by the task's evaluator: the change of top-1, box AP or mIoU is printed overall and per "
        "class and stored in the file's metadata (key int8)",
    )
    int8.add_argument("--int8", action="store_true", help="write the int8 model instead of the fp32 one")
    int8.add_argument(
        "--calibration-images",
        type=int,
        default=DEFAULT_CALIBRATION_IMAGES,
        help=f"training images to calibrate on (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    int8.add_argument(
        "--max-metric-drop",
        type=float,
        default=DEFAULT_MAX_METRIC_DROP,
        help="refuse the int8 file when the metric falls by more points than this (default 1)",
    )
    int8.add_argument("--force", action="store_true", help="write the int8 file whatever the drop")
    export.add_argument("--debug", action="store_true", help="show tracebacks")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from .export import export_run

    if args.int8:
        return _export_int8(args)
    result = export_run(args.weights, args.format, args.output, **_export_options(args))
    metadata = result.metadata
    if result.exporter == "legacy" and args.exporter == "auto" and result.task != "detection" and args.opset >= 18:
        print(
            "note: onnxscript is not installed, so the legacy TorchScript-based ONNX exporter was used; "
            "`pip install 'splitattn[export]'` brings the dynamo exporter"
        )
    size = sum(path.stat().st_size for path in result.files) / 2**20
    opset = f", opset {metadata['opset']}" if "opset" in metadata else ""
    shape = "x".join(map(str, metadata["input_shape"]))
    print(
        f"exported the {result.task} model {metadata['model_name']} ({metadata['weights']} weights) to "
        f"{', '.join(map(str, result.files))} ({args.format} by {result.exporter}{opset}, {size:.1f} MiB): input "
        f"{metadata['input_name']} {shape}, outputs {', '.join(metadata['output_names'])}, "
        f"{len(metadata['classes'])} class names"
    )
    print(f"checked against the eager model on {result.checked_on}: {result.check.text}")
    return 0


def _export_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The ``export_run`` keywords the ``export`` flags give."""
    names = ("model", "ema", "exporter", "opset", "img_size", "num_classes", "data")
    return {name: getattr(args, name) for name in names}


def _export_int8(args: argparse.Namespace) -> int:
    """The fp32 ONNX file of the run (``export_run``: checked against eager), then its int8 version through the
    metric gate (``deploy.export_int8``)."""
    from .export import checkpoint_task, export_run
    from .export_int8 import check_int8_request, export_int8

    check_int8_request(checkpoint_task(args.weights), args.format, args.output)
    if args.calibration_images < 1:
        raise UsageError(f"--calibration-images must be at least 1, got {args.calibration_images}.")
    suffix = ".xml" if args.format == "openvino" else ".onnx"
    with tempfile.TemporaryDirectory(prefix="splitattn-export-") as folder:
        fp32 = export_run(args.weights, args.format, Path(folder) / f"fp32{suffix}", **_export_options(args))
        result = export_int8(
            fp32.files[0], args.output, args.data, args.calibration_images, args.max_metric_drop, args.force
        )
    change = result.change
    if result.warning:
        print(f"warning: {result.warning}; written anyway (--force)")
    print(
        f"exported int8 {fp32.task} model {fp32.metadata['model_name']} to {result.path} "
        f"({sum(path.stat().st_size for path in result.files) / 2**20:.1f} MiB, {args.format}, calibrated on {result.calibration_images} "
        f"training images): {change.metric} {change.fp32:.2f} -> {change.int8:.2f} ({change.change:+.2f} points) "
        f"on {change.images} validation images"
    )
    return 0


def _split(text: str, allowed: Tuple[str, ...], what: str) -> List[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in allowed]
    if unknown:
        raise UsageError(f"Unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}.")
    return items


def _compared_models(names: List[str], model_name: str, ours: nn.Module) -> Dict[str, nn.Module]:
    """The --compare models: timm's same architecture with our weights, torchvision's ResNet-50."""
    models: Dict[str, nn.Module] = {}
    if "timm" in names:
        import timm

        timm_name = get_model_spec(model_name).timm_name
        if timm_name is None:
            raise UsageError(f"timm has no counterpart of {model_name}; drop 'timm' from --compare.")
        twin = timm.create_model(timm_name, num_classes=ours.num_classes)
        twin.load_state_dict(ours.state_dict())
        models[f"timm {timm_name}"] = twin
    if "torchvision" in names:
        import torchvision

        models["torchvision resnet50"] = torchvision.models.resnet50()
    return models


def run_benchmark(args: argparse.Namespace) -> int:
    modes = _split(args.mode, ("formats", "infer", "train"), "mode")
    if args.batch_size < 1 or args.rounds < 1:
        raise UsageError("--batch-size and --rounds must be at least 1.")
    precisions = _split(args.precision, EAGER_PRECISIONS, "precision")  # checked before anything is timed
    if "formats" in modes and precisions != ["fp32"]:
        raise UsageError(
            "--precision chooses the eager model's autocast in --mode infer/train; --mode formats times every "
            "precision by its runners: choose them with --runners."
        )
    respawned = _with_wait_policy(args.spin)
    if respawned is not None:
        return respawned
    if args.threads:
        torch.set_num_threads(args.threads)
    if "formats" in modes:
        from .compare import run_formats

        run_formats(
            weights=args.weights,
            model_name=args.model,
            img_size=args.img_size,
            batch_size=args.batch_size,
            runners=[name.strip() for name in args.runners.split(",") if name.strip()],
            reference=args.reference,
            data=args.data,
            val_images=args.val_images,
            calibration_images=args.calibration_images,
            rounds=args.rounds,
            warmup=args.warmup,
            matmul_size=args.matmul_size,
            spinning=args.spin,
            json_path=args.json,
        )
    eager_modes = [mode for mode in modes if mode != "formats"]
    if eager_modes:
        _run_eager(args, eager_modes)
    return 0


def _with_wait_policy(spin: bool) -> Optional[int]:
    """Without ``--spin``, the benchmark must run with ``OMP_WAIT_POLICY=PASSIVE``, which OpenMP reads when torch
    loads: run from the command line with it unset, the command runs again in a child process that has it (its
    exit code is returned); called from Python, it says how to set it. None: carry on in this process."""
    if spin or os.environ.get("OMP_WAIT_POLICY"):
        return None
    if sys.argv[1:2] != ["benchmark"]:
        warnings.warn(
            "OMP_WAIT_POLICY is not set, so torch's idle threads spin; set OMP_WAIT_POLICY=PASSIVE before Python "
            "starts for the benchmark's waiting policy (or pass --spin to time spinning threads on purpose).",
            stacklevel=2,
        )
        return None
    environment = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    return subprocess.call([sys.executable, "-m", "splitattn", *sys.argv[1:]], env=environment)


def _run_eager(args: argparse.Namespace, modes: List[str]) -> None:
    """--mode infer / train: our eager model against timm's and torchvision's, on the CPU or a GPU."""
    precisions = _split(args.precision, EAGER_PRECISIONS, "precision")
    compare = _split(args.compare, COMPARABLE, "--compare entry")
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif "fp16" in precisions:
        raise DeviceError("fp16 is for GPUs; on the CPU use --precision bf16.")
    if args.cuda_graphs and device.type != "cuda":
        raise DeviceError("--cuda-graphs needs a CUDA device.")
    torch.manual_seed(0)
    name, size = args.model or "resnest50", args.img_size or 224
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    ours = create_model(name)
    baselines = _compared_models(compare, name, ours)
    flops = {"splitattn": bench.forward_flops(ours, size)}
    flops.update({key: bench.forward_flops(m, size) for key, m in baselines.items()})
    rates = {p: bench.matmul_flops(device, precision_dtype(p)) for p in sorted(set(precisions) | {"fp32"})}

    print(
        f"splitattn benchmark: {name}, {size}x{size}, batch {args.batch_size}, "
        f"{'channels_last' if args.channels_last else 'NCHW'} eager, on {bench.machine_description(device)}"
    )
    print("matmul rate: " + ", ".join(f"{p} {r / 1e9:.0f} GFLOP/s" for p, r in rates.items()))
    print(
        f"{args.rounds} rounds interleaved per case after {args.warmup} warm-up calls; medians; "
        f"'vs ref' = ref time / row time, median of per-round ratios (> 1: faster than ref)"
    )
    print(TABLE_HEADER)
    print("-" * len(TABLE_HEADER))
    if "infer" in modes:
        _infer_cases(args, device, precisions, memory_format, ours, baselines, flops, size, rates, compare)
    if "train" in modes:
        rows = _train_cases(args, device, precisions, memory_format, ours, baselines, flops, size)
        _print_case(rows, rates, compare)


def _autocast(precision: str) -> Optional[torch.dtype]:
    return None if precision == "fp32" else precision_dtype(precision)


def _infer_cases(args, device, precisions, memory_format, ours, baselines, flops, size, rates, compare) -> None:
    """Eager latency at batch 1 and throughput at --batch-size, each case printed as soon as it is timed."""
    for model in [ours, *baselines.values()]:
        model.eval().to(device=device, memory_format=memory_format)
    batches = [("latency b1", 1)] + (
        [(f"throughput b{args.batch_size}", args.batch_size)] if args.batch_size > 1 else []
    )
    for case, batch in batches:
        x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
        fns: Dict[str, bench.Step] = {}
        results: Dict[str, bench.Result] = {}

        def add(name: str, key: str, fn: bench.Step, precision: str, case=case, batch=batch, fns=fns, results=results):
            fns[name] = fn
            results[name] = bench.Result(name, case, batch, flops[key] * batch, precision)

        for p in precisions:
            add(f"splitattn eager {p}", "splitattn", bench.inference_step(ours, x, _autocast(p)), p)
            if args.cuda_graphs:
                add(f"splitattn cuda-graph {p}", "splitattn", bench.cuda_graph_step(ours, x, _autocast(p)), p)
        for name, model in baselines.items():
            add(f"{name} eager fp32", name, bench.inference_step(model, x, None), "fp32")
        bench.interleaved(results, fns, args.rounds, 3 if batch == 1 else 1, args.warmup, device)
        _print_case(list(results.values()), rates, compare)


def _train_cases(args, device, precisions, memory_format, ours, baselines, flops, size) -> List[bench.Result]:
    """One training step at --batch-size per model (fp32 baselines), then each step's peak memory."""
    case = f"train b{args.batch_size}"
    x = torch.randn(args.batch_size, 3, size, size, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 1000, (args.batch_size,), device=device)
    fns: Dict[str, bench.Step] = {}
    results: Dict[str, bench.Result] = {}
    models = [(f"splitattn eager {p}", "splitattn", ours, p, False) for p in precisions]
    if args.compile_train:
        models += [
            (f"splitattn compiled {p} (budget {args.memory_budget:g})", "splitattn", ours, p, True) for p in precisions
        ]
    models += [(f"{name} eager fp32", name, model, "fp32", False) for name, model in baselines.items()]
    for name, key, model, p, compiled in models:
        trained = copy.deepcopy(model).train().to(device=device, memory_format=memory_format)
        if compiled:
            trained = compile_for_training(trained, args.memory_budget)
        fns[name] = bench.train_step(trained, x, labels, _autocast(p))
        results[name] = bench.Result(name, case, args.batch_size, 3 * flops[key] * args.batch_size, p)
    bench.interleaved(results, fns, args.rounds, 1, args.warmup, device)
    if not args.no_memory:
        for name, fn in fns.items():
            results[name].peak_bytes = bench.peak_step_memory(fn, device)
    return list(results.values())


TABLE_HEADER = (
    f"{'case':<16} {'model':<40} {'ms/call':>9} {'img/s':>8} {'%matmul':>8} {'vs ref':>7} "
    f"{'peak MiB':>9} {'mem/ref':>8}"
)


def _print_case(rows: List[bench.Result], rates: Dict[str, float], compare: List[str]) -> None:
    """The table rows of one case; the reference is timm's model when compared, else the first row."""
    refs = [r for r in rows if r.name.startswith("timm")] if "timm" in compare else []
    ref = refs[0] if refs else rows[0]
    for r in rows:
        rate = r.flops / r.median / rates[r.precision]
        memory = mem_ratio = ""
        if r.peak_bytes is not None:
            memory = f"{r.peak_bytes / 2**20:.0f}"
            mem_ratio = f"{r.peak_bytes / ref.peak_bytes:.3f}x" if ref.peak_bytes else ""
        print(
            f"{r.case:<16} {r.name:<40} {r.median * 1e3:>9.1f} {r.images / r.median:>8.1f} "
            f"{100 * rate:>7.1f}% {bench.speedup(r, ref):>6.3f}x {memory:>9} {mem_ratio:>8}"
        )
    print(f"{'':<16} (ref: {ref.name})", flush=True)
