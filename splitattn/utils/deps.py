"""Optional dependencies: import one by name, or fail with the pip command that installs it.

The model library needs torch and torchvision only; training, detection, export and plotting
come as extras of the ``splitattn`` package (``[train]``, ``[detect]``, ``[export]``, ``[all]``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependencyError", "require"]

# import name -> the name pip knows it by, where they differ
_PIP_NAMES = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow"}


class MissingDependencyError(RuntimeError):
    """An optional package a command needs is not installed; the message says how to install it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"onnx"``) or raise ``MissingDependencyError`` naming ``purpose``
    (e.g. ``"ONNX export"``) and the pip commands that install it: ``pip install 'splitattn[extra]'``
    or the package alone."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = _PIP_NAMES.get(module.split(".")[0], module.split(".")[0])
        raise MissingDependencyError(
            f"{purpose} needs the Python package {package!r}, which is not installed ({error}). Install it with "
            f"`pip install 'splitattn[{extra}]'` (or `pip install {package}`)."
        ) from None
