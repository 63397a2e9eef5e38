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

from ...config.arguments import (
    add_task_commands,
    add_train_command,
    add_weights_arguments,
    evaluation_folder,
    model_source,
    resolve,
)
from ...config.schemas import FAST_BACKENDS, ClassifyConfig, field_default
from ...errors import ConfigError

if TYPE_CHECKING:
    import torch

    from ...models.eval_config import EvalConfig

CAM_OUTPUT = "explanations"  # predict --cam's folder, in the working directory like detect/segment predict's


class InferenceSetup(NamedTuple):
    """A trained classifier ready to evaluate or predict, and how its inputs are prepared."""

    model: torch.nn.Module  # on ``device``, maybe through the fast path
    classes: Optional[List[str]]  # the run's class names; None for bare weights
    config: Optional[ClassifyConfig]  # the run's config; None for bare weights
    transform: Any  # PIL image -> (in_chans, size, size) tensor
    size: int  # the evaluation crop
    device: torch.device
    in_chans: int  # the image channels the model takes
    preprocessing: EvalConfig  # resize, crop and normalisation of ``transform``
    name: str  # the registered model


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
    evaluate.add_argument(
        "--output",
        help="folder for metrics.json and the per-class diagnostics (default: eval-<split> beside the weights)",
    )
    _add_inference_args(evaluate)
    evaluate.add_argument("--batch-size", type=int, default=field_default(ClassifyConfig, "batch_size"))
    evaluate.add_argument("--workers", type=int, default=field_default(ClassifyConfig, "workers"))
    evaluate.set_defaults(func=run_evaluate)

    predict = subparsers.add_parser("predict", help="top-k classes of images" + alias.format("predict"))
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    _add_inference_args(predict)
    predict.add_argument("--topk", type=int, default=5)
    predict.add_argument(
        "--cam",
        action="store_true",
        help="also write <name>_cam.png (Grad-CAM of the predicted class) and <name>_attention.png (the "
        "split-attention weights of a block) per image into --output; needs the [explain] extra",
    )
    predict.add_argument(
        "--cam-block",
        metavar="NAME",
        help="with --cam: the Split-Attention block drawn, e.g. layer3.0.conv2 (default: the last one)",
    )
    predict.add_argument(
        "--output", default=CAM_OUTPUT, help=f"with --cam: folder for the pictures (default: {CAM_OUTPUT})"
    )
    predict.set_defaults(func=run_predict)


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    add_weights_arguments(
        parser, "last.pt/best.pt of `splitattn classify train`, or bare weights with --model", exported=True
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
        help="run through splitattn.optimize_for_inference (BN folded). On a CPU with OpenVINO installed "
        "([openvino] extra) fp32 runs in OpenVINO, the fastest CPU runtime measured, ready in seconds "
        "(1.2x Inductor's compiled code at batch 1, equal at 16). Otherwise compiling pays from about 2,000 "
        "images per image size on a CPU: the first run compiles for minutes and keeps the result next to the "
        "checkpoint (fast-*.pt2), which later runs load in seconds; for fewer images --backend auto uses "
        "OpenVINO or TorchScript (ready in seconds)",
    )
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="with --fast: compute precision")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=FAST_BACKENDS,
        help="with --fast: auto (fp32 on a CPU: openvino where installed; else aot when a compiled package is kept "
        "or the job is large enough, else openvino or torchscript), compile (torch.compile in this process), aot "
        "(compile once, keep the package next to the checkpoint), torchscript, openvino (CPU), eager",
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
    if model_source(args, ("model", "img_size", "ema", "fast")) == "exported":
        import torch

        from ...deploy.evaluation import load_exported_classifier

        network, classes, config, protocol = load_exported_classifier(args.exported)
        name = network.runtime.metadata["model_name"]
        transform, size, channels = eval_transform_for(protocol), protocol.input_size, network.runtime.in_chans
        return InferenceSetup(network, classes, config, transform, size, torch.device("cpu"), channels, protocol, name)
    device = pick_device(args.device)
    model, classes, config = load_trained_model(args.weights, args.model, use_ema=args.ema, action=action)
    in_chans = model.in_chans
    preprocessing = eval_config_of(args.weights, config.model if config else args.model, config, args.img_size)
    size = preprocessing.input_size
    model.to(device)
    name = config.model if config else args.model
    return InferenceSetup(
        model, classes, config, eval_transform_for(preprocessing), size, device, in_chans, preprocessing, name
    )


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

    from ...data.classification import collate_skip_bad
    from ...engine.log import dumps
    from ..run_diagnostics import describe
    from .diagnostics import diagnose
    from .engine import evaluate, evaluation_dataset

    setup = _inference_setup(args, "evaluate")
    model, classes, config, size = setup.model, setup.classes, setup.config, setup.size
    num_classes = getattr(model, "num_classes", None) or (len(classes) if classes else None)
    named = classes if config is not None else None  # bare weights: the data's folders in order
    dataset, location = evaluation_dataset(args.data, config, setup.transform, named, setup.in_chans, num_classes)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_skip_bad)
    model = _with_fast_path(args, setup, len(dataset), args.batch_size).model
    result = evaluate(model, loader, setup.device, unreadable="error", collect=True)
    predictions = result.pop("predictions")
    name, source = setup.name, args.weights or args.exported
    split = Path(location).stem
    output = evaluation_folder(args, f"eval-{split}")
    output.mkdir(parents=True, exist_ok=True)
    metrics = dict(result, model=name, weights=str(source), data=str(location), img_size=size)
    if len(predictions.labels):
        names = classes or list(dataset.classes)
        diagnostics = diagnose(output, predictions, dataset, names)
        metrics.update(diagnostics.metrics)
        print(describe(diagnostics, output, f"{location}, per class"))
    (output / "metrics.json").write_text(dumps(metrics, indent=2))
    print(
        f"{name} on {location} ({result['images']} images at {size}px): "
        f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}"
        f"; metrics in {output / 'metrics.json'}"
    )
    return 0


def _check_cam_flags(args: argparse.Namespace) -> None:
    """``--cam``/``--cam-block`` with the flags they fit, and captum installed; before any model is loaded."""
    if args.cam_block and not args.cam:
        raise ConfigError("--cam-block chooses the block that --cam draws; add --cam.")
    if not args.cam:
        return
    if args.exported or args.fast:
        fix = "drop --fast" if args.fast else "pass the run's checkpoint as --weights instead of --onnx/--torchscript"
        raise ConfigError(
            "--cam back-propagates through the eager model (Grad-CAM), which the fast path and exported files do "
            f"not keep; {fix}."
        )
    from ...deps import require

    require("captum", "explain", "predict --cam (Grad-CAM)")


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from ...data.io import ImageReader
    from ...data.labels import format_predictions, imagenet_class_names

    _check_cam_flags(args)
    setup = _inference_setup(args, "predict")
    classes = setup.classes
    if classes is None:  # bare weights (an exported file always names its classes)
        num_classes = setup.model.num_classes
        classes = imagenet_class_names() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    explain = _explainer(args, setup, classes) if args.cam else None
    model = _with_fast_path(args, setup, len(args.images), 1).model
    images = ImageReader(args.images, setup.in_chans)
    for path, image in images:
        with torch.no_grad():
            probs = model(setup.transform(image)[None].to(setup.device)).float().softmax(-1)[0].cpu()
        top = probs.topk(min(args.topk, len(classes)))
        print(format_predictions(path, top.values.tolist(), top.indices.tolist(), classes))
        if explain is not None:
            files = explain(path, image)
            print(f"  pictures: {', '.join(str(file) for file in files.values())}")
    return images.exit_code


def _explainer(args: argparse.Namespace, setup: InferenceSetup, classes: List[str]) -> Any:
    """``(path, image) -> files`` writing ``predict --cam``'s pictures; the block is checked now."""
    from .explain import split_attention_blocks, write_explanations

    if setup.in_chans != 3:
        raise ConfigError(f"--cam draws RGB pictures; this model takes {setup.in_chans}-channel images.")
    blocks = split_attention_blocks(setup.model)
    if args.cam_block and args.cam_block not in blocks:
        shown = ", ".join(blocks[:3] + ["...", blocks[-1]] if len(blocks) > 4 else blocks) or "none (radix 0)"
        raise ConfigError(f"--cam-block {args.cam_block!r} is not a Split-Attention block of the model: {shown}.")
    output = Path(args.output)
    mean, std = setup.preprocessing.mean, setup.preprocessing.std

    def explain(path: Path, image: Any) -> Any:
        return write_explanations(
            output, path.stem, setup.model, image, setup.transform, classes, mean, std, block=args.cam_block
        )

    return explain
