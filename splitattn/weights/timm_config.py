"""timm's ``config.json`` for ResNeSt classifiers, in both directions: a run's network and evaluation
preprocessing written in timm's vocabulary, and such a file (ours, or one timm's ``save_for_hf`` wrote for a
ResNeSt fine-tuned by anyone) read back as ``create_model`` arguments.

The file is what timm's ``save_for_hf`` writes and ``load_model_config_from_hf`` reads (timm
``models/_hub.py``)::

    {"architecture": "resnest14d", "num_classes": 3, "num_features": 2048, "global_pool": "avg",
     "label_names": ["tench", ...],
     "model_args": {"in_chans": 3, "stem_width": 16, "base_width": 16},
     "pretrained_cfg": {"input_size": [3, 224, 224], "interpolation": "bilinear", "crop_pct": 0.875,
                        "crop_mode": "center", "mean": [...], "std": [...], "num_classes": 3, ...}}

``architecture`` is the timm name of the registered model where it has one (then timm and transformers'
``TimmWrapper`` build the network), else ours. ``model_args`` are the run's network options in timm's
vocabulary (``base_width`` for our ``bottleneck_width``, ``block_args`` for radix and avd, ``stem_type``),
only those that differ from the architecture's, plus ``in_chans``; ``num_classes`` stays out of them
(transformers passes it separately and refuses it twice). ``pretrained_cfg`` is the evaluation
preprocessing (``EvalConfig``) in timm's terms. The repositories holding these files are ``hub.py``'s.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..errors import WeightsError
from ..models.eval_config import EvalConfig
from ..models.registry import MODEL_SPECS, get_model_spec
from ..models.resnest import ResNeSt

# tasks whose repositories describe a detector or a segmentation model, not a classifier
OTHER_TASKS = ("object-detection", "image-segmentation")

# our ResNeSt argument -> timm's ResNet argument of the same meaning
_TIMM_ARGS = {
    "layers": "layers",
    "bottleneck_width": "base_width",
    "stem_width": "stem_width",
    "cardinality": "cardinality",
    "avg_down": "avg_down",
    "output_stride": "output_stride",
    "in_chans": "in_chans",
}
_BLOCK_ARGS = ("radix", "avd", "avd_first")  # timm: block_args of ResNestBottleneck
# options that change training only, not the network a checkpoint describes (ours and timm's names)
_TRAINING_ONLY = ("drop_rate", "drop_block_prob", "zero_init_last", "drop_path_rate", "drop_block_rate")
# norms that are BatchNorm at inference (same weights, same maths): timm builds them as BatchNorm2d
_BATCH_NORMS = ("batchnorm", "syncbn", "frozenbn")
_TIMM_GROUPS = 32  # timm's "groupnorm": GroupNorm(32, channels)


def _arch(model_name: str, overrides: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(the registered architecture with ResNeSt's defaults filled in, the same with ``overrides``)."""
    defaults = {k: p.default for k, p in inspect.signature(ResNeSt).parameters.items() if k != "num_classes"}
    base = {**defaults, **get_model_spec(model_name).arch}
    return base, {**base, **overrides}


def timm_model_args(model_name: str, overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """timm's ``model_args`` for registered model ``model_name`` built with ``create_model`` ``overrides``.

    Args:
        model_name: registered name or alias.
        overrides: ``create_model`` keyword arguments of the run (``stem_width``, ``bottleneck_width``,
            ``in_chans``, ``norm_layer`` ...); training-only ones (dropout, DropBlock, zero-init) are left out.

    Returns:
        The options that differ from the architecture's, in timm's names, and ``in_chans``.

    Raises:
        WeightsError: an option with no timm equivalent (a ``norm_layer`` other than a BatchNorm or
            ``groupnorm``, an unknown argument).
    """
    base, arch = _arch(model_name, overrides)
    unknown = sorted(set(overrides) - {*_TIMM_ARGS, *_BLOCK_ARGS, *_TRAINING_ONLY, "deep_stem", "norm_layer"})
    if unknown:
        raise WeightsError(f"create_model options {unknown} have no place in timm's model_args.")
    args: Dict[str, Any] = {"in_chans": int(arch["in_chans"])}
    for ours, theirs in _TIMM_ARGS.items():
        if arch[ours] != base[ours]:
            args[theirs] = list(arch[ours]) if isinstance(arch[ours], (tuple, list)) else arch[ours]
    if arch["deep_stem"] != base["deep_stem"]:
        args["stem_type"] = "deep" if arch["deep_stem"] else ""
    if any(arch[k] != base[k] for k in _BLOCK_ARGS):
        args["block_args"] = {k: arch[k] for k in _BLOCK_ARGS}  # timm's entry points replace it whole
    norm = str(arch["norm_layer"]).lower()
    if norm == "groupnorm":
        args["norm_layer"] = "groupnorm"
    elif norm not in _BATCH_NORMS:
        raise WeightsError(f"norm_layer {arch['norm_layer']!r} has no name in timm; push a run with a named norm.")
    return args


def our_model_args(model_args: Mapping[str, Any], origin: str) -> Dict[str, Any]:
    """``create_model`` overrides from timm ``model_args`` (the reverse of ``timm_model_args``).

    ``num_classes`` and ``global_pool`` (``avg``) are consumed; training-only options are dropped.
    Raises ``WeightsError`` naming ``origin`` for options splitattn's ResNeSt cannot build.
    """
    rest = dict(model_args)
    for key in ("num_classes",) + _TRAINING_ONLY:
        rest.pop(key, None)
    if rest.pop("global_pool", "avg") not in ("avg", ""):
        raise WeightsError(f"{origin}: only average pooling (global_pool 'avg') is built by splitattn.")
    ours: Dict[str, Any] = {}
    for key, theirs in _TIMM_ARGS.items():
        if theirs in rest:
            value = rest.pop(theirs)
            ours[key] = tuple(value) if isinstance(value, list) else value
    if "stem_type" in rest:
        stem = rest.pop("stem_type")
        if stem not in ("deep", ""):
            raise WeightsError(f"{origin}: stem_type {stem!r} is not built by splitattn (only 'deep' or '').")
        ours["deep_stem"] = stem == "deep"
    block = dict(rest.pop("block_args", None) or {})
    for key in _BLOCK_ARGS:
        if key in block:
            ours[key] = block.pop(key)
    norm = rest.pop("norm_layer", None)
    if norm is not None and str(norm).lower() not in ("groupnorm", "batchnorm", "batchnorm2d"):
        raise WeightsError(f"{origin}: norm_layer {norm!r} is not built by splitattn.")
    if norm is not None and str(norm).lower() == "groupnorm":
        ours["norm_layer"] = "groupnorm"
    if rest or block:
        raise WeightsError(
            f"{origin}: model_args {sorted(rest) + sorted(block)} have no equivalent in splitattn's ResNeSt; "
            "load this repository with timm."
        )
    return ours


def groupnorm_fits_timm(model: Any) -> bool:
    """Whether every GroupNorm of ``model`` has timm's 32 groups (ours takes fewer for narrow layers)."""
    groups = [m.num_groups for m in model.modules() if type(m).__name__ == "GroupNorm"]
    return all(g == _TIMM_GROUPS for g in groups)


def pretrained_cfg(eval_config: EvalConfig, num_classes: int, in_chans: int, deep_stem: bool) -> Dict[str, Any]:
    """timm's ``pretrained_cfg`` for weights evaluated with ``eval_config`` (timm's crop mode only).

    Raises ``WeightsError`` for the authors' crop-then-resize protocol, which timm cannot express.
    """
    if eval_config.crop_mode != "center":
        raise WeightsError(
            f"evaluation crop mode {eval_config.crop_mode!r} ({eval_config.describe()}) has no timm equivalent."
        )
    size = int(eval_config.input_size)
    return {
        "input_size": [int(in_chans), size, size],
        "fixed_input_size": False,
        "interpolation": eval_config.interpolation,
        "crop_pct": float(eval_config.crop_pct),
        "crop_mode": "center",
        "mean": [float(v) for v in eval_config.mean],
        "std": [float(v) for v in eval_config.std],
        "num_classes": int(num_classes),
        "first_conv": "conv1.0" if deep_stem else "conv1",
        "classifier": "fc",
    }


def classification_config(
    model_name: str,
    overrides: Mapping[str, Any],
    num_classes: int,
    num_features: int,
    eval_config: EvalConfig,
    label_names: Optional[Sequence[str]] = None,
    license: Optional[str] = None,
) -> Dict[str, Any]:
    """The ``config.json`` of a classifier: registered ``model_name`` built with ``overrides`` (see
    ``timm_model_args``), its class count, feature width, evaluation preprocessing and class names."""
    spec = get_model_spec(model_name)
    _, arch = _arch(spec.name, overrides)
    cfg = pretrained_cfg(eval_config, num_classes, int(arch["in_chans"]), bool(arch["deep_stem"]))
    if license:
        cfg["license"] = license
    config: Dict[str, Any] = {
        "architecture": spec.timm_name or spec.name,
        "num_classes": int(num_classes),
        "num_features": int(num_features),
        "global_pool": "avg",
    }
    if label_names:
        if len(label_names) != num_classes:
            raise WeightsError(f"{len(label_names)} label names for {num_classes} classes.")
        config["label_names"] = list(label_names)
    config["model_args"] = timm_model_args(spec.name, overrides)
    config["pretrained_cfg"] = cfg
    return config


def eval_config_from(cfg: Mapping[str, Any], origin: str) -> EvalConfig:
    """``EvalConfig`` from a timm ``pretrained_cfg``, with timm's defaults (``resolve_data_config``) for
    missing fields. Raises ``WeightsError`` for what splitattn's transforms cannot reproduce."""
    size = list(cfg.get("input_size") or (3, 224, 224))
    if len(size) != 3 or size[1] != size[2]:
        raise WeightsError(f"{origin}: input_size {size} is not (channels, S, S); splitattn evaluates square crops.")
    if cfg.get("crop_mode", "center") != "center":
        raise WeightsError(f"{origin}: crop_mode {cfg['crop_mode']!r} is not supported (only timm's 'center').")
    mean, std = cfg.get("mean"), cfg.get("std")
    defaults = EvalConfig()
    try:
        return EvalConfig(
            int(size[1]),
            float(cfg.get("crop_pct") or defaults.crop_pct),
            str(cfg.get("interpolation") or "bicubic"),  # timm's default when a config has none
            tuple(float(v) for v in mean) if mean else defaults.mean,
            tuple(float(v) for v in std) if std else defaults.std,
            "center",
        )
    except ValueError as error:
        raise WeightsError(f"{origin}: pretrained_cfg cannot be used: {error}") from error


def _label_list(labels: Any, num_classes: int, origin: str) -> Optional[Tuple[str, ...]]:
    if labels is None:
        return None
    if isinstance(labels, Mapping):  # timm allows {index: name}
        labels = [labels.get(str(i), labels.get(i)) for i in range(num_classes)]  # type: ignore[call-overload]
    labels = [str(v) if v is not None else None for v in labels]
    if len(labels) != num_classes or None in labels:
        raise WeightsError(f"{origin}: label_names do not give one name to each of the {num_classes} classes.")
    return tuple(labels)


def parse_config(
    config: Mapping[str, Any], origin: str
) -> Tuple[str, int, Dict[str, Any], EvalConfig, Optional[Tuple[str, ...]]]:
    """What a timm ``config.json`` (its current layout, or the older one with the ``pretrained_cfg`` fields at
    the top level) describes.

    Args:
        config: the parsed file.
        origin: where it was read, for the messages.

    Returns:
        ``(registered model, classes, create_model overrides, EvalConfig, one label per class or None)``.

    Raises:
        WeightsError: a detection or segmentation run's file, an architecture splitattn does not build,
            options or preprocessing it cannot reproduce, or labels that do not name every class.
    """
    task = config.get("task")
    if task in OTHER_TASKS:
        raise WeightsError(
            f"{origin} holds a {task} run ({config.get('architecture')} on {config.get('backbone')}); "
            "create_model builds classifiers. Its config.json and model card say how to rebuild it."
        )
    cfg = dict(config.get("pretrained_cfg") or {k: v for k, v in config.items() if k != "architecture"})
    architecture = config.get("architecture")
    try:
        spec = get_model_spec(str(architecture))
    except ValueError:
        known = sorted({s.timm_name for s in MODEL_SPECS.values() if s.timm_name})
        raise WeightsError(
            f"{origin}: architecture {architecture!r} is not a ResNeSt splitattn builds (timm names it maps: "
            f"{', '.join(known)}; or any of `splitattn models`). Load it with timm.create_model."
        ) from None
    model_args = dict(config.get("model_args") or {})
    num_classes = int(config.get("num_classes", cfg.get("num_classes", model_args.get("num_classes", 1000))))
    overrides = our_model_args(model_args, origin)
    in_chans = int(overrides.get("in_chans", (cfg.get("input_size") or [3])[0]))
    if in_chans != 3:
        overrides["in_chans"] = in_chans
    labels = config.get("label_names", cfg.get("label_names", cfg.get("labels")))
    labels = _label_list(labels, num_classes, origin)
    return spec.name, num_classes, overrides, eval_config_from(cfg, origin), labels
