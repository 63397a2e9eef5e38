"""The package's import graph holds the layering written in docs/architecture.md (issue 20).

Every module of ``splitattn/`` is read with ``ast``: every import counts, at module level, inside
functions and under ``if TYPE_CHECKING:``, relative ones resolved. The layer order is parsed from the
delimited list in docs/architecture.md, so the page and this check cannot drift. Checked: no cycle
between modules; no import of a package ``__init__`` (except an ``__init__`` re-exporting its own
package); no import against the layer order; every module has a layer. Then the public API: what a
package ``__init__`` exports lazily is the same set it names for documentation generators
(``TYPE_CHECKING`` imports, ``__all__``), and each name resolves; ``import splitattn`` and the command
line's parser stay light.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from .train_helpers import REPO, child_env

PACKAGE = REPO / "splitattn"
ARCHITECTURE = REPO / "docs" / "architecture.md"
BEGIN, END = "<!-- layers: begin", "<!-- layers: end -->"
HEAVY = ("torchvision", "torch._dynamo", "torch._inductor", "matplotlib", "pycocotools", "onnx", "onnxruntime")


@dataclass(frozen=True)
class Module:
    name: str  # dotted, without the "splitattn." prefix; "" for the package itself
    path: Path
    is_package: bool


def modules() -> Dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, path, is_package)
    return found


def layer_entries(text: str) -> List[Tuple[str, int]]:
    """``(entry, layer)`` from the delimited list: ``N. `a.py` `b/` ...`` lines, backticked paths only."""
    if BEGIN not in text or END not in text:
        raise AssertionError(f"{ARCHITECTURE} lost its layer list (between {BEGIN!r} and {END!r})")
    block = text.split(BEGIN, 1)[1].split("\n", 1)[1].split(END, 1)[0]
    entries = []
    for line in block.splitlines():
        match = re.match(r"\s*(\d+)\.\s", line)
        if match:
            prefix = line.split(":", 1)[0]  # the description after the paths may quote other names
            entries += [(path, int(match.group(1))) for path in re.findall(r"`([^`]+)`", prefix)]
    return entries


def layer_of(name: str, entries: List[Tuple[str, int]]) -> Optional[int]:
    """The layer of the most specific entry covering module ``name``: ``*/x.py`` (any module named x), then the
    longest path (``a/b.py`` or the package ``a/``)."""
    last = name.split(".")[-1]
    for entry, layer in entries:
        if entry.startswith("*/") and entry[2:].removesuffix(".py") == last and name:
            return layer
    best: Optional[Tuple[int, int]] = None
    for entry, layer in entries:
        if entry.startswith("*/"):
            continue
        parts = [p for p in entry.removesuffix(".py").split("/") if p]
        if name.split(".")[: len(parts)] == parts and (best is None or len(parts) > best[0]):
            best = (len(parts), layer)
    return best[1] if best else None


def imports(module: Module, known: Dict[str, Module]) -> Iterator[Tuple[str, int]]:
    """``(imported module, line)`` for every import of a splitattn module anywhere in ``module``'s source."""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    package = [p for p in package if p]
    for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "splitattn" or alias.name.startswith("splitattn."):
                    yield alias.name.removeprefix("splitattn").lstrip("."), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module == "splitattn" or (node.module or "").startswith("splitattn."):
                target = node.module.removeprefix("splitattn").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from package import submodule` imports the submodule
                child = f"{target}.{alias.name}" if target else alias.name
                yield (child if child in known else target), node.lineno


@pytest.fixture(scope="module")
def graph() -> Tuple[Dict[str, Module], Dict[str, Set[Tuple[str, int]]], List[Tuple[str, int]]]:
    known = modules()
    edges = {name: {(t, line) for t, line in imports(m, known) if t != name} for name, m in known.items()}
    return known, edges, layer_entries(ARCHITECTURE.read_text(encoding="utf-8"))


def test_the_layer_list_is_parsed():
    entries = layer_entries(ARCHITECTURE.read_text(encoding="utf-8"))
    layers = sorted({layer for _, layer in entries})
    assert layers == list(range(len(layers))) and len(layers) >= 10
    assert ("errors.py", 0) in entries and ("models/factory.py", 4) in entries and ("*/cli.py", 10) in entries


def test_every_module_has_a_layer(graph):
    known, _, entries = graph
    missing = [m.name for m in known.values() if not m.is_package and layer_of(m.name, entries) is None]
    assert not missing, f"modules not covered by the layer list of {ARCHITECTURE.name}: {missing}"


def test_no_import_cycles(graph):
    known, edges, _ = graph
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in edges.get(node, ()):
            if target not in known:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(known):
        if name not in index:
            visit(name)
    assert not cycles, f"import cycles between modules: {cycles}"


def test_no_imports_of_package_inits(graph):
    known, edges, _ = graph
    wrong = [
        f"{name or 'splitattn'}:{line} imports the package {target or 'splitattn'}"
        for name, targets in edges.items()
        for target, line in sorted(targets)
        if target in known
        and known[target].is_package
        and not (known[name].is_package and (name == "" or target.startswith(name + ".")))
    ]
    assert not wrong, "import the module that defines the name, not a package __init__:\n" + "\n".join(wrong)


def test_imports_follow_the_layer_order(graph):
    known, edges, entries = graph
    wrong = []
    for name, targets in edges.items():
        own = layer_of(name, entries)
        for target, line in sorted(targets):
            if target not in known or known[target].is_package:
                continue  # package __init__s: the test above
            if known[name].is_package and (name == "" or target.startswith(name + ".")):
                continue  # a package re-exporting its own modules
            theirs = layer_of(target, entries)
            limit = own if own is not None else 0  # an unlisted package __init__ re-exports only the leaves
            if theirs is None or theirs > limit:
                wrong.append(f"{name or 'splitattn'} (layer {own}):{line} imports {target} (layer {theirs})")
    assert not wrong, f"imports against the layer order of {ARCHITECTURE.name}:\n" + "\n".join(wrong)


def _type_checking_imports(tree: ast.Module, package: str) -> Tuple[Dict[str, str], Set[str]]:
    """``({name: module it is imported from}, {submodules})`` of the ``if TYPE_CHECKING:`` block."""
    names: Dict[str, str] = {}
    children: Set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), f"{package}: only imports under TYPE_CHECKING"
                module = "." * statement.level + (statement.module or "")
                for alias in statement.names:
                    if module == ".":
                        children.add(alias.name)
                    else:
                        names[alias.asname or alias.name] = module
    return names, children


def _lazy_exports(tree: ast.Module) -> Optional[Tuple[List[str], Set[str]]]:
    """The modules and submodules literally passed to ``lazy_exports`` in a package ``__init__``, if any."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            modules = list(ast.literal_eval(node.args[2])) if len(node.args) > 2 else []
            submodules = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "submodules"), ())
            return modules, set(submodules)
    return None


def _declared_all(tree: ast.Module) -> List[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__":
            return list(ast.literal_eval(node.value))
    return []


def _top_level_names(tree: ast.Module) -> Set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_lazy_exports_are_what_documentation_generators_see(graph):
    """A lazily exporting ``__init__`` imports its exports under ``TYPE_CHECKING`` (what documentation generators
    and IDEs read), lists them in ``__all__`` and hands ``lazy_exports`` the modules they come from: the three
    agree, and at run time each name is the object its ``TYPE_CHECKING`` import names."""
    known, _, _ = graph
    checked = 0
    for module in known.values():
        if not module.is_package:
            continue
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        lazy = _lazy_exports(tree)
        if lazy is None:
            continue
        checked += 1
        modules, submodules = lazy
        static, children = _type_checking_imports(tree, module.name)
        exported = _declared_all(tree)
        label = module.name or "splitattn"
        assert children == submodules, f"{label}: TYPE_CHECKING submodules and lazy_exports' submodules differ"
        assert set(static) <= set(exported), f"{label}: TYPE_CHECKING imports missing from __all__"
        eager = _top_level_names(tree)
        assert not set(exported) - set(static) - eager, f"{label}: __all__ names neither imported nor lazy"
        assert set(static.values()) <= set(modules), (
            f"{label}: lazy_exports lacks a module of its TYPE_CHECKING imports"
        )
        name = "splitattn" + (f".{module.name}" if module.name else "")
        package = importlib.import_module(name)
        for export, source in static.items():
            expected = getattr(importlib.import_module(source, name), export)
            assert getattr(package, export) is expected, f"{label}.{export}"
        for child in submodules:
            assert getattr(package, child) is importlib.import_module(f"{name}.{child}")
        assert set(exported) | submodules <= set(dir(package))
    assert checked >= 7


@pytest.mark.parametrize(
    "code",
    [
        "import splitattn",
        "from splitattn.cli import build_parser; build_parser()",
        "import splitattn.data.io, splitattn.data.labels, splitattn.deploy, splitattn.tasks.detection",
    ],
    ids=["import", "command-line-parser", "light-modules"],
)
def test_light_imports_stay_light(code):
    """``import splitattn`` and ``splitattn --help`` load neither torchvision (which loads Dynamo and Inductor)
    nor matplotlib, pycocotools or onnx; nor do the light modules of the packages that hold heavy ones."""
    probe = f"import sys, json; {code}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=child_env(), capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_subpackages_are_attributes_of_the_package():
    """As with ``timm.data`` after ``import timm``: ``splitattn.data.create_eval_transform`` needs no other import."""
    probe = (
        "import splitattn; t = splitattn.data.create_eval_transform('resnest14'); "
        "print(type(t).__name__, splitattn.data.detection.build_detection_dataset.__name__, "
        "splitattn.tasks.segmentation.HEADS[0], splitattn.optimize.compile_for_training.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=child_env(), capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["Compose", "build_detection_dataset", "deeplabv3", "compile_for_training"]
