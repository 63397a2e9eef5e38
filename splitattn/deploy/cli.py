"""``splitattn benchmark`` and ``splitattn export``."""

from __future__ import annotations

import argparse
import copy
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..devices import pick_device
from ..errors import DeviceError, UsageError
from ..models.factory import create_model
from ..models.registry import get_model_spec
from ..optimize.inference import BACKENDS, PRECISIONS, optimize_for_inference, precision_dtype
from ..optimize.training import compile_for_training
from . import benchmark as bench
from .formats import ONNX_EXPORTERS, ONNX_OPSET
from .metadata import EXPORT_FORMATS

COMPARABLE = ("timm", "torchvision")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="time inference/training against timm and torchvision, interleaved, medians",
        description="Times a model (eager, and with --fast the optimize_for_inference path) in the same process "
        "as timm's and torchvision's, round by round, and prints medians and ratios.",
    )
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--batch-size", type=int, default=16, help="throughput/training batch (latency uses 1)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument(
        "--precision",
        default="fp32",
        help=f"comma-separated list of {', '.join(PRECISIONS)} for our model (compared models run fp32)",
    )
    parser.add_argument("--channels-last", action="store_true", help="NHWC activations for the eager models")
    parser.add_argument("--mode", default="infer", help="infer, train or infer,train")
    parser.add_argument("--compare", default="", help="comma-separated: timm (same model), torchvision (ResNet-50)")
    parser.add_argument("--fast", action="store_true", help="also time splitattn.optimize_for_inference (inference)")
    parser.add_argument("--backend", default="compile", choices=BACKENDS, help="backend of the --fast path")
    parser.add_argument("--onnx", action="store_true", help="also time the ONNX export in ONNX Runtime (CPU, fp32)")
    parser.add_argument("--cuda-graphs", action="store_true", help="on CUDA, also time our eager model as a CUDA graph")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each model once per round)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per model before the rounds")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
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
    export.add_argument("--data", help="where to find the check images (default: the run's data)")
    export.add_argument("--debug", action="store_true", help="show tracebacks")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from .export import export_run

    result = export_run(
        args.weights,
        args.format,
        args.output,
        model=args.model,
        ema=args.ema,
        exporter=args.exporter,
        opset=args.opset,
        img_size=args.img_size,
        num_classes=args.num_classes,
        data=args.data,
    )
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
    precisions = _split(args.precision, PRECISIONS, "precision")
    modes = _split(args.mode, ("infer", "train"), "mode")
    compare = _split(args.compare, COMPARABLE, "--compare entry")
    if args.batch_size < 1 or args.rounds < 1:
        raise UsageError("--batch-size and --rounds must be at least 1.")
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif "fp16" in precisions:
        raise DeviceError("fp16 is for GPUs; on the CPU use --precision bf16.")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cuda_graphs and device.type != "cuda":
        raise DeviceError("--cuda-graphs needs a CUDA device.")
    torch.manual_seed(0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    ours = create_model(args.model)
    baselines = _compared_models(compare, args.model, ours)
    flops = {"splitattn": bench.forward_flops(ours, args.img_size)}
    flops.update({name: bench.forward_flops(m, args.img_size) for name, m in baselines.items()})
    rates = {p: bench.matmul_flops(device, precision_dtype(p)) for p in sorted(set(precisions) | {"fp32"})}

    print(
        f"splitattn benchmark: {args.model}, {args.img_size}x{args.img_size}, batch {args.batch_size}, "
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
        _infer_cases(
            args,
            device,
            precisions,
            memory_format,
            ours,
            baselines,
            flops,
            lambda rows: _print_case(rows, rates, compare),
        )
    if "train" in modes:
        _print_case(_train_cases(args, device, precisions, memory_format, ours, baselines, flops), rates, compare)
    return 0


def _autocast(precision: str) -> Optional[torch.dtype]:
    return None if precision == "fp32" else precision_dtype(precision)


def _infer_cases(
    args, device, precisions, memory_format, ours, baselines, flops, report: Callable[[List[bench.Result]], None]
) -> None:
    """Latency at batch 1 and throughput at --batch-size, each case reported as soon as it is timed."""
    eager = {"splitattn": ours, **baselines}
    for model in eager.values():
        model.eval().to(device=device, memory_format=memory_format)
    fast = (
        {p: optimize_for_inference(ours, p, backend=args.backend, example_size=args.img_size) for p in precisions}
        if args.fast
        else {}
    )
    onnx_file = None
    if args.onnx:
        from .export_classification import export_onnx
        from .runtime import onnx_session

        onnx_file = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False).name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(ours.cpu(), onnx_file, args.img_size)
        ours.to(device)
        session = onnx_session(onnx_file, torch.get_num_threads())
    batches = [("latency b1", 1)] + (
        [(f"throughput b{args.batch_size}", args.batch_size)] if args.batch_size > 1 else []
    )
    for case, batch in batches:
        x = torch.randn(batch, 3, args.img_size, args.img_size, device=device)
        xm = x.contiguous(memory_format=memory_format)
        fns: Dict[str, bench.Step] = {}
        results: Dict[str, bench.Result] = {}

        def add(
            name: str, key: str, fn: bench.Step, precision: str, fns=fns, results=results, case=case, batch=batch
        ) -> None:
            fns[name] = fn
            results[name] = bench.Result(name, case, batch, flops[key] * batch, precision)

        for p in precisions:
            add(f"splitattn eager {p}", "splitattn", bench.inference_step(ours, xm, _autocast(p)), p)
            if args.cuda_graphs:
                add(f"splitattn cuda-graph {p}", "splitattn", bench.cuda_graph_step(ours, xm, _autocast(p)), p)
            if p in fast:
                add(f"splitattn fast {p}", "splitattn", bench.inference_step(fast[p], x, None), p)
        if onnx_file is not None:
            x_np = x.cpu().numpy()
            add(
                "splitattn onnxruntime fp32", "splitattn", lambda x_np=x_np: session.run(None, {"images": x_np}), "fp32"
            )
        for name, model in baselines.items():
            add(f"{name} eager fp32", name, bench.inference_step(model, xm, None), "fp32")
        repeats = 3 if batch == 1 else 1
        bench.interleaved(results, fns, args.rounds, repeats, args.warmup, device)
        report(list(results.values()))
    if onnx_file is not None:
        Path(onnx_file).unlink()


def _train_cases(args, device, precisions, memory_format, ours, baselines, flops) -> List[bench.Result]:
    """One training step at --batch-size per model (fp32 baselines), then each step's peak memory."""
    case = f"train b{args.batch_size}"
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device).contiguous(
        memory_format=memory_format
    )
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
