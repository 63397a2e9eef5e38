"""What every task's export shares: the description of one export (``TaskExport``), the metadata every file
carries, and writing a file that is checked before it is kept (``write_checked``).

A file is written into a temporary folder beside ``output``, loaded by the runtime its format runs in
(``deploy.runtime.ExportedModel``: ONNX Runtime, OpenVINO or ``torch.jit.load``, the code users run), run on
the task's check inputs (real images of the run's data where they can be found) and compared with the eager
model's outputs on the same inputs by the task's ``compare``. Beyond the task's tolerance nothing is written
(``ExportError``); within it the file is moved into place with ``os.replace`` (an OpenVINO ``.bin`` before its
``.xml``), so ``output`` never holds a partial or unchecked file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ExportError, UsageError
from ..version import __version__
from .formats import ONNX_OPSET, onnx_to_openvino, resolve_onnx_exporter, write_onnx, write_torchscript
from .metadata import EXPORT_FORMATS, METADATA_VERSION, PathLike
from .runtime import ExportedModel, network_call

Outputs = List[np.ndarray]


@dataclass
class CheckResult:
    """How an exported file's outputs compare with the eager model's on the check inputs.

    ``error``: the task's headline figure (relative error of the outputs; for detectors the largest box
    difference in pixels), ``tolerance`` its limit, ``passed`` whether every figure is within its limit,
    ``text`` one line for the console, ``figures`` every figure by name.
    """

    error: float
    tolerance: float
    passed: bool
    text: str
    figures: Dict[str, float] = field(default_factory=dict)


@dataclass
class TaskExport:
    """One model ready to be written: the network as the file holds it and what the file says about it.

    ``module``: eval mode, one tensor in (``example``, shaped as ``input_shape`` says, a name per dynamic
    dimension), a tensor or a list of tensors out (``output_names``); ``output_dims``: the legacy exporter's
    dynamic output axes; ``min_side``: the smallest height/width; ``legacy_only``: the dynamo exporter cannot
    capture it; ``torchscript``: ``trace`` or ``script``; ``check_inputs``: what the file is checked on, from
    ``check_source`` (e.g. "3 images of data/val"); ``compare(eager outputs, file outputs)``.
    """

    task: str
    module: nn.Module
    example: Tensor
    input_name: str
    input_shape: List[Union[int, str]]
    output_names: List[str]
    metadata: Dict[str, Any]
    check_inputs: List[np.ndarray]
    check_source: str
    compare: Callable[[List[Outputs], List[Outputs]], CheckResult]
    output_dims: Dict[str, Dict[int, str]] = field(default_factory=dict)
    min_side: int = 1
    legacy_only: bool = False
    torchscript: str = "trace"


@dataclass
class ExportResult:
    """A written, checked file: ``path`` (the ``.onnx``, ``.xml`` or ``.pt``), every file written (``files``: an
    OpenVINO ``.xml`` and its ``.bin``), its ``format``, ``task``, ``exporter`` (``dynamo``, ``legacy``,
    ``torch.jit.trace`` or ``torch.jit.script``), the ``metadata`` it stores, the ``check`` against eager and the
    inputs it was checked on (``checked_on``, e.g. "3 images of data/val")."""

    path: Path
    files: List[Path]
    format: str
    task: str
    exporter: str
    metadata: Dict[str, Any]
    check: CheckResult
    checked_on: str


def common_metadata(
    task: str,
    model_name: str,
    classes: Sequence[str],
    in_chans: int,
    input_name: str,
    input_shape: Sequence[Union[int, str]],
    output_names: Sequence[str],
    min_input_size: int,
    checkpoint: Optional[PathLike] = None,
    weights: str = "model",
    run_options: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The keys every exported file carries (JSON values; docs/deployment.md lists them with the task keys).

    ``weights``: ``model`` (the run's weights), ``ema`` (its EMA weights), ``bare`` (a weights file) or
    ``random``; ``run_options``: the run's options (``dataclasses.asdict`` of its config), from which
    ``evaluate --exported`` finds the run's data.
    """
    sha256 = None
    if checkpoint is not None:
        from ..weights.files import sha256_file

        sha256 = sha256_file(Path(checkpoint))
    shape = ", ".join(map(str, input_shape))
    return {
        "metadata_version": METADATA_VERSION,
        "task": task,
        "model_name": model_name,
        "classes": list(classes),
        "num_classes": len(classes),
        "in_chans": int(in_chans),
        "input_name": input_name,
        "input_shape": list(input_shape),
        "output_names": list(output_names),
        "min_input_size": int(min_input_size),
        "input_check": f"the graph does not check its input ({shape}): splitattn's runtime refuses sides under "
        f"{min_input_size} px and other ranks or channel counts, as the eager model does; check before running "
        "the raw file",
        "checkpoint": Path(checkpoint).name if checkpoint is not None else None,
        "checkpoint_sha256": sha256,
        "weights": weights,
        "run_options": dict(run_options) if run_options is not None else None,
        "producer": {"splitattn": __version__, "torch": torch.__version__},
    }


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (0 for two empty arrays)."""
    if expected.size == 0:
        return 0.0 if actual.size == 0 else float("inf")
    if actual.shape != expected.shape:
        return float("inf")
    scale = float(np.abs(expected).max())
    diff = float(np.abs(actual.astype(np.float64) - expected).max())
    return diff / scale if scale > 0 else diff


def compare_relative(tolerance: float) -> Callable[[List[Outputs], List[Outputs]], CheckResult]:
    """The check of a network with dense outputs: the largest relative error over every output and input."""

    def compare(expected: List[Outputs], got: List[Outputs]) -> CheckResult:
        error = max(relative_error(g, e) for es, gs in zip(expected, got) for e, g in zip(es, gs))
        text = f"max relative error {error:.2e} (tolerance {tolerance:.0e})"
        return CheckResult(error, tolerance, error <= tolerance, text, {"max_relative_error": error})

    return compare


def eager_outputs(module: nn.Module, inputs: Sequence[np.ndarray]) -> List[Outputs]:
    """``module``'s outputs (as NumPy lists) for each input."""
    results = []
    with torch.no_grad():
        for x in inputs:
            out = module(torch.from_numpy(x))
            results.append([o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])])
    return results


def write_checked(
    spec: TaskExport,
    fmt: str,
    output: PathLike,
    exporter: str = "auto",
    opset: int = ONNX_OPSET,
    threads: Optional[int] = None,
) -> ExportResult:
    """Write ``spec`` as ``fmt`` (``onnx``, ``openvino`` or ``torchscript``) to ``output``, checked first (see
    the module docstring).

    Raises:
        UsageError: an unknown format, or an OpenVINO ``output`` not ending in ``.xml``.
        ConfigError: an exporter or opset the model cannot be written with (``formats.resolve_onnx_exporter``).
        ExportError: the export failed, or the file disagrees with the eager model beyond the tolerance.
    """
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    output = Path(output)
    if fmt == "openvino" and output.suffix != ".xml":
        raise UsageError(
            f"an OpenVINO model is an .xml file and a .bin beside it; name --output NAME.xml, not {output}."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    expected = eager_outputs(spec.module, spec.check_inputs)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        metadata = dict(spec.metadata)
        written = work / output.name
        if fmt == "torchscript":
            exporter = f"torch.jit.{spec.torchscript}"
            write_torchscript(spec.module, spec.example, written, spec.torchscript, metadata)
            metadata.update(exporter=exporter)
        else:
            exporter = resolve_onnx_exporter(exporter, opset, spec.legacy_only)
            onnx_file = written if fmt == "onnx" else work / (output.stem + ".onnx")
            write_onnx(
                spec.module,
                spec.example,
                onnx_file,
                spec.input_name,
                spec.input_shape,
                spec.output_names,
                exporter,
                opset,
                spec.output_dims,
                spec.min_side,
                metadata,
            )
            metadata.update(exporter=exporter, opset=opset)
            if fmt == "openvino":
                onnx_to_openvino(onnx_file, written, metadata)
        # the user's runtime where the file carries our metadata; a bare model's file runs as it is
        run = ExportedModel(written, threads).run if "model_name" in metadata else network_call(written, threads)
        check = spec.compare(expected, [run(x) for x in spec.check_inputs])
        del run  # release the file before it moves
        if not check.passed:
            raise ExportError(
                f"the exported file disagrees with the eager model on {spec.check_source}: {check.text}; "
                f"nothing was written to {output}."
            )
        files = move_into_place(work / output.name, output, fmt)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(output, files, fmt, spec.task, exporter, metadata, check, spec.check_source)


def move_into_place(written: Path, output: Path, fmt: str) -> List[Path]:
    """Move a finished file of format ``fmt`` to ``output`` with ``os.replace`` (OpenVINO: the ``.bin`` first, so
    an ``.xml`` in place always has its weights). Returns the files now in place, the main one first."""
    files = [output.with_suffix(".bin"), output] if fmt == "openvino" else [output]
    for target in files:
        os.replace(written.with_name(target.name), target)
    return files[::-1]
