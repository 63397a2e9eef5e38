"""Export to ONNX (dynamic batch and spatial size, standard ops only) and TorchScript, each checked on
export and each carrying the metadata a program needs to use it.

ONNX goes through ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` graph capture, translated by
``onnxscript``), with the batch, height and width as named dynamic dimensions. The TorchScript-based
exporter (``dynamo=False``, deprecated since torch 2.9) is kept only as a fallback, for one reason: the
dynamo exporter needs the ``onnxscript`` package, which ``pip install 'splitattn[export]'`` brings but a
bare ``onnx`` + ``onnxruntime`` install lacks (``exporter="auto"`` falls back to it then, and says so).
Both write the same graph kind: the radix softmax is reshape/transpose/softmax and the weighted sum a
mul/reduce, so the graph holds only default-domain operators (no ScatterND, no custom ops) that TensorRT
and ONNX Runtime run as they are.

Metadata (``export_metadata``): the model name, class names, input channels, the evaluation
preprocessing (every ``EvalConfig`` field: input size, crop, interpolation, mean, std) and the
checkpoint's sha256, stored as JSON values in the ONNX ``metadata_props`` (ONNX Runtime:
``session.get_modelmeta().custom_metadata_map``) or in the TorchScript archive's extra file
``splitattn.json``; ``read_export_metadata`` reads either.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..deps import require
from ..errors import ExportError, UsageError
from ..models.eval_config import EvalConfig
from ..models.factory import create_model
from ..models.resnest import MIN_INPUT_SIZE
from ..version import __version__

EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_EXPORTERS = ("auto", "dynamo", "legacy")
ONNX_OPSET = 18
STANDARD_DOMAINS = ("", "ai.onnx")
INPUT_NAME, OUTPUT_NAME = "images", "logits"
TORCHSCRIPT_METADATA_FILE = "splitattn.json"
METADATA_VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """max |actual - expected| / max |expected|: the figure printed after every export check."""
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    return diff / scale if scale > 0 else diff


def load_model_for_export(
    name: str, weights: Optional[PathLike] = None, num_classes: Optional[int] = None
) -> nn.Module:
    """Build ``name`` in eval mode with ``weights`` (a state-dict file); random weights warn.

    ``num_classes`` defaults to the checkpoint's classifier size (1000 without weights).
    """
    if weights is None:
        warnings.warn(f"No --weights given: exporting {name} with random initial weights.", stacklevel=2)
        return create_model(name, num_classes=num_classes or 1000).eval()
    from ..weights.loading import load_checkpoint, load_state_dict_into

    state = load_checkpoint(weights)
    if num_classes is None:
        num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 1000
    return load_state_dict_into(create_model(name, num_classes=num_classes), state, origin=str(weights)).eval()


def default_class_names(num_classes: int) -> List[str]:
    """Class names of a model trained elsewhere: ImageNet's for 1000 classes, else the label numbers."""
    if num_classes == 1000:
        from ..data.labels import imagenet_class_names

        return imagenet_class_names()
    return [str(i) for i in range(num_classes)]


def export_metadata(
    model_name: str,
    model: nn.Module,
    eval_config: EvalConfig,
    classes: Optional[Sequence[str]] = None,
    checkpoint: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """What an exported file says about itself (JSON-serialisable values).

    Keys: ``model_name``; ``classes`` (label order; default ``default_class_names``); ``num_classes``;
    ``in_chans``; ``input_size``, ``mean``, ``std`` (pixel values in [0, 1] are normalised as
    ``(x - mean) / std``); ``eval_config`` (every ``EvalConfig`` field, the full crop protocol);
    ``checkpoint`` (file name) and ``checkpoint_sha256`` (hex) or None; ``input_name`` / ``output_name``
    (``images`` (N, C, H, W) float32 -> ``logits`` (N, classes)); ``producer`` versions.
    Raises ``ValueError`` when ``classes`` does not match the model's classifier size.
    """
    num_classes = int(model.num_classes)
    classes = list(classes) if classes is not None else default_class_names(num_classes)
    if len(classes) != num_classes:
        raise UsageError(f"{len(classes)} class names for a model with {num_classes} outputs.")
    sha256 = None
    if checkpoint is not None:
        from ..weights.files import sha256_file

        sha256 = sha256_file(Path(checkpoint))
    return {
        "metadata_version": METADATA_VERSION,
        "model_name": model_name,
        "classes": classes,
        "num_classes": num_classes,
        "in_chans": int(getattr(model, "in_chans", 3)),
        "input_size": eval_config.input_size,
        "mean": list(eval_config.mean),
        "std": list(eval_config.std),
        "eval_config": dataclasses.asdict(eval_config),
        "checkpoint": Path(checkpoint).name if checkpoint is not None else None,
        "checkpoint_sha256": sha256,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "producer": {"splitattn": __version__, "torch": torch.__version__},
    }


def check_inputs(in_chans: int, size: int) -> List[Tensor]:
    """Two checking batches of different batch and spatial sizes, so dynamic axes are exercised:
    (2, C, size, size) and (1, C, size + 32, max(size - 32, 32))."""
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(2, in_chans, size, size, generator=generator),
        torch.randn(1, in_chans, size + 32, max(size - 32, 32), generator=generator),
    ]


def resolve_onnx_exporter(exporter: str = "auto") -> str:
    """``"dynamo"`` or ``"legacy"``: ``auto`` is dynamo when ``onnxscript`` is installed, else legacy.

    Raises ``ValueError`` for an unknown name and ``MissingDependencyError`` for ``dynamo`` without onnxscript.
    """
    if exporter not in ONNX_EXPORTERS:
        raise UsageError(f"Unknown ONNX exporter {exporter!r}; choose one of {', '.join(ONNX_EXPORTERS)}.")
    if exporter == "auto":
        return "dynamo" if importlib.util.find_spec("onnxscript") is not None else "legacy"
    if exporter == "dynamo":
        require("onnxscript", "export", "ONNX export through torch.onnx's dynamo exporter")
    return exporter


def export_onnx(
    model: nn.Module,
    path: PathLike,
    size: int = 224,
    opset: int = ONNX_OPSET,
    exporter: str = "auto",
    metadata: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``model`` as ONNX with dynamic batch, height and width: input ``images`` (N, C, H, W) float32,
    output ``logits`` (N, classes); ``metadata`` (JSON-serialisable values) goes into ``metadata_props``, each
    value as JSON text, with ``exporter`` (``dynamo`` or ``legacy``) added.

    ``exporter``: ``dynamo`` (torch.export), ``legacy`` (TorchScript tracing) or ``auto`` (see
    ``resolve_onnx_exporter``). Returns the path. Raises ``MissingDependencyError`` without ``onnx``.
    """
    onnx = require("onnx", "export", "ONNX export")
    exporter = resolve_onnx_exporter(exporter)
    path = Path(path)
    # batch 2: torch.export specialises a size-1 dimension to a constant
    example = torch.randn(2, getattr(model, "in_chans", 3), size, size)
    with torch.no_grad(), warnings.catch_warnings():
        if exporter == "dynamo":
            from torch.export import Dim

            try:
                program = torch.onnx.export(
                    model.eval(),
                    (example,),
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=(
                        {0: Dim("batch"), 2: Dim("height", min=MIN_INPUT_SIZE), 3: Dim("width", min=MIN_INPUT_SIZE)},
                    ),
                    opset_version=opset,
                    verbose=False,
                )
            except Exception as error:  # torch.export raises many types; name the fallback
                raise ExportError(
                    f"the dynamo ONNX exporter could not capture the model ({type(error).__name__}: {error}); "
                    "exporter='legacy' (`splitattn export --exporter legacy`) uses the TorchScript-based exporter."
                ) from error
            program.save(str(path), external_data=False)
        else:  # the documented fallback: deprecated, so its DeprecationWarning is expected here
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                model.eval(),
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    proto = onnx.load(str(path))
    for key, value in {**(metadata or {}), "exporter": exporter}.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(proto, str(path))
    return path


def read_export_metadata(path: PathLike) -> Dict[str, Any]:
    """The metadata of an exported ONNX or TorchScript file (format told by content), values decoded from JSON.

    Raises ``UsageError`` when the file carries no splitattn metadata, ``FileNotFoundError`` when it is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {str(path)!r} does not exist; check the path.")
    if zipfile.is_zipfile(path):  # TorchScript archives are zip files; ONNX files are protobuf
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.split("/", 1)[-1] == f"extra/{TORCHSCRIPT_METADATA_FILE}"]
            metadata = json.loads(archive.read(names[0])) if names else {}
        metadata.setdefault("format", "torchscript")
    else:
        onnx = require("onnx", "export", "reading an ONNX file")
        proto = onnx.load(str(path), load_external_data=False)
        metadata = {prop.key: json.loads(prop.value) for prop in proto.metadata_props}
        metadata["format"] = "onnx"
    if "model_name" not in metadata:
        raise UsageError(
            f"{str(path)!r} carries no splitattn export metadata; export it again with `splitattn export`."
        )
    return metadata


def onnx_op_types(path: PathLike) -> Dict[str, List[str]]:
    """Operator types in an ONNX file by domain (``""`` is the standard one), for checking the graph."""
    onnx = require("onnx", "export", "ONNX export")
    graph = onnx.load(str(path)).graph
    ops: Dict[str, List[str]] = {}
    for node in graph.node:
        ops.setdefault(node.domain, [])
        if node.op_type not in ops[node.domain]:
            ops[node.domain].append(node.op_type)
    return ops


def onnx_session(path: PathLike, threads: Optional[int] = None):
    """An ONNX Runtime CPU session for ``path`` (``threads``: intra-op threads, default torch's)."""
    onnxruntime = require("onnxruntime", "export", "running an ONNX file")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(model: nn.Module, path: PathLike, inputs: Sequence[Tensor]) -> float:
    """Largest relative error of ONNX Runtime's outputs against ``model``'s over ``inputs``.

    Raises if the graph has a ScatterND or an operator outside the standard domain.
    """
    ops = onnx_op_types(path)
    custom = {domain: types for domain, types in ops.items() if domain not in STANDARD_DOMAINS}
    if custom:
        raise ExportError(f"The exported graph {path} uses non-standard operators: {custom}.")
    if "ScatterND" in ops.get("", []):
        raise ExportError(f"The exported graph {path} contains ScatterND, which TensorRT cannot parse.")
    session = onnx_session(path)
    errors = []
    with torch.no_grad():
        for x in inputs:
            (onnx_out,) = session.run(None, {INPUT_NAME: x.numpy()})
            errors.append(relative_error(torch.from_numpy(onnx_out), model(x)))
    return max(errors)


def export_torchscript(
    model: nn.Module, path: PathLike, size: int = 224, metadata: Optional[Mapping[str, Any]] = None
) -> Path:
    """Trace ``model`` and save it as TorchScript (loadable with ``torch.jit.load``, no Python classes needed),
    with ``metadata`` (plus ``exporter``: ``torch.jit.trace``) as JSON in the archive's extra file
    ``splitattn.json``."""
    path = Path(path)
    example = torch.randn(1, getattr(model, "in_chans", 3), size, size)
    extra = {TORCHSCRIPT_METADATA_FILE: json.dumps({**(metadata or {}), "exporter": "torch.jit.trace"})}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; the format is still asked for
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
        traced.save(str(path), _extra_files=extra)
    return path


def load_torchscript(path: PathLike) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on the CPU, in eval mode, without its deprecation warning (the file is ours)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def check_torchscript(model: nn.Module, path: PathLike, inputs: Sequence[Tensor]) -> float:
    """Largest relative error of the saved TorchScript module (reloaded) against ``model`` over ``inputs``."""
    loaded = load_torchscript(path)
    with torch.no_grad():
        return max(relative_error(loaded(x), model(x)) for x in inputs)


def export_model(
    model: nn.Module,
    path: PathLike,
    fmt: str,
    size: int = 224,
    metadata: Optional[Mapping[str, Any]] = None,
    exporter: str = "auto",
) -> Tuple[Path, float]:
    """Export to ``fmt`` (``onnx`` or ``torchscript``) with ``metadata`` (see ``export_metadata``) and check
    the file on two input shapes: returns the path and the largest relative error against the eager model.
    ``exporter`` chooses the ONNX exporter (``resolve_onnx_exporter``)."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    model = model.eval()
    inputs = check_inputs(getattr(model, "in_chans", 3), size)
    if fmt == "onnx":
        path = export_onnx(model, path, size, exporter=exporter, metadata=metadata)
        return path, check_onnx(model, path, inputs)
    path = export_torchscript(model, path, size, metadata=metadata)
    return path, check_torchscript(model, path, inputs)
