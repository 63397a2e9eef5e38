"""Registry of named ResNeSt configurations and ``create_model``.

Every published configuration is a ``ModelSpec``: the architecture arguments of
``ResNeSt``, the evaluation preprocessing its weights expect, and the published
parameter count / multiply-accumulates that the tests pin.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from torch import nn

from .resnest import ResNeSt, ResNeStFeatures

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation preprocessing: resize the short side to ``resize_size``, centre-crop ``input_size``."""

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    @property
    def resize_size(self) -> int:
        """Short side before the centre crop (the official code uses ``int(crop / 0.875)``)."""
        return int(self.input_size / self.crop_pct)


@dataclass(frozen=True)
class ModelSpec:
    """A named configuration: ``ResNeSt`` arguments plus what is published about it."""

    name: str
    arch: Dict[str, Any]
    eval_config: EvalConfig
    description: str
    published_params_m: Optional[float] = None
    published_gmacs: Optional[float] = None  # multiply-accumulates at eval_config.input_size
    timm_name: Optional[str] = None
    aliases: Tuple[str, ...] = field(default_factory=tuple)


_RESNEST = dict(radix=2, cardinality=1, bottleneck_width=64, deep_stem=True, avg_down=True, avd=True)
_BICUBIC = dict(interpolation="bicubic")


def _spec(name: str, description: str, layers: Sequence[int], input_size: int = 224, **kwargs: Any) -> ModelSpec:
    arch = dict(_RESNEST, layers=tuple(layers))
    meta_keys = ("published_params_m", "published_gmacs", "timm_name", "aliases")
    meta = {k: kwargs.pop(k) for k in meta_keys if k in kwargs}
    arch.update(kwargs)
    interpolation = "bicubic" if input_size >= 320 else "bilinear"
    return ModelSpec(name, arch, EvalConfig(input_size, interpolation=interpolation), description, **meta)


def _fast(radix: int, cardinality: int, width: int, params: float, gmacs: float, **kwargs: Any) -> ModelSpec:
    tag = f"{radix}s{cardinality}x{width}d"
    return _spec(
        f"resnest50_fast_{tag}",
        f"ResNeSt-50 fast {tag}: radix {radix}, cardinality {cardinality}, width {width}, avg pool before the 3x3 conv",
        (3, 4, 6, 3), radix=radix, cardinality=cardinality, bottleneck_width=width, stem_width=32,
        avd_first=True, published_params_m=params, published_gmacs=gmacs, **kwargs,
    )


_SPECS: List[ModelSpec] = [
    _spec("resnest14", "ResNeSt-14 (the Gluon model), 2s1x64d", (1, 1, 1, 1), stem_width=32,
          timm_name="resnest14d", aliases=("resnest14d",)),
    _spec("resnest26", "ResNeSt-26 (the Gluon model), 2s1x64d", (2, 2, 2, 2), stem_width=32,
          timm_name="resnest26d", aliases=("resnest26d",)),
    _spec("resnest50", "ResNeSt-50, 2s1x64d, stem 32", (3, 4, 6, 3), stem_width=32,
          published_params_m=27.5, published_gmacs=5.4, timm_name="resnest50d", aliases=("resnest50d",)),
    _spec("resnest101", "ResNeSt-101, 2s1x64d, stem 64", (3, 4, 23, 3), 256, stem_width=64,
          published_params_m=48.3, timm_name="resnest101e", aliases=("resnest101e",)),
    _spec("resnest200", "ResNeSt-200, 2s1x64d, stem 64", (3, 24, 36, 3), 320, stem_width=64,
          published_params_m=70.2, timm_name="resnest200e", aliases=("resnest200e",)),
    _spec("resnest269", "ResNeSt-269, 2s1x64d, stem 64", (3, 30, 48, 8), 416, stem_width=64,
          published_params_m=110.9, timm_name="resnest269e", aliases=("resnest269e",)),
    _fast(1, 1, 64, 26.3, 4.34),
    _fast(2, 1, 64, 27.5, 4.34),
    _fast(4, 1, 64, 31.9, 4.35),
    _fast(1, 2, 40, 25.9, 4.38),
    _fast(2, 2, 40, 26.9, 4.38),
    _fast(4, 2, 40, 30.4, 4.41, timm_name="resnest50d_4s2x40d", aliases=("resnest50d_4s2x40d",)),
    _fast(1, 4, 24, 25.7, 4.42, timm_name="resnest50d_1s4x24d", aliases=("resnest50d_1s4x24d",)),
    # The paper's baselines, built from the same code.
    _spec("resnest50_fast_0s1x64d", "The paper's ResNet-D-50 baseline (radix 0) with the fast variants' avd",
          (3, 4, 6, 3), radix=0, avd_first=True),
    _spec("resnest50_1s1x64d", "Radix-1 ResNeSt-50: an SE-like sigmoid channel gate", (3, 4, 6, 3), radix=1),
    _spec("resnet14d", "ResNet-D-14 baseline (radix 0, no avd), same depth as resnest14", (1, 1, 1, 1),
          radix=0, avd=False),
    _spec("resnet26d", "ResNet-D-26 baseline (radix 0, no avd)", (2, 2, 2, 2), radix=0, avd=False,
          timm_name="resnet26d"),
    _spec("resnet50d", "ResNet-D-50 baseline (radix 0, no avd, Bag of Tricks)", (3, 4, 6, 3), radix=0, avd=False,
          timm_name="resnet50d"),
]

MODEL_SPECS: Dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
ALIASES: Dict[str, str] = {alias: spec.name for spec in _SPECS for alias in spec.aliases}

# Argument names of the official code, accepted as overrides and mapped onto ours.
_OFFICIAL_ARGS = {"final_drop": "drop_rate", "dropblock_prob": "drop_block_prob", "last_gamma": "zero_init_last",
                  "groups": "cardinality", "classes": "num_classes"}
_ARCH_ARGS = (
    "layers", "radix", "cardinality", "bottleneck_width", "stem_width", "deep_stem", "avg_down", "avd",
    "avd_first", "in_chans", "output_stride", "drop_rate", "drop_block_prob", "norm_layer", "zero_init_last",
)


def list_models(pattern: str = "*", include_aliases: bool = False) -> List[str]:
    """Registered model names (in registry order) matching a shell-style ``pattern`` such as ``"resnest50*"``."""
    import fnmatch

    names = list(MODEL_SPECS) + (list(ALIASES) if include_aliases else [])
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def get_model_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` for a registered name or alias; unknown names list the close ones."""
    canonical = ALIASES.get(name, name)
    if canonical not in MODEL_SPECS:
        known = list(MODEL_SPECS) + list(ALIASES)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} `splitattn models` lists all {len(MODEL_SPECS)} names.")
    return MODEL_SPECS[canonical]


def _arch_kwargs(spec: ModelSpec, overrides: Dict[str, Any]) -> Dict[str, Any]:
    arch = dict(spec.arch)
    for key, value in overrides.items():
        if key == "dilated":  # official: stride-8 backbone for segmentation
            if value:
                arch["output_stride"] = 8
            continue
        if key == "dilation":  # official: 1 -> stride 32, 2 -> stride 16, 4 -> stride 8
            if value not in (1, 2, 4):
                raise ValueError(f"dilation must be 1, 2 or 4 (official semantics), got {value}.")
            arch["output_stride"] = 32 // value
            continue
        key = _OFFICIAL_ARGS.get(key, key)
        if key not in _ARCH_ARGS:
            raise TypeError(
                f"create_model got an unknown argument {key!r}; valid overrides: "
                f"{', '.join(_ARCH_ARGS + ('dilated', 'dilation'))}."
            )
        arch[key] = value
    return arch


def create_model(
    name: str,
    num_classes: int = 1000,
    pretrained: Union[bool, str] = False,
    features_only: bool = False,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from ``list_models()`` or a timm alias (``resnest50d`` ...).
        num_classes: classifier outputs (ignored with ``features_only``).
        pretrained: ``True`` for the registered ImageNet weights, or a path/URL of a checkpoint.
        features_only: return a ``ResNeStFeatures`` backbone giving the stage outputs.
        out_indices: with ``features_only``, which maps: 0 stem, 1..4 layer1..layer4.
        **overrides: any ``ResNeSt`` argument (``norm_layer``, ``output_stride``,
            ``drop_block_prob`` ...) and the official ``dilated``/``dilation``/``final_drop``.

    The returned module carries ``model.eval_config`` (its evaluation preprocessing) and
    ``model.model_name``.
    """
    spec = get_model_spec(name)
    if "classes" in overrides:
        num_classes = overrides.pop("classes")
    arch = _arch_kwargs(spec, overrides)
    classifier = ResNeSt(num_classes=num_classes if not features_only else 0, **arch)
    if pretrained:
        from ..weights import load_pretrained

        load_pretrained(classifier, spec.name, pretrained)
    model: nn.Module = ResNeStFeatures(classifier, out_indices) if features_only else classifier
    model.eval_config = spec.eval_config
    model.model_name = spec.name
    return model
