"""Parameter and multiply-accumulate (MAC) counts, by forward hooks on a real forward pass."""
from __future__ import annotations

from typing import List

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int = 224, in_chans: int = 3) -> int:
    """Multiply-accumulates of one image's forward pass at ``input_size`` x ``input_size``.

    Counts convolutions and linear layers, the convention of the published ResNeSt FLOPs
    (norms, activations, pooling and the attention's softmax are a fraction of a percent).
    """
    macs: List[int] = []

    def conv_hook(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        kernel = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        macs.append(output[0].numel() * kernel)

    def linear_hook(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        macs.append(module.in_features * module.out_features)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return sum(macs)
