"""The fast path's ``openvino`` backend: the folded network run by OpenVINO's CPU plugin.

``openvino.convert_model`` reads the folded PyTorch module directly (OpenVINO's PyTorch frontend: seconds, no
ONNX file, batch and image size left dynamic) and the CPU plugin compiles it in fp32 or bf16
(``INFERENCE_PRECISION_HINT``), with as many threads as torch uses. Chosen because it is the fastest runtime
measured for fp32 on this project's 2-core AVX-512 CPU (BENCHMARKS.md, "Across formats": resnest50 at 224 px,
batch 1: 53.5 ms against 64.3 ms for Inductor's frozen code and timm under ``torch.compile``; equal at batch 16;
bf16 batch 1: 31.1 against 40.3 ms). Its convolutions reach the CPU's measured fp32 matrix-multiply rate at
batch 1, where Inductor's code, which calls oneDNN one operation at a time, stays at 0.85 of it; Inductor's C++
wrapper (``cpp_wrapper``) recovered only 4 % of the gap.

Reference: OpenVINO ``convert_model`` (PyTorch frontend) and CPU plugin inference precision hints.
"""

from __future__ import annotations

import warnings
from typing import Callable, List, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..deps import openvino_core, require

HINTS = {"fp32": "f32", "bf16": "bf16"}


def openvino_installed() -> bool:
    """Whether the ``openvino`` package can be imported (``pip install 'splitattn[openvino]'``)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def compile_openvino(module: nn.Module, example: Tensor, precision: str) -> Callable[[Tensor], Union[Tensor, List]]:
    """``module`` (float32, eval mode) compiled by OpenVINO for the CPU.

    Args:
        module: the network; its outputs a tensor or a list of tensors (``features_only`` models).
        example: a (1, C, H, W) float32 input to trace with (any batch and size run afterwards).
        precision: ``fp32`` or ``bf16`` (OpenVINO's bf16 inference; weights kept in fp32 in the model).

    Returns:
        A callable: (N, C, H, W) float32 CPU tensor -> float32 tensor, or list of tensors, as ``module`` returns.

    Raises:
        MissingDependencyError: OpenVINO is not installed.
    """
    openvino = require("openvino", "openvino", "the fast path's openvino backend")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warnings about Python values: the graph is checked by tests
        converted = openvino.convert_model(module, example_input=example, share_weights=False)
    config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    compiled = openvino_core().compile_model(converted, "CPU", config)
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(x: Tensor) -> Union[Tensor, List[Tensor]]:
        result = request.infer({0: x.detach().cpu().contiguous().numpy()})
        tensors = [torch.from_numpy(np.array(result[output])) for output in outputs]  # copies: buffers are reused
        return tensors[0] if len(tensors) == 1 else tensors

    return run
