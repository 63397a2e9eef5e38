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
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..deps import require
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


def load_warning(cores: Optional[int] = None) -> Optional[str]:
    """A warning when the 1-minute load average exceeds the CPU count: other processes then take time slices
    from every timed call (ratios within one run stay usable, absolute times do not)."""
    import os

    cores = cores or os.cpu_count() or 1
    load = os.getloadavg()[0]
    if load <= cores:
        return None
    return (
        f"the load average ({load:.1f}) exceeds this machine's {cores} CPUs: other processes are competing for them, "
        "so absolute times are unreliable (per-round ratios less so); measure on a quiet machine."
    )


def qdq_matmul_onnx(path: Path, size: int) -> Path:
    """An ONNX graph ``y = DQ(Q(x)) @ DQ(w8)`` (u8 activation, s8 weight, per tensor): ONNX Runtime runs it as an
    int8 matrix product (MLAS, VNNI where the CPU has it), the int8 counterpart of ``matmul_flops``."""
    onnx = require("onnx", "export", "the int8 matmul rate")
    from onnx import TensorProto, helper, numpy_helper

    generator = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(generator.integers(-127, 127, (size, size), dtype=np.int8), "w8"),
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w8", "w_scale", "w_zero"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "qdq_matmul",
        [value("x", TensorProto.FLOAT, [size, size])],
        [value("y", TensorProto.FLOAT, [size, size])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def matmul_step(precision: str, size: int, session_factory: Callable[[Path], Callable]) -> Step:
    """One square ``size`` matrix product in ``precision`` (torch fp32/bf16; int8: the QDQ graph of
    ``qdq_matmul_onnx`` through ``session_factory(path)``, a callable taking the float32 input): timed in the
    same rounds as the networks, it gives each round's CPU rate for the precision."""
    if precision == "int8":
        import tempfile

        run = session_factory(qdq_matmul_onnx(Path(tempfile.mkdtemp()) / "qdq_matmul.onnx", size))
        x = torch.randn(size, size)
        return lambda: run(x)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    return lambda: a @ b
