"""Writing a network to ONNX, TorchScript or OpenVINO IR: the opset policy, the operator check, the metadata.

ONNX goes through ``torch.onnx.export``: ``dynamo=True`` (``torch.export`` graph capture, translated by
``onnxscript``; ``pip install 'splitattn[export]'``) or the TorchScript-based exporter (``dynamo=False``,
deprecated since torch 2.9, "legacy" here). The opset asked for is the opset written, or an error:

- the dynamo exporter implements opset 18 (torchlib) and, asked for less, builds at 18, tries to convert down
  and silently keeps 18 when that fails (torch 2.14, as it does for ResNeSt: ``ReduceMean`` and ``Resize``
  changed at 18). So opsets under 18 are refused before exporting unless the legacy exporter is used, and
  ``auto`` picks the legacy exporter for them;
- after every export the file's ``opset_import`` is read back and compared with the request.

Detectors need the legacy exporter: ``torch.export`` stops at a data-dependent branch of torchvision's
``batched_nms`` (its tracing path is the one the legacy exporter takes). The default opset is 18: what the
dynamo exporter implements, read by ONNX Runtime >= 1.14, OpenVINO and TensorRT >= 8.6; the legacy exporter
writes 17 or lower when asked, for older runtimes. Every file holds default-domain operators only (no custom
ops, no ``ScatterND``, which TensorRT's parser rejects); ``check_onnx_operators`` refuses any other.

OpenVINO IR (``.xml`` + ``.bin``) is converted from the ONNX file (``openvino.convert_model`` on the path,
``openvino.save_model`` without fp16 compression): one exported graph for both runtimes, and as fast and exact
as converting the torch model (measured: docs/deployment.md).
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..deps import require
from ..errors import ConfigError, ExportError, UsageError
from .metadata import TORCHSCRIPT_METADATA_FILE, PathLike, set_openvino_metadata, write_onnx_metadata

ONNX_EXPORTERS = ("auto", "dynamo", "legacy")
ONNX_OPSET = 18
DYNAMO_MIN_OPSET = 18  # torchlib's functions are written for opset 18
STANDARD_DOMAINS = ("", "ai.onnx")
Dims = Dict[int, str]


def resolve_onnx_exporter(exporter: str = "auto", opset: int = ONNX_OPSET, legacy_only: bool = False) -> str:
    """``dynamo`` or ``legacy`` for a request: ``auto`` is dynamo when ``onnxscript`` is installed and the opset
    is at least 18 (and the model does not need the legacy exporter, ``legacy_only``), else legacy.

    Raises:
        UsageError: an unknown exporter name.
        ConfigError: ``dynamo`` with an opset under 18, or for a model that needs the legacy exporter.
        MissingDependencyError: ``dynamo`` without onnxscript.
    """
    if exporter not in ONNX_EXPORTERS:
        raise UsageError(f"Unknown ONNX exporter {exporter!r}; choose one of {', '.join(ONNX_EXPORTERS)}.")
    if exporter == "auto":
        dynamo_ok = importlib.util.find_spec("onnxscript") is not None and opset >= DYNAMO_MIN_OPSET
        return "dynamo" if dynamo_ok and not legacy_only else "legacy"
    if exporter == "dynamo":
        if legacy_only:
            raise ConfigError(
                "torch.export cannot capture torchvision's detectors (a data-dependent branch of batched_nms); "
                "export detectors with --exporter legacy (the default for them)."
            )
        if opset < DYNAMO_MIN_OPSET:
            raise ConfigError(
                f"the dynamo ONNX exporter writes opset {DYNAMO_MIN_OPSET} or later (torch {torch.__version__} cannot "
                f"convert to {opset}); for opset {opset} use --exporter legacy (exporter='legacy')."
            )
        require("onnxscript", "export", "ONNX export through torch.onnx's dynamo exporter")
    return exporter


def onnx_opset(path: PathLike) -> int:
    """The default-domain opset an ONNX file declares (its ``opset_import``)."""
    onnx = require("onnx", "export", "reading an ONNX file")
    imports = onnx.load(str(path), load_external_data=False).opset_import
    return next(entry.version for entry in imports if entry.domain in STANDARD_DOMAINS)


def onnx_op_types(path: PathLike) -> Dict[str, List[str]]:
    """Operator types in an ONNX file by domain (``""`` is the standard one), for checking the graph."""
    onnx = require("onnx", "export", "reading an ONNX file")
    ops: Dict[str, List[str]] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type not in ops.setdefault(node.domain, []):
            ops[node.domain].append(node.op_type)
    return ops


def check_onnx_operators(path: PathLike) -> None:
    """Raise ``ExportError`` when the graph at ``path`` has an operator outside the standard domain or a
    ``ScatterND``."""
    ops = onnx_op_types(path)
    custom = {domain: types for domain, types in ops.items() if domain not in STANDARD_DOMAINS}
    if custom:
        raise ExportError(f"The exported graph {path} uses non-standard operators: {custom}.")
    if "ScatterND" in ops.get("", []):
        raise ExportError(f"The exported graph {path} contains ScatterND, which TensorRT cannot parse.")


def _dynamo_shapes(input_shape: Sequence[Union[int, str]], min_side: int) -> tuple:
    from torch.export import Dim

    spec = {
        axis: Dim(name, min=min_side) if name in ("height", "width") else Dim(name)
        for axis, name in enumerate(input_shape)
        if isinstance(name, str)
    }
    return (spec,)


def write_onnx(
    module: nn.Module,
    example: Tensor,
    path: PathLike,
    input_name: str,
    input_shape: Sequence[Union[int, str]],
    output_names: Sequence[str],
    exporter: str = "auto",
    opset: int = ONNX_OPSET,
    output_dims: Optional[Mapping[str, Dims]] = None,
    min_side: int = 1,
    metadata: Optional[Mapping[str, Any]] = None,
) -> str:
    """Export ``module`` (eval mode; one tensor in, a tensor or a tuple out) to ONNX at ``path`` and check it.

    Args:
        example: the traced example input; a dimension named in ``input_shape`` must not be 1 in it (torch.export
            specialises size-1 dimensions).
        input_shape: the input's dimensions, a name for each dynamic one (``["batch", 3, "height", "width"]``).
        output_dims: the legacy exporter's dynamic output axes (the dynamo exporter infers them).
        min_side: the smallest ``height``/``width`` the dynamo exporter's shape constraints allow.
        metadata: stored in ``metadata_props`` with ``exporter`` and ``opset`` added.

    Returns:
        The exporter used (``dynamo`` or ``legacy``; see ``resolve_onnx_exporter`` for ``auto``).

    Raises:
        ConfigError: the opset written differs from ``opset`` (the file is removed).
        ExportError: the exporter failed, or the graph holds non-standard operators.
    """
    require("onnx", "export", "ONNX export")  # fail before the long export
    exporter = resolve_onnx_exporter(exporter, opset)
    path = Path(path)
    dims = {axis: name for axis, name in enumerate(input_shape) if isinstance(name, str)}
    with torch.no_grad(), warnings.catch_warnings():
        try:
            if exporter == "dynamo":
                program = torch.onnx.export(
                    module,
                    (example,),
                    dynamo=True,
                    input_names=[input_name],
                    output_names=list(output_names),
                    dynamic_shapes=_dynamo_shapes(input_shape, min_side),
                    opset_version=opset,
                    verbose=False,
                )
                program.save(str(path), external_data=False)
            else:  # deprecated by torch (its DeprecationWarning is expected here), and what detectors need
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", UserWarning)  # torchvision's tracing notes on its detectors
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation, from inside it
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    input_names=[input_name],
                    output_names=list(output_names),
                    dynamic_axes={input_name: dims, **(output_dims or {})},
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
        except Exception as error:  # torch.export and the tracer raise many types; name the way out
            hint = "; --exporter legacy uses the TorchScript-based exporter" if exporter == "dynamo" else ""
            raise ExportError(
                f"the {exporter} ONNX exporter could not export the model ({type(error).__name__}: {error}){hint}."
            ) from error
    written = onnx_opset(path)
    if written != opset:
        path.unlink()
        raise ConfigError(
            f"asked for ONNX opset {opset}, the {exporter} exporter wrote {written}; the file was removed."
        )
    check_onnx_operators(path)
    write_onnx_metadata(path, {**(metadata or {}), "exporter": exporter, "opset": opset})
    return exporter


def write_torchscript(
    module: nn.Module, example: Tensor, path: PathLike, method: str = "trace", metadata: Optional[Mapping] = None
) -> None:
    """Save ``module`` as TorchScript (``torch.jit.load`` needs no Python classes), traced on ``example`` or
    scripted (``method="script"``: control flow kept, as detectors need), with ``metadata`` plus ``exporter``
    as JSON in the archive's extra file ``splitattn.json``."""
    extra = {TORCHSCRIPT_METADATA_FILE: json.dumps({**(metadata or {}), "exporter": f"torch.jit.{method}"})}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; the format is still asked for
        warnings.simplefilter("ignore", UserWarning)  # torchvision's "scripted models return (losses, detections)"
        if method == "script":
            converted = torch.jit.script(module)
        else:
            converted = torch.jit.trace(module, example, check_trace=False)
        converted.save(str(path), _extra_files=extra)


def onnx_to_openvino(onnx_path: PathLike, xml_path: PathLike, metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Convert an ONNX file to OpenVINO IR (``xml_path`` and the ``.bin`` beside it), fp32 weights kept, with
    ``metadata`` (plus ``converted_from: onnx``) in the model's ``rt_info`` section ``splitattn``.

    Raises:
        MissingDependencyError: without ``openvino`` (``pip install 'splitattn[openvino]'``).
    """
    openvino = require("openvino", "openvino", "OpenVINO export")
    model = openvino.convert_model(str(onnx_path))
    set_openvino_metadata(model, {**(metadata or {}), "converted_from": "onnx"})
    openvino.save_model(model, str(xml_path), compress_to_fp16=False)
    return Path(xml_path)
