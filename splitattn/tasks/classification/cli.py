"""``splitattn train``, ``splitattn evaluate`` and ``splitattn predict``.

``train`` options come from three places, later ones winning: the defaults below, a
``--config`` file (YAML/JSON, keys are the long option names), and the command line.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List

import torch

from ...deploy.optimize import BACKENDS, optimize_for_inference
from ...config import ClassifyConfig, add_arguments, from_dict, resolve

# Without --data, `splitattn train` is the quick demo on scikit-learn's digits (about a minute on
# 2 CPU cores): a narrow resnest14 for 2 epochs, no flips (digits are not mirror images). Options
# given on the command line or in a config file still win over these.
DIGITS_DEFAULTS: Dict[str, Any] = {"epochs": 2, "hflip": 0.0, "model_kwargs": {"bottleneck_width": 16, "stem_width": 16}}


def resolve_train_options(args: argparse.Namespace) -> Dict[str, Any]:
    """Defaults < config file < command line, checked against ``ClassifyConfig``, as plain options."""
    config, given = resolve(ClassifyConfig, args)
    if not config.data:
        config = from_dict(ClassifyConfig, {**DIGITS_DEFAULTS, **given}, "the options")
    return config.to_dict()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a classifier (paper recipe in configs/)",
                                  argument_default=argparse.SUPPRESS,
                                  description="Train on an image folder (or the built-in digits) with the ResNeSt recipe. "
                                              "Run under torchrun for several processes.")
    add_arguments(train, ClassifyConfig)
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
    _add_inference_args(predict)
    predict.add_argument("--topk", type=int, default=5)
    predict.set_defaults(func=run_predict)


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--weights", required=True, help="checkpoint of `splitattn train` (last.pt/best.pt)")
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
    from ...data import build_eval_transform
    from ...models.registry import get_model_spec
    from .checkpoint import load_trained_model

    model, classes, options = load_trained_model(args.model, args.weights, use_ema=args.ema)
    size = args.img_size or options.get("eval_img_size") or options.get("img_size") \
        or get_model_spec(args.model).eval_config.input_size
    crop_pct = options.get("crop_pct", get_model_spec(args.model).eval_config.crop_pct)
    num_classes = model.num_classes
    if args.fast:
        model = optimize_for_inference(model, args.precision, backend=args.backend, example_size=int(size))
    elif args.precision != "fp32":
        raise ValueError(f"--precision {args.precision} is a setting of the fast path; add --fast.")
    return model, num_classes, classes, build_eval_transform(int(size), crop_pct), int(size)


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
    from ...data import open_rgb

    model, num_classes, classes, transform, _ = _inference_setup(args)
    if classes is None:
        classes = imagenet_class_names() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    for path in args.images:
        try:
            image = open_rgb(path)
        except (OSError, ValueError, SyntaxError) as error:
            print(f"{path}: cannot read image ({type(error).__name__}: {error})")
            continue
        probs = model(transform(image)[None]).softmax(-1)[0]
        top = probs.topk(min(args.topk, len(classes)))
        print(path)
        for prob, index in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {prob * 100:6.2f}%  {classes[index]}")
    return 0
