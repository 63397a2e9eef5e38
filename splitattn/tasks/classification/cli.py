"""``splitattn classify train|evaluate|predict`` (``splitattn train|evaluate|predict`` are aliases).

``train`` options come from three places, later ones winning: the defaults of ``ClassifyConfig``
(without ``--data``: the digits demo's), a ``--config`` file (YAML/JSON, keys are the long option names),
and the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, NamedTuple, Optional

from ...config.arguments import add_task_commands, add_train_command, add_weights_arguments, resolve
from ...config.schemas import FAST_BACKENDS, ClassifyConfig, field_default
from ...errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch


class InferenceSetup(NamedTuple):
    """A trained classifier ready to evaluate or predict, and how its inputs are prepared."""

    model: torch.nn.Module  # on ``device``, maybe through the fast path
    classes: Optional[List[str]]  # the run's class names; None for bare weights
    config: Optional[ClassifyConfig]  # the run's config; None for bare weights
    transform: Any  # PIL image -> (in_chans, size, size) tensor
    size: int  # the evaluation crop
    device: torch.device
    in_chans: int  # the image channels the model takes


def resolve_train_config(args: argparse.Namespace) -> ClassifyConfig:
    """Defaults < config file < command line, checked against ``ClassifyConfig`` and validated."""
    return resolve(ClassifyConfig, args)[0]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``splitattn classify train|evaluate|predict``, and ``splitattn train|evaluate|predict`` as aliases."""
    _add_commands(add_task_commands(subparsers, "classify", "image classification: train, evaluate, predict"), "")
    _add_commands(subparsers, " (alias of `classify {}`)")


def _add_commands(subparsers: argparse._SubParsersAction, alias: str) -> None:
    add_train_command(
        subparsers,
        ClassifyConfig,
        run_train,
        "train a classifier (paper recipe in configs/)" + alias.format("train"),
        "Train on an image folder (or the built-in digits) with the ResNeSt recipe. Run under torchrun "
        "for several processes.",
    )

    evaluate = subparsers.add_parser("evaluate", help="top-1/top-5 of a trained model" + alias.format("evaluate"))
    evaluate.add_argument(
        "--data", help="folder with val/ or test/ (or that split itself), or a .csv (default: the run's data)"
    )
    evaluate.add_argument("--output", help="folder for metrics.json (default: eval-<split> beside the weights)")
    _add_inference_args(evaluate)
    evaluate.add_argument("--batch-size", type=int, default=field_default(ClassifyConfig, "batch_size"))
    evaluate.add_argument("--workers", type=int, default=field_default(ClassifyConfig, "workers"))
    evaluate.set_defaults(func=run_evaluate)

    predict = subparsers.add_parser("predict", help="top-k classes of images" + alias.format("predict"))
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    _add_inference_args(predict, weights_required=False)
    predict.add_argument(
        "--onnx",
        "--torchscript",
        dest="exported",
        metavar="FILE",
        default=None,
        help="run a file of `splitattn export` (ONNX or TorchScript) with its stored class names and "
        "preprocessing, instead of --weights",
    )
    predict.add_argument("--topk", type=int, default=5)
    predict.set_defaults(func=run_predict)


def _add_inference_args(parser: argparse.ArgumentParser, weights_required: bool = True) -> None:
    add_weights_arguments(
        parser, "last.pt/best.pt of `splitattn classify train`, or bare weights with --model", weights_required
    )
    parser.add_argument("--model", help="registered model name (default: the checkpoint's; needed for bare weights)")
    parser.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="evaluation crop (default: the run's evaluation size, else the model's)",
    )
    parser.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="run through splitattn.optimize_for_inference (BN folded, channels_last; compiled when it pays). "
        "Compiling pays from about 2,000 images per image size on a CPU: the first run compiles for minutes and "
        "keeps the result next to the checkpoint (fast-*.pt2), which later runs load in seconds; for fewer images "
        "--backend auto uses TorchScript (ready in seconds)",
    )
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="with --fast: compute precision")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=FAST_BACKENDS,
        help="with --fast: auto (aot when a compiled package is kept or the job is large enough, else torchscript), "
        "compile (torch.compile in this process), aot (compile once, keep the package next to the checkpoint), "
        "torchscript, eager",
    )


def run_train(args: argparse.Namespace) -> int:
    from .trainer import train

    train(resolve_train_config(args))
    return 0


def _inference_setup(args: argparse.Namespace, action: str) -> InferenceSetup:
    """The model of ``--weights`` (a run's checkpoint or bare weights with ``--model``), eager, on its device."""
    from ...data.transforms import eval_transform_for
    from ...devices import pick_device
    from .checkpoint import eval_config_of, load_trained_model

    if args.precision != "fp32" and not args.fast:
        raise ConfigError(f"--precision {args.precision} is a setting of the fast path; add --fast.")
    device = pick_device(args.device)
    model, classes, config = load_trained_model(args.weights, args.model, use_ema=args.ema, action=action)
    in_chans = model.in_chans
    preprocessing = eval_config_of(args.weights, config.model if config else args.model, config, args.img_size)
    size = preprocessing.input_size
    model.to(device)
    return InferenceSetup(model, classes, config, eval_transform_for(preprocessing), size, device, in_chans)


def _with_fast_path(args: argparse.Namespace, setup: InferenceSetup, images: int, batch_size: int) -> InferenceSetup:
    """``setup`` with its model through the fast path when ``--fast`` asks for it, for a job of ``images`` images
    in batches of ``batch_size`` (they choose the backend; the ragged last batch is padded to the full size, so a
    compiled model compiles once). Compiled packages are kept next to the checkpoint."""
    if not args.fast:
        return setup
    from ...optimize.inference import optimize_for_inference

    folder = Path(args.weights).resolve().parent
    model = optimize_for_inference(
        setup.model,
        args.precision,
        backend=args.backend,
        example_size=setup.size,
        images=images,
        cache_dir=folder if os.access(folder, os.W_OK) else None,  # else Inductor's cache folder
        pad_batch=batch_size,
    )
    print(f"fast path: {model.backend} backend, {model.precision}, for {images} images", file=sys.stderr, flush=True)
    return setup._replace(model=model)


def run_evaluate(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from ...data.classification import EVAL_SPLITS, collate_skip_bad, digits_datasets, find_split, load_split
    from ...engine.log import dumps
    from .engine import evaluate

    setup = _inference_setup(args, "evaluate")
    model, classes, config, size = setup.model, setup.classes, setup.config, setup.size
    data = args.data or (config.data if config else None)
    if data:
        root = Path(data)
        has_split = root.is_dir() and any((root / s).exists() or (root / f"{s}.csv").exists() for s in EVAL_SPLITS)
        location = find_split(root, EVAL_SPLITS) if has_split else root  # else: the split folder or CSV itself
        dataset = load_split(location, setup.transform, classes=classes, channels=setup.in_chans)
    elif config is not None:  # a run of the built-in digits demo: its held-out split, as the run evaluated it
        _, dataset = digits_datasets(None, setup.transform, channels=setup.in_chans)
        location = Path("digits-test")
    else:
        raise ConfigError(
            "--data is required with bare weights: a folder with val/ or test/, the split itself, or a .csv list."
        )
    num_classes = getattr(model, "num_classes", None) or len(dataset.classes)
    if classes is None and len(dataset.classes) != num_classes:
        raise DataError(
            f"{location} has {len(dataset.classes)} classes but the model has {num_classes}; "
            "its folders must be all the model's classes in label order."
        )
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_skip_bad)
    model = _with_fast_path(args, setup, len(dataset), args.batch_size).model
    result = evaluate(model, loader, setup.device)
    name = config.model if config else args.model
    split = Path(location).stem
    output = Path(args.output) if args.output else Path(args.weights).resolve().parent / f"eval-{split}"
    output.mkdir(parents=True, exist_ok=True)
    metrics = dict(result, model=name, weights=str(args.weights), data=str(location), img_size=size)
    (output / "metrics.json").write_text(dumps(metrics, indent=2))
    print(
        f"{name} on {location} ({result['images']} images at {size}px): "
        f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}"
        + (f"  (skipped {result['bad_images']} unreadable)" if result["bad_images"] else "")
        + f"; metrics in {output / 'metrics.json'}"
    )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from ...data.io import ImageReader
    from ...data.labels import format_predictions, imagenet_class_names

    if args.exported:
        from ...deploy.runtime import predict_exported

        if args.weights or args.model or args.img_size or args.ema or args.fast:
            raise ConfigError(
                "--onnx/--torchscript runs the exported file with its stored model and preprocessing; "
                "drop --model, --weights, --img-size, --ema and --fast."
            )
        return predict_exported(args.exported, args.images, args.topk)
    if not args.weights:
        raise ConfigError("predict needs --weights (a checkpoint) or --onnx FILE (an exported model).")
    setup = _inference_setup(args, "predict")
    classes, num_classes = setup.classes, setup.model.num_classes
    if classes is None:
        classes = imagenet_class_names() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    model = _with_fast_path(args, setup, len(args.images), 1).model
    images = ImageReader(args.images, setup.in_chans)
    for path, image in images:
        with torch.no_grad():
            probs = model(setup.transform(image)[None].to(setup.device)).float().softmax(-1)[0].cpu()
        top = probs.topk(min(args.topk, len(classes)))
        print(format_predictions(path, top.values.tolist(), top.indices.tolist(), classes))
    return images.exit_code
