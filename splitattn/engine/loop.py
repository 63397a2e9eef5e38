"""The training loop every task runs: ``run_training(settings, build)``.

The engine knows no task and no command line: a task hands it ``TrainSettings`` (built from the task's
config, so every option keeps its one default there) and a ``build`` function returning a
``TrainingRun``. Read it top to bottom (the shape of torchvision's ``references/`` and timm's ``train.py``):

1. join torchrun's process group, set threads, deterministic kernels and seeds (``runtime``); stop signals
   (SIGTERM, SIGUSR1, Ctrl-C) become a request the loop reads;
2. pick the run folder and the checkpoint to resume from (``checkpoint.run_folder``: a fresh run never overwrites another);
3. ``build(dist_ctx)``: the task hands back a ``TrainingRun``: its data set, model, loss, evaluator and
   plot panels (the only task-specific parts);
4. SyncBN, channels_last, EMA (``ema``), the optimizer (SGD or AdamW), the schedule, GradScaler; on resume:
   every state, RNG and the position (``progress``: in images, so another number of processes or batch size
   continues correctly), the schedule fast-forwarded to it (``optim.fast_forward``);
5. compile, DDP (``find_unused_parameters`` only when the task says its model leaves parameters unused);
6. the loop over optimizer steps: ``accum_steps`` micro-batches each, their loss values summed on the
   device (``tally``: no step reads anything back to the host). At check points (a log record every
   ``log_every`` steps, ``last.pt`` every ``checkpoint_every`` steps and at the end of each epoch, an
   evaluation and ``best.pt`` every ``eval_every`` steps, a stop signal, and under torchrun every
   ``tally.AGREE_EVERY`` steps) the processes agree: a non-finite loss stops the run before anything is
   saved; a stop signal saves ``last.pt`` at the step reached and raises ``TrainingInterrupted``. Before
   a checkpoint or an evaluation under torchrun the BatchNorm statistics are made equal (``dist_bn``),
   so the metric logged is the saved weights'. ``last.pt`` is written *before* the evaluation and plots
   that could still fail;
7. ``metrics.json`` from the last evaluation.

All step counts are optimizer steps; epoch-based tasks pass multiples of the steps per epoch.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import TrainingInterrupted, UsageError
from ..optimize.training import compile_for_training
from ..viz.curves import Panel, plot_curves
from .checkpoint import (
    atomic_save,
    capture_rng_state,
    finished_metrics,
    load_checkpoint_file,
    restore_rng_states,
    run_folder,
    seed_everything,
)
from .data import ResumableSampler, mixed_seed, start_pass
from .distributed import DistContext, all_gather_object
from .ema import ModelEma, adjusted_decay
from .log import RunLogger, dumps
from .optim import create_optimizer, fast_forward
from .progress import Progress, resume_progress
from .runtime import autocast, configure_runtime, run_in_process_group, stop_requested
from .tally import AGREE_EVERY, Tally, distribute_bn

# (loss to back-propagate, sums over the micro-batch): device tensors (summed without a host sync) or host
# numbers; ``images`` counts the samples; keys starting with ``n_`` are counts logged as ``train_<rest>``; every
# other key is averaged per image as ``train_<key>``.
StepResult = Tuple[Tensor, Dict[str, Union[Tensor, float]]]
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
    dist_timeout: float  # seconds a collective waits for the other processes (a process group created here)
    amp: str  # a key of ``runtime.AMP_DTYPES``
    optimizer: str  # a name of ``optim.OPTIMIZERS``
    momentum: float  # SGD momentum
    betas: Tuple[float, float]  # AdamW's
    eps: float  # AdamW's
    sync_bn: bool  # convert BatchNorm to SyncBatchNorm under torchrun (GPUs)
    dist_bn: str  # under torchrun, before each checkpoint and evaluation: a key of ``tally.DIST_BN``
    progress: bool  # tqdm progress bar
    tensorboard: bool  # TensorBoard event files
    channels_last: bool
    compile_memory_budget: Optional[float]  # torch.compile the training model under this activation budget
    ema_decay: Optional[float]  # keep and evaluate an EMA of the weights with this decay per step (``ema``)
    ema_warmup: bool  # ramp the EMA decay up (``ema.ModelEma``)
    ema_adjust: bool  # read ``ema_decay`` per image and epoch (``ema.adjusted_decay``)


@dataclass
class TrainingRun:
    """What a task hands the engine: its data, model, loss, evaluator and curves, and when to do what (in steps)."""

    model: nn.Module  # on the run's device, not wrapped
    loader: DataLoader  # from ``data.train_loader`` (its ``ResumableSampler`` starts a pass at any image)
    param_groups: List[Dict[str, Any]]
    lr: float
    make_schedule: Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]  # (opt, total)
    loss: Callable[[nn.Module, Any, int], StepResult]  # (model, micro-batch, step) -> StepResult
    # (model, final) -> EvalResult; ``final``: the evaluation after the last step, whose result ``summarize`` gets
    evaluate: Callable[[nn.Module, bool], EvalResult]
    # (final result, state: best_<best_key>, the x key, run_folder) -> (metrics, summary); on every rank
    summarize: Callable[[Dict[str, Any], Dict[str, Any]], Tuple[Dict[str, Any], str]]
    total_steps: int
    steps_per_epoch: int
    best_key: str  # a key of the evaluation values; higher is better
    panels: Sequence[Panel]  # the plots of curves.png (viz.curves.LOSS and LEARNING_RATE, then the task's)
    x_key: str = "epoch"  # "epoch" (the schedule counts epochs) or "iter": the x of records and curves
    accum_steps: int = 1
    log_every: int = 0  # default: every epoch
    eval_every: int = 0  # default: every epoch
    checkpoint_every: int = 0  # last.pt every N steps, and at the end of each epoch of an epoch-based run
    intro: str = ""  # printed at the start
    state: Dict[str, Any] = field(default_factory=dict)  # more checkpoint entries (classes, ...)
    find_unused_parameters: bool = False
    eval_model: Optional[nn.Module] = None  # default: the compiled (or plain) training model


def run_training(settings: TrainSettings, build: Callable[[DistContext], TrainingRun]) -> Dict[str, Any]:
    """Train the ``TrainingRun`` that ``build`` makes as ``settings`` say, in torchrun's process group if there
    is one; returns the final metrics (also written to ``OUTPUT/metrics.json``).

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the last checkpoint is intact).
        TrainingInterrupted: a stop signal (SIGTERM, SIGUSR1, SIGINT) arrived; ``last.pt`` holds the step
            reached (its ``checkpoint`` attribute), and ``--resume auto`` continues it.
    """
    return run_in_process_group(lambda ctx: _run(settings, ctx, build), settings.device, settings.dist_timeout)


def _x(run: TrainingRun, step: int) -> int:
    return step // run.steps_per_epoch if run.x_key == "epoch" else step


def _run(settings: TrainSettings, dist_ctx: DistContext, build: Callable[[DistContext], TrainingRun]) -> Dict[str, Any]:
    started = time.perf_counter()
    configure_runtime(dist_ctx, settings.seed, settings.threads, settings.deterministic)
    device, main = dist_ctx.device, dist_ctx.is_main
    output, resume_from = run_folder(settings.output, Path("runs") / settings.name, settings.resume, settings.exist_ok)
    if settings.sync_bn and dist_ctx.distributed and device.type != "cuda":
        raise UsageError("SyncBatchNorm (sync_bn) needs GPUs: it has no CPU kernel.")
    run = build(dist_ctx)
    sampler = run.loader.sampler
    assert isinstance(sampler, ResumableSampler) and run.loader.batch_size is not None
    global_batch = run.loader.batch_size * dist_ctx.world_size * run.accum_steps
    by_epoch = run.x_key == "epoch"

    model = run.model
    if settings.sync_bn and dist_ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = None
    if settings.ema_decay is not None:
        epochs = run.total_steps / run.steps_per_epoch
        decay = adjusted_decay(settings.ema_decay, global_batch, epochs) if settings.ema_adjust else settings.ema_decay
        ema = ModelEma(model, decay, warmup=settings.ema_warmup)
    optimizer = create_optimizer(
        settings.optimizer, run.param_groups, run.lr, settings.momentum, settings.betas, settings.eps
    )
    scheduler = run.make_schedule(optimizer, run.total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.amp == "fp16")

    progress, best, note = Progress(), -float("inf"), None
    if resume_from is not None:
        checkpoint = load_checkpoint_file(resume_from)
        progress, note = resume_progress(
            checkpoint,
            global_batch,
            sampler.pass_length,
            run.steps_per_epoch,
            by_epoch,
            dist_ctx.world_size,
            str(resume_from),
        )
        best = float(checkpoint.get(f"best_{run.best_key}", best))
        lrs = fast_forward(scheduler, min(progress.step, run.total_steps))  # this run's schedule at that step
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        scaler.load_state_dict(checkpoint["scaler"])
        if ema is not None and checkpoint.get("ema"):
            ema.load_state_dict(checkpoint["ema"])
        restore_rng_states(checkpoint, dist_ctx, str(resume_from))
        if len(checkpoint.get("rng") or []) != dist_ctx.world_size:  # new streams, not the run's first ones
            seed_everything(mixed_seed(settings.seed, progress.images_seen, dist_ctx.rank, 3))
    if progress.step >= run.total_steps and (recorded := finished_metrics(output, main)) is not None:
        return recorded  # a finished run is never re-run nor its results overwritten

    budget = settings.compile_memory_budget
    train_model = compile_for_training(model, budget) if budget is not None else model
    eval_model = run.eval_model or train_model
    if dist_ctx.distributed:
        train_model = DistributedDataParallel(
            train_model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=run.find_unused_parameters,
        )

    def where(step: int) -> str:  # words for optimizer step ``step`` (1-based)
        return f"epoch {(step - 1) // run.steps_per_epoch + 1}, step {step}" if by_epoch else f"iteration {step}"

    logger: Optional[RunLogger] = None
    if main:
        output.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(output, tensorboard=settings.tensorboard)
        logger.truncate_after(progress.step, progress.images_seen)
        (output / "options.json").write_text(dumps(settings.args, indent=2, sort_keys=True, default=str))
        print(run.intro + f"; device {device}; run folder {output}" + _resumed(run, progress, resume_from), flush=True)
        if note:
            print(f"note: {note}", flush=True)

    def save(path: Path, rng_states: List[Any]) -> None:
        state = dict(
            run.state,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict(),
            ema=ema.state_dict() if ema is not None else None,
            rng=rng_states,
            args=settings.args,
            world_size=dist_ctx.world_size,
            **progress.entries(global_batch),
        )
        state[f"best_{run.best_key}"] = best
        state[run.x_key] = _x(run, progress.step)
        atomic_save(state, path)

    def evaluate_now() -> Tuple[Dict[str, float], Dict[str, Any]]:
        final = progress.step >= run.total_steps
        values, result = run.evaluate(eval_model, final)
        record = {f"val_{k}": v for k, v in values.items()}
        if ema is not None:
            record.update({f"ema_val_{k}": v for k, v in run.evaluate(ema.module, False)[0].items()})
        return record, result

    def equalize_bn() -> None:
        if dist_ctx.distributed:
            for module in (model, ema.module if ema is not None else None):
                if module is not None:
                    distribute_bn(module, settings.dist_bn)

    result: Dict[str, Any] = {}
    tally = Tally(device, dist_ctx.distributed, where)
    window_start = time.perf_counter()
    micro_batches = start_pass(run.loader, progress.epoch, progress.epoch_images)
    with tqdm(
        total=run.total_steps,
        initial=progress.step,
        desc="train",
        dynamic_ncols=True,
        disable=not (main and settings.progress),
    ) as progress_bar:
        while progress.step < run.total_steps:
            train_model.train()
            for index in range(run.accum_steps):
                batch = next(micro_batches)
                last_micro = index == run.accum_steps - 1
                no_sync = train_model.no_sync() if not last_micro and hasattr(train_model, "no_sync") else nullcontext()
                with no_sync:
                    with autocast(device, settings.amp):
                        loss, values = run.loss(train_model, batch, progress.step)
                    tally.add(loss, values, progress.step)
                    scaler.scale(loss / run.accum_steps).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update()
            pass_ended = progress.advance(global_batch, sampler.pass_length)
            step, last = progress.step, progress.step == run.total_steps
            progress_bar.update(1)

            log_now = last or (step % run.log_every == 0 if run.log_every else pass_ended)
            eval_now = last or (step % run.eval_every == 0 if run.eval_every else pass_ended)
            every = run.checkpoint_every
            save_now = last or (every > 0 and step % every == 0) or (pass_ended and (by_epoch or not every))
            signal_name = stop_requested()  # under torchrun only the agreement points may act on it: all ranks at once
            agree_now = step % AGREE_EVERY == 0 if dist_ctx.distributed else signal_name is not None
            if log_now or eval_now or save_now or agree_now:
                stop, sums = tally.agree(signal_name is not None, log_now)
                if save_now or eval_now or stop:
                    equalize_bn()
                record: Dict[str, Any] = {}
                if sums is not None:
                    record = {
                        run.x_key: _x(run, step),
                        "step": step,
                        "images_seen": progress.images_seen,
                        "lr": optimizer.param_groups[0]["lr"],
                        **_train_means(sums, time.perf_counter() - window_start),
                    }
                if save_now or stop:
                    rng_states = all_gather_object(capture_rng_state())
                    if main:
                        save(output / "last.pt", rng_states)
                if stop:
                    if logger is not None:
                        logger.close()
                    raise _interrupted(signal_name, output / "last.pt", where(step))
                if eval_now:
                    values, result = evaluate_now()
                    record.update({run.x_key: _x(run, step), "step": step, **values})
                    if values[f"val_{run.best_key}"] > best:
                        best = values[f"val_{run.best_key}"]
                        rng_states = all_gather_object(capture_rng_state())
                        if main:
                            save(output / "best.pt", rng_states)
                            save(output / "last.pt", rng_states)  # with the new best
                if main and record:
                    logger.log(record, step)
                    plot_curves(logger.records(), output / "curves.png", run.panels, run.x_key)
                    progress_bar.write(
                        f"{run.x_key} {_x(run, step)}/{_x(run, run.total_steps)}: "
                        + "  ".join(
                            _format(k, v) for k, v in record.items() if k not in ("step", "images_seen", run.x_key)
                        )
                    )
                if sums is not None:
                    window_start = time.perf_counter()
            if pass_ended and not last:
                micro_batches = start_pass(run.loader, progress.epoch)

    if not result:  # resumed a finished run: report its final evaluation
        equalize_bn()
        result = evaluate_now()[1]
    state = {f"best_{run.best_key}": best, run.x_key: _x(run, run.total_steps), "run_folder": output}
    metrics, summary = run.summarize(result, state)
    metrics["wall_time_s"] = time.perf_counter() - started
    if main:
        logger.finish(metrics, summary)
    return metrics


def _resumed(run: TrainingRun, progress: Progress, resume_from: Optional[Path]) -> str:
    """The intro's words on where a resumed run continues."""
    if resume_from is None:
        return ""
    if run.x_key != "epoch" or not progress.epoch_images:
        return f"; resuming after {run.x_key} {_x(run, progress.step)}"
    return (
        f"; resuming in epoch {progress.epoch + 1} after {progress.epoch_images} of its images (step {progress.step})"
    )


def _interrupted(signal_name: Optional[str], checkpoint: Path, where: str) -> TrainingInterrupted:
    """The error that ends a run stopped by a signal, once ``checkpoint`` holds the step reached (the command line
    adds the command that continues it)."""
    stopped_by = f"{signal_name} received" if signal_name else "another process of the job received a stop signal"
    return TrainingInterrupted(f"{stopped_by}: stopped after {where}, saved in {checkpoint}", signal_name, checkpoint)


def _train_means(sums: Dict[str, float], elapsed: float) -> Dict[str, float]:
    """``train_<key>``: per-image means over all ranks (counts for ``n_`` keys) and images per second."""
    images = max(sums.get("images", 0.0), 1.0)
    means = {f"train_{k[2:]}": int(v) for k, v in sums.items() if k.startswith("n_")}
    means.update({f"train_{k}": v / images for k, v in sums.items() if not k.startswith("n_") and k != "images"})
    means["train_images_per_sec"] = sums.get("images", 0.0) / max(elapsed, 1e-9)
    return means


def _format(key: str, value: Any) -> str:
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
