"""Model-level training helpers: ``compile_for_training`` and ``enable_gradient_checkpointing``, both trading
recomputation for memory, and the fine-tuning controls ``freeze_stages`` and ``resnest_layer_ids`` (the layer
of each backbone parameter for layer-wise learning-rate decay).

``compile_for_training`` is ``torch.compile`` for a training step.
AOTAutograd splits the compiled forward+backward graph in two and chooses which activations the
backward reads from memory and which it recomputes. ``memory_budget`` is PyTorch's
``activation_memory_budget``: 1.0 keeps its default (recompute only what is free to fuse), lower
values make the partitioner recompute more of the cheap element-wise work (BatchNorm, ReLU, the
radix softmax and weighted sum) inside fused backward kernels instead of saving its inputs. For
resnest50 at batch 16 on a 2-core AVX-512 CPU, 0.7 cut the training step's peak memory to 0.57x
timm's eager step while running faster than it (BENCHMARKS.md). The recomputation itself is exact
(``backend="aot_eager"`` gives eager's gradients); Inductor's generated kernels round differently
from eager ones, about 1e-3 relative on some BatchNorm gradients.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Dict, Iterable, Tuple

import torch
import torch._functorch.config as functorch_config
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import UsageError
from ..layers.norm import freeze_batch_norm

STEM = ("conv1", "bn1")  # the ResNeSt stem's modules (the deep stem is the Sequential conv1), before layer1
STAGES = ("layer1", "layer2", "layer3", "layer4")
MAX_FROZEN_STAGES = len(STAGES)


def _with_memory_budget(forward: Callable[..., Any], memory_budget: float) -> Callable[..., Any]:
    """``forward`` run with PyTorch's activation memory budget set to ``memory_budget``, restored on return."""

    @functools.wraps(forward)
    def scoped(*args: Any, **kwargs: Any) -> Any:
        with functorch_config.patch(activation_memory_budget=memory_budget):
            return forward(*args, **kwargs)

    return scoped


def compile_for_training(model: nn.Module, memory_budget: float = 1.0, **compile_options: Any) -> nn.Module:
    """``torch.compile(model, **compile_options)`` whose graphs are partitioned under ``memory_budget``, in (0, 1].

    ``activation_memory_budget`` is a process-wide setting of PyTorch's, read when a graph
    compiles: at the first training call and at each recompilation (a new input shape). The
    returned module sets it only for the duration of its own calls and puts the previous value
    back afterwards, so other models compiled in the same process keep theirs.

    Raises ``ValueError`` for a budget outside (0, 1].
    """
    if not 0.0 < memory_budget <= 1.0:
        raise UsageError(
            f"memory_budget must be in (0, 1] (1.0: PyTorch's default; lower recomputes more "
            f"to save memory), got {memory_budget}."
        )
    compiled = torch.compile(model, **compile_options)
    compiled.forward = _with_memory_budget(compiled.forward, float(memory_budget))
    return compiled


class CheckpointedSequential(nn.Sequential):
    """``nn.Sequential`` that recomputes each child's activations in the backward pass while training.

    Trades compute for memory. State-dict keys are those of the plain ``nn.Sequential``.
    BatchNorm running statistics see each batch twice (forward and recompute), the usual
    cost of checkpointing BN networks.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self:
            if self.training and torch.is_grad_enabled():
                x = checkpoint(module, x, use_reentrant=False)
            else:
                x = module(x)
        return x


def enable_gradient_checkpointing(model: nn.Module, stage_names: Iterable[str]) -> nn.Module:
    """Replace the named ``nn.Sequential`` children of ``model`` by ``CheckpointedSequential`` ones."""
    for name in stage_names:
        stage = getattr(model, name)
        if not isinstance(stage, nn.Sequential):
            raise TypeError(
                f"gradient checkpointing needs {name!r} to be an nn.Sequential, got {type(stage).__name__}."
            )
        setattr(model, name, CheckpointedSequential(*stage))
    return model


def freeze_stages(backbone: nn.Module, stages: int) -> nn.Module:
    """Freeze the stem and the first ``stages`` stages (0..4) of a ResNeSt (a classifier or its ``features_only``
    backbone), in place; returns ``backbone``.

    Their parameters get ``requires_grad=False`` and their BatchNorm layers become ``FrozenBatchNorm2d`` holding
    the same statistics and affine values as buffers, so ``model.train()``, which the training loop calls before
    every step, cannot put them back in training mode: their statistics never move (torchvision's
    ``trainable_layers``, mmdetection's ``frozen_stages``). The weights keep their names: checkpoints of frozen
    and unfrozen runs load into each other.

    Raises:
        UsageError: ``stages`` outside 0..4.
    """
    if not 0 <= stages <= MAX_FROZEN_STAGES:
        raise UsageError(f"freeze_stages must be 0..{MAX_FROZEN_STAGES} (the stem and that many stages), got {stages}.")
    for name in STEM + STAGES[:stages]:
        frozen = freeze_batch_norm(getattr(backbone, name))  # a new module for a bare BatchNorm (bn1)
        setattr(backbone, name, frozen)
        for parameter in frozen.parameters():
            parameter.requires_grad_(False)
    return backbone


def resnest_layer_ids(backbone: nn.Module, prefix: str = "") -> Tuple[Dict[str, int], int]:
    """The layer of every parameter of a ResNeSt for layer-wise learning-rate decay, and the depth.

    timm's rule for its ResNets (``group_matcher(coarse=False)``: ``^conv1|bn1|maxpool`` is layer 0, each block
    ``layer<s>.<b>`` one layer in order), so a model of ``n`` blocks has layers 0..n and its heads (the
    classifier, or a detector's or segmenter's heads: every parameter not listed) are layer ``n + 1``.

    Args:
        backbone: a ResNeSt or its ``features_only`` backbone.
        prefix: where ``backbone`` sits in the model whose ``named_parameters`` the ids are for
            (``"backbone.body."`` in a detector).

    Returns:
        ``({prefix + name: layer id}, number of layers with the heads)``.
    """
    stem = re.compile(r"^(conv1|bn1|maxpool)")
    block = re.compile(r"^layer(\d+)\.(\d+)\.")
    blocks = sorted({(int(m[1]), int(m[2])) for name, _ in backbone.named_parameters() if (m := block.match(name))})
    order = {key: index + 1 for index, key in enumerate(blocks)}
    ids: Dict[str, int] = {}
    for name, _ in backbone.named_parameters():
        if stem.match(name):
            ids[prefix + name] = 0
        elif match := block.match(name):
            ids[prefix + name] = order[(int(match[1]), int(match[2]))]
    return ids, len(blocks) + 2
