"""``train(options)``: an iteration-based detection run, from annotation file to ``metrics.json``.

In order: join torchrun's process group (if any), build the data sets (COCO json or VOC XML, bad input
cleaned and counted), the detector (backbone optionally from a classification checkpoint), SGD with
no weight decay on biases and norm parameters, and the detectron2 schedule (linear warm-up from
``warmup_factor``, then x ``gamma`` at each of ``steps``); then iterate: one SGD step per batch, a log
record every ``log_every`` iterations (JSON lines, TensorBoard, ``curves.png``), COCO evaluation every
``eval_every`` iterations and at the end, ``last.pt`` written atomically every ``checkpoint_every``
iterations and at the end. ``--resume auto`` continues at the exact iteration: the model, optimizer,
schedule, scaler and every random generator are restored, and the data order is that of an
uninterrupted run (one seeded permutation per pass over the data, the consumed batches skipped).
"""
from __future__ import annotations

import bisect
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset
from tqdm import tqdm

from ...data.detection import DetectionDataset, build_detection_dataset, collate_detection
from ...data.detection_transforms import build_detection_train_transform
from ...engine.plots import plot_curves
from ...utils.checkpoint import atomic_save, load_checkpoint_file
from ...utils.distributed import DistContext, all_gather_object, all_reduce_sum
from ...utils.rng import capture_rng_state
from ...utils.run import TrainStep, configure_runtime, restore_run_state, resume_path, run_in_process_group
from ...utils.run_log import RunLogger
from ..classification.engine import ShardSampler
from ..classification.trainer import parameter_groups
from .checkpoint import model_from_options
from .engine import evaluate, format_metrics, iou_types, train_step
from .evaluation import CocoEvaluator


class WarmupMultiStep:
    """LR factor per iteration: ``gamma ** (steps passed)``, times a linear ramp from ``warmup_factor``
    to 1 over the first ``warmup_iters`` iterations (detectron2's ``WarmupMultiStepLR``)."""

    def __init__(self, steps: Sequence[int], gamma: float = 0.1, warmup_iters: int = 1000,
                 warmup_factor: float = 0.001) -> None:
        self.steps, self.gamma = sorted(int(s) for s in steps), float(gamma)
        self.warmup_iters, self.warmup_factor = int(warmup_iters), float(warmup_factor)

    def __call__(self, iteration: int) -> float:
        factor = self.gamma ** bisect.bisect_right(self.steps, iteration)
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


class ResumableSampler(Sampler[int]):
    """``DistributedSampler``'s shuffled shard of pass ``epoch``, from batch ``start_batch`` on: a run
    resumed mid-pass sees the same remaining samples, in the same order, as an uninterrupted one."""

    def __init__(self, sampler: DistributedSampler, batch_size: int) -> None:
        self.sampler, self.batch_size, self.start_batch = sampler, batch_size, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return len(self.sampler) - self.start_batch * self.batch_size


def build_datasets(options: Dict[str, Any]) -> Tuple[DetectionDataset, DetectionDataset]:
    """(training set with the random flip, evaluation set), both with masks for mask models."""
    common = dict(annotation_file=options.get("annotations"), images=options.get("images"),
                  classes=options.get("classes"), skip_bad=bool(options["skip_bad"]), with_masks="mask" in options["arch"])
    train_set = build_detection_dataset(options["dataset"], options["data"], options["train_split"], True,
                                        build_detection_train_transform(float(options["hflip"])), **common)
    val_set = build_detection_dataset(options["dataset"], options["data"], options["val_split"], False,
                                      **dict(common, classes=train_set.classes[1:]))  # numbered as in training
    return train_set, val_set


def limit(dataset: DetectionDataset, count: Optional[int]) -> Dataset:
    """The first ``count`` images of ``dataset`` (all with ``None``)."""
    return Subset(dataset, range(min(int(count), len(dataset)))) if count else dataset


def check_options(options: Dict[str, Any], dist_ctx: DistContext) -> None:
    """Clear errors for option combinations that cannot train."""
    norm, batch = options["norm"], int(options["batch_size"])
    if norm == "syncbn" and dist_ctx.device.type != "cuda":
        raise ValueError("--norm syncbn needs GPUs (SyncBatchNorm synchronises CUDA tensors); on CPUs use "
                         "--norm frozenbn or --norm groupnorm.")
    if norm in ("batchnorm", "syncbn") and batch < 2 and not (norm == "syncbn" and dist_ctx.distributed):
        raise ValueError(f"--norm {norm} with --batch-size 1 cannot normalise the split-attention maps (one value "
                         "per channel); use --norm frozenbn or groupnorm, or --batch-size >= 2.")
    if int(options["max_iter"]) < 1:
        raise ValueError(f"--max-iter must be positive, got {options['max_iter']}.")
    if options["amp"] == "fp16" and dist_ctx.device.type != "cuda":
        raise ValueError("--amp fp16 is for GPUs; on CPUs use --amp bf16 or none.")


def train(options: Dict[str, Any]) -> Dict[str, Any]:
    """Run a ``splitattn detect train`` job described by ``options``; returns the final metrics."""
    return run_in_process_group(_train, options)


def make_loader(dataset: Dataset, batch: int, sampler: Sampler, workers: int, device: torch.device,
                drop_last: bool = False) -> DataLoader:
    """Batches of ``collate_detection`` (lists of images and targets) drawn by ``sampler``."""
    return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=drop_last,
                      num_workers=workers, collate_fn=collate_detection, pin_memory=device.type == "cuda",
                      generator=torch.Generator())


def _train(options: Dict[str, Any], dist_ctx: DistContext) -> Dict[str, Any]:
    configure_runtime(dist_ctx, int(options["seed"]), options.get("threads"), bool(options["deterministic"]))
    check_options(options, dist_ctx)
    device, main, seed = dist_ctx.device, dist_ctx.is_main, int(options["seed"])
    output = Path(options["output"] or Path("runs") / f"detect-{options['arch']}-{options['backbone']}")
    resume_from = resume_path(options.get("resume"), output)

    full_train, full_val = build_datasets(options)
    train_set, val_set = limit(full_train, options.get("max_images")), limit(full_val, options.get("max_images"))
    classes, batch, workers = full_train.classes, int(options["batch_size"]), int(options["workers"])
    if len(train_set) < batch * dist_ctx.world_size:
        raise ValueError(f"{len(train_set)} training images make no full batch of {batch} x {dist_ctx.world_size}; "
                         "lower --batch-size or add data.")
    sampler = ResumableSampler(DistributedSampler(train_set, dist_ctx.world_size, dist_ctx.rank, shuffle=True,
                                                  seed=seed, drop_last=True), batch)
    train_loader = make_loader(train_set, batch, sampler, workers, device, drop_last=True)
    val_loader = make_loader(val_set, 1, ShardSampler(len(val_set), dist_ctx.rank, dist_ctx.world_size), workers, device)
    iters_per_epoch = len(sampler.sampler) // batch
    max_iter = int(options["max_iter"])

    model = model_from_options(options, len(classes), pretrained=options.get("pretrained") or False).to(device)
    lr = float(options["lr"])
    optimizer = torch.optim.SGD(parameter_groups(model, float(options["weight_decay"])), lr=lr,
                                momentum=float(options["momentum"]))
    schedule = WarmupMultiStep(options["steps"] or [], float(options["gamma"]), int(options["warmup_iters"]),
                               float(options["warmup_factor"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=options["amp"] == "fp16")

    iteration = 0
    if resume_from is not None:
        checkpoint = load_checkpoint_file(resume_from)
        restore_run_state(checkpoint, dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler),
                          dist_ctx, str(resume_from))
        scheduler.lr_lambdas = [schedule] * len(optimizer.param_groups)  # this run's schedule (--steps may change)
        iteration = int(checkpoint["iter"])

    train_model: torch.nn.Module = model
    if dist_ctx.distributed:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=True)
    step = TrainStep(optimizer, scheduler, scaler, device, options["amp"])
    kinds = iou_types(model, full_val.coco)

    logger: Optional[RunLogger] = None
    if main:
        output.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(output, tensorboard=options["tensorboard"])
        logger.truncate_after(iteration, key="iter")
        (output / "options.json").write_text(json.dumps(options, indent=2, sort_keys=True, default=str))
        for dataset in (full_train, full_val):
            print(dataset.summary(), flush=True)
        print(f"training {options['arch']} on {options['backbone']}-FPN ({options['norm']}) with {len(train_set)} "
              f"training / {len(val_set)} evaluation images, {len(classes) - 1} classes; batch {batch} x "
              f"{dist_ctx.world_size} process(es), lr {lr:g}, {max_iter} iterations, device {device}"
              + (f"; resuming after iteration {iteration}" if resume_from else ""), flush=True)

    def evaluate_now() -> Dict[str, Dict[str, float]]:
        evaluator = CocoEvaluator(full_val.coco, kinds, full_val.contiguous_to_coco)
        return evaluate(model, val_loader, evaluator, device, options["amp"], progress=main and options["progress"])

    def save() -> None:
        rng_states = all_gather_object(capture_rng_state())
        if main:
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "iter": iteration,
                         "rng": rng_states, "args": options, "classes": classes,
                         "contiguous_to_coco": full_train.contiguous_to_coco}, output / "last.pt")

    last_eval: Dict[str, Dict[str, float]] = {}
    window: List[Dict[str, float]] = []
    log_every, eval_every = int(options["log_every"]), int(options["eval_every"])
    checkpoint_every = int(options["checkpoint_every"])
    with tqdm(total=max_iter, initial=iteration, desc="train", disable=not (main and options["progress"]),
              dynamic_ncols=True) as progress:
        while iteration < max_iter:
            epoch, start_batch = divmod(iteration, iters_per_epoch)
            sampler.set_epoch(epoch, start_batch)
            train_loader.generator.manual_seed(seed * 100003 + epoch)  # worker seeds of this pass
            for images, targets in train_loader:
                window.append(train_step(train_model, images, targets, step))
                iteration += 1
                progress.update(1)
                progress.set_postfix(loss=f"{window[-1]['loss']:.3f}")
                record: Dict[str, Any] = {}
                if iteration % log_every == 0 or iteration == max_iter:
                    keys = sorted(window[-1])
                    sums = all_reduce_sum([sum(w.get(k, 0.0) for w in window) for k in keys] + [len(window)], device)
                    record = {"iter": iteration, "lr": optimizer.param_groups[0]["lr"],
                              **{f"train_{k}": value / sums[-1] for k, value in zip(keys, sums[:-1])}}
                    window = []
                if iteration % eval_every == 0 or iteration == max_iter:
                    last_eval = evaluate_now()
                    record.update({"iter": iteration, **{f"val_{kind}_{name}": value for kind, scores in last_eval.items()
                                                         for name, value in scores.items()}})
                if iteration % checkpoint_every == 0 or iteration == max_iter:
                    save()
                if main and record:
                    logger.log(record, iteration)
                    plot_curves(logger.records(), output / "curves.png", "iter")
                    progress.write(f"iter {iteration}/{max_iter}: " + (f"loss {record['train_loss']:.4f} "
                                   if "train_loss" in record else "") + format_metrics(last_eval if "val_bbox_AP" in record else {}))
                    sys.stdout.flush()
                if iteration == max_iter:
                    break

    if not last_eval:  # resumed a finished run: report its final evaluation
        last_eval = evaluate_now()
    metrics: Dict[str, Any] = dict(last_eval, iter=max_iter, arch=options["arch"], backbone=options["backbone"],
                                   train_images=len(train_set), val_images=len(val_set),
                                   data_stats={"train": full_train.stats, "val": full_val.stats})
    if main:
        logger.finish(metrics, f"evaluation after {max_iter} iterations: {format_metrics(last_eval)}")
    return metrics

