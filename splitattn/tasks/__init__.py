"""The three tasks, each a subpackage: its data set wiring, model, loss, evaluator and commands."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # the subpackages, imported on first use (``splitattn.lazy``)
    from . import classification as classification
    from . import detection as detection
    from . import segmentation as segmentation

__getattr__, __dir__ = lazy_exports(__name__, (), submodules=("classification", "detection", "segmentation"))
