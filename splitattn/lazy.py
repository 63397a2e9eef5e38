"""Package attributes imported on first use (PEP 562), visible to documentation generators and IDEs.

A package whose modules are costly to import (torchvision, pycocotools, matplotlib) imports its public
names under ``if TYPE_CHECKING:`` (what mkdocstrings, type checkers and IDEs read), lists them in
``__all__``, and hands ``lazy_exports`` the modules they come from; a name is imported from its module
when it is first asked for. ``tests/test_architecture.py`` checks that the ``TYPE_CHECKING`` imports,
``__all__`` and the module list agree. So ``import splitattn`` and ``splitattn --help`` load nothing they
do not use, and ``import splitattn; splitattn.data.X`` works as ``timm.data.X`` does (subpackages are
attributes too).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Iterable, List, Sequence, Tuple

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, names: Iterable[str], modules: Sequence[str] = (), submodules: Iterable[str] = ()
) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for the module ``package``.

    Args:
        package: the package's ``__name__``.
        names: the names it exports (its ``__all__``).
        modules: the relative modules they come from (``".transforms"``), searched in this order, so the
            cheapest first: a name is taken from the first module that has it.
        submodules: names of submodules or subpackages reachable as attributes (``"detection"``).

    Returns:
        ``__getattr__``, which imports an exported name (or a listed submodule) on first access and keeps it
        in the package's namespace, and ``__dir__``, which lists them all.

    Raises:
        AttributeError: from ``__getattr__``, for a name the package neither defines nor exports.
    """
    exported = frozenset(names)
    children = tuple(submodules)

    def __getattr__(name: str) -> Any:
        if name in children:
            value = importlib.import_module(f".{name}", package)
        elif name in exported:
            for module in modules:
                namespace = vars(importlib.import_module(module, package))
                if name in namespace:
                    value = namespace[name]
                    break
            else:
                raise AttributeError(f"module {package!r} exports {name!r}, but none of {list(modules)} defines it")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later look-ups find it without this function
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | exported | set(children))

    return __getattr__, __dir__
