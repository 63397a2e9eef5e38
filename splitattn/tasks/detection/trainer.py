"""``train(config)``: an iteration-based detection run, from annotation file to ``metrics.json``.

The task's own parts (``build_run``): the data sets (COCO json or VOC XML, bad input cleaned and
counted), the detector (backbone optionally from a classification checkpoint), its summed losses, the
COCO evaluator, SGD groups without weight decay on biases and norm parameters and the detectron2
schedule (linear warm-up from ``warmup_factor``, then x ``gamma`` at each of ``steps``). The engine
(``splitattn.engine.loop``) iterates: a log record every ``log_every`` iterations, ``last.pt`` every
``checkpoint_every``, COCO evaluation (and ``best.pt``) every ``eval_every`` iterations and at the end;
``--resume auto`` continues at the exact iteration with the data order of an uninterrupted run.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from torch import nn
from torch.utils.data import Dataset, Subset

from ...config.schemas import DetectConfig
from ...config.values import as_config
from ...data.checks import warn_about_overlap
from ...data.detection.dataset import DetectionDataset, collate_detection
from ...data.detection.layouts import build_detection_dataset
from ...data.detection.transforms import build_detection_train_transform
from ...engine.balance import repeat_factors
from ...engine.data import eval_loader, train_loader
from ...engine.distributed import DistContext
from ...engine.loop import EvalResult, TrainingRun, run_training
from ...engine.optim import parameter_groups, warmup_multistep
from ...errors import DataError
from ...viz.curves import LEARNING_RATE, LOSS, Panel
from ..finetune import learning_rate_scales, with_pretrained_architecture
from ..run_diagnostics import describe, diagnostics_folder
from .checkpoint import COMMAND, TASK, model_from_config
from .diagnostics import diagnose
from .engine import detection_loss, evaluate, format_metrics, iou_types
from .evaluation import CocoEvaluator, check_ground_truth
from .model import BACKBONE_PREFIX

# The plots of curves.png: the loss components are the detector's (train_loss_classifier, ..._box_reg_0, ...).
PANELS = (
    LOSS,
    Panel("loss components (train)", prefix="train_loss_"),
    LEARNING_RATE,
    Panel("box AP (%)", (("val_bbox_AP", "AP"), ("val_bbox_AP50", "AP50"), ("val_bbox_AP75", "AP75")), True),
    Panel("mask AP (%)", (("val_segm_AP", "AP"), ("val_segm_AP50", "AP50"), ("val_segm_AP75", "AP75")), True),
)


def build_datasets(config: DetectConfig) -> Tuple[DetectionDataset, DetectionDataset]:
    """(training set with the random flip, evaluation set), both with masks for mask models."""
    common = dict(
        annotation_file=config.annotations,
        images=config.images,
        classes=config.classes,
        skip_bad=config.skip_bad,
        with_masks="mask" in config.arch,
    )
    train_set = build_detection_dataset(
        config.dataset,
        config.data,
        config.train_split,
        True,
        build_detection_train_transform(config.hflip),
        **common,
    )
    val_set = build_detection_dataset(
        config.dataset, config.data, config.val_split, False, **dict(common, classes=train_set.classes[1:])
    )  # numbered as in training
    check_ground_truth(val_set)
    return train_set, val_set


def describe_repeat_factors(factors: np.ndarray, threshold: float) -> str:
    """One line for the log: how many images repeat and by how much, or why none does."""
    repeated = factors > 1.0
    if not repeated.any():
        return (
            f"repeat-factor sampling (--repeat-threshold {threshold:g}) repeats no image: every class is in more "
            f"than {threshold:.2%} of the images; raise --repeat-threshold to oversample the rarer classes"
        )
    return (
        f"repeat-factor sampling (--repeat-threshold {threshold:g}): {int(repeated.sum())} of {len(factors)} "
        f"images drawn up to {factors.max():.2f}x as often"
    )


def image_classes(dataset: DetectionDataset, count: int) -> List[List[int]]:
    """The classes of the objects a training image holds (crowd regions left out), for its first ``count``
    images."""
    return [record.labels[record.iscrowd == 0].tolist() for record in dataset.records[:count]]


def limit(dataset: DetectionDataset, count: Optional[int]) -> Dataset:
    """The first ``count`` images of ``dataset`` (all with ``None``)."""
    return Subset(dataset, range(min(int(count), len(dataset)))) if count else dataset


def train(config: Union[DetectConfig, Mapping[str, Any]]) -> Dict[str, Any]:
    """Train as ``config`` (a ``DetectConfig`` or a mapping of its fields) says; returns the final metrics.

    Raises:
        ConfigError: options that cannot work (before any data is read).
        NonFiniteLossError: the loss diverged.
    """
    config = with_pretrained_architecture(as_config(DetectConfig, config))
    return run_training(config.train_settings(), lambda dist_ctx: build_run(config, dist_ctx))


def build_run(config: DetectConfig, dist_ctx: DistContext) -> TrainingRun:
    """The detection parts of a run: data, detector, its summed losses and the COCO evaluator."""
    device = dist_ctx.device
    full_train, full_val = build_datasets(config)
    train_set, val_set = limit(full_train, config.max_images), limit(full_val, config.max_images)
    classes, batch, workers = full_train.classes, config.batch_size, config.workers
    if len(train_set) < batch * dist_ctx.world_size:
        raise DataError(
            f"{len(train_set)} training images make no full batch of {batch} x {dist_ctx.world_size}; "
            "lower --batch-size or add data."
        )
    sample_weights, sampling = None, ""
    if config.balanced_sampler:
        sample_weights = repeat_factors(image_classes(full_train, len(train_set)), config.repeat_threshold)
        sampling = describe_repeat_factors(sample_weights, config.repeat_threshold)
    loader = train_loader(train_set, batch, dist_ctx, config.seed, workers, collate_detection, sample_weights)
    val_loader = eval_loader(val_set, 1, dist_ctx, workers, collate_detection)
    model = model_from_config(config, len(classes), pretrained=config.pretrained or False).to(device)
    kinds, max_iter, lr = iou_types(model, full_val.coco), config.max_iter, config.lr
    body = model.backbone.body
    scales = learning_rate_scales(model, body, BACKBONE_PREFIX, config.layer_decay)

    def evaluate_model(eval_model: nn.Module, final: bool) -> EvalResult:
        evaluator = CocoEvaluator(full_val.coco, kinds, full_val.contiguous_to_coco)
        scores = evaluate(
            eval_model,
            val_loader,
            evaluator,
            device,
            config.amp,
            progress=dist_ctx.is_main and config.progress,
            unreadable="miss" if config.skip_bad else "error",
        )
        values = {f"{kind}_{name}": value for kind, values in scores.items() for name, value in values.items()}
        return values, dict(scores, evaluator=evaluator) if final and config.diagnostics else scores

    def summarize(result: Dict[str, Any], state: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
        evaluator = result.pop("evaluator", None)
        metrics = dict(
            result,
            iter=max_iter,
            best_bbox_AP=state["best_bbox_AP"],
            arch=config.arch,
            backbone=config.backbone,
            train_images=len(train_set),
            val_images=len(val_set),
            data_stats={"train": full_train.stats, "val": full_val.stats},
        )
        if dist_ctx.is_main and evaluator is not None:
            folder = diagnostics_folder(state)
            diagnostics, per_class = diagnose(folder, evaluator, full_val)
            metrics.update(per_class)
            for kind, written in diagnostics.items():
                print(describe(written, folder / kind, f"val {kind}, per category"), flush=True)
        return metrics, f"val after {max_iter} iterations: {format_metrics(result)}"

    if dist_ctx.is_main:
        for dataset in (full_train, full_val):
            print(dataset.summary(), flush=True)
        warn_about_overlap(
            [r.path for r in full_train.records],
            [r.path for r in full_val.records],
            f"training ({full_train.name})",
            f"validation ({full_val.name})",
        )
    intro = (
        f"training {config.arch} on {config.backbone}-FPN ({config.norm}) with {len(train_set)} "
        f"training / {len(val_set)} evaluation images, {len(classes) - 1} classes; batch {batch} x "
        f"{dist_ctx.world_size} process(es), {config.optimizer} lr {lr:g}, {max_iter} iterations"
        + (f", layer decay {config.layer_decay:g}" if config.layer_decay is not None else "")
        + (f"; {sampling}" if sampling else "")
    )
    return TrainingRun(
        model=model,
        loader=loader,
        param_groups=parameter_groups(model, config.weight_decay, lr, scales),
        lr=lr,
        make_schedule=lambda optimizer, total: warmup_multistep(
            optimizer, config.steps, config.gamma, config.warmup_iters, config.warmup_factor
        ),
        loss=lambda train_model, micro_batch, step: detection_loss(train_model, *micro_batch, device),
        evaluate=evaluate_model,
        summarize=summarize,
        total_steps=max_iter,
        steps_per_epoch=len(loader),
        best_key="bbox_AP",
        panels=PANELS,
        x_key="iter",
        log_every=config.log_every,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        intro=intro,
        eval_model=model,
        state={
            "classes": classes,
            "contiguous_to_coco": full_train.contiguous_to_coco,
            "task": TASK,
            "backbone_prefix": BACKBONE_PREFIX,
            "model_name": body.model_name,
            "command": f"{COMMAND} train",
        },
    )
