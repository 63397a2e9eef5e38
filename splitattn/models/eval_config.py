"""How evaluation images are prepared for a set of weights: ``EvalConfig`` and ImageNet's statistics.

A leaf of the package (timm's ``_pretrained.py`` plays the same part): the registry, the weight
sources, the data transforms and the exported-file runtimes all read it, and it imports only the
exception hierarchy (``splitattn.errors``), so any of them can.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Tuple

from ..errors import UsageError

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
            raise UsageError(f"EvalConfig input_size must be a positive number of pixels, got {self.input_size!r}.")
        if not 0 < self.crop_pct <= 1:
            raise UsageError(f"EvalConfig crop_pct must be in (0, 1], got {self.crop_pct!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(
                f"EvalConfig interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}."
            )
        if self.crop_mode not in CROP_MODES:
            raise UsageError(f"EvalConfig crop_mode must be one of {', '.join(CROP_MODES)}, got {self.crop_mode!r}.")

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
