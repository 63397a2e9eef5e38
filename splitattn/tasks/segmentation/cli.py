"""``splitattn segment train|evaluate|predict``.

``train`` options come from the defaults of ``SegmentConfig``, a ``--config`` file (YAML/JSON, keys are the
long option names; see ``configs/segmentation/``) and the command line, later ones winning. ``evaluate`` and
``predict`` default to the options of the run that wrote ``--weights``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Sequence

from ...config.arguments import (
    add_task_commands,
    add_train_command,
    add_weights_arguments,
    evaluation_folder,
    model_source,
    resolve,
)
from ...config.schemas import SEGMENTATION_DATASETS, SEGMENTATION_MULTI_SCALES, SegmentConfig, field_default


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    commands = add_task_commands(subparsers, "segment", "semantic segmentation: DeepLabV3/FCN on dilated ResNeSt")
    add_train_command(
        commands,
        SegmentConfig,
        run_train,
        "train a segmentation model",
        "Train DeepLabV3 (or FCN) on a dilated ResNeSt. Run under torchrun for several processes. "
        "configs/segmentation/ holds the paper's ADE20K settings.",
    )

    evaluate = commands.add_parser("evaluate", help="pixAcc / mIoU / per-class IoU of a trained model")
    add_weights_arguments(evaluate, "last.pt or best.pt of `splitattn segment train`", exported=True)
    evaluate.add_argument("--data", help="data root (default: the run's)")
    evaluate.add_argument("--dataset", choices=SEGMENTATION_DATASETS, help="(default: the run's)")
    evaluate.add_argument("--split", default=None, help="(default: the run's validation split)")
    evaluate.add_argument("--ignore-value", type=int, help="folder data sets (default: the run's)")
    evaluate.add_argument("--skip-bad", action="store_true", help="skip and count unmatched files / size mismatches")
    evaluate.add_argument(
        "--output",
        help="folder for metrics.json and the per-class diagnostics (default: eval-<split>-<ss|ms> by the weights)",
    )
    evaluate.add_argument("--workers", type=int, default=field_default(SegmentConfig, "workers"))
    _add_inference_args(evaluate)
    evaluate.set_defaults(func=run_evaluate)

    predict = commands.add_parser("predict", help="colour mask and overlay PNG per image")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    add_weights_arguments(predict, "last.pt or best.pt of `splitattn segment train`", exported=True)
    predict.add_argument(
        "--output",
        default="predictions",
        help="folder for <name>_mask.png and <name>_overlay.png (default: predictions)",
    )
    predict.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlay")
    _add_inference_args(predict)
    predict.set_defaults(func=run_predict)


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--multi-scale",
        action="store_true",
        help=f"scales {', '.join(map(str, SEGMENTATION_MULTI_SCALES))} with flip (PyTorch-Encoding's testing)",
    )
    parser.add_argument("--scales", type=float, nargs="+", help="explicit scales (default 1.0)")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image")
    parser.add_argument("--base-size", type=int, help="long side at scale 1 (default: the run's)")
    parser.add_argument("--eval-crop-size", type=int, help="sliding-window size (default: the run's)")


def run_train(args: argparse.Namespace) -> int:
    from .trainer import train

    train(resolve(SegmentConfig, args)[0])
    return 0


def _inference_plan(args: argparse.Namespace, config: SegmentConfig) -> Dict[str, Any]:
    scales: Sequence[float] = args.scales or (SEGMENTATION_MULTI_SCALES if args.multi_scale else (1.0,))
    return dict(
        scales=list(scales),
        flip=bool(args.flip or args.multi_scale),
        base_size=args.base_size or config.base_size,
        crop_size=args.eval_crop_size or config.eval_crop_size,
    )


def _load_model(args: argparse.Namespace, action: str):
    """``(model on its device, class names, the run's options, device)`` of ``--weights`` or ``--exported``."""
    from ...devices import pick_device

    if model_source(args) == "exported":
        import torch

        from ...deploy.evaluation import load_exported_segmenter

        return (*load_exported_segmenter(args.exported), torch.device("cpu"))
    from .checkpoint import load_segmentation_model

    model, classes, config = load_segmentation_model(args.weights, action)
    device = pick_device(args.device)
    return model.to(device), classes, config, device


def run_evaluate(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from ...data.segmentation.datasets import collate_eval
    from ...engine.log import dumps
    from ..run_diagnostics import describe
    from .diagnostics import write_segmentation_diagnostics
    from .engine import evaluate, evaluation_dataset
    from .trainer import describe_dataset

    model, classes, config, device = _load_model(args, "evaluate")
    split = args.split or config.val_split
    dataset = evaluation_dataset(config, classes, args.data, split, args.dataset, args.ignore_value, args.skip_bad)
    plan = _inference_plan(args, config)
    loader = DataLoader(dataset, batch_size=1, num_workers=args.workers, collate_fn=collate_eval)
    print(describe_dataset(dataset), flush=True)
    result = evaluate(model, loader, len(classes), device, classes, progress=True, **plan)
    confusion = result.pop("confusion")
    tag = "ms" if len(plan["scales"]) > 1 else "ss"
    source = args.weights or args.exported
    output = evaluation_folder(args, f"eval-{split}-{tag}")
    output.mkdir(parents=True, exist_ok=True)
    data = args.data or config.data
    metrics = dict(result, weights=str(source), data=str(data), split=split, skipped_pairs=len(dataset.skipped), **plan)
    (output / "metrics.json").write_text(dumps(metrics, indent=2))
    print(describe(write_segmentation_diagnostics(output, confusion, classes), output, f"{dataset.name}, per class"))
    print(
        f"{dataset.name}: mIoU {result['miou']:.2f}%  pixAcc {result['pixel_acc']:.2f}%  "
        f"({result['images']} images, scales {plan['scales']}{', flip' if plan['flip'] else ''}; "
        f"metrics in {output / 'metrics.json'})"
    )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from ...data.io import ImageReader
    from ...data.segmentation.transforms import normalize_image
    from .inference import predict_probs
    from .visualize import save_segmentation_outputs

    model, classes, config, device = _load_model(args, "predict")
    plan = _inference_plan(args, config)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    images = ImageReader(args.images, config.in_chans)
    for path, image in images:
        probs = predict_probs(model, normalize_image(image).to(device), **plan)
        labels = probs.argmax(0).cpu().numpy().astype(np.uint8)
        mask_path, overlay_path = save_segmentation_outputs(
            image, labels, classes, output / path.stem, config.dataset, args.alpha
        )
        counts = np.bincount(labels.ravel(), minlength=len(classes)) / labels.size * 100
        top = ", ".join(f"{classes[i]} {counts[i]:.1f}%" for i in np.argsort(-counts)[:3] if counts[i] > 0)
        print(f"{path}: {mask_path}, {overlay_path.name} ({top})")
    return images.exit_code
