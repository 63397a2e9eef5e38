"""Split-Attention convolution, the building block of ResNeSt (Zhang et al. 2020, Sec. 3).

The layer keeps the parameter names of the official implementation (``conv``, ``bn0``,
``fc1``, ``bn1``, ``fc2``) so official and timm checkpoints load without renaming. Plain
autograd only: training memory is reduced by compiling (``splitattn.optimize.compile_for_training``)
or by per-stage ``torch.utils.checkpoint`` (``--grad-checkpointing``), not inside the layer.
"""

from typing import Callable, Optional

# No `from __future__ import annotations` here: TorchScript reads the annotations of the
# methods it compiles and cannot resolve postponed (string) ones.
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
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


def _radix_view(splits: Tensor, radix: int) -> Tensor:
    """(N, R*C, H, W) -> (N, R, C, H, W), the splits as a separate dimension."""
    return splits.view(-1, radix, splits.shape[1] // radix, splits.shape[2], splits.shape[3])


def _weighted_sum(splits: Tensor, attn: Tensor, radix: int) -> Tensor:
    """(N, R*C, H, W) splits, (N, R*C) attention -> (N, C, H, W), sum_r attn_r * split_r."""
    channels = splits.shape[1] // radix
    if radix == 1:
        return splits * attn.view(-1, channels, 1, 1)
    return (_radix_view(splits, radix) * attn.view(-1, radix, channels, 1, 1)).sum(1)


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
        kernel_size: kernel size of the grouped conv.
        stride: stride of the grouped conv.
        padding: padding of the grouped conv; defaults to ``dilation * (kernel_size // 2)`` ("same" for stride 1).
        dilation: dilation of the grouped conv.
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
            raise UsageError(f"SplitAttention needs radix >= 1, got {radix}; use a plain conv for radix 0.")
        groups = cardinality * radix
        if cardinality < 1 or out_channels % cardinality or in_channels % groups:
            raise UsageError(
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
            in_channels,
            out_channels * radix,
            kernel_size,
            stride,
            padding,
            dilation,
            groups=cardinality * radix,
            bias=bias,
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

    def attention(self, splits_mean: Tensor) -> Tensor:
        """Attention weights from the pooled sum of splits: (N, C) -> (N, R*C), radix-major."""
        gap = splits_mean.view(-1, self.out_channels, 1, 1)
        hidden = F.relu(self.bn1(self.fc1(gap)), inplace=True)
        return radix_softmax(self.fc2(hidden), self.radix, self.cardinality)

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
            raise UsageError(
                "SplitAttention got a batch of 1 in training mode: its attention branch pools "
                "each image to 1x1, and BatchNorm cannot compute batch statistics from one value "
                "per channel. Use a batch of at least 2, call model.eval() for inference, build "
                "the model with norm_layer='frozenbn' (pretrained weights only) or 'groupnorm', or "
                "train with norm_layer='syncbn' across several processes under torchrun."
            )

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.drop_block(self.bn0(self.conv(x))), inplace=True)
        self.check_batch(x.shape[0])
        # Sum the splits, then pool: the official order, so results match it bit for bit.
        gap = _radix_view(x, self.radix).sum(1) if self.radix > 1 else x
        return _weighted_sum(x, self.attention(gap.mean((2, 3))), self.radix)

    def extra_repr(self) -> str:
        return f"radix={self.radix}, cardinality={self.cardinality}, inner_channels={self.inner_channels}"
