"""Parameter and multiply-accumulate (MAC) counts; MACs from ``torch.utils.flop_counter`` on the meta device."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int = 224, in_chans: int = 3) -> int:
    """Multiply-accumulates of one image's eval-mode forward pass at ``input_size`` x ``input_size``.

    Counted by PyTorch's ``FlopCounterMode`` (convolutions and matrix products, 2 FLOPs per MAC) on a
    forward with meta tensors in place of the parameters, buffers and image: no arithmetic runs and the
    model itself is not modified, so the deepest variant at 416 px costs a fraction of a second. This is
    the convention of the published ResNeSt FLOPs: norms, activations, pooling and the attention's
    softmax are not counted (a fraction of a percent).
    """
    from torch.func import functional_call  # imported here: 0.3 s that `import splitattn` does not need
    from torch.utils.flop_counter import FlopCounterMode

    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    meta = {name: torch.empty_like(tensor, device="meta") for name, tensor in tensors.items()}
    image = torch.empty(1, in_chans, input_size, input_size, device="meta")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            functional_call(model, meta, (image,))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
