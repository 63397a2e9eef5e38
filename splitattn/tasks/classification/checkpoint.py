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

from ...models.registry import create_model, get_model_spec
from ...weights.loading import strip_wrapper_prefixes
from ...engine.checkpoint import checkpoint_task, load_checkpoint_file, load_task_checkpoint

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "rng", "args", "classes")


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
            raise ValueError(f"{str(weights)!r} holds bare weights without a run's options; pass --model NAME "
                             "(`splitattn models` lists them).")
        from ...weights import load_pretrained

        model = create_model(model_name)
        load_pretrained(model, model_name, str(weights))
        return model.eval(), None, {}
    checkpoint, options = load_task_checkpoint(weights, "classification", action)
    trained_name = checkpoint.get("model_name") or options["model"]
    if model_name and get_model_spec(model_name).name != get_model_spec(trained_name).name:
        raise ValueError(f"{str(weights)!r} holds a {trained_name} but --model is {model_name}; drop --model "
                         f"(the checkpoint names its model) or pass --model {trained_name}.")
    classes = list(checkpoint["classes"])
    model = create_model(trained_name, num_classes=len(classes), **model_overrides(options))
    state = checkpoint["model"]
    if use_ema:
        if not checkpoint.get("ema"):
            raise ValueError(f"{str(weights)!r} has no EMA weights; train with --ema or drop --ema.")
        state = strip_wrapper_prefixes(checkpoint["ema"])
    model.load_state_dict(state)
    return model.eval(), classes, options
