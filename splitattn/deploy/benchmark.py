"""Honest speed and memory measurements: warm-up, interleaved rounds, medians, ratios in one process.

On a shared machine absolute times drift, so every model of a case is timed round by round in
turn (ours, timm, torchvision, ours, ...) and each ratio is the median of per-round ratios.

Peak training memory:
  * CUDA: ``torch.cuda.max_memory_allocated`` over one step, above the memory held before it.
  * CPU: torch.profiler with ``profile_memory=True`` records every allocation and free of the
    CPU allocator during one step; the running sum of those sizes, at its maximum, is the peak
    the step adds on top of what was allocated before it (weights, optimizer state). This counts
    tensors only (not the Python heap or oneDNN scratch kept outside the allocator), the same way
    for every model. RSS is useless here: glibc keeps freed pages mapped.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from ..models.complexity import count_macs

Step = Callable[[], object]


@dataclass
class Result:
    """Timings of one model in one case: seconds per call of each round, and what a call does."""

    name: str
    case: str
    images: int
    flops: float  # floating-point operations of one call
    precision: str = "fp32"
    seconds: List[float] = field(default_factory=list)
    peak_bytes: Optional[int] = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Step, repeats: int, device: torch.device) -> float:
    """Mean seconds per call over ``repeats`` back-to-back calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def interleaved(
    results: Dict[str, Result], fns: Dict[str, Step], rounds: int, repeats: int, warmup: int, device: torch.device
) -> None:
    """Warm every function up, then time them in turn for ``rounds`` rounds, appending to ``results``.

    Odd rounds run the functions in reverse order, so whatever running first or last costs
    (page faults on freshly mapped buffers, cache state) falls on each function equally.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    order = list(fns.items())
    for round_index in range(rounds):
        for name, fn in order if round_index % 2 == 0 else order[::-1]:
            results[name].seconds.append(time_call(fn, repeats, device))


def speedup(result: Result, reference: Result) -> float:
    """Median over rounds of reference's time / result's time: > 1 means ``result`` is faster."""
    return statistics.median(r / o for o, r in zip(result.seconds, reference.seconds))


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5) -> float:
    """The machine's dense matrix-multiply rate (FLOP/s) for ``dtype``: best of ``repeats`` square products."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    best = min(time_call(lambda: a @ b, 1, device) for _ in range(repeats))
    return 2 * size**3 / best


def forward_flops(model: nn.Module, img_size: int) -> float:
    """FLOPs of one image's forward pass (2 per multiply-accumulate of convs and linear layers)."""
    return 2.0 * count_macs(model, img_size)


def peak_step_memory(step: Step, device: torch.device) -> int:
    """Bytes allocated by one call of ``step`` at its peak, above the level before it (see module doc)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def inference_step(model: Callable[[Tensor], Tensor], x: Tensor, autocast: Optional[torch.dtype]) -> Step:
    """A no-grad forward of ``x``, under autocast to ``autocast`` when given."""

    def run() -> object:
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            return model(x)

    return run


def cuda_graph_step(model: nn.Module, x: Tensor, autocast: Optional[torch.dtype]) -> Step:
    """The forward of ``x`` captured once in a CUDA graph and replayed (no per-kernel launch cost)."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            inference_step(model, static_x, autocast)()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.autocast("cuda", dtype=autocast, enabled=autocast is not None):
        with torch.cuda.graph(graph):
            model(static_x)
    return graph.replay


def train_step(model: nn.Module, x: Tensor, labels: Tensor, autocast: Optional[torch.dtype]) -> Step:
    """One SGD step (forward, cross-entropy, backward, update), under autocast when given."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def run() -> object:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            loss = loss_fn(model(x), labels)
        loss.backward()
        optimizer.step()
        return loss

    return run


def machine_description(device: torch.device) -> str:
    """CPU (or GPU) model, threads, torch version: the line that makes a table reproducible."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
