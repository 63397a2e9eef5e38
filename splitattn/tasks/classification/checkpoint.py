"""The classification checkpoint format and loading a trained model from it.

A checkpoint is a dict of tensors and plain Python values (it loads with
``torch.load(..., weights_only=True)``):

- ``model``: the model's state dict (no DDP/compile prefixes);
- ``optimizer``, ``scheduler``, ``scaler``: their state dicts;
- ``ema``: the EMA model's state dict (``module.``-prefixed keys plus ``n_averaged``), or None;
- ``epoch``: epochs completed; ``step``: optimizer steps completed;
- ``rng``: one random state per rank (see ``splitattn.engine.checkpoint``);
- ``args``: the run's options (``dataclasses.asdict`` of its ``ClassifyConfig``); ``classes``: the class
  names in label order; ``task``: ``"classification"``; ``command``: ``"classify train"``;
- ``best_top1``: the best validation top-1 so far; ``model_name``: the registered model.

``last.pt`` is written after every epoch, ``best.pt`` when validation top-1 improves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from torch import nn

from ...config.schemas import ClassifyConfig
from ...config.values import from_checkpoint_args
from ...data.io import channel_stats
from ...engine.checkpoint import holds_bare_weights, load_checkpoint_file, require_task
from ...errors import CheckpointError, UsageError
from ...models.eval_config import EvalConfig
from ...models.factory import create_model
from ...models.registry import get_model_spec
from ...weights.loading import strip_wrapper_prefixes
from ...weights.sources import eval_config_for_file
from ..commands import weights_usage

TASK, COMMAND = "classification", "classify"  # the checkpoint's ``task`` entry, the command group
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "rng", "args", "classes")
DIGITS_SIZE = 32  # the 8x8 digits of the built-in demo are upsampled to the smallest input the models take


def run_image_sizes(config: ClassifyConfig) -> Tuple[int, int]:
    """(training crop, evaluation size) of a ``classify train`` run: ``img_size`` / ``eval_img_size``, else the
    model's evaluation size (32 px for the built-in digits)."""
    default = get_model_spec(config.model).eval_config.input_size if config.data else DIGITS_SIZE
    train_size = config.img_size or default
    return train_size, config.eval_img_size or train_size


def run_eval_config(config: ClassifyConfig, img_size: Optional[int] = None) -> EvalConfig:
    """The validation preprocessing of a run trained here, as its trainer, ``evaluate``, ``predict``, the
    fast path and ``export`` all apply it: timm's resize-then-centre-crop (bilinear) with the run's
    ``crop_pct`` at its evaluation size (or ``img_size``), normalised per input channel
    (``channel_stats(in_chans)``)."""
    mean, std = channel_stats(config.in_chans)
    size = img_size or run_image_sizes(config)[1]
    return EvalConfig(size, config.crop_pct, "bilinear", tuple(mean), tuple(std), "center")


def eval_config_of(
    weights: Union[str, Path], model_name: str, config: Optional[ClassifyConfig], img_size: Optional[int] = None
) -> EvalConfig:
    """The evaluation preprocessing for ``weights``: a run's own (``run_eval_config``) when ``config`` is the
    run's (from a ``classify train`` checkpoint), else (None) the protocol of the published file's source
    (the authors' for the official release files, timm's for the hub copies), optionally at ``img_size``."""
    if config is not None:
        return run_eval_config(config, img_size)
    published = eval_config_for_file(model_name, weights)
    return published.at_size(img_size) if img_size else published


def model_overrides(config: ClassifyConfig) -> Dict[str, Any]:
    """``create_model`` keyword arguments from a run's config."""
    return dict(
        config.model_kwargs,
        drop_rate=config.dropout,
        drop_block_prob=config.drop_block,
        zero_init_last=config.zero_init_last,
        norm_layer=config.norm,
    )


def load_trained_model(
    weights: Union[str, Path], model_name: Optional[str] = None, use_ema: bool = False, action: str = "evaluate"
) -> Tuple[nn.Module, Optional[List[str]], Optional[ClassifyConfig]]:
    """A model in eval mode with the weights of a ``splitattn classify train`` checkpoint, rebuilt from the
    run's stored config (model, ``--model-kwargs`` such as ``in_chans``, norm, classes).

    Returns ``(model, class names or None, the run's config or None)``. Bare weights (a state dict, official
    or timm files) need ``model_name``; their classifier is the file's (``create_model(model_name,
    pretrained=weights)``: a 3-class file gives a 3-class model, never a random 1000-class head).

    Raises:
        CheckpointError: another task's checkpoint, bare weights without ``model_name``, or ``use_ema`` without
            EMA weights (``action``: the command, for the message).
        WeightsError: bare weights without a classifier (a backbone's).
        UsageError: a ``model_name`` other than the run's.
    """
    checkpoint = load_checkpoint_file(weights)
    if holds_bare_weights(checkpoint):
        if not model_name:
            raise CheckpointError(
                f"{str(weights)!r} holds bare weights without a run's options; pass --model NAME "
                "(`splitattn models` lists them)."
            )
        model = create_model(model_name, pretrained=str(weights))
        return model.eval(), None, None
    checkpoint = require_task(checkpoint, weights, TASK, COMMAND, weights_usage(action, weights))
    config = from_checkpoint_args(ClassifyConfig, checkpoint["args"], f"checkpoint {str(weights)!r}")
    trained_name = checkpoint.get("model_name") or config.model  # an entry older checkpoints lack
    if model_name and get_model_spec(model_name).name != get_model_spec(trained_name).name:
        raise UsageError(
            f"{str(weights)!r} holds a {trained_name} but --model is {model_name}; drop --model "
            f"(the checkpoint names its model) or pass --model {trained_name}."
        )
    classes = list(checkpoint["classes"])
    model = create_model(trained_name, num_classes=len(classes), **model_overrides(config))
    state = checkpoint["model"]
    if use_ema:
        if not checkpoint.get("ema"):
            raise CheckpointError(f"{str(weights)!r} has no EMA weights; train with --ema or drop --ema.")
        state = strip_wrapper_prefixes(checkpoint["ema"])
    model.load_state_dict(state)
    return model.eval(), classes, config
