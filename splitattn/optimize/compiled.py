"""Compiling one model for inference: its own compiled code, its own weights, and compiled files kept between runs.

**One model, one cache.** Dynamo keeps its compiled graphs on the *code object* of the function it traces, and
``torch.compile(options={"freezing": True})`` freezes the weights into the graph as constants. Every
``ResNeSt`` shares ``ResNeSt.forward``'s code object, and Dynamo guards parameters by identity only when the
*global* ``torch._inductor.config.freezing`` is on while it traces (``torch._dynamo.utils.is_parameter_freezing``),
not when freezing is asked for through ``options``: so a second model of the same class and input shape
matched the first one's graph and computed the first one's weights (issue 18). ``compile_frozen`` wraps each
model in ``OwnCode``, a module whose ``forward`` is a private copy of a code object: the compiled graphs of
this model live on that copy alone (no recompile limit shared with other models), and are dropped when the
model dies (``torch._C._dynamo.eval_frame.reset_code``, run by a finaliser: the cache entry is held from C
and would otherwise keep the frozen weights for the life of the process). ``freezing_trace`` also turns the
global flag on while a compiled model runs, so the identity guards are there as a second line of defence.
``torch.compiler.reset()`` is never used: it is process-wide and would make other live models recompile.

**Compiling pays only for enough work.** An Inductor compile of a ResNeSt takes tens of seconds to minutes on
a CPU per input shape; it is won back from about 2,000 images (resnest50 at 224 px on a 2-core AVX-512 CPU:
99 ms per image eager, 60 ms compiled, 60-150 s per compile, so 1,500-4,000 images). ``choose_backend``
decides by the number of images; below it TorchScript (ready in seconds) does the job.

**Compiled files kept next to the checkpoint.** An AOTInductor package (``torch.export`` with a dynamic batch,
``torch._inductor.aoti_compile_and_package`` with freezing) holds the compiled code and the frozen weights in
one ``.pt2`` file that loads in about two seconds without a compiler. ``package_path`` names it by a digest
of everything it depends on (the folded weights' bytes, precision, image size, memory format, torch
version, CPU instruction set), so a file can never serve other weights. Inductor's own FX graph cache (on by
default) is a second layer for ``compile``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import sys
import types
import weakref
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

COMPILE_PAYS_FROM_IMAGES = 2000  # images per input shape from which an Inductor compile is won back (see above)
PACKAGE_SUFFIX = ".pt2"
PathLike = Union[str, Path]


def _forward(self: nn.Module, x: Tensor):
    return self.inner(x)


def _reset_code(code: types.CodeType) -> None:
    """Drop the compiled graphs Dynamo cached on ``code`` (their frozen weights with them)."""
    from torch._C._dynamo.eval_frame import reset_code
    from torch._dynamo.convert_frame import compile_lock  # a re-entrant lock: safe from a finaliser

    with compile_lock:
        reset_code(code)


class OwnCode(nn.Module):
    """``inner`` behind a ``forward`` whose code object belongs to this instance alone.

    Dynamo caches compiled graphs per code object, so compiling an ``OwnCode`` gives the wrapped model a
    cache no other model can hit; a finaliser drops that cache when the instance is collected.

    Shape: whatever ``inner`` takes and returns.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        code = _forward.__code__.replace()  # a new code object with the same bytecode
        function = types.FunctionType(code, {"__builtins__": __builtins__}, "forward")  # own globals too
        self.forward = types.MethodType(function, self)
        weakref.finalize(self, _reset_code, code)


def compile_frozen(module: nn.Module) -> nn.Module:
    """``torch.compile(module, options={"freezing": True})`` with a Dynamo cache of its own (``OwnCode``).

    Call the result inside ``freezing_trace()`` and with grad mode off: Inductor freezes only graphs traced
    so. The first call at each input shape compiles.
    """
    quiet_cpp_extension()
    return torch.compile(OwnCode(module), options={"freezing": True})


@contextlib.contextmanager
def freezing_trace() -> Iterator[None]:
    """While a compiled model runs: Dynamo hands parameters over for freezing (``prepare_freezing``) and
    guards them by identity (the global ``freezing`` flag). Only for the duration of the call."""
    import torch._dynamo
    import torch._inductor.config

    with torch._dynamo.config.patch(prepare_freezing=True), torch._inductor.config.patch(freezing=True):
        yield


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def import_quietly(module: str, logger: str, text: str) -> types.ModuleType:
    """Import ``module`` with the log records of ``logger`` that contain ``text`` dropped, during the import
    only (the warnings some modules log once when first imported)."""
    if module in sys.modules:
        return sys.modules[module]
    drop = _DropMessage(text)
    logging.getLogger(logger).addFilter(drop)
    try:
        return importlib.import_module(module)
    finally:
        logging.getLogger(logger).removeFilter(drop)


def quiet_cpp_extension() -> None:
    """Import ``torch.utils.cpp_extension`` (which Inductor loads to build CPU code) without its "No CUDA runtime
    is found" warning: a CUDA build of torch on a machine without a GPU logs it once, at import, though no
    CUDA code is built here."""
    import_quietly("torch.utils.cpp_extension", "torch.utils.cpp_extension", "No CUDA runtime is found")


def choose_backend(
    images: int, shapes: int = 1, cached: bool = False, precision: str = "fp32", openvino: bool = False
) -> str:
    """The fast path's backend for a job of ``images`` images in ``shapes`` input shapes.

    Args:
        images: images the model will process; shapes: distinct input shapes among them.
        cached: a compiled package of this model is on disk.
        precision: the fast path's precision.
        openvino: OpenVINO can run this model (installed, CPU, not int8).

    Returns:
        ``"openvino"`` for fp32 where it can run (the fastest fp32 runtime measured on a CPU, ready in
        seconds); else ``"aot"`` when a compiled package is on disk (``cached``) or each shape gets at least
        ``COMPILE_PAYS_FROM_IMAGES`` images (compiling is won back; in bf16 Inductor's code is the fastest at
        batch 16); else ``"openvino"`` where it can run, or ``"torchscript"`` (both ready in seconds).
    """
    if openvino and precision == "fp32":
        return "openvino"
    if cached or images >= COMPILE_PAYS_FROM_IMAGES * max(1, shapes):
        return "aot"
    return "openvino" if openvino else "torchscript"


def tensors_digest(tensors: Iterable[Tuple[str, Tensor]], *extra: object) -> str:
    """sha256 (hex) of named tensors (names, dtypes, shapes, bytes) and ``extra`` values."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # reshape: size-1 dims may keep odd strides
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    for value in extra:
        digest.update(f"|{value}".encode())
    return digest.hexdigest()


def package_path(
    folder: PathLike, module: nn.Module, precision: str, size: Sequence[int], channels_last: bool, *extra: object
) -> Path:
    """Where the AOTInductor package of ``module`` (the folded network as it will be compiled) lives in
    ``folder``: ``fast-<precision>-<H>x<W>-<digest>.pt2``, the digest covering the weights and everything
    else the compiled code depends on (torch version, CPU instruction set, memory format, ``extra`` values
    such as a digest of int8 calibration images)."""
    isa = torch.backends.cpu.get_cpu_capability()
    digest = tensors_digest(
        module.state_dict().items(), precision, tuple(size), channels_last, torch.__version__, isa, *extra
    )
    return Path(folder) / f"fast-{precision}-{size[0]}x{size[1]}-{digest[:16]}{PACKAGE_SUFFIX}"


def compile_package(module: nn.Module, example: Tensor, path: PathLike) -> Path:
    """Export ``module`` for ``example``'s image size with a dynamic batch and compile it into an AOTInductor
    package at ``path`` (written to a temporary name, then renamed: a crash leaves no half file)."""
    from torch.export import Dim

    quiet_cpp_extension()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.cat([example[:1]] * 2)  # batch 2: torch.export specialises a batch of 1 to a constant
    with torch.no_grad():
        exported = torch.export.export(module, (example,), dynamic_shapes=({0: Dim("batch", min=1, max=4096)},))
        partial = path.with_name(path.stem + ".partial" + PACKAGE_SUFFIX)  # the packager wants the suffix
        torch._inductor.aoti_compile_and_package(
            exported, package_path=str(partial), inductor_configs={"freezing": True}
        )
    partial.replace(path)
    return path


def load_package(path: PathLike) -> Callable[[Tensor], Tensor]:
    """The compiled model of an AOTInductor package written by ``compile_package``."""
    return torch._inductor.aoti_load_package(str(path))
