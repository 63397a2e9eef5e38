"""Run checkpoints and the state dicts in checkpoints: wrapper prefixes, where a run keeps its ResNeSt, and the
model a run's stored options describe (``run_model``), read from the entries every task's checkpoint shares.

A ``splitattn <task> train`` checkpoint holds its model's state dict under ``model`` beside a ``task`` entry, its
options under ``args``, its class names under ``classes`` and its registered model under ``model_name``; a task
whose model holds the ResNeSt as its backbone (a detector, a segmenter) names the backbone's key prefix under
``backbone_prefix``. Nothing here knows a task: the weights layer sits below them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from torch import Tensor

from ..errors import WeightsError

StateDict = Dict[str, Tensor]

# A run checkpoint keeps its trained model under ``model``; a task whose model holds the ResNeSt as its
# backbone (a detector, a segmenter) records the backbone's key prefix there under ``backbone_prefix``.
RUN_MODEL_KEY = "model"
BACKBONE_PREFIX_KEY = "backbone_prefix"
# A run checkpoint's stored options (``args``) that shape its ResNeSt, the same in every task's config:
# ``model_kwargs`` (create_model overrides: widths, in_chans ...) and ``norm``; its ``model_name`` entry names the
# registered model and ``classes`` its class names.
RUN_ARGS_KEY, RUN_OVERRIDES_ARG, RUN_NORM_ARG = "args", "model_kwargs", "norm"
RUN_MODEL_NAME_KEY, RUN_CLASSES_KEY = "model_name", "classes"
STEM_KEYS = ("conv1.weight", "conv1.0.weight")  # the first conv of a ResNeSt (plain or deep stem)
# Wrappers whose prefix ends up in saved keys: DistributedDataParallel/DataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def is_state_dict(obj: Any) -> bool:
    """Whether ``obj`` is a non-empty mapping of names to tensors."""
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Remove ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes shared by all keys.

    An ``n_averaged`` counter (``torch.optim.swa_utils.AveragedModel``, an EMA wrapper) is dropped with
    the prefix it sits beside.
    """
    sd = dict(state_dict)
    while True:
        keys = [k for k in sd if k != "n_averaged"]
        prefix = next((p for p in WRAPPER_PREFIXES if keys and all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            return sd
        sd = {k[len(prefix) :]: v for k, v in sd.items() if k != "n_averaged"}


def is_run_checkpoint(obj: Any) -> bool:
    """A ``splitattn <task> train`` checkpoint: its model's state dict under ``model`` beside a ``task`` entry
    (or a ``backbone_prefix``)."""
    return (
        isinstance(obj, Mapping)
        and ("task" in obj or BACKBONE_PREFIX_KEY in obj)
        and is_state_dict(obj.get(RUN_MODEL_KEY))
    )


def run_backbone(checkpoint: Mapping[str, Any], origin: str) -> StateDict:
    """The ResNeSt weights of a run checkpoint's ``model``: the keys under its ``backbone_prefix`` (without it)
    when it names one, else the model itself."""
    model = strip_wrapper_prefixes(checkpoint[RUN_MODEL_KEY])
    prefix = checkpoint.get(BACKBONE_PREFIX_KEY)
    if prefix is None:
        if "task" in checkpoint and not any(stem in model for stem in STEM_KEYS):
            raise WeightsError(
                f"{origin} is a {checkpoint['task']} run checkpoint from before run checkpoints recorded where "
                f"their backbone sits (a {BACKBONE_PREFIX_KEY!r} entry), so its ResNeSt weights cannot be told "
                "apart from the rest of its model. Retrain it with this version, or pass the backbone's own "
                "weights (the ImageNet weights or classification checkpoint the run started from)."
            )
        return model
    backbone = {name[len(prefix) :]: value for name, value in model.items() if name.startswith(prefix)}
    if not backbone:
        raise WeightsError(
            f"{origin} names the backbone prefix {prefix!r}, but no weight of its model starts with it; the "
            "file is damaged or was edited."
        )
    return backbone


@dataclass(frozen=True)
class RunModel:
    """The ResNeSt a training run's checkpoint holds, as its stored options describe it (any task's run).

    Attributes:
        model_name: the registered model (the checkpoint's ``model_name`` entry), or None for a run that does not
            record it.
        overrides: the ``create_model`` arguments the run built it with: its ``model_kwargs`` (widths, ``in_chans``
            ...) and ``norm_layer`` (a SyncBatchNorm run's as BatchNorm, the same parameters).
        label_names: the run's class names, when its classifier is part of the weights (a classification run).
    """

    model_name: Optional[str]
    overrides: Dict[str, Any] = field(default_factory=dict)
    label_names: Optional[List[str]] = None


def run_model(checkpoint: Any) -> Optional[RunModel]:
    """What a ``splitattn <task> train`` checkpoint (``read_checkpoint``'s object) says about its ResNeSt, read
    from its generic entries (``args``' ``model_kwargs`` and ``norm``, ``model_name``, ``classes``) without
    knowing its task; None for anything else (bare weights, other libraries' checkpoints)."""
    if not is_run_checkpoint(checkpoint):
        return None
    args = checkpoint.get(RUN_ARGS_KEY)
    args = args if isinstance(args, Mapping) else {}
    overrides = dict(args.get(RUN_OVERRIDES_ARG) or {})
    norm = args.get(RUN_NORM_ARG)
    if isinstance(norm, str):
        overrides["norm_layer"] = "batchnorm" if norm == "syncbn" else norm
    classes = checkpoint.get(RUN_CLASSES_KEY)
    model = strip_wrapper_prefixes(checkpoint[RUN_MODEL_KEY])
    with_classifier = (
        BACKBONE_PREFIX_KEY not in checkpoint and isinstance(classes, (list, tuple)) and "fc.weight" in model
    )
    names = [str(c) for c in classes] if with_classifier and len(classes) == model["fc.weight"].shape[0] else None
    name = checkpoint.get(RUN_MODEL_NAME_KEY)
    return RunModel(name if isinstance(name, str) else None, overrides, names)
