"""Package attributes resolved on first use (PEP 562), so that importing a package (and parsing the command
line, which imports every command module) loads no heavy module it does not need yet."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict


def lazy_attributes(package: str, where: Dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: attribute ``name`` is imported from the submodule
    ``where[name]`` (relative, e.g. ``".trainer"``) when first asked for. Raises ``AttributeError`` for
    any other name."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name], package), name)

    return __getattr__
