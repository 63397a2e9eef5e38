"""``splitattn train``, ``splitattn evaluate`` and ``splitattn predict``.

``train`` options come from three places, later ones winning: the defaults below, a
``--config`` file (YAML/JSON, keys are the long option names), and the command line.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from ...deploy.optimize import BACKENDS, optimize_for_inference
from ...layers.norm import NORM_LAYERS
from ...models.registry import EvalConfig
from ...utils.config import merge_options

# (flags, default, argparse keywords): every entry is also a config-file key.
TRAIN_OPTIONS: List[Tuple[Tuple[str, ...], Any, Dict[str, Any]]] = [
    (("--data",), None, dict(metavar="DIR", help="folder with train/ and val/ (or test/) as ImageFolder trees or "
                                                  ".csv lists of path,label; omitted: scikit-learn's digits")),
    (("--model",), "resnest14", dict(help="registered model name (`splitattn models`)")),
    (("--output",), None, dict(metavar="DIR", help="run folder for checkpoints and logs (default runs/<model>)")),
    (("--config",), None, dict(metavar="FILE", help="YAML or JSON file of options; flags override it")),
    (("--epochs",), 10, dict(type=int)),
    (("--batch-size",), 64, dict(type=int, help="images per process per micro-batch")),
    (("--global-batch",), None, dict(type=int, help="images per optimizer step; reached by gradient accumulation")),
    (("--lr",), None, dict(type=float, help="peak learning rate (default base-lr x global batch / 256)")),
    (("--base-lr",), 0.1, dict(type=float, help="learning rate per 256 images")),
    (("--momentum",), 0.9, dict(type=float)),
    (("--weight-decay",), 1e-4, dict(type=float, help="on conv/linear weights; none on biases and norm parameters")),
    (("--warmup-epochs",), 0.0, dict(type=float, help="linear warm-up before the cosine decay")),
    (("--label-smoothing",), 0.0, dict(type=float)),
    (("--mixup",), 0.0, dict(type=float, metavar="ALPHA", help="mixup Beta(alpha, alpha); 0 disables")),
    (("--augment",), True, dict(action=argparse.BooleanOptionalAction,
                                help="random augmentation; --no-augment trains on the evaluation transform")),
    (("--rrc-scale",), [0.08, 1.0], dict(type=float, nargs=2, metavar=("MIN", "MAX"),
                                         help="area range of the random-resized crop")),
    (("--hflip",), 0.5, dict(type=float, help="horizontal flip probability")),
    (("--auto-augment",), False, dict(action=argparse.BooleanOptionalAction, help="AutoAugment, ImageNet policy")),
    (("--color-jitter",), 0.0, dict(type=float, help="brightness/contrast/saturation jitter")),
    (("--pca-lighting",), 0.0, dict(type=float, help="AlexNet PCA lighting noise std")),
    (("--drop-block",), 0.0, dict(type=float, help="DropBlock probability in stages 3-4, ramped from 0")),
    (("--dropout",), 0.0, dict(type=float, help="dropout before the classifier")),
    (("--zero-init-last",), True, dict(action=argparse.BooleanOptionalAction, help="zero the last BN gamma of blocks")),
    (("--norm",), "batchnorm", dict(choices=NORM_LAYERS, help="normalisation layer")),
    (("--sync-bn",), False, dict(action=argparse.BooleanOptionalAction, help="SyncBatchNorm under torchrun (GPUs)")),
    (("--model-kwargs",), {}, dict(type=str, nargs="*", metavar="KEY=VALUE",
                                    help="more create_model overrides, e.g. stem_width=16 bottleneck_width=32")),
    (("--pretrained",), None, dict(nargs="?", const=True, metavar="PATH",
                                   help="start from ImageNet weights (or a weights file); the classifier is re-initialised")),
    (("--img-size",), None, dict(type=int, help="training crop (default: the model's evaluation size)")),
    (("--eval-img-size",), None, dict(type=int, help="evaluation crop (default: --img-size)")),
    (("--crop-pct",), EvalConfig.crop_pct, dict(type=float, help="evaluation resizes the short side to crop / crop-pct "
                                                                  "(bilinear), then centre-crops")),
    (("--workers",), 2, dict(type=int, help="data-loading processes per training process")),
    (("--threads",), None, dict(type=int, help="torch CPU threads (default: cores / processes)")),
    (("--seed",), 0, dict(type=int)),
    (("--deterministic",), False, dict(action=argparse.BooleanOptionalAction,
                                       help="deterministic kernels: resumed runs match uninterrupted ones bit for bit")),
    (("--resume",), None, dict(metavar="PATH|auto", help="continue from a checkpoint; auto: OUTPUT/last.pt if any")),
    (("--device",), None, dict(choices=("cpu", "cuda"), help="default: cuda when available")),
    (("--amp",), "none", dict(choices=("none", "bf16", "fp16"), help="mixed precision")),
    (("--channels-last",), False, dict(action=argparse.BooleanOptionalAction)),
    (("--compile",), False, dict(action=argparse.BooleanOptionalAction, help="torch.compile the model")),
    (("--memory-budget",), 1.0, dict(type=float, help="with --compile: activation memory budget in (0, 1]; lower "
                                                       "recomputes cheap ops in backward to save memory (0.7: "
                                                       "0.57x timm's peak for resnest50, and faster)")),
    (("--grad-checkpointing",), False, dict(action=argparse.BooleanOptionalAction,
                                            help="recompute activations in backward to save memory")),
    (("--ema",), False, dict(action=argparse.BooleanOptionalAction, help="keep and evaluate an EMA of the weights")),
    (("--ema-decay",), 0.9998, dict(type=float)),
    (("--progress",), True, dict(action=argparse.BooleanOptionalAction, help="progress bar")),
    (("--tensorboard",), True, dict(action=argparse.BooleanOptionalAction, help="TensorBoard event files")),
]


def _dest(flags: Tuple[str, ...]) -> str:
    return flags[0].lstrip("-").replace("-", "_")


TRAIN_DEFAULTS: Dict[str, Any] = {_dest(flags): default for flags, default, _ in TRAIN_OPTIONS}
# Without --data, `splitattn train` is the quick demo on scikit-learn's digits (about a minute on
# 2 CPU cores): a narrow resnest14 for 2 epochs, no flips (digits are not mirror images). Options
# given on the command line or in a config file still win over these.
DIGITS_DEFAULTS: Dict[str, Any] = {"epochs": 2, "hflip": 0.0, "model_kwargs": {"bottleneck_width": 16, "stem_width": 16}}


def parse_model_kwargs(items: Any) -> Dict[str, Any]:
    """``["a=1", "b=x"]`` (command line) or a mapping (config file) -> dict with YAML-typed values."""
    if isinstance(items, dict):
        return dict(items)
    import yaml

    parsed: Dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-kwargs takes KEY=VALUE pairs, got {item!r}.")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def resolve_train_options(args: argparse.Namespace) -> Dict[str, Any]:
    """Defaults < config file < command line, as one plain dict of options."""
    explicit = {key: value for key, value in vars(args).items() if key in TRAIN_DEFAULTS}
    choices = {_dest(flags): kw["choices"] for flags, _, kw in TRAIN_OPTIONS if "choices" in kw}
    options = merge_options(TRAIN_DEFAULTS, explicit, explicit.get("config"), choices)
    if not options["data"]:
        options = merge_options({**TRAIN_DEFAULTS, **DIGITS_DEFAULTS}, explicit, explicit.get("config"), choices)
    options["model_kwargs"] = parse_model_kwargs(options["model_kwargs"])
    if options["resume"] not in (None, "auto") and not Path(options["resume"]).is_file():
        raise FileNotFoundError(f"--resume {options['resume']!r}: no such checkpoint; use a path or 'auto'.")
    return options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a classifier (paper recipe in configs/)",
                                  argument_default=argparse.SUPPRESS,
                                  description="Train on an image folder (or the built-in digits) with the ResNeSt recipe. "
                                              "Run under torchrun for several processes.")
    for flags, default, keywords in TRAIN_OPTIONS:
        help_text = keywords.pop("help", "")
        keywords["help"] = f"{help_text} (default: {default})".strip()
        train.add_argument(*flags, **keywords)
    train.add_argument("--debug", action="store_true", help="show tracebacks")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("evaluate", help="top-1/top-5 of a trained model on an image folder")
    evaluate.add_argument("--data", required=True, help="folder with val/ or test/ (or that split itself), or a .csv")
    _add_inference_args(evaluate)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--workers", type=int, default=2)
    evaluate.set_defaults(func=run_evaluate)

    predict = subparsers.add_parser("predict", help="top-k classes of images")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    _add_inference_args(predict, required=False)
    predict.add_argument("--onnx", "--torchscript", dest="exported", metavar="FILE", default=None,
                         help="run a file of `splitattn export` (ONNX or TorchScript) with its stored class names and "
                              "preprocessing, instead of --model/--weights")
    predict.add_argument("--topk", type=int, default=5)
    predict.set_defaults(func=run_predict)


def _add_inference_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="registered model name")
    parser.add_argument("--weights", required=required, help="checkpoint of `splitattn train` (last.pt/best.pt)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="evaluation crop (default: the run's evaluation size, else the model's)")
    parser.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    parser.add_argument("--fast", action="store_true",
                        help="run through splitattn.optimize_for_inference (BN folded, channels_last, compiled)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="with --fast: compute precision")
    parser.add_argument("--backend", default="compile", choices=BACKENDS, help="with --fast: compile, torchscript or eager")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run_train(args: argparse.Namespace) -> int:
    from .trainer import train

    train(resolve_train_options(args))
    return 0


def _inference_setup(args: argparse.Namespace):
    from ...data import build_eval_transform, eval_transform_for
    from ...models.registry import get_model_spec
    from ...weights.sources import eval_config_for_file
    from .checkpoint import load_trained_model

    model, classes, options = load_trained_model(args.model, args.weights, use_ema=args.ema)
    if options:  # a run trained here: the validation transform it was trained with
        size = args.img_size or options.get("eval_img_size") or options.get("img_size") \
            or get_model_spec(args.model).eval_config.input_size
        transform = build_eval_transform(int(size), options.get("crop_pct", EvalConfig.crop_pct))
    else:  # published weights: the protocol of their source (the authors' or timm's)
        config = eval_config_for_file(args.model, Path(str(args.weights)).name)
        config = config.at_size(args.img_size) if args.img_size else config
        size, transform = config.input_size, eval_transform_for(config)
    num_classes = model.num_classes
    if args.fast:
        model = optimize_for_inference(model, args.precision, backend=args.backend, example_size=int(size))
    elif args.precision != "fp32":
        raise ValueError(f"--precision {args.precision} is a setting of the fast path; add --fast.")
    return model, num_classes, classes, transform, int(size)


def run_evaluate(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from ...data import collate_skip_bad, find_split, load_split
    from ...data.datasets import EVAL_SPLITS
    from .engine import evaluate

    model, num_classes, classes, transform, size = _inference_setup(args)
    root = Path(args.data)
    has_split = root.is_dir() and any((root / s).exists() or (root / f"{s}.csv").exists() for s in EVAL_SPLITS)
    location = find_split(root, EVAL_SPLITS) if has_split else root  # else: the split folder or CSV itself
    dataset = load_split(location, transform, classes=classes)
    if classes is None and len(dataset.classes) != num_classes:
        raise ValueError(f"{location} has {len(dataset.classes)} classes but the model has {num_classes}; "
                         "its folders must be all the model's classes in label order.")
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_skip_bad)
    result = evaluate(model, loader, torch.device("cpu"))
    print(f"{args.model} on {location} ({result['images']} images at {size}px): "
          f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}"
          + (f"  (skipped {result['bad_images']} unreadable)" if result["bad_images"] else ""))
    return 0


def imagenet_class_names() -> List[str]:
    """ImageNet-1k class names in label order, from torchvision's weights metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


@torch.no_grad()
def run_predict(args: argparse.Namespace) -> int:
    from ...data import read_image

    if args.exported:
        from ...deploy.runtime import predict_exported

        if args.model or args.weights or args.img_size or args.ema or args.fast:
            raise ValueError("--onnx/--torchscript runs the exported file with its stored model and preprocessing; "
                             "drop --model, --weights, --img-size, --ema and --fast.")

        return predict_exported(args.exported, args.images, args.topk)
    if not (args.model and args.weights):
        raise ValueError("predict needs --model and --weights (or --onnx FILE for an exported model).")
    model, num_classes, classes, transform, _ = _inference_setup(args)
    if classes is None:
        classes = imagenet_class_names() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    for path in args.images:
        try:
            image = read_image(path, channels=getattr(model, "in_chans", 3))
        except (OSError, ValueError, SyntaxError) as error:
            print(f"{path}: cannot read image ({type(error).__name__}: {error})")
            continue
        probs = model(transform(image)[None]).softmax(-1)[0]
        top = probs.topk(min(args.topk, len(classes)))
        print(path)
        for prob, index in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {prob * 100:6.2f}%  {classes[index]}")
    return 0
