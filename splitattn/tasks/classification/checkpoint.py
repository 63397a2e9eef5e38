"""The classification checkpoint format and loading a trained model from it.

A checkpoint is a dict of tensors and plain Python values (it loads with
``torch.load(..., weights_only=True)``):

- ``model``: the model's state dict (no DDP/compile prefixes);
- ``optimizer``, ``scheduler``, ``scaler``: their state dicts;
- ``ema``: the EMA model's state dict (``module.``-prefixed keys plus ``n_averaged``), or None;
- ``epoch``: epochs completed; ``step``: optimizer steps completed;
- ``rng``: one random state per rank (see ``splitattn.engine.checkpoint``);
- ``args``: the run's options; ``classes``: the class names in label order;
- ``best_top1``: the best validation top-1 so far; ``model_name``: the registered model.

``last.pt`` is written after every epoch, ``best.pt`` when validation top-1 improves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from torch import nn

from ...config import input_channels
from ...data.io import channel_stats
from ...engine.checkpoint import checkpoint_task, load_checkpoint_file, load_task_checkpoint
from ...models.registry import EvalConfig, create_model, get_model_spec
from ...weights.loading import strip_wrapper_prefixes

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "rng", "args", "classes")
DIGITS_SIZE = 32  # the 8x8 digits of the built-in demo are upsampled to the smallest input the models take


def run_image_sizes(options: Dict[str, Any]) -> Tuple[int, int]:
    """(training crop, evaluation size) of a ``classify train`` run: ``img_size`` / ``eval_img_size``, else the
    model's evaluation size (32 px for the built-in digits)."""
    default = get_model_spec(options["model"]).eval_config.input_size if options.get("data") else DIGITS_SIZE
    train_size = int(options.get("img_size") or default)
    return train_size, int(options.get("eval_img_size") or options.get("img_size") or default)


def run_eval_config(options: Dict[str, Any], img_size: Optional[int] = None) -> EvalConfig:
    """The validation preprocessing of a run trained here, as its trainer, ``evaluate``, ``predict``, the
    fast path and ``export`` all apply it: timm's resize-then-centre-crop (bilinear) with the run's
    ``crop_pct`` at its evaluation size (or ``img_size``), normalised per input channel
    (``channel_stats(in_chans)``)."""
    mean, std = channel_stats(input_channels(options))
    return EvalConfig(
        int(img_size or run_image_sizes(options)[1]),
        float(options.get("crop_pct", EvalConfig.crop_pct)),
        "bilinear",
        tuple(mean),
        tuple(std),
        "center",
    )


def eval_config_of(
    weights: Union[str, Path], model_name: str, options: Dict[str, Any], img_size: Optional[int] = None
) -> EvalConfig:
    """The evaluation preprocessing for ``weights``: a run's own (``run_eval_config``) when ``options`` come
    from a ``classify train`` checkpoint, else the protocol of the published file's source (the authors'
    for the official release files, timm's for the hub copies), optionally at ``img_size``."""
    if options:
        return run_eval_config(options, img_size)
    from ...weights.sources import eval_config_for_file

    config = eval_config_for_file(model_name, Path(str(weights)))
    return config.at_size(img_size) if img_size else config


def model_overrides(options: Dict[str, Any]) -> Dict[str, Any]:
    """``create_model`` keyword arguments from a run's options."""
    overrides = dict(options.get("model_kwargs") or {})
    overrides.update(
        drop_rate=float(options.get("dropout", 0.0)),
        drop_block_prob=float(options.get("drop_block", 0.0)),
        zero_init_last=bool(options.get("zero_init_last", True)),
        norm_layer=options.get("norm", "batchnorm"),
    )
    return overrides


def load_trained_model(
    weights: Union[str, Path], model_name: Optional[str] = None, use_ema: bool = False, action: str = "evaluate"
) -> Tuple[nn.Module, Optional[List[str]], Dict[str, Any]]:
    """A model in eval mode with the weights of a ``splitattn classify train`` checkpoint, rebuilt from the
    run's stored options (model, ``--model-kwargs`` such as ``in_chans``, norm, classes).

    Returns ``(model, class names or None, the run's options)``. Bare weights (a state dict, official or
    timm files) need ``model_name`` and go through ``splitattn.weights.load_pretrained``. Another task's
    checkpoint, a ``model_name`` other than the run's, or ``use_ema`` without EMA weights are a
    ``ValueError`` naming the fix (``action``: the command, for the message).
    """
    checkpoint = load_checkpoint_file(weights)
    if checkpoint_task(checkpoint) is None:
        if not model_name:
            raise ValueError(
                f"{str(weights)!r} holds bare weights without a run's options; pass --model NAME "
                "(`splitattn models` lists them)."
            )
        from ...weights import load_pretrained

        model = create_model(model_name)
        load_pretrained(model, model_name, str(weights))
        return model.eval(), None, {}
    checkpoint, options = load_task_checkpoint(weights, "classification", action)
    trained_name = checkpoint.get("model_name") or options["model"]
    if model_name and get_model_spec(model_name).name != get_model_spec(trained_name).name:
        raise ValueError(
            f"{str(weights)!r} holds a {trained_name} but --model is {model_name}; drop --model "
            f"(the checkpoint names its model) or pass --model {trained_name}."
        )
    classes = list(checkpoint["classes"])
    model = create_model(trained_name, num_classes=len(classes), **model_overrides(options))
    state = checkpoint["model"]
    if use_ema:
        if not checkpoint.get("ema"):
            raise ValueError(f"{str(weights)!r} has no EMA weights; train with --ema or drop --ema.")
        state = strip_wrapper_prefixes(checkpoint["ema"])
    model.load_state_dict(state)
    return model.eval(), classes, options
