"""Registry of named ResNeSt configurations and ``create_model``.

Every published configuration is a ``ModelSpec``: the architecture arguments of
``ResNeSt``, the evaluation preprocessing its weights expect, and the published
parameter count / multiply-accumulates that the tests pin.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from torch import nn

from .resnest import ResNeSt, ResNeStFeatures

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


CROP_MODES = ("crop_resize", "center")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class EvalConfig:
    """How evaluation images are prepared for one set of weights: PIL image -> (3, S, S) float tensor.

    Two published protocols exist (``crop_mode``), both keeping a centred square of about
    ``crop_pct`` of the image's short side:

    - ``"crop_resize"``: the authors' protocol (zhanghang1989/ResNeSt, ``scripts/torch/verify.py``,
      ``ECenterCrop``): crop a centred square of ``crop_pct * short side`` pixels, then resize it
      to ``input_size x input_size`` (bicubic). The authors use ``crop_pct = S / (S + 32)``, see
      ``EvalConfig.resnest``. Their official checkpoints' accuracies were measured this way.
    - ``"center"``: timm's protocol (``timm.data.create_transform``, crop mode ``center``): resize
      the short side to ``floor(input_size / crop_pct)``, then centre-crop ``input_size``. The
      timm hub copies of the weights carry their own ``crop_pct``/``interpolation``.

    Then ``ToTensor`` (values in [0, 1]) and normalisation by ``mean``/``std`` (RGB).
    ``splitattn.data.create_eval_transform`` builds the transform.
    """

    input_size: int = 224
    crop_pct: float = 0.875  # the defaults are timm's (DEFAULT_CROP_PCT, bilinear), used for runs trained here
    interpolation: str = "bilinear"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        if int(self.input_size) != self.input_size or self.input_size < 1:
            raise ValueError(f"EvalConfig input_size must be a positive number of pixels, got {self.input_size!r}.")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"EvalConfig crop_pct must be in (0, 1], got {self.crop_pct!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"EvalConfig interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}."
            )
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"EvalConfig crop_mode must be one of {', '.join(CROP_MODES)}, got {self.crop_mode!r}.")

    @classmethod
    def resnest(cls, input_size: int) -> EvalConfig:
        """The authors' protocol at ``input_size``: crop ``S / (S + 32)`` of the short side, bicubic resize."""
        return cls(input_size, input_size / (input_size + 32), "bicubic", crop_mode="crop_resize")

    def at_size(self, input_size: int) -> EvalConfig:
        """The same protocol at another size (the authors' crop fraction follows the size; timm's is fixed)."""
        if self.crop_mode == "crop_resize" and self.crop_pct == self.input_size / (self.input_size + 32):
            return replace(self, input_size=input_size, crop_pct=input_size / (input_size + 32))
        return replace(self, input_size=input_size)

    def describe(self) -> str:
        """One line for tables, e.g. ``crop 0.875 -> bicubic 224`` or ``bilinear 256 -> crop 224``."""
        if self.crop_mode == "crop_resize":
            return f"crop {self.crop_pct:.3f} -> {self.interpolation} {self.input_size}"
        return f"{self.interpolation} {int(self.input_size / self.crop_pct)} -> crop {self.input_size}"


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
        num_classes: classifier outputs (ignored with ``features_only``); ``None``: 1000, or a repository's.
        pretrained: ``True`` for the registered ImageNet weights, or a path/URL of a checkpoint. A repository's
            weights are loaded unless ``pretrained=False``.
        features_only: return a ``ResNeStFeatures`` backbone giving the stage outputs.
        out_indices: with ``features_only``, which maps: 0 stem, 1..4 layer1..layer4.
        **overrides: any ``ResNeSt`` argument (``norm_layer``, ``output_stride``,
            ``drop_block_prob`` ...) and the official ``dilated``/``dilation``/``final_drop``.

    The returned module carries ``model.eval_config`` (the evaluation preprocessing of the
    weights it holds: those loaded, else the model's default weights; see
    ``splitattn.data.create_eval_transform``) and ``model.model_name``; a repository's model also
    ``model.label_names`` and ``model.pretrained_source``.
    """
    from ..weights.hub import is_repo_name, load_repo

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
    num_classes = 1000 if num_classes is None else num_classes
    spec = get_model_spec(name)
    if "classes" in overrides:
        num_classes = overrides.pop("classes")
    arch = _arch_kwargs(spec, overrides)
    classifier = ResNeSt(num_classes=num_classes if not features_only else 0, **arch)
    from torchvision.ops import FrozenBatchNorm2d  # here: importing torchvision also loads Dynamo and Inductor

    from ..weights.sources import default_eval_config, eval_config_for_file

    eval_config = default_eval_config(spec.name)
    if pretrained:
        from ..weights.loading import load_state_dict_into, read_pretrained

        path, state_dict = read_pretrained(spec.name, pretrained)
        load_state_dict_into(classifier, state_dict, origin=str(path))
        eval_config = eval_config_for_file(spec.name, path)
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
