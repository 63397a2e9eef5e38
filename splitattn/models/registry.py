"""Registry of named ResNeSt configurations: ``ModelSpec``, the table of every published variant, its aliases.

Every published configuration is a ``ModelSpec``: the architecture arguments of ``ResNeSt``, the
evaluation preprocessing its weights expect, and the published parameter count / multiply-accumulates
that the tests pin. Building a model from a spec is ``splitattn.models.factory.create_model``'s job, one
layer up (above the weights it loads).
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import UsageError
from .eval_config import EvalConfig


@dataclass(frozen=True)
class ModelSpec:
    """A named configuration: ``ResNeSt`` arguments plus what is published about it.

    ``eval_config`` is the authors' evaluation protocol at the paper's input size
    (``EvalConfig.resnest``): the one of the official checkpoints and of models without published
    weights. A checkpoint source can carry its own (``splitattn.weights.sources``: the timm hub
    copies use timm's); ``default_eval_config`` gives the one of a model's default weights.
    """

    name: str
    arch: Dict[str, Any]
    eval_config: EvalConfig
    description: str
    published_params_m: Optional[float] = None
    published_gmacs: Optional[float] = None  # multiply-accumulates at eval_config.input_size
    timm_name: Optional[str] = None
    aliases: Tuple[str, ...] = field(default_factory=tuple)


_RESNEST = dict(radix=2, cardinality=1, bottleneck_width=64, deep_stem=True, avg_down=True, avd=True)


def _spec(name: str, description: str, layers: Sequence[int], input_size: int = 224, **kwargs: Any) -> ModelSpec:
    arch = dict(_RESNEST, layers=tuple(layers))
    meta_keys = ("published_params_m", "published_gmacs", "timm_name", "aliases")
    meta = {k: kwargs.pop(k) for k in meta_keys if k in kwargs}
    arch.update(kwargs)
    return ModelSpec(name, arch, EvalConfig.resnest(input_size), description, **meta)


def _fast(radix: int, cardinality: int, width: int, params: float, gmacs: float, **kwargs: Any) -> ModelSpec:
    tag = f"{radix}s{cardinality}x{width}d"
    return _spec(
        f"resnest50_fast_{tag}",
        f"ResNeSt-50 fast {tag}: radix {radix}, cardinality {cardinality}, width {width}, avg pool before the 3x3 conv",
        (3, 4, 6, 3),
        radix=radix,
        cardinality=cardinality,
        bottleneck_width=width,
        stem_width=32,
        avd_first=True,
        published_params_m=params,
        published_gmacs=gmacs,
        **kwargs,
    )


_SPECS: List[ModelSpec] = [
    _spec(
        "resnest14",
        "ResNeSt-14 (the Gluon model), 2s1x64d",
        (1, 1, 1, 1),
        stem_width=32,
        timm_name="resnest14d",
        aliases=("resnest14d",),
    ),
    _spec(
        "resnest26",
        "ResNeSt-26 (the Gluon model), 2s1x64d",
        (2, 2, 2, 2),
        stem_width=32,
        timm_name="resnest26d",
        aliases=("resnest26d",),
    ),
    _spec(
        "resnest50",
        "ResNeSt-50, 2s1x64d, stem 32",
        (3, 4, 6, 3),
        stem_width=32,
        published_params_m=27.5,
        published_gmacs=5.4,
        timm_name="resnest50d",
        aliases=("resnest50d",),
    ),
    _spec(
        "resnest101",
        "ResNeSt-101, 2s1x64d, stem 64",
        (3, 4, 23, 3),
        256,
        stem_width=64,
        published_params_m=48.3,
        timm_name="resnest101e",
        aliases=("resnest101e",),
    ),
    _spec(
        "resnest200",
        "ResNeSt-200, 2s1x64d, stem 64",
        (3, 24, 36, 3),
        320,
        stem_width=64,
        published_params_m=70.2,
        timm_name="resnest200e",
        aliases=("resnest200e",),
    ),
    _spec(
        "resnest269",
        "ResNeSt-269, 2s1x64d, stem 64",
        (3, 30, 48, 8),
        416,
        stem_width=64,
        published_params_m=110.9,
        timm_name="resnest269e",
        aliases=("resnest269e",),
    ),
    _fast(1, 1, 64, 26.3, 4.34),
    _fast(2, 1, 64, 27.5, 4.34),
    _fast(4, 1, 64, 31.9, 4.35),
    _fast(1, 2, 40, 25.9, 4.38),
    _fast(2, 2, 40, 26.9, 4.38),
    _fast(4, 2, 40, 30.4, 4.41, timm_name="resnest50d_4s2x40d", aliases=("resnest50d_4s2x40d",)),
    _fast(1, 4, 24, 25.7, 4.42, timm_name="resnest50d_1s4x24d", aliases=("resnest50d_1s4x24d",)),
    # The paper's baselines, built from the same code.
    _spec(
        "resnest50_fast_0s1x64d",
        "The paper's ResNet-D-50 baseline (radix 0) with the fast variants' avd",
        (3, 4, 6, 3),
        radix=0,
        avd_first=True,
    ),
    _spec("resnest50_1s1x64d", "Radix-1 ResNeSt-50: an SE-like sigmoid channel gate", (3, 4, 6, 3), radix=1),
    _spec(
        "resnet14d", "ResNet-D-14 baseline (radix 0, no avd), same depth as resnest14", (1, 1, 1, 1), radix=0, avd=False
    ),
    _spec(
        "resnet26d", "ResNet-D-26 baseline (radix 0, no avd)", (2, 2, 2, 2), radix=0, avd=False, timm_name="resnet26d"
    ),
    _spec(
        "resnet50d",
        "ResNet-D-50 baseline (radix 0, no avd, Bag of Tricks)",
        (3, 4, 6, 3),
        radix=0,
        avd=False,
        timm_name="resnet50d",
    ),
]

MODEL_SPECS: Dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
ALIASES: Dict[str, str] = {alias: spec.name for spec in _SPECS for alias in spec.aliases}


def list_models(pattern: str = "*", include_aliases: bool = False) -> List[str]:
    """Registered model names (in registry order) matching a shell-style ``pattern`` such as ``"resnest50*"``."""
    names = list(MODEL_SPECS) + (list(ALIASES) if include_aliases else [])
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def get_model_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` for a registered name or alias; unknown names list the close ones."""
    canonical = ALIASES.get(name, name)
    if canonical not in MODEL_SPECS:
        known = list(MODEL_SPECS) + list(ALIASES)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UsageError(f"Unknown model {name!r}.{hint} `splitattn models` lists all {len(MODEL_SPECS)} names.")
    return MODEL_SPECS[canonical]
