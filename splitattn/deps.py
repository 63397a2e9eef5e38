"""Optional dependencies: import one by name, or fail with the pip command that installs it.

The model library needs torch and torchvision only; training, detection, export and plotting
come as extras of the ``splitattn`` package (``[train]``, ``[detect]``, ``[export]``, ``[openvino]``, ``[all]``).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

from .errors import MissingDependencyError

__all__ = ["EXTRAS", "MissingDependencyError", "missing_dependency", "openvino_core", "require"]

# import name -> the name pip knows it by, where they differ
_PIP_NAMES = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow"}
# import name of each optional package -> the extra of pyproject.toml that installs it
EXTRAS = {
    "yaml": "train",
    "tqdm": "train",
    "tensorboard": "train",
    "matplotlib": "train",
    "sklearn": "train",
    "pycocotools": "detect",
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "openvino": "openvino",
    "captum": "explain",
    "transformers": "test",
    "timm": "test",
}


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


def missing_dependency(error: BaseException) -> MissingDependencyError | None:
    """For an ``ImportError`` of one of the optional packages (``EXTRAS``), the ``MissingDependencyError`` that
    names its pip command; ``None`` for any other error."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if not isinstance(error, ImportError) or name not in EXTRAS:
        return None
    package = _PIP_NAMES.get(name, name)
    return MissingDependencyError(
        f"the Python package {package!r} is not installed. Install it with "
        f"`pip install 'splitattn[{EXTRAS[name]}]'` (or `pip install {package}`)."
    )


@functools.cache
def openvino_core() -> Any:
    """The process's one ``openvino.Core``, created on first use and kept until the process ends.

    Every OpenVINO model this library reads or compiles goes through it. Measured with openvino 2026.4: with a
    temporary ``Core`` per fast-path model, the test process segfaulted minutes later in unrelated code (closing
    a file, after training), every time; with every OpenVINO object kept alive, or with this one ``Core`` only,
    it did not. The likely cause: a ``Core`` loads the CPU plugin, and freeing the last ``Core`` with the models
    compiled by it unloads the plugin while its worker threads live on.

    Raises:
        MissingDependencyError: without ``openvino`` (``pip install 'splitattn[openvino]'``).
    """
    return require("openvino", "openvino", "OpenVINO").Core()
