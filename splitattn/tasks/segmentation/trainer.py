"""``train(config)``: a segmentation run, from data folder to ``metrics.json``.

The task's own parts (``build_run``): the data sets with the joint transforms, the model (optionally
from a classification checkpoint), the pixel loss with the auxiliary head, the mIoU evaluator (every
``eval_every`` epochs and at the end), SGD with the heads at ``head_lr_mult`` x the backbone's learning
rate and the poly schedule per iteration. The engine (``splitattn.engine.loop``) runs the rest.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Mapping, Tuple, Union

import torch
from torch import nn

from ...config.schemas import SegmentConfig
from ...config.values import as_config
from ...data.checks import warn_about_overlap
from ...data.segmentation.datasets import SegmentationDataset, collate_eval
from ...data.segmentation.label_maps import IGNORE_INDEX
from ...data.segmentation.layouts import build_dataset
from ...data.segmentation.transforms import SegmentationEvalTransform, SegmentationTrainTransform
from ...engine.balance import median_frequency_weights
from ...engine.data import accumulation_steps, eval_loader, train_loader
from ...engine.distributed import DistContext
from ...engine.loop import EvalResult, StepResult, TrainingRun, run_training
from ...engine.optim import parameter_groups, poly
from ...errors import DataError
from ...viz.curves import LEARNING_RATE, LOSS, Panel
from ..finetune import learning_rate_scales, with_pretrained_architecture
from ..run_diagnostics import describe, diagnostics_folder
from .checkpoint import COMMAND, TASK, model_from_config
from .diagnostics import write_segmentation_diagnostics
from .engine import evaluate
from .metrics import format_iou_table
from .model import BACKBONE_PREFIX, segmentation_loss

# The plots of curves.png.
PANELS = (
    LOSS,
    LEARNING_RATE,
    Panel("mIoU / pixel accuracy (%)", (("val_miou", "val mIoU"), ("val_pixel_acc", "val pixel acc.")), True),
)


def build_datasets(config: SegmentConfig) -> Tuple[SegmentationDataset, SegmentationDataset]:
    """(training set with the random joint transform, validation set at full size)."""
    channels = config.in_chans
    common = dict(
        classes=config.classes,
        ignore_value=config.ignore_value,
        skip_bad=config.skip_bad,
        channels=channels,
        palette=config.palette,
    )
    train_tf = SegmentationTrainTransform(
        config.base_size, config.crop_size, tuple(config.scale_range), config.hflip, channels=channels
    )
    train_set = build_dataset(config.dataset, config.data, config.train_split, train_tf, **common)
    val_set = build_dataset(
        config.dataset, config.data, config.val_split, SegmentationEvalTransform(channels=channels), **common
    )
    return train_set, val_set


def _check_data_size(batch: int, world_size: int, train_size: int) -> None:
    if train_size < batch * world_size:
        raise DataError(
            f"{train_size} training images make no full batch of {batch} x {world_size}; "
            "lower --batch-size or add data."
        )


def train(config: Union[SegmentConfig, Mapping[str, Any]]) -> Dict[str, Any]:
    """Train as ``config`` (a ``SegmentConfig`` or a mapping of its fields) says; returns the final metrics.

    Raises:
        ConfigError: options that cannot work (before any data is read).
        NonFiniteLossError: the loss diverged.
    """
    config = with_pretrained_architecture(as_config(SegmentConfig, config))
    return run_training(config.train_settings(), lambda dist_ctx: build_run(config, dist_ctx))


def build_run(config: SegmentConfig, dist_ctx: DistContext) -> TrainingRun:
    """The segmentation parts of a run: data, model, pixel cross-entropy (+ auxiliary head), mIoU evaluator."""
    device = dist_ctx.device
    train_set, val_set = build_datasets(config)
    classes = train_set.classes
    batch, workers = config.batch_size, config.workers
    _check_data_size(batch, dist_ctx.world_size, len(train_set))
    global_batch, accum_steps = accumulation_steps(batch, config.global_batch, dist_ctx.world_size)
    loader = train_loader(train_set, batch, dist_ctx, config.seed, workers)
    val_loader = eval_loader(val_set, 1, dist_ctx, workers, collate_eval)
    epochs, steps_per_epoch = config.epochs, len(loader) // accum_steps
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(train_set)} training images make no optimizer step of {global_batch} images; "
            "lower --global-batch or add data."
        )
    model = model_from_config(config, len(classes), pretrained=config.pretrained or False).to(device)
    lr, aux_weight = config.lr, config.aux_weight
    heads = [p for head in (model.head, model.aux_head) if head is not None for p in head.parameters()]
    scales = learning_rate_scales(
        model, model.backbone, BACKBONE_PREFIX, config.layer_decay, heads, config.head_lr_mult
    )
    class_weights = None
    if config.class_weights:
        class_weights = torch.as_tensor(median_frequency_weights(train_set.pixel_counts()), dtype=torch.float32)
    eval_args = dict(
        num_classes=len(classes),
        device=device,
        class_names=classes,
        base_size=config.base_size,
        crop_size=config.eval_crop_size,
        amp=config.amp,
    )

    def loss(train_model: nn.Module, micro_batch: Any, step: int) -> StepResult:
        inputs, targets = (t.to(device, non_blocking=True) for t in micro_batch)
        value = segmentation_loss(train_model(inputs), targets, IGNORE_INDEX, aux_weight, class_weights)
        return value, {"images": inputs.shape[0], "loss": value.detach() * inputs.shape[0]}

    def evaluate_model(eval_model: nn.Module, final: bool) -> EvalResult:
        result = evaluate(eval_model, val_loader, progress=dist_ctx.is_main and config.progress, **eval_args)
        return {"loss": result["loss"], "miou": result["miou"], "pixel_acc": result["pixel_acc"]}, result

    def summarize(result: Dict[str, Any], state: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
        confusion = result.pop("confusion")
        metrics = dict(
            result,
            epoch=epochs,
            best_miou=state["best_miou"],
            backbone=config.backbone,
            head=config.head,
            output_stride=config.output_stride,
            scales=[1.0],
            flip=False,
            train_images=len(train_set),
            val_images=len(val_set),
            skipped_pairs=len(train_set.skipped) + len(val_set.skipped),
        )
        if dist_ctx.is_main and config.diagnostics:
            folder = diagnostics_folder(state)
            diagnostics = write_segmentation_diagnostics(folder, confusion, classes)
            print(describe(diagnostics, folder, "val, per class"), flush=True)
        elif dist_ctx.is_main:
            print(format_iou_table(metrics["per_class"]))
        return metrics, (
            f"val after {epochs} epoch{'s' if epochs != 1 else ''}: mIoU {metrics['miou']:.2f}%, "
            f"pixAcc {metrics['pixel_acc']:.2f}%"
        )

    skipped = len(train_set.skipped) + len(val_set.skipped)
    if dist_ctx.is_main:
        warn_about_overlap([p[0] for p in train_set.pairs], [p[0] for p in val_set.pairs], "training", "validation")
        for problem in (train_set.skipped + val_set.skipped)[:5]:
            print(f"warning: skipped {problem}", file=sys.stderr)
    intro = (
        f"training {config.head} on {config.backbone} (output stride {config.output_stride}) with "
        f"{len(train_set)} training / {len(val_set)} validation images, {len(classes)} classes"
        + (f", {skipped} bad pairs skipped" if skipped else "")
        + f"; global batch {global_batch} = {batch} x {dist_ctx.world_size} process(es) x {accum_steps} "
        f"accumulation, {config.optimizer} lr {lr:g}, {epochs} epoch{'s' if epochs != 1 else ''} of "
        f"{steps_per_epoch} iterations"
        + (f", layer decay {config.layer_decay:g}" if config.layer_decay is not None else "")
        + (
            "; class weights " + ", ".join(f"{n} {w:.2f}" for n, w in zip(classes, class_weights.tolist()))
            if class_weights is not None
            else ""
        )
    )
    return TrainingRun(
        model=model,
        loader=loader,
        lr=lr,
        param_groups=parameter_groups(model, config.weight_decay, lr, scales),
        make_schedule=lambda optimizer, total: poly(optimizer, total, config.poly_power),
        loss=loss,
        evaluate=evaluate_model,
        summarize=summarize,
        total_steps=epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        best_key="miou",
        panels=PANELS,
        accum_steps=accum_steps,
        eval_every=config.eval_every * steps_per_epoch,
        checkpoint_every=config.checkpoint_every,
        intro=intro,
        eval_model=model,
        state={
            "classes": classes,
            "dataset": train_set.name,
            "task": TASK,
            "command": f"{COMMAND} train",
            "backbone_prefix": BACKBONE_PREFIX,
            "model_name": model.backbone.model_name,
        },
    )


def describe_dataset(dataset: SegmentationDataset) -> str:
    """One line: size, classes and skipped pairs."""
    skipped = f", {len(dataset.skipped)} bad pairs skipped" if dataset.skipped else ""
    return f"{dataset.name}: {len(dataset)} images, {dataset.num_classes} classes{skipped}"
