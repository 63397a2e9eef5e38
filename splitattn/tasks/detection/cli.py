"""``splitattn detect train|evaluate|predict``.

``train`` options come from the defaults of ``DetectConfig``, a ``--config`` file (YAML/JSON, keys are the long
option names; see ``configs/detection/``) and the command line, later ones winning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ...config.arguments import (
    add_task_commands,
    add_train_command,
    add_weights_arguments,
    evaluation_folder,
    model_source,
    resolve,
)
from ...config.schemas import DETECTION_SCORE_THRESHOLD, DetectConfig, field_default

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
    add_weights_arguments(evaluate, "last.pt or best.pt of `splitattn detect train`", exported=True)
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
    add_weights_arguments(predict, "last.pt or best.pt of `splitattn detect train`", exported=True)
    predict.add_argument(
        "--output", default="detections", help="folder for <name>_detections.png (default: detections)"
    )
    predict.add_argument(
        "--score-threshold",
        type=float,
        default=DETECTION_SCORE_THRESHOLD,
        help=f"draw detections scoring at least this (default: {DETECTION_SCORE_THRESHOLD})",
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


def _load_model(args: argparse.Namespace, action: str):
    """``(model on its device, class names, the run's options, device)`` of ``--weights`` or ``--exported``."""
    from ...devices import pick_device

    if model_source(args) == "exported":
        import torch

        from ...deploy.evaluation import load_exported_detector

        model, classes, config, _ = load_exported_detector(args.exported)
        return model, classes, config, torch.device("cpu")
    from .checkpoint import load_detection_model

    model, classes, config, _ = load_detection_model(args.weights, action)
    device = pick_device(args.device)
    return model.to(device), classes, config, device


def run_evaluate(args: argparse.Namespace) -> int:
    from ...data.detection.dataset import collate_detection
    from ...engine.data import eval_loader
    from ...engine.distributed import DistContext
    from ...engine.log import dumps
    from ..run_diagnostics import describe
    from .diagnostics import diagnose
    from .engine import evaluate, evaluation_dataset, format_metrics, iou_types
    from .evaluation import CocoEvaluator
    from .trainer import limit

    model, classes, config, device = _load_model(args, "evaluate")
    split = args.split or config.val_split
    dataset = evaluation_dataset(config, classes, args.data, split, args.annotations, args.images)
    subset = limit(dataset, args.max_images if args.max_images is not None else config.max_images)
    print(dataset.summary(), flush=True)
    evaluator = CocoEvaluator(dataset.coco, iou_types(model, dataset.coco), dataset.contiguous_to_coco)
    loader = eval_loader(subset, 1, DistContext(device=device), args.workers, collate_detection)
    scores = evaluate(model, loader, evaluator, device, progress=True, unreadable="error")
    source = args.weights or args.exported
    output = evaluation_folder(args, f"eval-{split}")
    output.mkdir(parents=True, exist_ok=True)
    evaluator.write_results(output / "detections.json")
    data = args.data or config.data
    metrics = dict(
        scores, weights=str(source), data=str(data), split=split, images=len(subset), data_stats=dataset.stats
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
    from .inference import draw_detections, keep_confident

    model, classes, _, device = _load_model(args, "predict")
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
