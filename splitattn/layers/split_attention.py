"""Split-Attention convolution, the building block of ResNeSt (Zhang et al. 2020, Sec. 3).

The layer keeps the parameter names of the official implementation (``conv``, ``bn0``,
``fc1``, ``bn1``, ``fc2``) so official and timm checkpoints load without renaming.

Training memory: written with plain autograd, a Split-Attention layer keeps two tensors of
R*C channels per pixel for backward: the conv output (BatchNorm's input) and the ReLU output
(the splits, needed by the attention-weighted sum). In training mode with BatchNorm, the
layer instead runs ``BatchNormReLU`` and ``AttentionWeightedSum`` below, which keep only the
conv output and recompute the normalised, rectified splits in backward (one cheap
elementwise pass), so each layer holds half as many saved activations.
"""

from typing import Callable, Optional, Tuple

# No `from __future__ import annotations` here: TorchScript reads the annotations of the
# @torch.jit.unused methods and cannot resolve postponed (string) ones.
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norm import batch_statistics_are_local


def radix_softmax(logits: Tensor, radix: int, cardinality: int) -> Tensor:
    """Normalise attention logits across the ``radix`` splits of each cardinal group.

    ``logits`` has shape (N, R*C, 1, 1) in fc2's channel order, which is cardinal-major
    (K groups of R*C/K channels). The result has shape (N, R*C) in radix-major order
    (R blocks of C channels), the order of the splits of the grouped conv's output.
    With ``radix == 1`` the gate is a sigmoid (an SE-style channel gate).

    Only reshape/transpose/softmax are used, so the op exports to plain ONNX (no ScatterND).
    """
    # Batch sizes are left as -1 so a traced/exported graph keeps the batch dimension dynamic.
    if radix > 1:
        grouped = logits.reshape(-1, cardinality, radix, logits.shape[1] // (cardinality * radix)).transpose(1, 2)
        return F.softmax(grouped, dim=1).flatten(1)
    return torch.sigmoid(logits).flatten(1)


def trains_lean(norm: nn.Module, drop_block: Optional[nn.Module]) -> bool:
    """Whether ``relu(drop_block(norm(z)))`` may run as ``batch_norm_relu``: a training BatchNorm2d
    with affine parameters and running statistics, no active DropBlock, autograd recording, eager mode."""
    return (
        torch.is_grad_enabled() and not torch.jit.is_scripting() and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and type(norm) is nn.BatchNorm2d and norm.training and norm.affine and norm.track_running_stats
        and (drop_block is None or not drop_block.training or getattr(drop_block, "drop_prob", 0.0) == 0.0)
    )


class RecomputedBatchNormReLU:
    """relu(batch_norm(z)) with batch statistics, recomputed on demand and kept until ``release()``.

    Calling the same kernel again on the same input gives the forward's values bit for bit
    (a closed-form re-normalisation would differ in the last bit, enough to change gradients
    that are mathematically zero, such as a bias followed by BatchNorm). Backward asks for the
    tensor up to three times per block (conv input, attention gradient, ReLU mask); it is
    computed once and freed by ``BatchNormReLU.backward``, its last user.
    """

    def __init__(self, z: Tensor, weight: Tensor, bias: Tensor, eps: float) -> None:
        self.z, self.weight, self.bias, self.eps = z.detach(), weight.detach(), bias.detach(), eps
        self.value: Optional[Tensor] = None

    def __call__(self) -> Tensor:
        if self.value is None:
            with torch.no_grad():
                out = torch.ops.aten.native_batch_norm(self.z, self.weight, self.bias, None, None, True, 0.0, self.eps)[0]
                self.value = out.relu_()
        return self.value

    def release(self) -> None:
        self.value = None


class BatchNormReLU(torch.autograd.Function):
    """relu(batch_norm(z)) with batch statistics, saving only ``z`` for backward.

    Forward: z (N, C, H, W), BatchNorm weight/bias/running stats -> out (N, C, H, W), the
    running statistics updated in place as ``nn.BatchNorm2d`` does. Backward takes the ReLU
    mask from ``recompute`` (a ``RecomputedBatchNormReLU`` of z) instead of keeping ``out`` alive.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, z: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
        momentum: float, recompute: RecomputedBatchNormReLU,
    ) -> Tensor:
        out, mean, invstd = torch.ops.aten.native_batch_norm(
            z, weight, bias, running_mean, running_var, True, momentum, recompute.eps
        )
        ctx.save_for_backward(z, weight, mean, invstd)
        ctx.recompute = recompute
        return out.relu_()

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple:  # type: ignore[override]
        z, weight, mean, invstd = ctx.saved_tensors
        grad_out = grad_out.masked_fill(ctx.recompute() <= 0, 0.0)
        ctx.recompute.release()
        grad_z, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_out, z, weight, None, None, mean, invstd, True, ctx.recompute.eps, list(ctx.needs_input_grad[:3]),
        )
        return grad_z, grad_weight, grad_bias, None, None, None, None


def batch_norm_relu(z: Tensor, norm: nn.BatchNorm2d) -> Tuple[Tensor, RecomputedBatchNormReLU]:
    """``relu(norm(z))`` in training mode through ``BatchNormReLU``: (out, a recompute of out).

    Does the bookkeeping of ``nn.BatchNorm2d.forward`` (batch counter, cumulative average when
    ``momentum`` is None), so running statistics evolve exactly as with the module.
    """
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            momentum = 1.0 / float(norm.num_batches_tracked)
    recompute = RecomputedBatchNormReLU(z, norm.weight, norm.bias, norm.eps)
    out = BatchNormReLU.apply(z, norm.weight, norm.bias, norm.running_mean, norm.running_var, momentum, recompute)
    return out, recompute


def _radix_view(splits: Tensor, radix: int) -> Tensor:
    """(N, R*C, H, W) -> (N, R, C, H, W), the splits as a separate dimension."""
    return splits.view(-1, radix, splits.shape[1] // radix, splits.shape[2], splits.shape[3])


def _weighted_sum(splits: Tensor, attn: Tensor, radix: int) -> Tensor:
    """(N, R*C, H, W) splits, (N, R*C) attention -> (N, C, H, W), sum_r attn_r * split_r."""
    channels = splits.shape[1] // radix
    if radix == 1:
        return splits * attn.view(-1, channels, 1, 1)
    return (_radix_view(splits, radix) * attn.view(-1, radix, channels, 1, 1)).sum(1)


class AttentionWeightedSum(torch.autograd.Function):
    """sum_r attn_r * split_r, re-deriving the splits from a recompute function in backward.

    Forward: splits (N, R*C, H, W) radix-major, attn (N, R*C) -> (N, C, H, W). Nothing of
    size H x W is saved; ``recompute()`` gives the splits again when backward needs them.
    """

    @staticmethod
    def forward(ctx, splits: Tensor, attn: Tensor, radix: int, recompute: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(attn)
        ctx.radix, ctx.recompute = radix, recompute
        return _weighted_sum(splits, attn, radix)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple:  # type: ignore[override]
        (attn,) = ctx.saved_tensors
        radix = ctx.radix
        batch, channels = grad_out.shape[:2]
        grad_splits = grad_attn = None
        if ctx.needs_input_grad[0]:
            grad_splits = (grad_out.unsqueeze(1) * attn.view(batch, radix, channels, 1, 1)).flatten(1, 2)
        if ctx.needs_input_grad[1]:
            splits = ctx.recompute().view(batch, radix, channels, *grad_out.shape[2:])
            grad_attn = (splits * grad_out.unsqueeze(1)).sum((3, 4)).view(batch, -1)
        return grad_splits, grad_attn, None, None


class recompute_when_saved:
    """Within this context, autograd saves ``tensor`` as a recipe instead of the tensor itself.

    Any op that saves ``tensor`` (same storage, shape and strides) for backward stores
    ``recompute`` and calls it in backward (once per unpack, without grad), so ``tensor`` is
    freed as soon as forward drops it. ``recompute()`` must give back ``tensor``'s values.
    """

    def __init__(self, tensor: Tensor, recompute: Callable[[], Tensor]) -> None:
        self.key = (tensor.data_ptr(), tensor.shape, tensor.stride(), tensor.dtype)
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self.recompute: Optional[Callable[[], Tensor]] = recompute

    def pack(self, tensor: Tensor):
        if self.recompute is not None and (tensor.data_ptr(), tensor.shape, tensor.stride(), tensor.dtype) == self.key:
            return self.recompute
        return tensor

    @staticmethod
    def unpack(packed) -> Tensor:
        if isinstance(packed, Tensor):
            return packed
        with torch.no_grad():
            return packed()

    def __enter__(self) -> "recompute_when_saved":
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.recompute = None  # drop nothing else: the recipe stays referenced by the saved slots
        self.hooks.__exit__(*exc)


class SplitAttention(nn.Module):
    """Split-Attention convolution.

    Computes one grouped conv with ``cardinality * radix`` groups, then for every cardinal
    group mixes its ``radix`` splits with a softmax attention derived from global context:

        conv (K*R groups) -> norm -> [DropBlock] -> ReLU -> sum the R splits -> global avg pool
        -> fc1 (1x1, K groups) -> norm -> ReLU -> fc2 (1x1, K groups) -> r-softmax
        -> attention-weighted sum of the R splits

    Args:
        in_channels: channels of the input, C_in.
        out_channels: channels of the output, C (each split has C channels).
        kernel_size, stride, padding, dilation: of the grouped conv; ``padding`` defaults
            to ``dilation * (kernel_size // 2)`` ("same" for stride 1).
        cardinality: K, the number of cardinal groups.
        radix: R, the number of splits per cardinal group. 1 gives a sigmoid gate.
        reduction_factor: the attention branch is ``C_in * R // reduction_factor`` wide...
        min_inner_channels: ...but at least this many channels (official: 32).
        bias: whether the grouped conv has a bias (the ResNeSt blocks use ``False``).
        norm_layer: called with a channel count to build each norm; ``None`` for no norm. A
            GroupNorm in the attention branch uses one group per cardinal group.
        drop_block: optional module applied after the first norm (the paper's placement).

    Shape:
        input (N, C_in, H, W) -> output (N, C, H_out, W_out) with the usual conv arithmetic.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: Optional[int] = None,
        dilation: int = 1,
        cardinality: int = 1,
        radix: int = 2,
        reduction_factor: int = 4,
        min_inner_channels: int = 32,
        bias: bool = False,
        norm_layer: Optional[Callable[[int], nn.Module]] = nn.BatchNorm2d,
        drop_block: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        if radix < 1:
            raise ValueError(f"SplitAttention needs radix >= 1, got {radix}; use a plain conv for radix 0.")
        groups = cardinality * radix
        if cardinality < 1 or out_channels % cardinality or in_channels % groups:
            raise ValueError(
                f"SplitAttention: out_channels ({out_channels}) must be divisible by cardinality "
                f"({cardinality}) and in_channels ({in_channels}) by cardinality * radix ({groups}), "
                "the group count of its convolution."
            )
        if padding is None:
            padding = dilation * (kernel_size // 2)
        inner_channels = max(in_channels * radix // reduction_factor, min_inner_channels)
        self.radix = radix
        self.cardinality = cardinality
        self.out_channels = out_channels
        self.inner_channels = inner_channels

        self.conv = nn.Conv2d(
            in_channels, out_channels * radix, kernel_size, stride, padding, dilation,
            groups=cardinality * radix, bias=bias,
        )
        self.bn0 = norm_layer(out_channels * radix) if norm_layer is not None else nn.Identity()
        self.drop_block = drop_block if drop_block is not None else nn.Identity()
        self.fc1 = nn.Conv2d(out_channels, inner_channels, 1, groups=cardinality)
        self.bn1 = norm_layer(inner_channels) if norm_layer is not None else nn.Identity()
        if isinstance(self.bn1, nn.GroupNorm):
            # On the pooled 1x1 map a GroupNorm group must span channels, not pixels: one group
            # per cardinal group (as fc1/fc2 are grouped) normalises each group's attention vector.
            self.bn1 = nn.GroupNorm(cardinality, inner_channels)
        self.fc2 = nn.Conv2d(inner_channels, out_channels * radix, 1, groups=cardinality)
        # BatchNorm in training mode cannot normalise the (N, C, 1, 1) pooled map when N == 1.
        self.needs_batch_statistics = isinstance(self.bn1, nn.modules.batchnorm._BatchNorm)
        # Opt-in (ResNeSt(memory_efficient=True)): the lean training step saves ~1/4 of the
        # activation memory for a few percent of speed; off by default.
        self.memory_efficient = False

    def attention(self, splits_mean: Tensor) -> Tensor:
        """Attention weights from the pooled sum of splits: (N, C) -> (N, R*C), radix-major."""
        gap = splits_mean.view(-1, self.out_channels, 1, 1)
        hidden = F.relu(self.bn1(self.fc1(gap)), inplace=True)
        return radix_softmax(self.fc2(hidden), self.radix, self.cardinality)

    @torch.jit.unused
    def uses_lean_step(self) -> bool:
        """Whether this training call goes through ``forward_lean`` (opt-in, eager BatchNorm2d only)."""
        return self.memory_efficient and trains_lean(self.bn0, self.drop_block)

    @torch.jit.unused
    def forward_lean(self, z: Tensor) -> Tuple[Tensor, Callable[[], Tensor]]:
        """Training forward from the conv output z (N, R*C, H, W) that saves only z for backward.

        Returns the output (N, C, H, W) and a function recomputing it (for ``recompute_when_saved``
        around the layers that consume it). Needs ``trains_lean(self.bn0, self.drop_block)``.
        """
        splits, recompute_splits = batch_norm_relu(z, self.bn0)
        self.check_batch(splits.shape[0])
        gap = _radix_view(splits, self.radix).sum(1) if self.radix > 1 else splits
        attn = self.attention(gap.mean((2, 3)))
        out = AttentionWeightedSum.apply(splits, attn, self.radix, recompute_splits)
        attn, radix = attn.detach(), self.radix
        return out, lambda: _weighted_sum(recompute_splits(), attn, radix)

    @torch.jit.unused
    def local_batch_statistics(self) -> bool:
        """``batch_statistics_are_local(self.bn1)`` (eager only: it reads the process group)."""
        return batch_statistics_are_local(self.bn1)

    def check_batch(self, batch: int) -> None:
        """Refuse a training batch of 1 when the attention's BatchNorm needs this process's batch statistics.

        SyncBatchNorm across several processes takes its statistics from all their images, so
        one image per process passes (``batch_statistics_are_local``).
        """
        if not (self.needs_batch_statistics and self.bn1.training and batch == 1):
            return
        if torch.jit.is_scripting() or self.local_batch_statistics():  # scripted: SyncBN not told apart
            raise ValueError(
                "SplitAttention got a batch of 1 in training mode: its attention branch pools "
                "each image to 1x1, and BatchNorm cannot compute batch statistics from one value "
                "per channel. Use a batch of at least 2, call model.eval() for inference, build "
                "the model with norm_layer='frozenbn' (pretrained weights only) or 'groupnorm', or "
                "train with norm_layer='syncbn' across several processes under torchrun."
            )

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and self.uses_lean_step():
            return self.forward_lean(self.conv(x))[0]
        x = F.relu(self.drop_block(self.bn0(self.conv(x))), inplace=True)
        self.check_batch(x.shape[0])
        # Sum the splits, then pool: the official order, so results match it bit for bit.
        gap = _radix_view(x, self.radix).sum(1) if self.radix > 1 else x
        return _weighted_sum(x, self.attention(gap.mean((2, 3))), self.radix)

    def extra_repr(self) -> str:
        return f"radix={self.radix}, cardinality={self.cardinality}, inner_channels={self.inner_channels}"
