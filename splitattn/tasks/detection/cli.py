"""``splitattn detect train|evaluate|predict``.

``train`` options come from the defaults of ``DetectConfig``, a ``--config`` file (YAML/JSON, keys are the long
option names; see ``configs/detection/``) and the command line, later ones winning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ...config.arguments import add_task_commands, add_train_command, add_weights_arguments, resolve
from ...config.schemas import DetectConfig, field_default
from ...errors import DataError, UsageError

if TYPE_CHECKING:
    import torch


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    commands = add_task_commands(
        subparsers, "detect", "object detection / instance segmentation: (Cascade) Faster/Mask R-CNN on ResNeSt-FPN"
    )
    add_train_command(
        commands,
        DetectConfig,
        run_train,
        "train a detector",
        "Train Faster/Mask/Cascade R-CNN on a ResNeSt-FPN backbone, iteration by iteration. Run under "
        "torchrun for several processes. configs/detection/ holds the paper's COCO settings.",
    )

    evaluate = commands.add_parser("evaluate", help="COCO box (and mask) AP of a trained detector")
    add_weights_arguments(evaluate, "last.pt or best.pt of `splitattn detect train`")
    evaluate.add_argument("--data", help="data root (default: the run's)")
    evaluate.add_argument("--annotations", help="COCO instances json (default: the run's)")
    evaluate.add_argument("--images", help="COCO image folder (default: the run's)")
    evaluate.add_argument("--split", help="(default: the run's evaluation split)")
    evaluate.add_argument("--max-images", type=int, help="only the first N images (default: the run's)")
    evaluate.add_argument(
        "--output",
        help="folder for metrics.json, detections.json and the per-class diagnostics (default: eval-<split> by the "
        "weights)",
    )
    evaluate.add_argument("--workers", type=int, default=field_default(DetectConfig, "workers"))
    evaluate.set_defaults(func=run_evaluate)

    predict = commands.add_parser("predict", help="draw detections (boxes, classes, scores, masks) onto images")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    add_weights_arguments(predict, "last.pt or best.pt of `splitattn detect train`")
    predict.add_argument(
        "--output", default="detections", help="folder for <name>_detections.png (default: detections)"
    )
    predict.add_argument(
        "--score-threshold", type=float, default=0.5, help="draw detections scoring at least this (default: 0.5)"
    )
    predict.add_argument(
        "--max-detections",
        type=int,
        default=100,
        help="draw at most this many per image, the highest scores first (default: 100)",
    )
    predict.set_defaults(func=run_predict)


def run_train(args: argparse.Namespace) -> int:
    from .trainer import train

    train(resolve(DetectConfig, args)[0])
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ...data.detection.dataset import collate_detection
    from ...data.detection.layouts import build_detection_dataset
    from ...devices import pick_device
    from ...engine.data import eval_loader
    from ...engine.distributed import DistContext
    from ...engine.log import dumps
    from ..run_diagnostics import describe
    from .checkpoint import load_detection_model
    from .diagnostics import diagnose
    from .engine import evaluate, format_metrics, iou_types
    from .evaluation import CocoEvaluator, check_ground_truth
    from .trainer import limit

    model, classes, config, _ = load_detection_model(args.weights, "evaluate")
    device = pick_device(args.device)
    split = args.split or config.val_split
    data = args.data or config.data
    if not data:
        raise UsageError("--data is required: the checkpoint does not name its data folder.")
    dataset = build_detection_dataset(
        config.dataset,
        data,
        split,
        False,
        annotation_file=args.annotations or config.annotations,
        images=args.images or config.images,
        classes=classes[1:],
        skip_bad=False,  # a missing or unreadable image is an error naming it, never left out of the score
        with_masks=False,
    )
    check_ground_truth(dataset)
    if dataset.classes != classes:
        raise DataError(
            f"{data} has classes {dataset.classes[1:6]}... but the model was trained on {classes[1:6]}...; "
            "evaluate on the data set it was trained for."
        )
    subset = limit(dataset, args.max_images if args.max_images is not None else config.max_images)
    print(dataset.summary(), flush=True)
    evaluator = CocoEvaluator(dataset.coco, iou_types(model, dataset.coco), dataset.contiguous_to_coco)
    loader = eval_loader(subset, 1, DistContext(device=device), args.workers, collate_detection)
    scores = evaluate(model.to(device), loader, evaluator, device, progress=True, unreadable="error")
    output = Path(args.output) if args.output else Path(args.weights).resolve().parent / f"eval-{split}"
    output.mkdir(parents=True, exist_ok=True)
    evaluator.write_results(output / "detections.json")
    metrics = dict(
        scores, weights=str(args.weights), data=str(data), split=split, images=len(subset), data_stats=dataset.stats
    )
    for kind, report in evaluator.reports.items():
        print(f"{kind}:\n{report}")
    diagnostics, per_class = diagnose(output, evaluator, dataset)
    metrics.update(per_class)
    for kind, written in diagnostics.items():
        print(describe(written, output / kind, f"{kind}, per category"))
    for note in evaluator.notes:  # e.g. no detection at all: no per-category scores either
        print(note)
    (output / "metrics.json").write_text(dumps(metrics, indent=2))
    print(f"{format_metrics(scores)} ({len(subset)} images; metrics in {output / 'metrics.json'})")
    return 0


def no_detections_hint(scores: torch.Tensor, threshold: float) -> str:
    """Why a picture shows no detection, and what to try: the highest score under ``--score-threshold``."""
    if not len(scores):
        return "the model found no object at all (not even below --score-threshold)"
    return (
        f"the highest score, {float(scores.max()):.3f}, is below --score-threshold {threshold:g}; "
        "pass a lower --score-threshold to draw the weaker detections"
    )


def run_predict(args: argparse.Namespace) -> int:
    import torch
    from torchvision.transforms.v2 import functional as TF

    from ...data.io import ImageReader
    from ...devices import pick_device
    from .checkpoint import load_detection_model
    from .inference import draw_detections, keep_confident

    model, classes, _, _ = load_detection_model(args.weights, "predict")
    device = pick_device(args.device)
    model.to(device)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    images = ImageReader(args.images)
    for path, picture in images:
        image = TF.pil_to_tensor(picture).float().div_(255)
        with torch.no_grad():
            raw = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        detections = keep_confident(raw, args.score_threshold)
        detections = {k: v[: args.max_detections] for k, v in detections.items()}  # sorted by score
        picture = draw_detections(image, detections, classes)
        target = output / f"{path.stem}_detections.png"
        TF.to_pil_image(picture).save(target)
        found = ", ".join(
            f"{classes[label]} {score:.2f}"
            for label, score in zip(detections["labels"].tolist(), detections["scores"].tolist())
        )
        if found:
            print(f"{path}: {target} ({len(detections['labels'])} detections: {found})")
            continue
        hint = no_detections_hint(raw["scores"], args.score_threshold)
        print(f"{path}: {target} (no detections: {hint})")
        print(f"warning: {path}: the picture shows no detections: {hint}", file=sys.stderr)
    return images.exit_code
