"""``train(config)``: the ResNeSt classification run, from data folder to ``metrics.json``.

The task's own parts (``build_run``): the data sets and loaders, the model (DropBlock ramped from 0,
dropout, zero-init last BN gamma, gradient checkpointing), the loss with mixup and label smoothing,
the top-1/top-5 evaluator, SGD groups without weight decay on biases and norm parameters and the
warm-up + cosine schedule per optimizer step. The engine (``splitattn.engine.loop``) runs the rest:
SyncBN, EMA, channels_last, compile, DDP, gradient accumulation, logs and resumable checkpoints.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import Dataset

from ...config.schemas import ClassifyConfig
from ...config.values import as_config
from ...data.checks import warn_about_overlap
from ...data.classification import EVAL_SPLITS, TRAIN_SPLITS, collate_skip_bad, digits_datasets, find_split, load_split
from ...data.transforms import build_train_transform, eval_transform_for
from ...engine.balance import balanced_class_weights, class_counts, inverse_frequency
from ...engine.data import accumulation_steps, eval_loader, train_loader
from ...engine.distributed import DistContext
from ...engine.loop import EvalResult, StepResult, TrainingRun, run_training
from ...engine.optim import parameter_groups, warmup_cosine
from ...errors import DataError
from ...models.factory import create_model
from ...models.registry import get_model_spec
from ...optimize.training import enable_gradient_checkpointing, freeze_stages
from ...viz.curves import LEARNING_RATE, LOSS, Panel
from ..finetune import learning_rate_scales, with_pretrained_architecture
from ..run_diagnostics import describe, diagnostics_folder
from .checkpoint import COMMAND, TASK, model_overrides, run_eval_config, run_image_sizes
from .diagnostics import diagnose
from .engine import classification_loss, evaluate, require_readable

STAGES = ("layer1", "layer2", "layer3", "layer4")
ACCURACY = (
    ("train_top1", "train top-1"),
    ("val_top1", "val top-1"),
    ("val_top5", "val top-5"),
    ("ema_val_top1", "EMA val top-1"),
    ("ema_val_top5", "EMA val top-5"),
)

__all__ = ["build_run", "classification_panels", "train"]


def classification_panels(num_classes: int) -> List[Panel]:
    """The plots of a classification run's ``curves.png``: loss, learning rate and accuracy in percent (top-5
    only above 5 classes: with 5 or fewer it is 100% by definition)."""
    accuracy = tuple((key, label) for key, label in ACCURACY if num_classes > 5 or "top5" not in key)
    return [LOSS, LEARNING_RATE, Panel("accuracy (%)", accuracy, percent=True)]


def build_datasets(config: ClassifyConfig) -> Tuple[Dataset, Dataset, list]:
    """Training and evaluation sets with the recipe's transforms, and the class names."""
    train_size, _ = run_image_sizes(config)
    channels = config.in_chans
    train_tf = build_train_transform(
        train_size,
        augment=config.augment,
        scale=tuple(config.rrc_scale),
        hflip=config.hflip,
        auto_augment=config.auto_augment,
        color_jitter=config.color_jitter,
        pca_lighting=config.pca_lighting,
        crop_pct=config.crop_pct,
        channels=channels,
    )
    eval_tf = eval_transform_for(run_eval_config(config))
    if not config.data:
        train_set, eval_set = digits_datasets(train_tf, eval_tf, channels=channels)
    else:
        train_set = load_split(find_split(config.data, TRAIN_SPLITS), train_tf, replace_bad=True, channels=channels)
        eval_set = load_split(
            find_split(config.data, EVAL_SPLITS), eval_tf, classes=train_set.classes, channels=channels
        )
    return train_set, eval_set, list(train_set.classes)


def build_model(config: ClassifyConfig, num_classes: int) -> nn.Module:
    """The registered model with the run's regularisation, optionally from pretrained weights (a classifier of
    another class count is replaced by a new one; ``--freeze-stages`` freezes the stem and first stages)."""
    model = create_model(
        config.model, num_classes=num_classes, pretrained=config.pretrained or False, **model_overrides(config)
    )
    if config.freeze_stages is not None:
        freeze_stages(model, config.freeze_stages)
    if config.drop_block > 0:
        model.set_drop_block_prob(0.0)  # ramped up linearly during training
    if config.grad_checkpointing:
        enable_gradient_checkpointing(model, STAGES)
    return model


def fine_tuning_summary(config: ClassifyConfig, class_weights: Optional[torch.Tensor], classes: List[str]) -> str:
    """The fine-tuning and imbalance options in effect, for the run's first line ("" when none is)."""
    parts = []
    if config.freeze_stages is not None:
        parts.append(f"stem and {config.freeze_stages} stage(s) frozen")
    if config.layer_decay is not None:
        parts.append(f"layer decay {config.layer_decay:g}")
    if config.balanced_sampler:
        parts.append("class-balanced sampling")
    if class_weights is not None:
        shown = ", ".join(f"{name} {w:.2f}" for name, w in zip(classes[:10], class_weights.tolist()))
        parts.append(f"class weights {shown}" + (" ..." if len(classes) > 10 else ""))
    return "; " + ", ".join(parts) if parts else ""


def _batch_plan(config: ClassifyConfig, world_size: int) -> Tuple[int, int, float]:
    """(global batch, accumulation steps, peak learning rate) from the batch options."""
    global_batch, accum_steps = accumulation_steps(config.batch_size, config.global_batch, world_size)
    lr = config.lr if config.lr is not None else config.base_lr * global_batch / 256
    return global_batch, accum_steps, lr


def train(config: Union[ClassifyConfig, Mapping[str, Any]]) -> Dict[str, Any]:
    """Train as ``config`` (a ``ClassifyConfig`` or a mapping of its fields) says; returns the final metrics.

    Raises:
        ConfigError: options that cannot work (before any data is read).
        NonFiniteLossError: the loss diverged.
    """
    config = with_pretrained_architecture(as_config(ClassifyConfig, config))
    return run_training(config.train_settings(), lambda dist_ctx: build_run(config, dist_ctx))


def build_run(config: ClassifyConfig, dist_ctx: DistContext) -> TrainingRun:
    """The classification parts of a run: data, model, loss with mixup/smoothing/DropBlock, evaluator."""
    device = dist_ctx.device
    train_set, eval_set, classes = build_datasets(config)
    global_batch, accum_steps, lr = _batch_plan(config, dist_ctx.world_size)
    batch, workers = config.batch_size, config.workers
    labels = train_set.labels
    sample_weights = inverse_frequency(labels, len(classes)) if config.balanced_sampler else None
    loader = train_loader(train_set, batch, dist_ctx, config.seed, workers, collate_skip_bad, sample_weights)
    val_loader = eval_loader(eval_set, batch, dist_ctx, workers, collate_skip_bad)
    steps_per_epoch = len(loader) // accum_steps
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(train_set)} training images make no full step of {global_batch} images "
            f"(--batch-size {batch} x {dist_ctx.world_size} processes x {accum_steps} accumulation); "
            "lower --batch-size/--global-batch or add data."
        )
    epochs = config.epochs
    total_steps = epochs * steps_per_epoch
    model = build_model(config, len(classes)).to(device)
    class_weights = None
    if config.class_weights:
        counts = class_counts(labels, len(classes))
        class_weights = torch.as_tensor(balanced_class_weights(counts, "the training set"), dtype=torch.float32)
    split = find_split(config.data, EVAL_SPLITS).stem if config.data else "test"  # the split evaluated
    if config.data and dist_ctx.is_main:
        warn_about_overlap(
            [path for path, _ in train_set.samples], [path for path, _ in eval_set.samples], "training", split
        )
    drop_block, amp, channels_last = config.drop_block, config.amp, config.channels_last

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
            config.mixup,
            config.label_smoothing,
            channels_last,
            class_weights,
        )

    def evaluate_model(eval_model: nn.Module, final: bool) -> EvalResult:
        result = evaluate(eval_model, val_loader, device, amp, channels_last, collect=final and config.diagnostics)
        require_readable(result, eval_set, f"the evaluation split {split}")
        return {k: result[k] for k in ("loss", "top1", "top5", "bad_images")}, result

    def summarize(result: Dict[str, Any], state: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
        metrics = {
            "top1": result["top1"],
            "top5": result["top5"],
            "loss": result["loss"],
            "epoch": epochs,
            "best_top1": state["best_top1"],
            "model": config.model,
            "num_classes": len(classes),
            "train_images": len(train_set),
            "eval_images": len(eval_set),
        }
        predictions = result.get("predictions")
        if dist_ctx.is_main and predictions is not None and len(predictions.labels):
            folder = diagnostics_folder(state)
            diagnostics = diagnose(folder, predictions, eval_set, classes)
            metrics.update(diagnostics.metrics)
            print(describe(diagnostics, folder, f"{split}, per class"), flush=True)
        return metrics, (
            f"{split} accuracy after {epochs} epoch{'s' if epochs != 1 else ''}: "
            f"top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}%"
        )

    intro = (
        f"training {config.model} on {len(train_set)} images ({len(classes)} classes), evaluating on "
        f"{len(eval_set)}; global batch {global_batch} = {batch} x {dist_ctx.world_size} process(es) x "
        f"{accum_steps} accumulation, {config.optimizer} lr {lr:g}, {epochs} epoch{'s' if epochs != 1 else ''} of "
        f"{steps_per_epoch} steps" + fine_tuning_summary(config, class_weights, classes)
    )
    warmup = int(config.warmup_epochs * steps_per_epoch)
    return TrainingRun(
        model=model,
        loader=loader,
        param_groups=parameter_groups(
            model, config.weight_decay, lr, learning_rate_scales(model, model, "", config.layer_decay)
        ),
        lr=lr,
        make_schedule=lambda optimizer, total: warmup_cosine(optimizer, warmup, total),
        loss=loss,
        evaluate=evaluate_model,
        summarize=summarize,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        best_key="top1",
        panels=classification_panels(len(classes)),
        accum_steps=accum_steps,
        intro=intro,
        checkpoint_every=config.checkpoint_every,
        state={
            "classes": classes,
            "model_name": get_model_spec(config.model).name,
            "task": TASK,
            "command": f"{COMMAND} train",
        },
    )
