"""Export of classifiers and feature backbones: the network as it is, one ``images`` input of any batch and size.

A classifier file maps ``images`` (N, C, H, W) float32, normalised, to ``logits`` (N, classes); a
``features_only`` backbone (``ResNeStFeatures``) to one output per returned stage, named after the stage
(``stem``, ``layer1`` .. ``layer4``). Both take the dynamo exporter by default (dynamic N, H, W; H and W at
least 32, the size the eager network refuses below). The file stores the evaluation preprocessing
(``EvalConfig``: resize rule, crop, interpolation, mean, std) with the common keys (``export_common``).

A run's export is checked on real images of its validation split (its training split when that is absent;
random inputs for bare weights without ``data``): two images in a batch at the evaluation size and one at a
non-square size, so the dynamic dimensions are exercised; tolerance 1e-4 relative on the logits.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..config.schemas import ClassifyConfig
from ..data.classification import EVAL_SPLITS, TRAIN_SPLITS, digits_datasets, find_split, load_split
from ..data.transforms import eval_transform_for
from ..errors import CheckpointError, UsageError
from ..models.eval_config import EvalConfig
from ..models.factory import create_model
from ..models.resnest import MIN_INPUT_SIZE, ResNeStFeatures
from ..tasks.classification.checkpoint import TASK, eval_config_of, load_trained_model
from .export_common import TaskExport, common_metadata, compare_relative, write_checked
from .formats import ONNX_OPSET, write_onnx, write_torchscript
from .metadata import PathLike

INPUT_NAME, OUTPUT_NAME = "images", "logits"
TOLERANCE = 1e-4  # relative error of the logits: fp32 runtimes agree to ~1e-6


def load_model_for_export(
    name: str, weights: Optional[PathLike] = None, num_classes: Optional[int] = None
) -> nn.Module:
    """Build ``name`` in eval mode with ``weights`` (a state-dict file); random weights warn.

    ``num_classes`` defaults to the checkpoint's classifier size (1000 without weights).
    """
    if weights is None:
        warnings.warn(f"No --weights given: exporting {name} with random initial weights.", stacklevel=2)
        return create_model(name, num_classes=num_classes or 1000).eval()
    from ..weights.loading import load_checkpoint, load_state_dict_into

    state = load_checkpoint(weights)
    if num_classes is None:
        num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 1000
    return load_state_dict_into(create_model(name, num_classes=num_classes), state, origin=str(weights)).eval()


def default_class_names(num_classes: int) -> List[str]:
    """Class names of a model trained elsewhere: ImageNet's for 1000 classes, else the label numbers."""
    if num_classes == 1000:
        from ..data.labels import imagenet_class_names

        return imagenet_class_names()
    return [str(i) for i in range(num_classes)]


def output_names(model: nn.Module) -> List[str]:
    """``["logits"]`` for a classifier; a name per returned stage for a feature backbone (``stem`` for index 0,
    else ``layer<i>``)."""
    if isinstance(model, ResNeStFeatures):
        return ["stem" if index == 0 else f"layer{index}" for index in model.out_indices]
    return [OUTPUT_NAME]


def export_metadata(
    model_name: str,
    model: nn.Module,
    eval_config: EvalConfig,
    classes: Optional[Sequence[str]] = None,
    checkpoint: Optional[PathLike] = None,
    weights: str = "model",
    run_options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """What an exported classifier says about itself (JSON values): the common keys
    (``export_common.common_metadata``) and ``input_size``, ``mean``, ``std`` (pixel values in [0, 1] are
    normalised as ``(x - mean) / std``), ``eval_config`` (every ``EvalConfig`` field, the full crop protocol),
    ``output_name``. ``classes`` default to ``default_class_names``.

    Raises:
        UsageError: ``classes`` does not match the model's classifier size.
    """
    num_classes = int(model.num_classes)
    classes = list(classes) if classes is not None else default_class_names(num_classes)
    if len(classes) != num_classes:
        raise UsageError(f"{len(classes)} class names for a model with {num_classes} outputs.")
    in_chans = int(getattr(model, "in_chans", 3))
    shape = ["batch", in_chans, "height", "width"]
    metadata = common_metadata(
        TASK,
        model_name,
        classes,
        in_chans,
        INPUT_NAME,
        shape,
        [OUTPUT_NAME],
        MIN_INPUT_SIZE,
        checkpoint,
        weights,
        run_options,
    )
    return {
        **metadata,
        "input_size": eval_config.input_size,
        "mean": list(eval_config.mean),
        "std": list(eval_config.std),
        "eval_config": dataclasses.asdict(eval_config),
        "output_name": OUTPUT_NAME,
    }


def random_inputs(in_chans: int, size: int) -> List[np.ndarray]:
    """Two checking batches of different batch and spatial sizes: (2, C, size, size) and
    (1, C, size + 32, max(size - 32, 32)), seeded normal values (for models without data)."""
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(2, in_chans, size, size, generator=generator).numpy(),
        torch.randn(1, in_chans, size + 32, max(size - 32, 32), generator=generator).numpy(),
    ]


def split_images(
    config: Optional[ClassifyConfig],
    in_chans: int,
    count: int,
    data: Optional[PathLike] = None,
    splits: Sequence[str] = EVAL_SPLITS + TRAIN_SPLITS,
) -> Tuple[List[Image.Image], str]:
    """``count`` readable images spread over the first of ``splits`` (folder or CSV names) found in the run's data
    (``data`` overrides it), and where they came from; for a run of the digits demo its held-out images (its
    training images when ``splits`` starts with ``train``). Empty when no data can be found."""
    root = data or (config.data if config is not None else None)
    if root is None:
        if config is None:
            return [], ""
        dataset = digits_datasets(None, None, channels=in_chans)[0 if splits[0] in TRAIN_SPLITS else 1]
        location = "the digits demo"
    else:
        try:
            location = find_split(root, splits)
        except FileNotFoundError:
            return [], ""
        dataset = load_split(location, channels=in_chans)
    images = []
    for index in np.linspace(0, len(dataset) - 1, min(len(dataset), 4 * count)).round().astype(int):
        image = dataset[int(index)][0]
        if image is not None:
            images.append(image)
        if len(images) == count:
            break
    return images, f"{len(images)} images of {location}"


def prepare_classification(
    weights: Optional[PathLike],
    model_name: Optional[str] = None,
    ema: bool = False,
    img_size: Optional[int] = None,
    num_classes: Optional[int] = None,
    data: Optional[PathLike] = None,
) -> TaskExport:
    """The export of a ``classify train`` checkpoint (rebuilt from its options; ``ema``: its EMA weights), of bare
    weights with ``model_name`` (``num_classes`` read from the file unless given), or of random weights; at the
    run's evaluation size unless ``img_size``. Checked on the run's images (or ``data``'s).

    Raises:
        CheckpointError: ``ema`` without EMA weights, or with bare weights.
        UsageError: bare weights without ``model_name``.
    """
    from ..engine.checkpoint import holds_bare_weights, load_checkpoint_file

    config, classes, kind = None, None, "random"
    if weights and not holds_bare_weights(load_checkpoint_file(weights)):
        model, classes, config = load_trained_model(weights, model_name, use_ema=ema, action="export")
        name, kind = config.model, "ema" if ema else "model"
    else:
        if not model_name:
            raise UsageError("--model is required unless --weights is a `splitattn classify train` checkpoint.")
        if ema:
            raise CheckpointError(f"{str(weights)!r} holds bare weights, without EMA weights; drop --ema.")
        model, name, kind = (
            load_model_for_export(model_name, weights, num_classes),
            model_name,
            "bare" if weights else kind,
        )
    eval_config = eval_config_of(weights or "", name, config, img_size)
    run_options = dataclasses.asdict(config) if config is not None else None
    metadata = export_metadata(name, model, eval_config, classes, weights, kind, run_options)
    in_chans, size = metadata["in_chans"], eval_config.input_size
    images, source = split_images(config, in_chans, 3, data)
    if len(images) == 3:
        transform, wider = eval_transform_for(eval_config), eval_transform_for(eval_config.at_size(size + 32))
        inputs = [
            torch.stack([transform(images[0]), transform(images[1])]).numpy(),
            wider(images[2])[None, :, :, :size].numpy(),  # (size + 32) x size: another, non-square size
        ]
    else:
        inputs, source = random_inputs(in_chans, size), "random inputs (no images of the run's data were found)"
    return TaskExport(
        task=TASK,
        module=model,
        example=torch.from_numpy(inputs[0]),
        input_name=INPUT_NAME,
        input_shape=metadata["input_shape"],
        output_names=[OUTPUT_NAME],
        metadata=metadata,
        check_inputs=inputs,
        check_source=source,
        compare=compare_relative(TOLERANCE),
        min_side=MIN_INPUT_SIZE,
    )


def export_onnx(
    model: nn.Module,
    path: PathLike,
    size: int = 224,
    opset: int = ONNX_OPSET,
    exporter: str = "auto",
    metadata: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write a ResNeSt classifier or ``features_only`` backbone as ONNX with dynamic batch, height and width:
    input ``images`` (N, C, H, W) float32, outputs ``logits`` (N, classes) or one per stage (``output_names``);
    ``metadata`` goes into ``metadata_props`` with ``exporter`` and ``opset``. Unchecked: ``export_model`` and
    ``splitattn export`` check the file.

    Raises:
        ConfigError: an opset the exporter cannot write (the dynamo exporter writes 18 or later).
        MissingDependencyError: without ``onnx`` (or ``onnxscript`` for ``exporter="dynamo"``).
    """
    in_chans = getattr(model, "in_chans", 3)
    example = torch.randn(2, in_chans, size, size)  # batch 2: torch.export specialises a size-1 dimension
    shape = ["batch", in_chans, "height", "width"]
    write_onnx(
        model.eval(),
        example,
        path,
        INPUT_NAME,
        shape,
        output_names(model),
        exporter,
        opset,
        None,
        MIN_INPUT_SIZE,
        metadata,
    )
    return Path(path)


def export_torchscript(
    model: nn.Module, path: PathLike, size: int = 224, metadata: Optional[Dict[str, Any]] = None
) -> Path:
    """Trace ``model`` and save it as TorchScript, ``metadata`` in the archive's extra file ``splitattn.json``."""
    write_torchscript(model.eval(), torch.randn(1, getattr(model, "in_chans", 3), size, size), path, "trace", metadata)
    return Path(path)


def export_model(
    model: nn.Module,
    path: PathLike,
    fmt: str,
    size: int = 224,
    metadata: Optional[Dict[str, Any]] = None,
    exporter: str = "auto",
) -> Tuple[Path, float]:
    """Export a classifier or feature backbone to ``fmt`` (``onnx``, ``openvino`` or ``torchscript``) with
    ``metadata`` (see ``export_metadata``), checked on two random input shapes (``random_inputs``) before it is
    kept: returns the path and the largest relative error against the eager model.

    Raises:
        ExportError: the file disagrees with the eager model beyond 1e-4 relative (nothing is written).
    """
    model = model.eval()
    in_chans = getattr(model, "in_chans", 3)
    inputs = random_inputs(in_chans, size)
    names = output_names(model)
    spec = TaskExport(
        TASK,
        model,
        torch.from_numpy(inputs[0]),
        INPUT_NAME,
        ["batch", in_chans, "height", "width"],
        names,
        dict(metadata or {}),
        inputs,
        "random inputs",
        compare_relative(TOLERANCE),
        min_side=MIN_INPUT_SIZE,
    )
    result = write_checked(spec, fmt, path, exporter)
    return result.path, result.check.error
