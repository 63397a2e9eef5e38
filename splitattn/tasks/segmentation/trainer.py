"""``train(options)``: a segmentation run, from data folder to ``metrics.json``.

In order: join torchrun's process group (if any), build the data sets with the joint
transforms, the model (optionally from a classification checkpoint, SyncBN under DDP), SGD
with the head at ``head_lr_mult`` x the backbone's learning rate and the poly schedule per
iteration; then per epoch: train, evaluate every ``eval_every`` epochs and at the end, log
(JSON lines, TensorBoard, ``curves.png``) and write ``last.pt``/``best.pt`` atomically. A run
resumed with ``--resume auto`` restores every random generator and the data order.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ...data.segmentation import SegmentationDataset, build_dataset, collate_eval
from ...data.segmentation_transforms import SegmentationEvalTransform, SegmentationTrainTransform
from ...engine.plots import plot_curves
from ...utils.checkpoint import atomic_save, load_checkpoint_file
from ...utils.distributed import DistContext, all_gather_object
from ...utils.rng import capture_rng_state
from ...utils.run import configure_runtime, restore_run_state, resume_path, run_in_process_group
from ...utils.run_log import RunLogger
from ..classification.engine import ShardSampler
from .checkpoint import model_from_options
from .engine import SegmentationStep, evaluate, train_one_epoch
from .metrics import format_iou_table


class PolyLR:
    """LR factor per iteration: ``(1 - step / total) ** power`` (DeepLab's poly schedule)."""

    def __init__(self, total: int, power: float = 0.9) -> None:
        self.total, self.power = max(1, total), power

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.total) ** self.power


def build_datasets(options: Dict[str, Any]) -> Tuple[SegmentationDataset, SegmentationDataset]:
    """(training set with the random joint transform, validation set at full size)."""
    common = dict(classes=options.get("classes"), ignore_value=options.get("ignore_value"),
                  skip_bad=bool(options.get("skip_bad")))
    train_tf = SegmentationTrainTransform(int(options["base_size"]), int(options["crop_size"]),
                                          tuple(options["scale_range"]), float(options["hflip"]))
    train_set = build_dataset(options["dataset"], options["data"], options["train_split"], train_tf, **common)
    val_set = build_dataset(options["dataset"], options["data"], options["val_split"], SegmentationEvalTransform(),
                            **common)
    return train_set, val_set


def parameter_groups(model: nn.Module, lr: float, head_lr_mult: float, weight_decay: float) -> list:
    """Backbone at ``lr``, heads at ``lr x head_lr_mult`` (PyTorch-Encoding uses 10 with pretrained
    backbones); no weight decay on biases and norm parameters."""
    heads = [p for head in (model.head, model.aux_head) if head is not None for p in head.parameters()]
    groups = []
    for params, factor in ((list(model.backbone.parameters()), 1.0), (heads, head_lr_mult)):
        params = [p for p in params if p.requires_grad]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr * factor, "weight_decay": weight_decay if decay else 0.0})
    return groups


def _per_process_batch(options: Dict[str, Any], world_size: int, train_size: int) -> int:
    batch = int(options["batch_size"])
    wanted = options.get("global_batch")
    if wanted and batch * world_size != int(wanted):
        raise ValueError(f"this config asks for a global batch of {wanted} but --batch-size {batch} x {world_size} "
                         f"process(es) = {batch * world_size}; pass --batch-size {max(1, int(wanted) // world_size)} "
                         "or --global-batch to change it.")
    if batch < 2 and not (options["sync_bn"] and world_size > 1):
        raise ValueError("the heads' BatchNorm (ASPP's pooled branch sees one value per image) needs --batch-size "
                         ">= 2 per process; raise it, or use --sync-bn under torchrun.")
    if train_size < batch * world_size:
        raise ValueError(f"{train_size} training images make no full batch of {batch} x {world_size}; "
                         "lower --batch-size or add data.")
    return batch


def train(options: Dict[str, Any]) -> Dict[str, Any]:
    """Run a ``splitattn segment train`` job described by ``options``; returns the final metrics."""
    return run_in_process_group(_train, options)


def _train(options: Dict[str, Any], dist_ctx: DistContext) -> Dict[str, Any]:
    configure_runtime(dist_ctx, int(options["seed"]), options.get("threads"), bool(options["deterministic"]))
    device, main = dist_ctx.device, dist_ctx.is_main
    output = Path(options["output"] or Path("runs") / f"segment-{options['backbone']}")
    resume_from = resume_path(options.get("resume"), output)
    if options["sync_bn"] and dist_ctx.distributed and device.type != "cuda":
        raise ValueError("--sync-bn needs GPUs (SyncBatchNorm has no CPU kernel); on CPUs use --norm groupnorm "
                         "or plain BatchNorm.")

    train_set, val_set = build_datasets(options)
    classes = train_set.classes
    batch = _per_process_batch(options, dist_ctx.world_size, len(train_set))
    sampler = DistributedSampler(train_set, dist_ctx.world_size, dist_ctx.rank, shuffle=True,
                                 seed=int(options["seed"]), drop_last=True)
    workers = int(options["workers"])
    train_loader = DataLoader(train_set, batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                              pin_memory=device.type == "cuda", generator=torch.Generator(),
                              persistent_workers=workers > 0)
    val_loader = DataLoader(val_set, batch_size=1, sampler=ShardSampler(len(val_set), dist_ctx.rank, dist_ctx.world_size),
                            num_workers=workers, collate_fn=collate_eval)
    epochs = int(options["epochs"])
    iters_per_epoch = len(train_loader)
    total_iters = epochs * iters_per_epoch

    model = model_from_options(options, len(classes), pretrained=options.get("pretrained") or False)
    if options["sync_bn"] and dist_ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    lr = float(options["lr"])
    optimizer = torch.optim.SGD(parameter_groups(model, lr, float(options["head_lr_mult"]), float(options["weight_decay"])),
                                lr=lr, momentum=float(options["momentum"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, PolyLR(total_iters, float(options["poly_power"])))
    scaler = torch.amp.GradScaler(device.type, enabled=options["amp"] == "fp16")

    start_epoch, step, best_miou = 0, 0, -1.0
    if resume_from is not None:
        checkpoint = load_checkpoint_file(resume_from)
        parts = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        restore_run_state(checkpoint, parts, dist_ctx, str(resume_from))
        # load_state_dict restored the saved run's schedule length; use this run's (--epochs may have changed)
        scheduler.lr_lambdas = [PolyLR(total_iters, float(options["poly_power"]))] * len(optimizer.param_groups)
        start_epoch, step, best_miou = int(checkpoint["epoch"]), int(checkpoint["step"]), float(checkpoint["best_miou"])

    train_model: nn.Module = model
    if dist_ctx.distributed:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    train_step = SegmentationStep(optimizer, scheduler, scaler, device, options["amp"], float(options["aux_weight"]))
    eval_args = dict(num_classes=len(classes), device=device, class_names=classes, base_size=options["base_size"],
                     crop_size=options.get("eval_crop_size"), amp=options["amp"])

    logger: Optional[RunLogger] = None
    if main:
        output.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(output, tensorboard=options["tensorboard"])
        logger.truncate_after(start_epoch)
        (output / "options.json").write_text(json.dumps(options, indent=2, sort_keys=True, default=str))
        skipped = len(train_set.skipped) + len(val_set.skipped)
        print(f"training {options['head']} on {options['backbone']} (output stride {options['output_stride']}) with "
              f"{len(train_set)} training / {len(val_set)} validation images, {len(classes)} classes"
              + (f", {skipped} bad pairs skipped" if skipped else "")
              + f"; batch {batch} x {dist_ctx.world_size} process(es), lr {lr:g}, {epochs} epochs of "
              f"{iters_per_epoch} iterations, device {device}" + (f"; resuming after epoch {start_epoch}" if resume_from else ""),
              flush=True)
        for problem in (train_set.skipped + val_set.skipped)[:5]:
            print(f"warning: skipped {problem}", file=sys.stderr)

    last_eval: Dict[str, Any] = {}
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(int(options["seed"]) * 100003 + epoch)  # worker seeds of this epoch
        with tqdm(total=iters_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", disable=not (main and options["progress"]),
                  dynamic_ncols=True, leave=False) as progress:
            stats = train_one_epoch(train_model, train_loader, train_step, progress)
        step += iters_per_epoch
        record: Dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
                                  "train_loss": stats["loss"], "train_images_per_sec": stats["images_per_sec"]}
        evaluated = (epoch + 1) % int(options["eval_every"]) == 0 or epoch + 1 == epochs
        is_best = False
        if evaluated:
            last_eval = evaluate(model, val_loader, progress=main and options["progress"], **eval_args)
            record.update(val_miou=last_eval["miou"], val_pixel_acc=last_eval["pixel_acc"])
            is_best = last_eval["miou"] > best_miou
            best_miou = max(best_miou, last_eval["miou"])
        rng_states = all_gather_object(capture_rng_state())
        if main:
            logger.log(record, step)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                     "step": step, "rng": rng_states, "args": options, "classes": classes, "best_miou": best_miou}
            atomic_save(state, output / "last.pt")
            if is_best:
                atomic_save(state, output / "best.pt")
            plot_curves(logger.records(), output / "curves.png")
            print(f"epoch {epoch + 1}/{epochs}: train loss {stats['loss']:.4f}, {stats['images_per_sec']:.1f} img/s"
                  + (f" | val mIoU {last_eval['miou']:.2f}% pixAcc {last_eval['pixel_acc']:.2f}%" if evaluated else ""),
                  flush=True)

    if not last_eval:  # resumed a finished run: report its final evaluation
        last_eval = evaluate(model, val_loader, **eval_args)
    metrics = dict(last_eval, epoch=epochs, best_miou=best_miou, backbone=options["backbone"], head=options["head"],
                   output_stride=options["output_stride"], scales=[1.0], flip=False, train_images=len(train_set),
                   val_images=len(val_set), skipped_pairs=len(train_set.skipped) + len(val_set.skipped))
    if main:
        print(format_iou_table(metrics["per_class"]))
        logger.finish(metrics, f"validation after {epochs} epochs: mIoU {metrics['miou']:.2f}%, "
                               f"pixAcc {metrics['pixel_acc']:.2f}%")
    return metrics


def describe_dataset(dataset: SegmentationDataset) -> str:
    """One line: size, classes and skipped pairs."""
    skipped = f", {len(dataset.skipped)} bad pairs skipped" if dataset.skipped else ""
    return f"{dataset.name}: {len(dataset)} images, {dataset.num_classes} classes{skipped}"
