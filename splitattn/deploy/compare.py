"""The cross-format table of ``splitattn benchmark``: every runner timed in the same rounds, checked, scored.

For each batch size (latency at batch 1, throughput at the larger one) every runner is built for that batch
(compiled runners compile; the first call is reported as the build time), checked against the eager model on
the same images, warmed up, and timed round by round in turn with the order reversed every other round, so
whatever running first or last costs falls on each equally. A square matrix product per precision (fp32,
bf16, int8) runs in the same rounds: each runner's achieved GFLOP/s is divided by its precision's matmul rate
*of the same round*, and its speed by the reference runner's of the same round; the table gives the medians
of these per-round ratios, which survive a machine whose load changes between rounds far better than
absolute times do. With the run's validation images, each runner is also scored on all of them (top-1, and
the agreement of its predictions and logits with the eager model's).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..errors import DataError, UsageError
from ..models.eval_config import EvalConfig
from . import benchmark as bench
from .runners import RunnerFactory, runner_precision

PRECISIONS = ("fp32", "bf16", "int8")
Log = Callable[[str], None]


@dataclass
class FormatRow:
    """One runner's measurements: per batch size its build seconds, timing ``Result``, median per-round ratio
    to the reference (> 1: faster) and to its precision's matmul rate; on the evaluation images its top-1
    (%), its argmax agreement with eager (%) and the largest relative error of its logits."""

    name: str
    precision: str
    build_s: Dict[int, float] = field(default_factory=dict)
    results: Dict[int, bench.Result] = field(default_factory=dict)
    speedup: Dict[int, float] = field(default_factory=dict)
    of_peak: Dict[int, float] = field(default_factory=dict)
    top1: Optional[float] = None
    agreement: Optional[float] = None
    max_error: Optional[float] = None


def _predict(call: Callable[[Tensor], Tensor], images: Tensor, batch: int) -> Tensor:
    return torch.cat([call(images[i : i + batch]).float() for i in range(0, len(images), batch)])


def _check(row: FormatRow, logits: Tensor, reference: Tensor, labels: Optional[Tensor]) -> None:
    scale = reference.abs().max().item()
    row.max_error = max(row.max_error or 0.0, (logits - reference).abs().max().item() / scale)
    agreement = 100.0 * (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    row.agreement = agreement if row.agreement is None else min(row.agreement, agreement)
    if labels is not None:
        row.top1 = 100.0 * (logits.argmax(1) == labels).float().mean().item()


def benchmark_formats(
    factory: RunnerFactory,
    names: List[str],
    batches: List[int],
    rounds: int,
    warmup: int,
    flops_per_image: float,
    evaluation: Optional[Tuple[Tensor, Tensor]] = None,
    reference: str = "eager",
    matmul_size: int = 2048,
    log: Log = print,
) -> Tuple[List[FormatRow], Dict[int, Dict[str, float]]]:
    """Build, check, time and score every runner of ``names`` (``eager`` among them) at each batch size.

    Args:
        factory: builds the runners of one model.
        names: runner names (``runners.RUNNERS``); ``eager`` is the reference of the checks.
        batches: batch sizes, e.g. ``[1, 16]``; each gets its own runners (built for that shape).
        rounds: timed rounds.
        warmup: untimed calls per runner before them.
        flops_per_image: floating-point operations of one image's forward pass (2 per multiply-accumulate).
        evaluation: ``(images (N, C, H, W), labels (N,))`` of the validation split, or None: then the checks
            use the timing batch (random images) and no top-1 is given.
        reference: the runner the speed ratios are relative to.
        matmul_size: side of the square products that give each round's rate per precision.
        log: where progress lines go.

    Returns:
        One ``FormatRow`` per runner, in the order of ``names``; and per batch size the median matmul rate
        (FLOP/s) of each precision timed.
    """
    rows = {name: FormatRow(name, runner_precision(name)) for name in names}
    images, labels = evaluation if evaluation is not None else (None, None)
    generator = torch.Generator().manual_seed(0)
    eager = factory.build("eager", max(batches)).call
    expected = None if images is None else _predict(eager, images, max(batches))
    used = {row.precision for row in rows.values()}
    matmuls = {
        f"matmul {p}": bench.matmul_step(p, matmul_size, factory.onnxruntime_call) for p in PRECISIONS if p in used
    }
    rates: Dict[int, Dict[str, float]] = {}
    for batch in batches:
        if images is not None and len(images) >= batch:
            x = images[:batch]
        else:
            x = torch.randn(batch, factory.model.in_chans, factory.img_size, factory.img_size, generator=generator)
        x_expected = eager(x)
        steps: Dict[str, bench.Step] = {}
        results: Dict[str, bench.Result] = {}
        for name in names:
            start = time.perf_counter()
            runner = factory.build(name, batch)
            out = runner.call(x)  # compiles where the runner compiles
            rows[name].build_s[batch] = time.perf_counter() - start
            _check(rows[name], out.float(), x_expected, None)
            log(f"[batch {batch}] {name}: ready in {rows[name].build_s[batch]:.1f} s")
            steps[name] = lambda call=runner.call, x=x: call(x)
            results[name] = bench.Result(name, f"b{batch}", batch, flops_per_image * batch, runner.precision)
            if batch == max(batches) and images is not None:
                _check(rows[name], _predict(runner.call, images, batch), expected, labels)
        for name, step in matmuls.items():
            steps[name] = step
            precision = name.split()[1]
            results[name] = bench.Result(name, f"b{batch}", 0, 2.0 * matmul_size**3, precision)
        repeats = 4 if batch == 1 else 1  # a batch-1 call is short: time several per round
        bench.interleaved(results, steps, rounds, repeats, warmup, torch.device("cpu"))
        rates[batch] = {name.split()[1]: results[name].flops / results[name].median for name in matmuls}
        for name in names:
            result = results[name]
            rows[name].results[batch] = result
            rows[name].speedup[batch] = bench.speedup(result, results.get(reference, results["eager"]))
            peak = results.get(f"matmul {result.precision}")
            if peak is not None:
                rows[name].of_peak[batch] = statistics.median(
                    (result.flops / t) / (peak.flops / p) for t, p in zip(result.seconds, peak.seconds)
                )
        log(f"[batch {batch}] {rounds} rounds timed")
    return list(rows.values()), rates


def format_table(rows: List[FormatRow], batches: List[int], reference: str) -> str:
    """The rows as a Markdown table: per batch size the median ms per call (img/s above batch 1), the ratio to
    ``reference`` and the share of the precision's matmul rate; then top-1, agreement and error."""
    header = ["runner", "precision"]
    for batch in batches:
        header += [f"b{batch} ms" if batch == 1 else f"b{batch} img/s", f"b{batch} x {reference}", f"b{batch} of peak"]
    header += ["top-1 %", "agree %", "max rel err"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    for row in rows:
        cells = [row.name, row.precision]
        for batch in batches:
            result = row.results.get(batch)
            if result is None:
                cells += ["-", "-", "-"]
                continue
            speed = f"{result.median * 1e3:.1f}" if batch == 1 else f"{result.images / result.median:.1f}"
            peak = row.of_peak.get(batch)
            cells += [speed, f"{row.speedup[batch]:.2f}", "-" if peak is None else f"{peak:.2f}"]
        cells += [
            "-" if row.top1 is None else f"{row.top1:.2f}",
            "-" if row.agreement is None else f"{row.agreement:.1f}",
            "-" if row.max_error is None else f"{row.max_error:.1e}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _source_model(weights, model_name, img_size) -> Tuple[torch.nn.Module, str, Optional[List[str]], Any, EvalConfig]:
    """``(model, registered name, class names or None, run config or None, evaluation preprocessing)``."""
    if weights:
        from ..tasks.classification.checkpoint import eval_config_of, load_trained_model

        model, classes, config = load_trained_model(weights, model_name, action="benchmark")
        name = config.model if config else model_name
        return model, name, classes, config, eval_config_of(weights, name, config, img_size)
    from ..models.factory import create_model

    name = model_name or "resnest50"
    torch.manual_seed(0)
    model = create_model(name).eval()  # random weights: speed does not depend on them
    return model, name, None, None, model.eval_config.at_size(img_size or model.eval_config.input_size)


def run_formats(
    weights: Optional[str],
    model_name: Optional[str],
    img_size: Optional[int],
    batch_size: int,
    runners: List[str],
    reference: Optional[str],
    data: Optional[str],
    val_images: int,
    calibration_images: int,
    rounds: int,
    warmup: int,
    matmul_size: int,
    spinning: bool,
    json_path: Optional[str] = None,
    log: Log = print,
) -> List[FormatRow]:
    """``splitattn benchmark --mode formats``: build the runners of a run's model (or a registered model with
    random weights), measure them (``benchmark_formats``) and print the table; returns its rows.

    With a run's data (``data``, default the run's), calibration images come from its training split and every
    row is scored on its validation split (``val_images``: at most that many; 0 all); without, int8 runners are
    calibrated on random images (their speed is real, their accuracy is not) and no top-1 is given.

    Raises:
        UsageError: an unknown runner or reference; DataError: data whose classes are not the model's.
    """
    from .run_data import calibration_images as training_images
    from .run_data import validation_images
    from .runners import RunnerFactory, check_runner_names, timm_twin_exists

    model, name, classes, config, eval_config = _source_model(weights, model_name, img_size)
    names = check_runner_names(runners, timm_twin_exists(name))
    reference = reference or ("timm-compile-fp32" if "timm-compile-fp32" in names else "eager")
    if reference not in names:
        raise UsageError(f"--reference {reference} is not among the runners ({', '.join(names)}).")
    size, in_chans = eval_config.input_size, model.in_chans
    data = data or (config.data if config else None)
    evaluation = None
    if data:
        evaluation = validation_images(data, eval_config, classes, in_chans, val_images or None)
        calibration = training_images(data, eval_config, classes, in_chans, calibration_images)
        if int(evaluation[1].max()) >= model.num_classes:
            raise DataError(f"{data} has more classes than the model's {model.num_classes}; pass the run's data.")
    else:
        calibration = torch.randn(calibration_images, in_chans, size, size, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    factory = RunnerFactory(model, name, size, calibration, threads, spinning)
    flops = bench.forward_flops(model, size)
    batches = [1] + ([batch_size] if batch_size > 1 else [])
    log(
        f"splitattn benchmark: {name} ({weights or 'random weights'}), {size}x{size}, batches {batches}, "
        f"{flops / 1e9:.2f} GFLOP per image, on {bench.machine_description(torch.device('cpu'))}"
    )
    waiting = "spinning" if spinning else f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    load = os.getloadavg()
    log(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; idle threads: {waiting}; {threads} threads")
    calibrated = "random images (no run data)" if evaluation is None else f"training images of {data}"
    log(f"int8 calibration: {len(calibration)} {calibrated}")
    warning = bench.load_warning()
    if warning:
        log(f"warning: {warning}")
    rows, rates = benchmark_formats(
        factory, names, batches, rounds, warmup, flops, evaluation, reference, matmul_size, log
    )
    log("")
    log(format_table(rows, batches, reference))
    for batch, measured in rates.items():
        log(f"matmul rate at batch {batch}: " + ", ".join(f"{p} {r / 1e9:.0f} GFLOP/s" for p, r in measured.items()))
    log(
        f"{rounds} interleaved rounds after {warmup} warm-up calls; 'x {reference}': median of per-round speed ratios "
        "(> 1: faster); 'of peak': median of per-round (achieved GFLOP/s / the same round's matmul rate for the "
        "row's precision); agree / max rel err: against the eager model on "
        + ("the validation images" if evaluation is not None else "the timing batch")
        + (f"; top-1 on {len(evaluation[0])} validation images" if evaluation is not None else "")
    )
    warning = bench.load_warning()
    if warning:
        log(f"warning (after the run): {warning}")
    if json_path:
        Path(json_path).write_text(json.dumps({"rows": [asdict(row) for row in rows], "rates": rates}, indent=1))
    return rows
