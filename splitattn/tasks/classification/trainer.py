"""``train(options)``: the ResNeSt training run, from data folder to ``metrics.json``.

The run, in order: join torchrun's process group (if any), build the data sets and
loaders, the model (DropBlock, dropout, zero-init last BN gamma, optional SyncBN,
checkpointing, EMA, channels_last, compile, DDP), SGD without weight decay on biases
and norm parameters, warm-up + cosine schedule per optimizer step, then for each epoch:
train, evaluate, log, and write ``last.pt`` (and ``best.pt``) atomically. Everything a
resumed run needs, down to every random generator and the data order, is in the
checkpoint, so an interrupted run resumed with ``--resume auto`` ends where an
uninterrupted one would have.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from ...data import build_eval_transform, build_train_transform, collate_skip_bad, digits_datasets, find_split, load_split
from ...data.datasets import EVAL_SPLITS, TRAIN_SPLITS
from ...engine.plots import plot_curves
from ...models.registry import get_model_spec, create_model
from ...utils.checkpoint import atomic_save, load_checkpoint_file
from ...utils.compile import compile_for_training
from ...utils.distributed import DistContext, all_gather_object, all_reduce_sum
from ...utils.memory import enable_gradient_checkpointing
from ...utils.rng import capture_rng_state
from ...utils.run import AMP_DTYPES, configure_runtime, restore_run_state, resume_path, run_in_process_group
from ...utils.run_log import RunLogger
from .checkpoint import model_overrides
from .engine import NonFiniteLossError, ShardSampler, StepContext, evaluate, train_one_epoch

STAGES = ("layer1", "layer2", "layer3", "layer4")
DIGITS_SIZE = 32  # the 8x8 digits are upsampled to the smallest input the models take

__all__ = ["NonFiniteLossError", "WarmupCosine", "train"]


class WarmupCosine:
    """LR factor per optimizer step: linear warm-up to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup = warmup
        self.total = total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def parameter_groups(model: nn.Module, weight_decay: float) -> list:
    """Two SGD groups: weight decay on conv/linear weights, none on biases and norm parameters (1-d tensors)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _image_sizes(options: Dict[str, Any]) -> Tuple[int, int]:
    default = get_model_spec(options["model"]).eval_config.input_size if options["data"] else DIGITS_SIZE
    train_size = int(options["img_size"] or default)
    eval_size = int(options["eval_img_size"] or options["img_size"] or default)
    return train_size, eval_size


def build_datasets(options: Dict[str, Any]) -> Tuple[Dataset, Dataset, list]:
    """Training and evaluation sets with the recipe's transforms, and the class names."""
    train_size, eval_size = _image_sizes(options)
    train_tf = build_train_transform(
        train_size, augment=options["augment"], scale=tuple(options["rrc_scale"]), hflip=options["hflip"],
        auto_augment=options["auto_augment"], color_jitter=options["color_jitter"],
        pca_lighting=options["pca_lighting"], crop_pct=options["crop_pct"],
    )
    eval_tf = build_eval_transform(eval_size, options["crop_pct"])
    if not options["data"]:
        train_set, eval_set = digits_datasets(train_tf, eval_tf)
    else:
        train_set = load_split(find_split(options["data"], TRAIN_SPLITS), train_tf, replace_bad=True)
        eval_set = load_split(find_split(options["data"], EVAL_SPLITS), eval_tf, classes=train_set.classes)
    return train_set, eval_set, list(train_set.classes)


def build_model(options: Dict[str, Any], num_classes: int) -> nn.Module:
    """The registered model with the run's regularisation, optionally from pretrained ImageNet weights."""
    pretrained = options.get("pretrained") or False
    model = create_model(options["model"], num_classes=1000 if pretrained else num_classes,
                         pretrained=pretrained, **model_overrides(options))
    if pretrained and num_classes != 1000:
        model.reset_classifier(num_classes)
    if options["drop_block"] > 0:
        model.set_drop_block_prob(0.0)  # ramped up linearly during training
    if options["grad_checkpointing"]:
        enable_gradient_checkpointing(model, STAGES)
    return model


def _batch_plan(options: Dict[str, Any], world_size: int) -> Tuple[int, int, float]:
    """(global batch, accumulation steps, peak learning rate) from the batch options."""
    per_step = int(options["batch_size"]) * world_size
    global_batch = int(options["global_batch"] or per_step)
    if global_batch % per_step:
        raise ValueError(
            f"--global-batch {global_batch} is not a multiple of --batch-size x processes = {per_step}; "
            "gradient accumulation needs a whole number of micro-batches."
        )
    lr = options["lr"] if options["lr"] is not None else options["base_lr"] * global_batch / 256
    return global_batch, global_batch // per_step, float(lr)


def train(options: Dict[str, Any]) -> Dict[str, Any]:
    """Run a training job described by ``options`` (the ``splitattn train`` options) and return its metrics."""
    return run_in_process_group(_train, options)


def _train(options: Dict[str, Any], dist_ctx: DistContext) -> Dict[str, Any]:
    started = time.perf_counter()
    configure_runtime(dist_ctx, int(options["seed"]), options.get("threads"), bool(options["deterministic"]))
    device, main = dist_ctx.device, dist_ctx.is_main
    output = Path(options["output"] or Path("runs") / options["model"])
    resume_from = resume_path(options.get("resume"), output)
    if options["sync_bn"] and dist_ctx.distributed and device.type != "cuda":
        raise ValueError("--sync-bn needs GPUs (SyncBatchNorm has no CPU kernel); on CPUs use --norm groupnorm.")

    train_set, eval_set, classes = build_datasets(options)
    global_batch, accum_steps, lr = _batch_plan(options, dist_ctx.world_size)
    sampler = DistributedSampler(train_set, dist_ctx.world_size, dist_ctx.rank, shuffle=True,
                                 seed=int(options["seed"]), drop_last=True)
    loader_args = dict(num_workers=int(options["workers"]), collate_fn=collate_skip_bad,
                       pin_memory=device.type == "cuda")
    train_loader = DataLoader(train_set, batch_size=int(options["batch_size"]), sampler=sampler, drop_last=True,
                              generator=torch.Generator(), **loader_args)
    eval_loader = DataLoader(eval_set, batch_size=int(options["batch_size"]),
                             sampler=ShardSampler(len(eval_set), dist_ctx.rank, dist_ctx.world_size), **loader_args)
    steps_per_epoch = len(train_loader) // accum_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_set)} training images make no full step of {global_batch} images "
            f"(--batch-size {options['batch_size']} x {dist_ctx.world_size} processes x {accum_steps} accumulation); "
            "lower --batch-size/--global-batch or add data."
        )
    epochs = int(options["epochs"])
    total_steps = epochs * steps_per_epoch

    model = build_model(options, len(classes))
    if options["sync_bn"] and dist_ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if options["channels_last"] else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    ema = None
    if options["ema"]:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(options["ema_decay"])), use_buffers=True)
    optimizer = torch.optim.SGD(parameter_groups(model, float(options["weight_decay"])), lr=lr,
                                momentum=float(options["momentum"]))
    warmup_steps = int(options["warmup_epochs"] * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=options["amp"] == "fp16")

    start_epoch, step, best_top1 = 0, 0, -1.0
    checkpoint = load_checkpoint_file(resume_from) if resume_from else None
    if checkpoint is not None:
        parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        if ema is not None and checkpoint.get("ema"):
            parts["ema"] = ema
        restore_run_state(checkpoint, parts, dist_ctx, str(resume_from))
        start_epoch, step, best_top1 = int(checkpoint["epoch"]), int(checkpoint["step"]), float(checkpoint["best_top1"])

    if options["memory_budget"] != 1.0 and not options["compile"]:
        raise ValueError("--memory-budget applies to compiled training; add --compile (or drop --memory-budget).")
    train_model = compile_for_training(model, float(options["memory_budget"])) if options["compile"] else model
    eval_model = train_model
    if dist_ctx.distributed:
        train_model = DistributedDataParallel(train_model, device_ids=[device.index] if device.type == "cuda" else None)

    def ramp_drop_block(global_step: int) -> None:
        model.set_drop_block_prob(options["drop_block"] * min(1.0, global_step / max(1, total_steps)))

    ctx = StepContext(
        optimizer, scheduler, scaler, device, len(classes), accum_steps, steps_per_epoch,
        float(options["mixup"]), float(options["label_smoothing"]), AMP_DTYPES[options["amp"]],
        bool(options["channels_last"]), ema, ramp_drop_block if options["drop_block"] > 0 else None,
    )
    logger = None
    if main:
        output.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(output, tensorboard=options["tensorboard"])
        logger.truncate_after(start_epoch)
        (output / "options.json").write_text(json.dumps(options, indent=2, sort_keys=True, default=str))
        print(f"training {options['model']} on {len(train_set)} images ({len(classes)} classes), evaluating on "
              f"{len(eval_set)}; global batch {global_batch} = {options['batch_size']} x {dist_ctx.world_size} "
              f"process(es) x {accum_steps} accumulation, lr {lr:g}, {epochs} epochs of {steps_per_epoch} steps, "
              f"device {device}" + (f"; resuming after epoch {start_epoch}" if checkpoint else ""), flush=True)

    last_eval: Dict[str, Any] = {}
    show_progress = main and options["progress"]
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(int(options["seed"]) * 100003 + epoch)  # worker seeds of this epoch
        ctx.bad_paths = []
        with tqdm(total=steps_per_epoch * accum_steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not show_progress,
                  dynamic_ncols=True, leave=False) as progress:
            train_stats = train_one_epoch(train_model, train_loader, ctx, epoch, step, progress)
        step += steps_per_epoch
        eval_args = (eval_loader, device, AMP_DTYPES[options["amp"]], bool(options["channels_last"]))
        last_eval = evaluate(eval_model, *eval_args)
        record: Dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
            "train_loss": train_stats["loss"], "train_top1": train_stats["top1"],
            "train_images_per_sec": train_stats["images_per_sec"],
            "train_bad_images": int(all_reduce_sum([len(ctx.bad_paths)], device)[0]),
            "val_loss": last_eval["loss"], "val_top1": last_eval["top1"], "val_top5": last_eval["top5"],
            "val_bad_images": last_eval["bad_images"],
        }
        if ema is not None:
            ema_eval = evaluate(ema.module, *eval_args)
            record.update(ema_val_top1=ema_eval["top1"], ema_val_top5=ema_eval["top5"])
        is_best = last_eval["top1"] > best_top1
        best_top1 = max(best_top1, last_eval["top1"])
        rng_states = all_gather_object(capture_rng_state())
        if main:
            logger.log(record, step)
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "epoch": epoch + 1, "step": step, "rng": rng_states, "args": options, "classes": classes,
                "best_top1": best_top1, "model_name": get_model_spec(options["model"]).name,
            }
            atomic_save(state, output / "last.pt")
            if is_best:
                atomic_save(state, output / "best.pt")
            plot_curves(logger.records(), output / "curves.png", num_classes=len(classes))
            for path in ctx.bad_paths[:5]:
                print(f"warning: skipped unreadable image {path}", file=sys.stderr)
            print(f"epoch {epoch + 1}/{epochs}: train loss {record['train_loss']:.4f} top1 {record['train_top1']:.2f}% "
                  f"| val loss {record['val_loss']:.4f} top1 {record['val_top1']:.2f}% top5 {record['val_top5']:.2f}% "
                  f"| {record['train_images_per_sec']:.1f} img/s | skipped images {record['train_bad_images']}"
                  f"+{record['val_bad_images']}", flush=True)

    if not last_eval:  # resumed a finished run: report its final evaluation
        last_eval = evaluate(eval_model, eval_loader, device, AMP_DTYPES[options["amp"]], bool(options["channels_last"]))
    records = logger.records() if logger else []
    metrics = {
        "top1": last_eval["top1"], "top5": last_eval["top5"], "loss": last_eval["loss"], "epoch": epochs,
        "best_top1": best_top1, "model": options["model"], "num_classes": len(classes),
        "train_images": len(train_set), "eval_images": len(eval_set),
        "train_images_per_sec": (sum(r["train_images_per_sec"] for r in records) / len(records)) if records else None,
        "wall_time_s": time.perf_counter() - started,
    }
    if main:
        logger.finish(metrics, f"test accuracy after {epochs} epochs: top-1 {metrics['top1']:.2f}%, "
                               f"top-5 {metrics['top5']:.2f}%")
    return metrics
