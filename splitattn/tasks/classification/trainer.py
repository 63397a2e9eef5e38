"""``train(options)``: the ResNeSt classification run, from data folder to ``metrics.json``.

The task's own parts (``build_run``): the data sets and loaders, the model (DropBlock ramped from 0,
dropout, zero-init last BN gamma, gradient checkpointing), the loss with mixup and label smoothing,
the top-1/top-5 evaluator, SGD groups without weight decay on biases and norm parameters and the
warm-up + cosine schedule per optimizer step. The engine (``splitattn.engine.loop``) runs the rest:
SyncBN, EMA, channels_last, compile, DDP, gradient accumulation, logs and resumable checkpoints.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Tuple, Union

from torch import nn
from torch.utils.data import Dataset

from ...config import ClassifyConfig, as_options, input_channels
from ...data.classification import EVAL_SPLITS, TRAIN_SPLITS, collate_skip_bad, digits_datasets, find_split, load_split
from ...data.transforms import build_train_transform, eval_transform_for
from ...engine.data import accumulation_steps, eval_loader, train_loader
from ...engine.distributed import DistContext
from ...engine.loop import EvalResult, StepResult, TrainingRun, run_training
from ...engine.optim import parameter_groups, warmup_cosine
from ...errors import DataError
from ...models.factory import create_model
from ...models.registry import get_model_spec
from ...optimize.training import enable_gradient_checkpointing
from .checkpoint import model_overrides, run_eval_config, run_image_sizes
from .engine import classification_loss, evaluate

STAGES = ("layer1", "layer2", "layer3", "layer4")

__all__ = ["build_run", "train"]


def build_datasets(options: Dict[str, Any]) -> Tuple[Dataset, Dataset, list]:
    """Training and evaluation sets with the recipe's transforms, and the class names."""
    train_size, _ = run_image_sizes(options)
    channels = input_channels(options)
    train_tf = build_train_transform(
        train_size,
        augment=options["augment"],
        scale=tuple(options["rrc_scale"]),
        hflip=options["hflip"],
        auto_augment=options["auto_augment"],
        color_jitter=options["color_jitter"],
        pca_lighting=options["pca_lighting"],
        crop_pct=options["crop_pct"],
        channels=channels,
    )
    eval_tf = eval_transform_for(run_eval_config(options))
    if not options["data"]:
        train_set, eval_set = digits_datasets(train_tf, eval_tf, channels=channels)
    else:
        train_set = load_split(find_split(options["data"], TRAIN_SPLITS), train_tf, replace_bad=True, channels=channels)
        eval_set = load_split(
            find_split(options["data"], EVAL_SPLITS), eval_tf, classes=train_set.classes, channels=channels
        )
    return train_set, eval_set, list(train_set.classes)


def build_model(options: Dict[str, Any], num_classes: int) -> nn.Module:
    """The registered model with the run's regularisation, optionally from pretrained ImageNet weights."""
    pretrained = options.get("pretrained") or False
    model = create_model(
        options["model"],
        num_classes=1000 if pretrained else num_classes,
        pretrained=pretrained,
        **model_overrides(options),
    )
    if pretrained and num_classes != 1000:
        model.reset_classifier(num_classes)
    if options["drop_block"] > 0:
        model.set_drop_block_prob(0.0)  # ramped up linearly during training
    if options["grad_checkpointing"]:
        enable_gradient_checkpointing(model, STAGES)
    return model


def _batch_plan(options: Dict[str, Any], world_size: int) -> Tuple[int, int, float]:
    """(global batch, accumulation steps, peak learning rate) from the batch options."""
    global_batch, accum_steps = accumulation_steps(int(options["batch_size"]), options["global_batch"], world_size)
    lr = options["lr"] if options["lr"] is not None else options["base_lr"] * global_batch / 256
    return global_batch, accum_steps, float(lr)


def train(config: Union[ClassifyConfig, Mapping[str, Any]]) -> Dict[str, Any]:
    """Train as ``config`` (a ``ClassifyConfig`` or a mapping of its fields) says; returns the final metrics.

    Raises ``ConfigError`` for options that cannot work and ``NonFiniteLossError`` if the loss diverges."""
    options = as_options(ClassifyConfig, config)
    return run_training(options, options["model"], build_run)


def build_run(options: Dict[str, Any], dist_ctx: DistContext) -> TrainingRun:
    """The classification parts of a run: data, model, loss with mixup/smoothing/DropBlock, evaluator."""
    device = dist_ctx.device
    train_set, eval_set, classes = build_datasets(options)
    global_batch, accum_steps, lr = _batch_plan(options, dist_ctx.world_size)
    batch, workers = int(options["batch_size"]), int(options["workers"])
    loader = train_loader(train_set, batch, dist_ctx, int(options["seed"]), workers, collate_skip_bad)
    val_loader = eval_loader(eval_set, batch, dist_ctx, workers, collate_skip_bad)
    steps_per_epoch = len(loader) // accum_steps
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(train_set)} training images make no full step of {global_batch} images "
            f"(--batch-size {batch} x {dist_ctx.world_size} processes x {accum_steps} accumulation); "
            "lower --batch-size/--global-batch or add data."
        )
    epochs = int(options["epochs"])
    total_steps = epochs * steps_per_epoch
    model = build_model(options, len(classes)).to(device)
    split = find_split(options["data"], EVAL_SPLITS).stem if options["data"] else "test"  # the split evaluated
    drop_block, amp, channels_last = float(options["drop_block"]), options["amp"], bool(options["channels_last"])

    warned: List[str] = []

    def loss(train_model: nn.Module, micro_batch: Any, step: int) -> StepResult:
        for path in micro_batch[2][: max(0, 5 - len(warned))]:
            warned.append(path)
            print(f"warning: skipped unreadable image {path}", file=sys.stderr)
        if drop_block > 0:  # ramped linearly from 0 over the run
            model.set_drop_block_prob(drop_block * min(1.0, step / max(1, total_steps)))
        return classification_loss(
            train_model,
            micro_batch,
            device,
            len(classes),
            float(options["mixup"]),
            float(options["label_smoothing"]),
            channels_last,
        )

    def evaluate_model(eval_model: nn.Module) -> EvalResult:
        result = evaluate(eval_model, val_loader, device, amp, channels_last)
        return {k: result[k] for k in ("loss", "top1", "top5", "bad_images")}, result

    def summarize(result: Dict[str, Any], state: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
        metrics = {
            "top1": result["top1"],
            "top5": result["top5"],
            "loss": result["loss"],
            "epoch": epochs,
            "best_top1": state["best_top1"],
            "model": options["model"],
            "num_classes": len(classes),
            "train_images": len(train_set),
            "eval_images": len(eval_set),
        }
        return metrics, (
            f"{split} accuracy after {epochs} epoch{'s' if epochs != 1 else ''}: "
            f"top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}%"
        )

    intro = (
        f"training {options['model']} on {len(train_set)} images ({len(classes)} classes), evaluating on "
        f"{len(eval_set)}; global batch {global_batch} = {batch} x {dist_ctx.world_size} process(es) x "
        f"{accum_steps} accumulation, lr {lr:g}, {epochs} epoch{'s' if epochs != 1 else ''} of {steps_per_epoch} steps"
    )
    warmup = int(options["warmup_epochs"] * steps_per_epoch)
    return TrainingRun(
        model=model,
        loader=loader,
        param_groups=parameter_groups(model, float(options["weight_decay"])),
        lr=lr,
        make_schedule=lambda optimizer, total: warmup_cosine(optimizer, warmup, total),
        loss=loss,
        evaluate=evaluate_model,
        summarize=summarize,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        best_key="top1",
        accum_steps=accum_steps,
        intro=intro,
        num_classes=len(classes),
        state={
            "classes": classes,
            "model_name": get_model_spec(options["model"]).name,
            "task": "classification",
            "command": "classify train",
        },
    )
