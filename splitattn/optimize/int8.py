"""int8 post-training quantisation behind the fast path: PyTorch 2 export quantisation (PT2E) lowered by Inductor.

The network (BatchNorm already folded) is captured with ``torch.export`` for one image size and a dynamic
batch, annotated by ``X86InductorQuantizer`` (torchao's PT2E, the successor of ``torch.ao.quantization``:
u8 activations per tensor with histogram observers, s8 weights per output channel, symmetric), run over
the calibration images to fix the activation ranges, and converted to quantise/dequantise pairs around
each conv and linear layer. Compiled with Inductor's freezing, those pairs become oneDNN int8 convolutions
(VNNI or AMX where the CPU has them) with fused requantisation.

Why this toolkit for the fast path: on the project's 2-core AVX-512 VNNI CPU it was the fastest int8 of the
four measured (resnest50 at 224 px, batch 1: 2.8x our fp32 fast path, against 2.3x for ONNX Runtime's own
QDQ file, 2.1x for NNCF's QDQ file in ONNX Runtime and 1.0x for NNCF's model in OpenVINO; batch 16: 3.2x),
and it keeps the model in torch. Its limit: ``torch.export`` cannot keep the image size dynamic (ResNeSt's
ceil-mode average pooling in the down-sampling shortcut gives guards on H and W it refuses), so an int8
model serves the image size it was calibrated at. For a file served without torch, with any image size,
``splitattn export --int8`` writes NNCF's QDQ ONNX file instead (``splitattn.deploy.quantize``).

Reference: torchao's PT2E tutorial (``prepare_pt2e`` / ``convert_pt2e`` with ``X86InductorQuantizer``).
"""

from __future__ import annotations

import warnings
from typing import Iterable, List, Union

import torch
from torch import Tensor, nn

from ..deps import require
from ..errors import UsageError
from .compiled import import_quietly, quiet_cpp_extension

Calibration = Union[Tensor, Iterable[Tensor]]


def calibration_batches(calibration: Calibration, batch_size: int = 16) -> List[Tensor]:
    """The calibration images as a list of float32 (N, C, H, W) batches of one image size.

    ``calibration``: one (N, C, H, W) tensor (split into batches of ``batch_size``) or an iterable of
    (N, C, H, W) batches. Raises ``UsageError`` when there are no images or their sizes differ.
    """
    if isinstance(calibration, Tensor):
        calibration = list(calibration.split(batch_size))
    batches = [batch.float() for batch in calibration]
    if not batches or not sum(len(batch) for batch in batches):
        raise UsageError("int8 quantisation needs calibration images: pass a (N, C, H, W) tensor of them.")
    shapes = {tuple(batch.shape[1:]) for batch in batches}
    if any(batch.dim() != 4 for batch in batches) or len(shapes) != 1:
        raise UsageError(
            f"calibration images must be (N, C, H, W) batches of one image size, got shapes {sorted(shapes)}; "
            "preprocess them with the model's evaluation transform."
        )
    return batches


def quantize_pt2e(model: nn.Module, calibration: Calibration) -> nn.Module:
    """The int8 model of ``model`` (eval mode, BatchNorm folded or not), calibrated on ``calibration``.

    Args:
        model: the float32 network; not modified.
        calibration: preprocessed images, as ``calibration_batches`` takes them; a few hundred of the
            training set's, through the evaluation transform, are typical.

    Returns:
        An FX ``GraphModule`` with quantise/dequantise nodes: float32 (N, C, H, W) in at the calibration
        image size (any batch), float32 outputs. Run it under ``torch.compile`` with freezing for int8
        kernels; run eagerly it only simulates int8 (slowly).

    Raises:
        MissingDependencyError: torchao is not installed (``pip install 'splitattn[int8]'``).
        UsageError: no calibration images, or images of several sizes.
    """
    require("torchao", "int8", "int8 quantisation of the fast path (PT2E)")
    quiet_cpp_extension()
    # torchao registers an Enum with torch's pytree at import, which torch logs as deprecated: not ours to fix
    import_quietly("torchao.quantization.pt2e", "torch.utils._pytree", "is an Enum subclass")
    from torch.export import Dim
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    batches = calibration_batches(calibration)
    example = torch.cat([batches[0][:1]] * 2)  # batch 2: torch.export specialises a batch of 1 to a constant
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    with torch.no_grad(), warnings.catch_warnings():
        # "input of maxpool2d is not quantized": the stem's pool stays float, as intended for the first layer
        warnings.filterwarnings("ignore", message="The input of maxpool2d is not quantized")
        dynamic = ({0: Dim("batch", min=1, max=4096)},)
        exported = torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic).module()
        prepared = prepare_pt2e(exported, quantizer)
        for batch in batches:
            prepared(batch)
        converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    allow_exported_model_train_eval(converted)  # so a wrapper's .eval() reaches it without an error
    return converted
