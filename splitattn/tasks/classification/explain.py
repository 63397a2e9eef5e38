"""Why a classifier chose its class, as pictures: a Grad-CAM heatmap over the image, and the split-attention
weights of one ResNeSt block (which of its radix splits each channel takes its features from).

Grad-CAM (Selvaraju et al. 2017, Sec. 3): the gradients of the class score with respect to a stage's feature
maps, averaged over the map, weigh those maps; their ReLU'd sum, upsampled to the input, is the heatmap. It is
computed by captum's ``LayerGradCam`` (the ``[explain]`` extra) on the eager model; by default on the output of
the last stage (``layer4``), the usual choice for ResNets.

Split attention (Zhang et al. 2020, Sec. 3.1): each Split-Attention convolution weighs its R splits with an
r-softmax per channel computed from the pooled features of the image. The layer does not keep these weights,
so ``split_attention_weights`` recomputes them from the layer's input with the layer's own modules and checks
that weighing the splits with them gives back the layer's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor, nn

from ...errors import UsageError
from ...layers.split_attention import SplitAttention
from ...viz.diagnostics import new_figure, save_figure

CAM_LAYER = "layer4"
CAM_ALPHA = 0.5
RECONSTRUCTION_TOLERANCE = 1e-4  # relative to the output's largest magnitude


def _module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        stages = [n for n in modules if n and "." not in n]
        raise UsageError(f"the model has no module {name!r}; its top-level modules are {stages}.")
    return modules[name]


def _check_eager(model: nn.Module) -> None:
    if isinstance(model, torch.jit.ScriptModule) or not isinstance(model, nn.Module):
        raise UsageError("class-activation maps need the eager model (not TorchScript, not the --fast path).")


def grad_cam(
    model: nn.Module, inputs: Tensor, target: Optional[int] = None, layer: str = CAM_LAYER
) -> Tuple[Tensor, int, Tensor]:
    """Grad-CAM of one image for class ``target`` (default: the predicted class) at module ``layer``.

    Args:
        model: an eager classifier; put in eval mode for the call, its mode restored after.
        inputs: (1, C, H, W) the preprocessed image (the evaluation transform's output, batched).
        target: the class to explain; ``None`` for the highest-scoring class.
        layer: name of the module whose output is explained (``model.named_modules()``), the last stage by
            default.

    Returns:
        ``(cam, target, probabilities)``: cam (H, W) in 0..1 (divided by its maximum; all 0 when no region
        raises the class score), the class explained, and the (num_classes,) softmax of the logits.

    Raises:
        UsageError: a TorchScript model, an unknown ``layer``, or ``inputs`` not one image.
        ImportError: captum is not installed (``pip install 'splitattn[explain]'``).
    """
    _check_eager(model)
    if inputs.dim() != 4 or inputs.shape[0] != 1:
        raise UsageError(f"grad_cam explains one image: inputs must be (1, C, H, W), got {tuple(inputs.shape)}.")
    module = _module(model, layer)
    from captum.attr import LayerGradCam  # the [explain] extra; imported once the arguments are known to fit

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            inputs = inputs.detach().clone().requires_grad_(True)  # gradients flow even through frozen weights
            with torch.no_grad():
                probabilities = model(inputs).float().softmax(-1)[0]
            target = int(probabilities.argmax()) if target is None else int(target)
            cam = LayerGradCam(model, module).attribute(inputs, target=target, relu_attributions=True)
    finally:
        model.train(was_training)
    cam = F.interpolate(cam.detach().float(), size=inputs.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).clamp(0, 1), target, probabilities


def split_attention_blocks(model: nn.Module) -> List[str]:
    """Names of the model's ``SplitAttention`` modules, in forward order (e.g. ``layer4.1.conv2``)."""
    return [name for name, module in model.named_modules() if isinstance(module, SplitAttention)]


def split_attention_weights(layer: SplitAttention, x: Tensor, output: Tensor) -> Tensor:
    """The r-softmax attention ``layer`` applied to input ``x`` (eval mode), checked against its ``output``.

    Recomputed with the layer's own modules in the layer's order: splits = ReLU(drop_block(bn0(conv(x)))),
    their sum pooled, ``layer.attention`` (fc1, bn1, ReLU, fc2, r-softmax).

    Returns:
        (N, R, C): weight of split r for output channel c (sums to 1 over r; with radix 1, the sigmoid gate).

    Raises:
        UsageError: ``layer`` is in training mode (its BatchNorm would use and update batch statistics).
        RuntimeError: the splits weighed with these weights differ from ``output`` (the layer's computation
            changed), so the weights would not be the ones it used.
    """
    if layer.training:
        raise UsageError("split_attention_weights needs the layer in eval mode (call model.eval()).")
    with torch.no_grad():
        splits = F.relu(layer.drop_block(layer.bn0(layer.conv(x))))
        n, _, height, width = splits.shape
        view = splits.view(n, layer.radix, layer.out_channels, height, width)
        weights = layer.attention(view.sum(1).mean((2, 3))).view(n, layer.radix, layer.out_channels)
        rebuilt = (view * weights[..., None, None]).sum(1)
    error = float((rebuilt - output).abs().max())
    if error > RECONSTRUCTION_TOLERANCE * max(float(output.abs().max()), 1e-12):
        raise RuntimeError(
            f"the split-attention weights recomputed from the layer's input do not reproduce its output (max "
            f"difference {error:.3g}); the layer's computation no longer matches split_attention_weights."
        )
    return weights


def capture_split_attention(model: nn.Module, inputs: Tensor, block: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """Run ``model`` on ``inputs`` in eval mode and return the split attention of ``block`` and the logits.

    A forward hook on the block keeps its input and output (the model's computation is unchanged); the
    weights come from ``split_attention_weights``. The hook is removed and the model's mode restored after.

    Args:
        model: an eager ResNeSt (or any model holding ``SplitAttention`` modules).
        inputs: (N, C, H, W) preprocessed images.
        block: name of a ``SplitAttention`` module (``split_attention_blocks``); ``None`` for the last one,
            the closest to the classifier.

    Returns:
        ``(attention (N, R, C), logits (N, num_classes))``.

    Raises:
        UsageError: ``block`` names no ``SplitAttention`` module, or the model has none (radix 0).
    """
    _check_eager(model)
    blocks = split_attention_blocks(model)
    if not blocks:
        raise UsageError("the model has no Split-Attention block (a radix-0 ResNet-D): no attention to show.")
    name = blocks[-1] if block is None else block
    if name not in blocks:
        raise UsageError(f"{name!r} is not a Split-Attention block; choose one of {blocks[0]} ... {blocks[-1]}.")
    layer = _module(model, name)
    kept: Dict[str, Tensor] = {}

    def keep(module: nn.Module, args: Tuple[Tensor, ...], output: Tensor) -> None:
        kept["x"], kept["output"] = args[0].detach(), output.detach()

    handle = layer.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(inputs)
        weights = split_attention_weights(layer, kept["x"], kept["output"])
    finally:
        handle.remove()
        model.train(was_training)
    return weights, logits


def seen_image(inputs: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The image as the model sees it (resized, cropped), for drawing.

    Args:
        inputs: (1, 3, H, W) the normalised input.
        mean: the per-channel (RGB) mean the input was normalised with.
        std: the per-channel (RGB) standard deviation it was divided by.

    Returns:
        (H, W, 3) uint8.
    """
    image = inputs[0].detach().float().cpu() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def cam_figure(image: np.ndarray, cam: Tensor, title: str, caption: str) -> Figure:
    """The Grad-CAM picture.

    Args:
        image: (H, W, 3) uint8, the input as the model saw it (``seen_image``).
        cam: (H, W) heatmap in 0..1 (``grad_cam``).
        title: the figure's title (the image and its top classes).
        caption: the right panel's title (the class explained).

    Returns:
        Two panels: the image, and the heatmap over it (jet colour map at opacity 0.5) with a colour bar.
    """
    figure = new_figure(9.6, 5.0)
    left, right = figure.subplots(1, 2)
    left.imshow(image)
    left.set_title(f"input as the model sees it ({image.shape[1]}x{image.shape[0]})", fontsize=10)
    right.imshow(image)
    heat = right.imshow(cam.cpu().numpy(), cmap="jet", alpha=CAM_ALPHA, vmin=0, vmax=1)
    right.set_title(caption, fontsize=10)
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(heat, ax=right, shrink=0.8, label="Grad-CAM (share of the peak)")
    figure.suptitle(title)
    return figure


def attention_figure(weights: Tensor, block: str, title: str) -> Figure:
    """The attention of one image in one block.

    Args:
        weights: (R, C) the image's attention weights (one image of ``capture_split_attention``'s result).
        block: the block's name, for the title.
        title: the figure's title (the image and the predicted class).

    Returns:
        The figure. Top: a heatmap of the weight of each split (rows) for every channel (columns), channels sorted by their
    weight on split 0, so a gradient from "takes split 0" to "takes split 1" reads at a glance. Bottom left:
    the mean weight of each split with the share of channels for which it is the largest. Bottom right: a
    histogram of each channel's largest weight, from 1/R (the splits mixed evenly) to 1 (one split chosen).
    """
    radix, channels = weights.shape
    values = weights.float().cpu().numpy()
    figure = new_figure(11, 6.4)
    grid = figure.add_gridspec(2, 2, height_ratios=[1, 1.3])
    heatmap = figure.add_subplot(grid[0, :])
    order = np.argsort(-values[0], kind="stable")
    image = heatmap.imshow(values[:, order], aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    heatmap.set_yticks(range(radix), [f"split {r}" for r in range(radix)])
    heatmap.set_xlabel(f"output channel ({channels}), sorted by the weight on split 0")
    heatmap.set_title(f"{block}: attention weight of each split per channel")
    figure.colorbar(image, ax=heatmap, label="weight", pad=0.01)
    means = figure.add_subplot(grid[1, 0])
    dominant = np.bincount(values.argmax(0), minlength=radix) / channels * 100
    bars = means.bar(range(radix), values.mean(1), yerr=values.std(1), capsize=4, color="tab:blue")
    for bar, share in zip(bars, dominant):
        means.text(bar.get_x() + bar.get_width() / 2, 0.02, f"largest for\n{share:.0f}% of channels", ha="center")
    means.axhline(1 / radix, color="grey", linestyle="--", linewidth=1, label=f"even mix (1/{radix})")
    means.set_xticks(range(radix), [f"split {r}" for r in range(radix)])
    means.set_ylim(0, 1)
    means.set_ylabel("mean weight (\u00b1 std over channels)")
    means.legend(loc="upper right", fontsize="small")
    spread = figure.add_subplot(grid[1, 1])
    spread.hist(values.max(0), bins=20, range=(1 / radix if radix > 1 else 0, 1), color="tab:purple")
    spread.set_xlabel("largest weight of a channel (1/R: even mix, 1: one split)")
    spread.set_ylabel("channels")
    figure.suptitle(title)
    return figure


def write_explanations(
    folder: Union[str, Path],
    stem: str,
    model: nn.Module,
    image: Image.Image,
    transform: Callable[[Image.Image], Tensor],
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    block: Optional[str] = None,
    layer: str = CAM_LAYER,
) -> Dict[str, Path]:
    """Write ``<stem>_cam.png`` (Grad-CAM of the predicted class) and ``<stem>_attention.png`` (the split
    attention of ``block``, skipped for a model without Split-Attention blocks unless ``block`` is given) for
    one image: what ``predict --cam`` writes.

    Args:
        folder: where to write (created if needed).
        stem: file name prefix, e.g. the image's stem.
        model: the eager classifier on its device.
        image: the RGB image as read.
        transform: the evaluation transform (PIL image -> normalised (3, H, W) tensor).
        class_names: num_classes names.
        mean: the per-channel mean ``transform`` subtracts (the model's ``EvalConfig``), to show the input.
        std: the per-channel standard deviation ``transform`` divides by.
        block: the Split-Attention block to show (``split_attention_blocks``); ``None``: the last.
        layer: the module Grad-CAM explains.

    Returns:
        ``{"cam_png": path, "attention_png": path}`` (the latter absent when skipped).

    Raises:
        UsageError: see ``grad_cam`` and ``capture_split_attention``.
    """
    device = next(model.parameters()).device
    inputs = transform(image)[None].to(device)
    cam, target, probabilities = grad_cam(model, inputs, layer=layer)
    top = probabilities.topk(min(3, len(class_names)))
    ranking = ", ".join(f"{class_names[i]} {p * 100:.1f}%" for p, i in zip(top.values.tolist(), top.indices.tolist()))
    picture = seen_image(inputs, mean, std)
    caption = f"Grad-CAM at {layer} for '{class_names[target]}'"
    folder = Path(folder)
    figure = cam_figure(picture, cam, f"{stem}: {ranking}", caption)
    files = {"cam_png": save_figure(figure, folder / f"{stem}_cam.png")}
    if block is not None or split_attention_blocks(model):
        weights, _ = capture_split_attention(model, inputs, block)
        name = block or split_attention_blocks(model)[-1]
        title = f"{stem}: predicted '{class_names[target]}' ({probabilities[target] * 100:.1f}%)"
        files["attention_png"] = save_figure(
            attention_figure(weights[0], name, title), folder / f"{stem}_attention.png"
        )
    return files
