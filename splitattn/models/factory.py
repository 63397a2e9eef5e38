"""``create_model``: a registered ResNeSt variant built, and its pretrained weights loaded.

The factory sits above the registry (``registry.py``), the network (``resnest.py``) and the weights
(``splitattn.weights``): it resolves a name or alias, applies the overrides (ours and the official code's
argument names), builds the network and loads the weights, and records on the model the evaluation
preprocessing of the weights it holds (``model.eval_config``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from torch import nn

from ..errors import UnknownArgumentError, UsageError, WeightsError
from ..layers.norm import BATCH_STATISTICS_NORMS
from ..weights.hub import is_repo_name, load_repo
from ..weights.loading import load_state_dict_into, read_pretrained
from ..weights.sources import default_eval_config, eval_config_for_file
from .registry import ModelSpec, get_model_spec
from .resnest import ResNeSt, ResNeStFeatures

# Argument names of the official code, accepted as overrides and mapped onto ours.
_OFFICIAL_ARGS = {
    "final_drop": "drop_rate",
    "dropblock_prob": "drop_block_prob",
    "last_gamma": "zero_init_last",
    "groups": "cardinality",
    "classes": "num_classes",
}
_ARCH_ARGS = (
    "layers",
    "radix",
    "cardinality",
    "bottleneck_width",
    "stem_width",
    "deep_stem",
    "avg_down",
    "avd",
    "avd_first",
    "in_chans",
    "output_stride",
    "drop_rate",
    "drop_block_prob",
    "norm_layer",
    "zero_init_last",
)


class FrozenNormWithoutWeightsWarning(UserWarning):
    """``create_model`` built frozen BatchNorm layers without loading pretrained weights.

    Frozen BN keeps gamma 1, beta 0, mean 0, variance 1 forever: no normalisation at all.
    Code that loads a checkpoint right after ``create_model`` may filter this category.
    """


def _arch_kwargs(spec: ModelSpec, overrides: Dict[str, Any]) -> Dict[str, Any]:
    arch = dict(spec.arch)
    for key, value in overrides.items():
        if key == "dilated":  # official: stride-8 backbone for segmentation
            if value:
                arch["output_stride"] = 8
            continue
        if key == "dilation":  # official: 1 -> stride 32, 2 -> stride 16, 4 -> stride 8
            if value not in (1, 2, 4):
                raise UsageError(f"dilation must be 1, 2 or 4 (official semantics), got {value}.")
            arch["output_stride"] = 32 // value
            continue
        key = _OFFICIAL_ARGS.get(key, key)
        if key not in _ARCH_ARGS:
            raise UnknownArgumentError(
                f"create_model got an unknown argument {key!r}; valid overrides: "
                f"{', '.join(_ARCH_ARGS + ('dilated', 'dilation'))}."
            )
        arch[key] = value
    return arch


def _check_run_model(spec: ModelSpec, trained: Optional[str], origin: str) -> None:
    """Raise when a run checkpoint trained another registered model than ``spec``."""
    if trained is not None and get_model_spec(trained).name != spec.name:
        raise UsageError(
            f"{origin} is a run of {trained}, not {spec.name}: create_model({trained!r}, pretrained=...) "
            "rebuilds it (the run's own widths, in_chans and norm come with it)."
        )


def _classifier_size(state_dict: Optional[Dict[str, Any]], origin: str, features_only: bool) -> int:
    """The classes of the weights' classifier (``fc``); 1000 without weights or for a backbone.

    Raises:
        WeightsError: weights without a classifier for a model that needs one: a random classifier would
            pass for a trained one.
    """
    if state_dict is None or features_only:
        return 1000
    if "fc.weight" not in state_dict:
        raise WeightsError(
            f"{origin} holds a backbone without a classifier (fc), so a classification model built on it would "
            "predict at random: pass features_only=True for the backbone, or num_classes=N to train a new "
            "classifier on it (fine-tuning)."
        )
    return int(state_dict["fc.weight"].shape[0])


def create_model(
    name: str,
    num_classes: Optional[int] = None,
    pretrained: Union[bool, str, None] = None,
    features_only: bool = False,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    **overrides: Any,
) -> nn.Module:
    """Build a registered model, or the model of a repository in timm's hub format.

    Args:
        name: a name from ``list_models()``, a timm alias (``resnest50d`` ...), or a repository:
            ``hf-hub:owner/name[@revision]`` or ``local-dir:DIR`` (``splitattn.weights.hub``; pass
            ``revision=`` to pin one too).
        num_classes: classifier outputs (ignored with ``features_only``). ``None``: those of the weights loaded
            (a trained 3-class file gives a 3-class model; a repository's), 1000 without weights. A count that
            differs from the weights' builds a new, untrained classifier on them (fine-tuning, with a warning).
        pretrained: ``True`` for the registered ImageNet weights, or a path/URL of a checkpoint. The checkpoint of
            a training run (``runs/x/last.pt`` of any task) rebuilds the run's own network: the options it stored
            (``model_kwargs`` such as widths and ``in_chans``, ``norm``) are the defaults of ``**overrides``,
            its classes those of ``num_classes`` (and ``model.label_names``). A repository's weights are loaded
            unless ``pretrained=False``.
        features_only: return a ``ResNeStFeatures`` backbone giving the stage outputs.
        out_indices: with ``features_only``, which maps: 0 stem, 1..4 layer1..layer4.
        **overrides: any ``ResNeSt`` argument (``norm_layer``, ``output_stride``,
            ``drop_block_prob`` ...) and the official ``dilated``/``dilation``/``final_drop``.

    Returns:
        The model. It carries ``model.eval_config`` (the evaluation preprocessing of the weights it holds:
        those loaded, else the model's default weights; see ``splitattn.data.create_eval_transform``) and
        ``model.model_name``; a repository's model also ``model.label_names`` and ``model.pretrained_source``.

    Raises:
        UsageError: an unknown model name (with the close ones) or override, a run of another model, or
            ``pretrained=True`` with a ``norm_layer`` that holds no BatchNorm statistics (``groupnorm``).
        WeightsError: weights that cannot be fetched, verified or loaded into the model (a classifier that does
            not fit an explicit ``num_classes`` is replaced, see above; weights without one need ``num_classes``
            or ``features_only``).
    """
    if is_repo_name(name):  # a shared run in timm's hub format: hf-hub:owner/name[@revision] or local-dir:DIR
        repo = load_repo(name, pretrained, overrides.pop("revision", None))
        classes = repo.num_classes if num_classes is None else num_classes
        model = create_model(
            repo.model_name,
            classes,
            repo.weights or False,
            features_only,
            out_indices,
            **{**repo.model_args, **overrides},
        )
        return repo.describe(model)
    spec = get_model_spec(name)
    norm = overrides.get("norm_layer")
    if pretrained is True and isinstance(norm, str) and norm not in BATCH_STATISTICS_NORMS:
        raise UsageError(
            f"pretrained=True loads {spec.name}'s ImageNet weights, trained with BatchNorm, whose statistics a "
            f"norm_layer={norm!r} model cannot take: use norm_layer='frozenbn' (statistics frozen, the usual choice "
            "for fine-tuning detectors and segmenters) or 'batchnorm', or pretrained=False to train from scratch."
        )
    if "classes" in overrides:
        num_classes = overrides.pop("classes")
    state_dict, origin, label_names = None, "", None
    if pretrained:
        path, state_dict, run = read_pretrained(spec.name, pretrained)
        origin = str(path)
        if run is not None:  # a training run: its own architecture, the caller's overrides on top
            _check_run_model(spec, run.model_name, origin)
            overrides = {**run.overrides, **overrides}
            label_names = run.label_names
    explicit_classes = num_classes is not None
    if not explicit_classes:  # the file's classifier, never a random one; 1000 (ImageNet) without a file
        num_classes = _classifier_size(state_dict, origin, features_only)
    arch = _arch_kwargs(spec, overrides)
    classifier = ResNeSt(num_classes=num_classes if not features_only else 0, **arch)
    from torchvision.ops import FrozenBatchNorm2d  # here: importing torchvision also loads Dynamo and Inductor

    eval_config = default_eval_config(spec.name)
    if state_dict is not None:
        load_state_dict_into(classifier, state_dict, origin=origin, new_classifier=explicit_classes)
        eval_config = eval_config_for_file(spec.name, Path(origin))
        if label_names is not None and len(label_names) == classifier.num_classes and not features_only:
            classifier.label_names = label_names
    elif any(isinstance(m, FrozenBatchNorm2d) for m in classifier.modules()):
        warnings.warn(
            f"{spec.name} was built with frozen BatchNorm (FrozenBatchNorm2d) but without pretrained weights: "
            "its statistics and affine parameters stay at their initial values and never adapt, which is almost "
            "always a mistake. Pass pretrained=True (or a checkpoint), or use norm_layer='groupnorm' or 'syncbn'.",
            FrozenNormWithoutWeightsWarning,
            stacklevel=2,
        )
    model: nn.Module = ResNeStFeatures(classifier, out_indices) if features_only else classifier
    model.eval_config = eval_config
    model.model_name = spec.name
    return model
