"""The inference fast path: BatchNorm folded into convolutions, channels_last, bf16 or int8, compiled.

Folding rewrites every ``conv -> BatchNorm`` pair (eval-mode statistics) as one conv with a bias:

    W' = W * gamma / sqrt(var + eps)      b' = (b - mean) * gamma / sqrt(var + eps) + beta

which removes a full pass over each activation map. In ResNeSt that covers the stem convs,
conv1/bn1, the split-attention conv/bn0 and its attention fc1/bn1, conv3/bn3, the radix-0
conv2/bn2 and the shortcut's conv/bn. The result computes the same function up to float rounding.

The folded network then runs through a backend. ``compile`` is ``torch.compile`` with Inductor's freezing:
weights become constants, oneDNN convolutions get pre-packed weights and fused ReLU/add epilogues, and the
split-attention softmax and weighted sum become single generated kernels. Each model gets compiled code of
its own (``splitattn.optimize.compiled``): two models never share frozen weights. ``aot`` compiles the same
code ahead of time into an AOTInductor package kept on disk and loaded in seconds by later runs.
``torchscript`` (trace + ``torch.jit.freeze``) is ready in seconds without a compiler; ``openvino`` hands the
folded network to OpenVINO's CPU plugin (``splitattn.optimize.openvino``: ready in seconds, and the fastest fp32
runtime measured on a CPU); ``eager`` is folding and layout only; ``auto`` picks by the precision, the device and
the amount of work (``choose_backend``).
On this project's 2-core AVX-512 CPU the compiled resnest50 (224 px) runs at the speed of timm's model
under ``torch.compile`` (the generated code is the same), at about this CPU's fp32 matrix-multiply rate;
only lower precision is faster: bf16 about 2x, int8 (``precision="int8"``, ``splitattn.optimize.int8``)
about 2.8x at batch 1. BENCHMARKS.md has the measured table.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import DeviceError, UsageError
from ..layers.split_attention import SplitAttention
from ..models.eval_config import EvalConfig
from ..models.resnest import Bottleneck, check_image_batch
from . import compiled as compiled_code
from .openvino import compile_openvino, openvino_installed

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# the dtype the network computes in; int8 models take and return float32 (quantisation is inside the graph)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}
BACKENDS = ("auto", "compile", "aot", "torchscript", "openvino", "eager")
INT8_BACKENDS = ("auto", "compile", "aot")


def precision_dtype(precision: str) -> torch.dtype:
    """The dtype a precision computes in (``fp32``, ``bf16``, ``fp16``; ``int8``: float32 in and out); clear
    error for others."""
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


Output = Union[Tensor, List[Tensor]]


def _map_output(out, fn) -> Output:
    return [fn(o) for o in out] if isinstance(out, (list, tuple)) else fn(out)


class InferenceModel(nn.Module):
    """An optimised network behind the original interface: float32 NCHW images in, float32 outputs out.

    Converts the input to the compute dtype and memory format the inner network was prepared for, and its
    output (a tensor, or a list of feature maps) back to float32. With ``pad_batch`` set, every batch runs
    at exactly that size (smaller ones padded with zero images whose outputs are dropped, larger ones in
    chunks), so a compiled network sees one input shape. With ``input_size`` set (int8 and ``aot``
    networks, compiled for one image size), other image sizes are refused.

    Shape: (N, in_chans, H, W) float -> whatever the wrapped model returns, in float32.
    """

    def __init__(
        self,
        inner,
        dtype: torch.dtype,
        channels_last: bool,
        in_chans: int,
        precision: str,
        backend: str,
        pad_batch: Optional[int] = None,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        super().__init__()
        self.inner = inner  # an nn.Module, or the callable of a loaded AOTInductor package
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.in_chans = in_chans
        self.precision = precision
        self.backend = backend
        self.pad_batch = pad_batch
        self.input_size = input_size

    def forward(self, x: Tensor) -> Output:
        check_image_batch(x, self.in_chans)
        if self.input_size is not None and tuple(x.shape[2:]) != self.input_size:
            height, width = self.input_size
            raise UsageError(
                f"this {self.precision} {self.backend} model was compiled for {height}x{width} images and got "
                f"{x.shape[2]}x{x.shape[3]}; resize the images (the evaluation transform of that size does) "
                "or optimise the model again for this size."
            )
        if not self.pad_batch or x.shape[0] == self.pad_batch:
            return self._run(x)
        outputs = [self._run(chunk) for chunk in x.split(self.pad_batch)]
        if isinstance(outputs[0], list):
            return [torch.cat(parts) for parts in zip(*outputs)]
        return torch.cat(outputs)

    def _run(self, x: Tensor) -> Output:
        count = x.shape[0]
        if self.pad_batch and count < self.pad_batch:
            x = torch.cat([x, x.new_zeros((self.pad_batch - count, *x.shape[1:]))])
        # Inductor freezes only graphs traced with grad mode off and parameters Dynamo handed over for freezing
        # (see compiled.freezing_trace); set for this call only. Outputs are copied out of inference mode.
        tracing = compiled_code.freezing_trace() if self.backend == "compile" else nullcontext()
        with torch.inference_mode(), tracing:
            out = self.inner(x.to(dtype=self.dtype, memory_format=self.memory_format))
        return _map_output(out, lambda o: o[:count].to(torch.float32, copy=True))

    def extra_repr(self) -> str:
        return (
            f"precision={self.precision}, channels_last={self.memory_format == torch.channels_last}, "
            f"backend={self.backend}, pad_batch={self.pad_batch}, input_size={self.input_size}"
        )


def _check_request(model: nn.Module, precision: str, backend: str, calibration) -> torch.device:
    """The model's device, after refusing what cannot work there (with the fix)."""
    precision_dtype(precision)
    if backend not in BACKENDS:
        raise UsageError(f"Unknown backend {backend!r}; choose {', '.join(BACKENDS)}.")
    device = next(model.parameters()).device
    if precision == "int8":
        if backend not in INT8_BACKENDS:
            raise UsageError(
                f"int8 runs compiled: choose backend {' or '.join(INT8_BACKENDS)}, not {backend!r} (int8 in "
                "OpenVINO: `splitattn export --int8`, then load_exported(path, runtime='openvino'))."
            )
        if calibration is None:
            raise UsageError("precision='int8' needs calibration images: calibration=(N, C, H, W) tensor.")
        if device.type != "cpu":
            raise DeviceError("int8 inference here is for CPUs (oneDNN); on a GPU use precision='fp16' or 'bf16'.")
    elif calibration is not None:
        raise UsageError(f"calibration images are for precision='int8', not {precision!r}.")
    if backend == "openvino" and device.type != "cpu":
        raise DeviceError("backend='openvino' runs on the CPU; move the model there, or choose backend='compile'.")
    if device.type == "cpu":
        if precision == "fp16":
            raise DeviceError("fp16 inference is for GPUs; on the CPU use precision='bf16' (or fp32).")
        if precision == "bf16" and not cpu_supports_bf16():
            raise DeviceError(
                "This CPU has no bf16 instructions (AVX-512 BF16 / AMX), so bf16 would be slower than fp32; "
                "use precision='fp32'."
            )
    return device


def optimize_for_inference(
    model: nn.Module,
    precision: str = "fp32",
    channels_last: Optional[bool] = None,
    backend: str = "compile",
    example_size: Optional[int] = None,
    *,
    calibration: Optional[Union[Tensor, Iterable[Tensor]]] = None,
    images: Optional[int] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    pad_batch: Optional[int] = None,
) -> InferenceModel:
    """A fast inference copy of ``model`` (the original is not modified) that computes what its weights say.

    Args:
        model: a ``ResNeSt`` or ``ResNeStFeatures`` (any module whose conv/BN pairs follow its layout).
        precision: ``fp32``; ``bf16`` (weights and activations in bfloat16: needs a CPU with bf16
            instructions, or a GPU); ``fp16`` (GPU only); ``int8`` (CPU: PT2E post-training quantisation
            calibrated on ``calibration``, see ``splitattn.optimize.int8``; serves that image size only).
        channels_last: NHWC activations, which oneDNN and cuDNN convolutions prefer. Default: on.
        backend: ``compile`` (``torch.compile`` with Inductor's freezing, compiled code of this model's own:
            the first call at each new input shape compiles, tens of seconds to minutes on a CPU);
            ``aot`` (the same code compiled ahead of time for one image size and any batch, kept as an
            AOTInductor package in ``cache_dir`` and loaded from there in seconds by later runs);
            ``torchscript`` (trace, ``torch.jit.freeze`` and ``torch.jit.optimize_for_inference``: ready at
            once, no compiler needed); ``openvino`` (CPU: converted and compiled by OpenVINO in seconds, any
            batch and size; the fastest fp32 runtime measured, ``splitattn.optimize.openvino``); ``eager``
            (folding and layout only); ``auto`` (chosen by ``splitattn.optimize.compiled.choose_backend``:
            ``openvino`` for fp32 on a CPU where it is installed; else ``aot`` when a package is cached or
            ``images`` is enough work to win a compile back; else ``openvino`` where installed, or
            ``torchscript``).
        example_size: image size of the example input used for tracing (``torchscript``: any size works
            afterwards) and of ``aot`` packages (that size only); default: the input size of the model's
            ``eval_config`` (``EvalConfig``'s default without one).
        calibration: for ``int8``: preprocessed images, a (N, C, H, W) tensor or an iterable of batches.
        images: for ``auto``: how many images the model will process.
        cache_dir: folder of ``aot`` packages (default: ``splitattn-aot`` in Inductor's cache folder).
        pad_batch: run every batch at this batch size (padding smaller ones; see ``InferenceModel``) so
            that a compiled model compiles once, e.g. for the ragged last batch of an evaluation.

    Returns:
        An ``InferenceModel``: float32 (N, C, H, W) in, float32 outputs out. fp32 outputs match the eager
        model within about 1e-5 relative; bf16 ones within bf16 rounding (~1e-2); int8 ones within
        quantisation error (a few 1e-2 relative; gate accuracy on real data).

    Raises:
        UsageError: an unknown precision or backend, int8 without calibration images or with a backend it
            cannot use, ``auto`` without ``images``.
        DeviceError: fp16 on a CPU, bf16 on a CPU without bf16 instructions, int8 on a GPU, ``openvino`` on a
            GPU.
        MissingDependencyError: int8 without torchao (``pip install 'splitattn[int8]'``), ``openvino`` without
            OpenVINO (``pip install 'splitattn[openvino]'``).
    """
    device = _check_request(model, precision, backend, calibration)
    dtype = precision_dtype(precision)
    channels_last = True if channels_last is None else channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    in_chans = getattr(model, "in_chans", 3)
    fast = fold_batch_norm(copy.deepcopy(model).eval())
    fast = fast.to(dtype=dtype, memory_format=memory_format)
    for param in fast.parameters():
        param.requires_grad_(False)
    if example_size is None:
        example_size = getattr(model, "eval_config", EvalConfig()).input_size
    input_size = None
    if precision == "int8":
        from .int8 import calibration_batches, quantize_pt2e

        batches = [batch.to(device) for batch in calibration_batches(calibration)]
        input_size = tuple(batches[0].shape[2:])
        # with the float weights (in ``package_path``), the calibration images fix the int8 model
        key = ("int8", input_size, channels_last, compiled_code.tensors_digest(enumerate(batches)))
        example = batches[0][:1]
    else:
        example = torch.randn(1, in_chans, example_size, example_size, device=device)
        key = (precision, (example_size, example_size), channels_last)
    example = example.to(dtype=dtype, memory_format=memory_format)
    if backend in ("auto", "aot"):
        folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        package = compiled_code.package_path(folder, fast, *key)
        if backend == "auto":
            if images is None:
                raise UsageError("backend='auto' chooses by the amount of work: pass images=<number of images>.")
            openvino = device.type == "cpu" and precision != "int8" and openvino_installed()
            backend = compiled_code.choose_backend(
                images, cached=package.is_file(), precision=precision, openvino=openvino
            )
            backend = "compile" if precision == "int8" and backend == "torchscript" else backend
    if precision == "int8" and not (backend == "aot" and package.is_file()):
        fast = quantize_pt2e(fast, batches)
    if backend == "aot":
        if not package.is_file():
            compiled_code.compile_package(fast, example, package)
        fast = compiled_code.load_package(package)
        input_size = tuple(example.shape[2:])
    elif backend == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in torch 2.x, still working
            traced = torch.jit.trace(fast, example, check_trace=False, strict=False)  # feature lists too
            fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    elif backend == "compile":
        fast = compiled_code.compile_frozen(fast)
    elif backend == "openvino":  # fp32 weights in the converted model; OpenVINO computes in ``precision``
        plain = dict(dtype=torch.float32, memory_format=torch.contiguous_format)
        fast = compile_openvino(fast.to(**plain), example.to(**plain), precision)
        dtype, channels_last = torch.float32, False
    return InferenceModel(fast, dtype, channels_last, in_chans, precision, backend, pad_batch, input_size).eval()


def _default_cache_dir() -> Path:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / "splitattn-aot"
