"""``train(options)``: a segmentation run, from data folder to ``metrics.json``.

The task's own parts (``build_run``): the data sets with the joint transforms, the model (optionally
from a classification checkpoint), the pixel loss with the auxiliary head, the mIoU evaluator (every
``eval_every`` epochs and at the end), SGD with the heads at ``head_lr_mult`` x the backbone's learning
rate and the poly schedule per iteration. The engine (``splitattn.engine.loop``) runs the rest.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Mapping, Tuple, Union

from torch import nn

from ...config import ConfigError, SegmentConfig, as_options, input_channels
from ...data.segmentation.datasets import SegmentationDataset, collate_eval
from ...data.segmentation.label_maps import IGNORE_INDEX
from ...data.segmentation.layouts import build_dataset
from ...data.segmentation.transforms import SegmentationEvalTransform, SegmentationTrainTransform
from ...engine.data import accumulation_steps, eval_loader, train_loader
from ...engine.distributed import DistContext
from ...engine.loop import EvalResult, StepResult, TrainingRun, run_training
from ...engine.optim import parameter_groups, poly
from ...errors import DataError
from .checkpoint import model_from_options
from .engine import evaluate
from .metrics import format_iou_table
from .model import BACKBONE_PREFIX, segmentation_loss


def build_datasets(options: Dict[str, Any]) -> Tuple[SegmentationDataset, SegmentationDataset]:
    """(training set with the random joint transform, validation set at full size)."""
    channels = input_channels(options)
    common = dict(
        classes=options.get("classes"),
        ignore_value=options.get("ignore_value"),
        skip_bad=bool(options.get("skip_bad")),
        channels=channels,
        palette=options.get("palette"),
    )
    train_tf = SegmentationTrainTransform(
        int(options["base_size"]),
        int(options["crop_size"]),
        tuple(options["scale_range"]),
        float(options["hflip"]),
        channels=channels,
    )
    train_set = build_dataset(options["dataset"], options["data"], options["train_split"], train_tf, **common)
    val_set = build_dataset(
        options["dataset"],
        options["data"],
        options["val_split"],
        SegmentationEvalTransform(channels=channels),
        **common,
    )
    return train_set, val_set


def _check_batch(options: Dict[str, Any], world_size: int, train_size: int) -> None:
    batch = int(options["batch_size"])
    if batch < 2 and not (options["sync_bn"] and world_size > 1):
        raise ConfigError(
            "the heads' BatchNorm (ASPP's pooled branch sees one value per image) needs --batch-size "
            ">= 2 per process; raise it, or use --sync-bn under torchrun."
        )
    if train_size < batch * world_size:
        raise DataError(
            f"{train_size} training images make no full batch of {batch} x {world_size}; "
            "lower --batch-size or add data."
        )


def train(config: Union[SegmentConfig, Mapping[str, Any]]) -> Dict[str, Any]:
    """Train as ``config`` (a ``SegmentConfig`` or a mapping of its fields) says; returns the final metrics.

    Raises ``ConfigError`` for options that cannot work and ``NonFiniteLossError`` if the loss diverges."""
    options = as_options(SegmentConfig, config)
    return run_training(options, f"segment-{options['backbone']}", build_run)


def build_run(options: Dict[str, Any], dist_ctx: DistContext) -> TrainingRun:
    """The segmentation parts of a run: data, model, pixel cross-entropy (+ auxiliary head), mIoU evaluator."""
    device = dist_ctx.device
    train_set, val_set = build_datasets(options)
    classes = train_set.classes
    _check_batch(options, dist_ctx.world_size, len(train_set))
    batch, workers = int(options["batch_size"]), int(options["workers"])
    global_batch, accum_steps = accumulation_steps(batch, options["global_batch"], dist_ctx.world_size)
    loader = train_loader(train_set, batch, dist_ctx, int(options["seed"]), workers)
    val_loader = eval_loader(val_set, 1, dist_ctx, workers, collate_eval)
    epochs, steps_per_epoch = int(options["epochs"]), len(loader) // accum_steps
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(train_set)} training images make no optimizer step of {global_batch} images; "
            "lower --global-batch or add data."
        )
    model = model_from_options(options, len(classes), pretrained=options.get("pretrained") or False).to(device)
    lr, aux_weight = float(options["lr"]), float(options["aux_weight"])
    heads = [p for head in (model.head, model.aux_head) if head is not None for p in head.parameters()]
    eval_args = dict(
        num_classes=len(classes),
        device=device,
        class_names=classes,
        base_size=options["base_size"],
        crop_size=options.get("eval_crop_size"),
        amp=options["amp"],
    )

    def loss(train_model: nn.Module, micro_batch: Any, step: int) -> StepResult:
        inputs, targets = (t.to(device, non_blocking=True) for t in micro_batch)
        value = segmentation_loss(train_model(inputs), targets, IGNORE_INDEX, aux_weight)
        return value, {"images": inputs.shape[0], "loss": value.item() * inputs.shape[0]}

    def evaluate_model(eval_model: nn.Module) -> EvalResult:
        result = evaluate(eval_model, val_loader, progress=dist_ctx.is_main and options["progress"], **eval_args)
        return {"loss": result["loss"], "miou": result["miou"], "pixel_acc": result["pixel_acc"]}, result

    def summarize(result: Dict[str, Any], state: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
        metrics = dict(
            result,
            epoch=epochs,
            best_miou=state["best_miou"],
            backbone=options["backbone"],
            head=options["head"],
            output_stride=options["output_stride"],
            scales=[1.0],
            flip=False,
            train_images=len(train_set),
            val_images=len(val_set),
            skipped_pairs=len(train_set.skipped) + len(val_set.skipped),
        )
        if dist_ctx.is_main:
            print(format_iou_table(metrics["per_class"]))
        return metrics, (
            f"val after {epochs} epoch{'s' if epochs != 1 else ''}: mIoU {metrics['miou']:.2f}%, "
            f"pixAcc {metrics['pixel_acc']:.2f}%"
        )

    skipped = len(train_set.skipped) + len(val_set.skipped)
    if dist_ctx.is_main:
        for problem in (train_set.skipped + val_set.skipped)[:5]:
            print(f"warning: skipped {problem}", file=sys.stderr)
    intro = (
        f"training {options['head']} on {options['backbone']} (output stride {options['output_stride']}) with "
        f"{len(train_set)} training / {len(val_set)} validation images, {len(classes)} classes"
        + (f", {skipped} bad pairs skipped" if skipped else "")
        + f"; global batch {global_batch} = {batch} x {dist_ctx.world_size} process(es) x {accum_steps} "
        f"accumulation, lr {lr:g}, {epochs} epoch{'s' if epochs != 1 else ''} of "
        f"{steps_per_epoch} iterations"
    )
    return TrainingRun(
        model=model,
        loader=loader,
        lr=lr,
        param_groups=parameter_groups(
            model, float(options["weight_decay"]), lr, [(heads, float(options["head_lr_mult"]))]
        ),
        make_schedule=lambda optimizer, total: poly(optimizer, total, float(options["poly_power"])),
        loss=loss,
        evaluate=evaluate_model,
        summarize=summarize,
        total_steps=epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        best_key="miou",
        accum_steps=accum_steps,
        eval_every=int(options["eval_every"]) * steps_per_epoch,
        intro=intro,
        eval_model=model,
        state={
            "classes": classes,
            "dataset": train_set.name,
            "task": "segmentation",
            "command": "segment train",
            "backbone_prefix": BACKBONE_PREFIX,
        },
    )


def describe_dataset(dataset: SegmentationDataset) -> str:
    """One line: size, classes and skipped pairs."""
    skipped = f", {len(dataset.skipped)} bad pairs skipped" if dataset.skipped else ""
    return f"{dataset.name}: {len(dataset)} images, {dataset.num_classes} classes{skipped}"
