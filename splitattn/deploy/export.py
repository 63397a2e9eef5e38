"""Export to ONNX (dynamic batch and spatial size, standard ops only) and TorchScript, each checked on export.

The ONNX graph is written by the TorchScript-based exporter (``dynamo=False``); the radix softmax is
reshape/transpose/softmax and the weighted sum a mul/reduce, so the graph holds only default-domain
operators (no ScatterND, no custom ops) that TensorRT and ONNX Runtime run as they are.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..models import create_model

EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
STANDARD_DOMAINS = ("", "ai.onnx")
PathLike = Union[str, "os.PathLike[str]"]


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """max |actual - expected| / max |expected|: the figure printed after every export check."""
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    return diff / scale if scale > 0 else diff


def load_model_for_export(name: str, weights: Optional[PathLike] = None, num_classes: Optional[int] = None) -> nn.Module:
    """Build ``name`` in eval mode with ``weights`` (a checkpoint file); random weights warn.

    ``num_classes`` defaults to the checkpoint's classifier size (1000 without weights).
    """
    if weights is None:
        warnings.warn(f"No --weights given: exporting {name} with random initial weights.", stacklevel=2)
        return create_model(name, num_classes=num_classes or 1000).eval()
    from ..weights import load_checkpoint, load_state_dict_into

    state = load_checkpoint(weights)
    if num_classes is None:
        num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 1000
    return load_state_dict_into(create_model(name, num_classes=num_classes), state, origin=str(weights)).eval()


def check_inputs(in_chans: int, size: int) -> List[Tensor]:
    """Two checking batches of different batch and spatial sizes, so dynamic axes are exercised."""
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(2, in_chans, size, size, generator=generator),
        torch.randn(1, in_chans, size + 32, size - 32, generator=generator),
    ]


def export_onnx(model: nn.Module, path: PathLike, size: int = 224, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` as ONNX with dynamic batch, height and width: input ``images`` (N, C, H, W) float32,
    output ``logits`` (N, classes). Returns the path."""
    path = Path(path)
    example = torch.randn(1, getattr(model, "in_chans", 3), size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model.eval(), (example,), str(path), input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    return path


def onnx_op_types(path: PathLike) -> Dict[str, List[str]]:
    """Operator types in an ONNX file by domain (``""`` is the standard one), for checking the graph."""
    import onnx

    graph = onnx.load(str(path)).graph
    ops: Dict[str, List[str]] = {}
    for node in graph.node:
        ops.setdefault(node.domain, [])
        if node.op_type not in ops[node.domain]:
            ops[node.domain].append(node.op_type)
    return ops


def onnx_session(path: PathLike, threads: Optional[int] = None):
    """An ONNX Runtime CPU session for ``path`` (``threads``: intra-op threads, default torch's)."""
    import onnxruntime

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
        raise RuntimeError(f"The exported graph {path} uses non-standard operators: {custom}.")
    if "ScatterND" in ops.get("", []):
        raise RuntimeError(f"The exported graph {path} contains ScatterND, which TensorRT cannot parse.")
    session = onnx_session(path)
    errors = []
    with torch.no_grad():
        for x in inputs:
            (onnx_out,) = session.run(None, {"images": x.numpy()})
            errors.append(relative_error(torch.from_numpy(onnx_out), model(x)))
    return max(errors)


def export_torchscript(model: nn.Module, path: PathLike, size: int = 224) -> Path:
    """Trace ``model`` and save it as TorchScript (loadable with ``torch.jit.load``, no Python classes needed)."""
    path = Path(path)
    example = torch.randn(1, getattr(model, "in_chans", 3), size, size)
    with torch.no_grad():
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
    traced.save(str(path))
    return path


def check_torchscript(model: nn.Module, path: PathLike, inputs: Sequence[Tensor]) -> float:
    """Largest relative error of the saved TorchScript module (reloaded) against ``model`` over ``inputs``."""
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return max(relative_error(loaded(x), model(x)) for x in inputs)


def export_model(model: nn.Module, path: PathLike, fmt: str, size: int = 224) -> Tuple[Path, float]:
    """Export to ``fmt`` (``onnx`` or ``torchscript``) and check it on two input shapes:
    returns the path and the largest relative error against the eager model."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    model = model.eval()
    inputs = check_inputs(getattr(model, "in_chans", 3), size)
    if fmt == "onnx":
        path = export_onnx(model, path, size)
        return path, check_onnx(model, path, inputs)
    path = export_torchscript(model, path, size)
    return path, check_torchscript(model, path, inputs)
