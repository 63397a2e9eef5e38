"""The inference fast path: BatchNorm folded into convolutions, channels_last, bf16, compiled or frozen.

Folding rewrites every ``conv -> BatchNorm`` pair (eval-mode statistics) as one conv with a bias:

    W' = W * gamma / sqrt(var + eps)      b' = (b - mean) * gamma / sqrt(var + eps) + beta

which removes a full pass over each activation map. In ResNeSt that covers the stem convs,
conv1/bn1, the split-attention conv/bn0 and its attention fc1/bn1, conv3/bn3, the radix-0
conv2/bn2 and the shortcut's conv/bn. The result computes the same function up to float rounding.

The folded network then runs through one of three backends. ``compile`` (the default) is
``torch.compile(options={"freezing": True})``, Inductor's freezing: weights become constants, oneDNN convolutions get
pre-packed weights and fused ReLU/add epilogues, and the split-attention softmax and weighted
sum become single generated kernels; on this project's 2-core AVX-512 CPU it runs resnest50 at
about 1.5x timm's eager speed at batch 1 (fp32), where ``torchscript`` (trace + ``torch.jit.freeze``)
reaches about 1.2x. Compilation costs tens of seconds per new input shape and needs a C++
compiler; ``torchscript`` needs neither, ``eager`` is folding and layout only.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import nullcontext
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import DeviceError, UsageError
from ..layers.split_attention import SplitAttention
from ..models.eval_config import EvalConfig
from ..models.resnest import Bottleneck, check_image_batch

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BACKENDS = ("compile", "torchscript", "eager")


def precision_dtype(precision: str) -> torch.dtype:
    """The dtype of a precision name (``fp32``, ``bf16``, ``fp16``); clear error for others."""
    if precision not in DTYPES:
        raise UsageError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    return DTYPES[precision]


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX) that oneDNN uses."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def foldable_norms() -> Tuple[type, ...]:
    """The norm classes ``fold_batch_norm`` folds: BatchNorm and torchvision's frozen BN (imported on first use)."""
    from torchvision.ops import FrozenBatchNorm2d

    return (nn.BatchNorm2d, FrozenBatchNorm2d)


def fold_conv_norm(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """A new conv computing ``norm(conv(x))`` with eval-mode statistics: (N, C_in, H, W) -> (N, C_out, H', W')."""
    if norm.running_mean is None:
        raise UsageError(f"Cannot fold {type(norm).__name__} without running statistics into a convolution.")
    with torch.no_grad():
        scale = norm.running_var.float().add(norm.eps).rsqrt()
        if getattr(norm, "weight", None) is not None:
            scale = scale * norm.weight.float()
        shift = -norm.running_mean.float() * scale
        if getattr(norm, "bias", None) is not None:
            shift = shift + norm.bias.float()
        fused = copy.deepcopy(conv)
        fused.weight.copy_((conv.weight.float() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        bias = shift if conv.bias is None else conv.bias.float() * scale + shift
        fused.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    return fused


def _conv_norm_pairs(model: nn.Module) -> Iterator[Tuple[nn.Module, str, nn.Module, str]]:
    """(conv owner, conv attribute, norm owner, norm attribute) for every conv directly followed by a norm."""
    stem = getattr(model, "conv1", None)
    if isinstance(stem, nn.Sequential) and isinstance(getattr(model, "bn1", None), nn.Module):
        for index in range(len(stem) - 1):
            if isinstance(stem[index], nn.Conv2d):
                yield stem, str(index), stem, str(index + 1)
        yield stem, str(len(stem) - 1), model, "bn1"
    elif isinstance(stem, nn.Conv2d) and isinstance(getattr(model, "bn1", None), nn.Module):
        yield model, "conv1", model, "bn1"
    for module in model.modules():
        if isinstance(module, Bottleneck):
            yield module, "conv1", module, "bn1"
            if not isinstance(module.conv2, SplitAttention):
                yield module, "conv2", module, "bn2"
            yield module, "conv3", module, "bn3"
            if module.downsample is not None:
                convs = [i for i, m in enumerate(module.downsample) if isinstance(m, nn.Conv2d)]
                yield module.downsample, str(convs[-1]), module.downsample, str(convs[-1] + 1)
        elif isinstance(module, SplitAttention):
            yield module, "conv", module, "bn0"
            yield module, "fc1", module, "bn1"


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm (or frozen BN) that follows a conv into it, in place; returns ``model``.

    The norms become ``nn.Identity``. Only for inference: the folded model has no batch
    statistics to train with. GroupNorm and other norms that depend on the input stay.
    A DropBlock between conv and norm is not in the way: it is the identity at inference.
    """
    foldable = foldable_norms()
    for conv_owner, conv_name, norm_owner, norm_name in list(_conv_norm_pairs(model)):
        norm = getattr(norm_owner, norm_name)
        if not isinstance(norm, foldable):
            continue
        setattr(conv_owner, conv_name, fold_conv_norm(getattr(conv_owner, conv_name), norm))
        setattr(norm_owner, norm_name, nn.Identity())
    for module in model.modules():
        if isinstance(module, SplitAttention):
            module.needs_batch_statistics = isinstance(module.bn1, nn.modules.batchnorm._BatchNorm)
    return model


class InferenceModel(nn.Module):
    """An optimised network behind the original interface: float32 NCHW images in, float32 outputs out.

    Converts the input to the compute dtype and memory format the inner network was prepared for,
    and its output (a tensor, or a list of feature maps) back to float32.

    Shape: (N, in_chans, H, W) float -> whatever the wrapped model returns, in float32.
    """

    def __init__(
        self, inner: nn.Module, dtype: torch.dtype, channels_last: bool, in_chans: int, precision: str, backend: str
    ) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.in_chans = in_chans
        self.precision = precision
        self.backend = backend

    def forward(self, x: Tensor):
        check_image_batch(x, self.in_chans)
        # Inductor freezes (options={"freezing": True}) only graphs traced with grad mode off, and only the
        # tensors Dynamo handed over as parameters: Dynamo does that when its `prepare_freezing` flag is on
        # while it traces (at the first call for each input shape). The flag is set for this call only. The
        # outputs are cloned out of inference mode: ordinary tensors.
        tracing = torch._dynamo.config.patch(prepare_freezing=True) if self.backend == "compile" else nullcontext()
        with torch.inference_mode(), tracing:
            out = self.inner(x.to(dtype=self.dtype, memory_format=self.memory_format))
        if isinstance(out, (list, tuple)):
            return [o.to(torch.float32, copy=True) for o in out]
        return out.to(torch.float32, copy=True)

    def extra_repr(self) -> str:
        return f"precision={self.precision}, channels_last={self.memory_format == torch.channels_last}, backend={self.backend}"


def optimize_for_inference(
    model: nn.Module,
    precision: str = "fp32",
    channels_last: Optional[bool] = None,
    backend: str = "compile",
    example_size: Optional[int] = None,
) -> InferenceModel:
    """A fast inference copy of ``model`` (the original is not modified).

    Args:
        model: a ``ResNeSt`` or ``ResNeStFeatures`` (any module whose conv/BN pairs follow its layout).
        precision: ``fp32``; ``bf16`` (weights and activations in bfloat16: needs a CPU with bf16
            instructions, or a GPU); ``fp16`` (GPU only).
        channels_last: NHWC activations, which oneDNN and cuDNN convolutions prefer. Default: on.
        backend: ``compile`` (``torch.compile`` with Inductor's ``freezing`` option: the fastest; the first call at
            each new input shape compiles, tens of seconds on a CPU), ``torchscript`` (trace,
            ``torch.jit.freeze`` and ``torch.jit.optimize_for_inference``: ready at once, no compiler
            needed) or ``eager`` (folding and layout only).
        example_size: image size of the example input used for tracing (any size works afterwards);
            default: the input size of the model's ``eval_config`` (``EvalConfig``'s default without one).

    Returns an ``InferenceModel``: float32 (N, C, H, W) in, float32 outputs out. fp32 outputs match
    the eager model within about 1e-5 relative; bf16 ones within bf16 rounding (~1e-2).
    """
    dtype = precision_dtype(precision)
    if backend not in BACKENDS:
        raise UsageError(f"Unknown backend {backend!r}; choose {', '.join(BACKENDS)}.")
    device = next(model.parameters()).device
    if device.type == "cpu":
        if precision == "fp16":
            raise DeviceError("fp16 inference is for GPUs; on the CPU use precision='bf16' (or fp32).")
        if precision == "bf16" and not cpu_supports_bf16():
            raise DeviceError(
                "This CPU has no bf16 instructions (AVX-512 BF16 / AMX), so bf16 would be slower than fp32; "
                "use precision='fp32'."
            )
    channels_last = True if channels_last is None else channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    in_chans = getattr(model, "in_chans", 3)
    fast = fold_batch_norm(copy.deepcopy(model).eval())
    fast = fast.to(dtype=dtype, memory_format=memory_format)
    for param in fast.parameters():
        param.requires_grad_(False)
    if backend == "torchscript":
        if example_size is None:
            example_size = getattr(model, "eval_config", EvalConfig()).input_size
        example = torch.randn(1, in_chans, example_size, example_size, device=device)
        example = example.to(dtype=dtype, memory_format=memory_format)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in torch 2.x, still working
            traced = torch.jit.trace(fast, example, check_trace=False, strict=False)  # feature lists too
            fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    elif backend == "compile":
        fast = torch.compile(fast, options={"freezing": True})  # traced for freezing: see InferenceModel.forward
    return InferenceModel(fast, dtype, channels_last, in_chans, precision, backend).eval()
