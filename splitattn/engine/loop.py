"""The training loop every task runs: ``run_training(settings, build)``.

The engine knows no task and no command line: a task hands it ``TrainSettings`` (built from the task's
config, so every option keeps its one default there) and a ``build`` function returning a
``TrainingRun``. Read it top to bottom (the shape of torchvision's ``references/`` and timm's ``train.py``):

1. join torchrun's process group, set threads, deterministic kernels and seeds (``runtime``);
2. pick the run folder and the checkpoint to resume from (``checkpoint.run_folder``: a fresh run never overwrites another);
3. ``build(dist_ctx)``: the task hands back a ``TrainingRun``: its data set, model, loss, evaluator and
   plot panels (the only task-specific parts);
4. SyncBN, channels_last, EMA, SGD, the schedule, GradScaler; on resume: every state, RNG and the
   schedule fast-forwarded to the saved step (``optim.fast_forward``);
5. compile, DDP (``find_unused_parameters`` only when the task says its model leaves parameters unused);
6. the loop over optimizer steps: ``accum_steps`` micro-batches each, a non-finite loss stops the run
   before the step it would poison; every ``log_every`` steps a record (``log.jsonl``, TensorBoard,
   ``curves.png`` of the task's panels), every ``checkpoint_every`` steps ``last.pt`` (written *before*
   the evaluation and plots that could still fail), every ``eval_every`` steps an evaluation and ``best.pt``;
7. ``metrics.json`` from the last evaluation.

All step counts are optimizer steps; epoch-based tasks pass multiples of the steps per epoch.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import NonFiniteLossError, UsageError
from ..optimize.training import compile_for_training
from ..viz.curves import Panel, plot_curves
from .checkpoint import atomic_save, capture_rng_state, load_checkpoint_file, restore_rng_states, run_folder
from .distributed import DistContext, all_gather_object, all_reduce_sum
from .log import RunLogger, dumps
from .optim import fast_forward
from .runtime import autocast, configure_runtime, run_in_process_group

# (loss to back-propagate, sums over the micro-batch): ``images`` counts the samples; keys starting with
# ``n_`` are counts logged as ``train_<rest>``; every other key is averaged per image as ``train_<key>``.
StepResult = Tuple[Tensor, Dict[str, float]]
# (values logged as ``val_<key>``, the full result for metrics.json)
EvalResult = Tuple[Dict[str, float], Dict[str, Any]]


@dataclass(frozen=True)
class TrainSettings:
    """How the engine runs a task's training, besides the task's own parts (``TrainingRun``).

    No field has a default: each task builds the settings from its config (``RunConfig.train_settings``), where
    every option has its one default. Features a task does not offer are off (``channels_last=False``, None).
    """

    args: Dict[str, Any]  # the task's options as plain values: options.json and each checkpoint's ``args``
    name: str  # the run's name: without ``output`` it runs in ``runs/<name>``
    output: Optional[str]  # run folder; None: ``runs/<name>``, or the first free ``runs/<name>-N``
    resume: Optional[str]  # a checkpoint path, "auto" (the run folder's last.pt, if any) or None
    exist_ok: bool  # replace the run an explicit ``output`` already holds
    device: Optional[str]  # "cpu", "cuda" or None (a GPU when one is visible)
    seed: int
    threads: Optional[int]  # torch CPU threads; None: cores / local processes
    deterministic: bool
    amp: str  # a key of ``runtime.AMP_DTYPES``
    momentum: float  # SGD momentum
    sync_bn: bool  # convert BatchNorm to SyncBatchNorm under torchrun (GPUs)
    progress: bool  # tqdm progress bar
    tensorboard: bool  # TensorBoard event files
    channels_last: bool
    compile_memory_budget: Optional[float]  # torch.compile the training model under this activation budget
    ema_decay: Optional[float]  # keep and evaluate an EMA of the weights with this decay per step


@dataclass
class TrainingRun:
    """What a task hands the engine: its data, model, loss, evaluator and curves, and when to do what (in steps)."""

    model: nn.Module  # on the run's device, not wrapped
    loader: DataLoader  # from ``data.train_loader`` (its sampler resumes mid-pass)
    param_groups: List[Dict[str, Any]]
    lr: float
    make_schedule: Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]  # (opt, total)
    loss: Callable[[nn.Module, Any, int], StepResult]  # (model, micro-batch, step) -> StepResult
    evaluate: Callable[[nn.Module], EvalResult]
    # (final result, state: best_<best_key>, the x key, run_folder) -> (metrics, summary); on every rank
    summarize: Callable[[Dict[str, Any], Dict[str, Any]], Tuple[Dict[str, Any], str]]
    total_steps: int
    steps_per_epoch: int
    best_key: str  # a key of the evaluation values; higher is better
    panels: Sequence[Panel]  # the plots of curves.png (viz.curves.LOSS and LEARNING_RATE, then the task's)
    x_key: str = "epoch"  # "epoch" or "iter": the x of records and curves
    accum_steps: int = 1
    log_every: int = 0  # default: every epoch
    eval_every: int = 0  # default: every epoch
    checkpoint_every: int = 0  # default: every epoch
    intro: str = ""  # printed at the start
    state: Dict[str, Any] = field(default_factory=dict)  # more checkpoint entries (classes, ...)
    find_unused_parameters: bool = False
    eval_model: Optional[nn.Module] = None  # default: the compiled (or plain) training model


def run_training(settings: TrainSettings, build: Callable[[DistContext], TrainingRun]) -> Dict[str, Any]:
    """Train the ``TrainingRun`` that ``build`` makes as ``settings`` say, in torchrun's process group if there
    is one; returns the final metrics (also written to ``OUTPUT/metrics.json``).

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the last checkpoint is intact).
    """
    return run_in_process_group(lambda ctx: _run(settings, ctx, build), settings.device)


def _x(run: TrainingRun, step: int) -> int:
    return step // run.steps_per_epoch if run.x_key == "epoch" else step


def _every(interval: int, run: TrainingRun, step: int) -> bool:
    return step % (interval or run.steps_per_epoch) == 0 or step == run.total_steps


def _run(settings: TrainSettings, dist_ctx: DistContext, build: Callable[[DistContext], TrainingRun]) -> Dict[str, Any]:
    started = time.perf_counter()
    configure_runtime(dist_ctx, settings.seed, settings.threads, settings.deterministic)
    device, main = dist_ctx.device, dist_ctx.is_main
    output, resume_from = run_folder(settings.output, Path("runs") / settings.name, settings.resume, settings.exist_ok)
    if settings.sync_bn and dist_ctx.distributed and device.type != "cuda":
        raise UsageError("SyncBatchNorm (sync_bn) needs GPUs: it has no CPU kernel.")
    run = build(dist_ctx)

    model = run.model
    if settings.sync_bn and dist_ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = None
    if settings.ema_decay is not None:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
    optimizer = torch.optim.SGD(run.param_groups, lr=run.lr, momentum=settings.momentum)
    scheduler = run.make_schedule(optimizer, run.total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.amp == "fp16")

    step, best = 0, -float("inf")
    if resume_from is not None:
        checkpoint = load_checkpoint_file(resume_from)
        step, best = int(checkpoint["step"]), float(checkpoint.get(f"best_{run.best_key}", best))
        lrs = fast_forward(scheduler, min(step, run.total_steps))  # this run's schedule at the saved step
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        scaler.load_state_dict(checkpoint["scaler"])
        if ema is not None and checkpoint.get("ema"):
            ema.load_state_dict(checkpoint["ema"])
        restore_rng_states(checkpoint, dist_ctx, str(resume_from))

    budget = settings.compile_memory_budget
    train_model = compile_for_training(model, budget) if budget is not None else model
    eval_model = run.eval_model or train_model
    if dist_ctx.distributed:
        train_model = DistributedDataParallel(
            train_model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=run.find_unused_parameters,
        )

    logger: Optional[RunLogger] = None
    if main:
        output.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(output, tensorboard=settings.tensorboard)
        logger.truncate_after(step)
        (output / "options.json").write_text(dumps(settings.args, indent=2, sort_keys=True, default=str))
        print(
            run.intro
            + f"; device {device}; run folder {output}"
            + (f"; resuming after {run.x_key} {_x(run, step)}" if resume_from else ""),
            flush=True,
        )

    def save(path: Path) -> None:
        state = dict(
            run.state,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict(),
            ema=ema.state_dict() if ema is not None else None,
            step=step,
            epoch=step // run.steps_per_epoch,
            rng=rng_states,
            args=settings.args,
        )
        state[f"best_{run.best_key}"] = best
        state[run.x_key] = _x(run, step)
        atomic_save(state, path)

    def evaluate_now() -> Tuple[Dict[str, float], Dict[str, Any]]:
        values, result = run.evaluate(eval_model)
        record = {f"val_{k}": v for k, v in values.items()}
        if ema is not None:
            record.update({f"ema_val_{k}": v for k, v in run.evaluate(ema.module)[0].items()})
        return record, result

    result: Dict[str, Any] = {}
    sums: Dict[str, float] = {}
    window_start = time.perf_counter()
    micro_batches = _micro_batches(run, step)
    with tqdm(
        total=run.total_steps,
        initial=step,
        desc="train",
        dynamic_ncols=True,
        disable=not (main and settings.progress),
    ) as progress:
        while step < run.total_steps:
            train_model.train()
            for index in range(run.accum_steps):
                batch = next(micro_batches)
                last_micro = index == run.accum_steps - 1
                no_sync = train_model.no_sync() if not last_micro and hasattr(train_model, "no_sync") else nullcontext()
                with no_sync:
                    with autocast(device, settings.amp):
                        loss, values = run.loss(train_model, batch, step)
                    if not _all_finite(loss):
                        raise NonFiniteLossError(
                            f"the training loss became {loss.item()} at {run.x_key} {_x(run, step) + 1}, step "
                            f"{step + 1} ({', '.join(f'{k} {v:.4g}' for k, v in values.items())}); the run stopped "
                            "and the last checkpoint is intact. Lower the learning rate, lengthen the warm-up or "
                            "train without fp16 mixed precision."
                        )
                    scaler.scale(loss / run.accum_steps).backward()
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            progress.update(1)

            record: Dict[str, Any] = {}
            if _every(run.log_every, run, step):
                record = {
                    run.x_key: _x(run, step),
                    "step": step,
                    "lr": optimizer.param_groups[0]["lr"],
                    **_train_means(sums, time.perf_counter() - window_start, device),
                }
                sums, window_start = {}, time.perf_counter()
            rng_states = all_gather_object(capture_rng_state()) if _every(run.checkpoint_every, run, step) else None
            if main and rng_states is not None:
                save(output / "last.pt")
            if _every(run.eval_every, run, step):
                values, result = evaluate_now()
                record.update({run.x_key: _x(run, step), "step": step, **values})
                if values[f"val_{run.best_key}"] > best:
                    best = values[f"val_{run.best_key}"]
                    rng_states = rng_states or all_gather_object(capture_rng_state())
                    if main:
                        save(output / "best.pt")
                        save(output / "last.pt")  # with the new best
            if main and record:
                logger.log(record, step)
                plot_curves(logger.records(), output / "curves.png", run.panels, run.x_key)
                progress.write(
                    f"{run.x_key} {_x(run, step)}/{_x(run, run.total_steps)}: "
                    + "  ".join(_format(k, v) for k, v in record.items() if k not in ("step", run.x_key))
                )
            if step % run.steps_per_epoch == 0 and step < run.total_steps:
                micro_batches = _micro_batches(run, step)

    if not result:  # resumed a finished run: report its final evaluation
        result = evaluate_now()[1]
    state = {f"best_{run.best_key}": best, run.x_key: _x(run, run.total_steps), "run_folder": output}
    metrics, summary = run.summarize(result, state)
    metrics["wall_time_s"] = time.perf_counter() - started
    if main:
        logger.finish(metrics, summary)
    return metrics


def _micro_batches(run: TrainingRun, step: int) -> Iterator[Any]:
    """The micro-batches of the pass that holds ``step``, from that step on (worker seeds of this pass)."""
    epoch, step_in_epoch = divmod(step, run.steps_per_epoch)
    run.loader.sampler.set_epoch(epoch, step_in_epoch * run.accum_steps)
    run.loader.generator.manual_seed(run.loader.sampler.sampler.seed * 100003 + epoch)
    return iter(run.loader)


def _all_finite(loss: Tensor) -> bool:
    flag = torch.isfinite(loss.detach()).all().to(torch.float32).reshape(1)
    if dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _train_means(sums: Dict[str, float], elapsed: float, device: torch.device) -> Dict[str, float]:
    """``train_<key>``: per-image means over all ranks (counts for ``n_`` keys) and images per second."""
    keys = sorted(sums)
    totals = dict(zip(keys + ["elapsed"], all_reduce_sum([sums[k] for k in keys] + [elapsed], device)))
    world = dist.get_world_size() if dist.is_initialized() else 1
    images = max(totals.get("images", 0.0), 1.0)
    means = {f"train_{k[2:]}": int(v) for k, v in totals.items() if k.startswith("n_")}
    means.update(
        {
            f"train_{k}": v / images
            for k, v in totals.items()
            if not k.startswith("n_") and k not in ("images", "elapsed")
        }
    )
    means["train_images_per_sec"] = totals.get("images", 0.0) / max(totals["elapsed"] / world, 1e-9)
    return means


def _format(key: str, value: Any) -> str:
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
