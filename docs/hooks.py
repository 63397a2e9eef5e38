"""mkdocs hooks: the pages generated from the code at build time, so none of them is a copy kept by hand.

- ``index.md`` and ``benchmarks.md`` are the repository's ``README.md`` and ``BENCHMARKS.md``, their links
  rewritten for the site (``docs/training.md`` -> ``training.md``).
- ``<!-- generated: model-table -->`` in a page becomes the table of registered models that
  ``splitattn models`` prints (from the registry and the weight sources); in the README the table sits between
  ``<!-- model-table -->`` and ``<!-- end model-table -->`` and is replaced by a fresh one on the site.
- ``<!-- generated: weight-files -->`` becomes the table of published weight files with their evaluation
  protocols (``splitattn.weights.CHECKPOINTS``).
- ``<!-- generated: cli-reference -->`` becomes the ``--help`` of every command of ``splitattn.cli.build_parser()``.
- The API reference: one page per public module of ``splitattn``, found by walking the package's files and
  rendered by mkdocstrings from the docstrings, appended to the nav's "API reference" section.

``tests/test_docs.py`` loads this file to compare the generated text with what the command line prints.
``python docs/hooks.py`` rewrites the README's model table from the registry.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "splitattn"
HELP_COLUMNS = 100  # the width of the --help texts in the CLI reference (the COLUMNS a terminal would set)
ROOT_PAGES = {"index.md": "README.md", "benchmarks.md": "BENCHMARKS.md"}  # site page <- repository file
REFERENCE_SECTION = "API reference"
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")
README_TABLE = re.compile(r"(<!-- model-table -->\n)(.*?)(<!-- end model-table -->)", re.S)
LINK = re.compile(r"(\]\()([^)#\s]*)")
MODEL_COLUMNS = ("name", "params (M)", "GMACs", "input", "published", "evaluation per weight source", "aliases")

Row = Tuple[str, ...]


# ---------------------------------------------------------------- the model table and the weight files


def model_rows() -> List[Row]:
    """One row per registered model, the cells ``splitattn models`` prints (several weight sources: one cell,
    the protocols joined by ``; ``)."""
    import splitattn
    from splitattn.models import count_macs, count_params
    from splitattn.weights import CHECKPOINTS

    rows = []
    for name in splitattn.list_models():
        spec = splitattn.get_model_spec(name)
        model = splitattn.create_model(name)
        size = spec.eval_config.input_size
        published = f"{spec.published_params_m}M" if spec.published_params_m is not None else ""
        if published and spec.published_gmacs is not None:
            published += f" {spec.published_gmacs}G"
        protocols = [f"{c.source}: {c.eval_config.describe()}" for c in CHECKPOINTS.get(name, ())]
        protocols = protocols or [f"no weights: {spec.eval_config.describe()}"]
        params, gmacs = count_params(model) / 1e6, count_macs(model, size) / 1e9
        rows.append(
            (name, f"{params:.2f}", f"{gmacs:.2f}", str(size), published, "; ".join(protocols), ", ".join(spec.aliases))
        )
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Row]) -> str:
    """A GitHub-flavoured markdown table (``|`` inside a cell escaped)."""
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |\n" for line in lines)


def model_table() -> str:
    return markdown_table(MODEL_COLUMNS, model_rows())


def weight_files_table() -> str:
    """Every published weight file, in the order each model's sources are tried, with its evaluation protocol."""
    from splitattn.weights import CHECKPOINTS

    rows = []
    for model, sources in CHECKPOINTS.items():
        for checkpoint in sources:
            config = checkpoint.eval_config
            rows.append(
                (
                    f"`{model}`",
                    checkpoint.source,
                    f"[`{checkpoint.filename}`]({checkpoint.url})",
                    f"`{checkpoint.sha256}`" if checkpoint.sha256 else "none published",
                    f"{config.input_size} px, `{config.crop_mode}`, crop_pct {config.crop_pct:.4g}, {config.interpolation}",
                )
            )
    header = ("model", "source", "file", "sha256 (prefix)", "evaluation protocol")
    return markdown_table(header, rows)


# ---------------------------------------------------------------- the CLI reference


def cli_commands() -> List[Tuple[str, Any]]:
    """``(command, parser)`` for the entry point and every subcommand, in the order ``--help`` lists them."""
    from splitattn.cli import build_parser

    found: List[Tuple[str, Any]] = []

    def walk(parser: Any) -> None:
        found.append((parser.prog, parser))
        for action in parser._actions:
            for child in dict.fromkeys(getattr(action, "_name_parser_map", {}).values()):  # aliases: once
                walk(child)

    walk(build_parser())
    return found


def help_text(parser: Any, columns: int = HELP_COLUMNS) -> str:
    """``parser.format_help()`` as a terminal ``columns`` wide prints it (argparse reads ``COLUMNS``)."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        return parser.format_help()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def cli_reference() -> str:
    parts = []
    for prog, parser in cli_commands():  # ids of their own: "splitattn" alone would clash with the API page's
        parts.append(f"## `{prog}` {{#{'-'.join(['cli', *prog.split()[1:]])}}}\n\n```text\n{help_text(parser)}```\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- the API reference


def public_modules() -> List[str]:
    """Dotted names of the package and its modules, skipping any whose name starts with ``_`` (and ``__main__``)."""
    names = []
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


def is_package(module: str) -> bool:
    return (REPO.joinpath(*module.split(".")) / "__init__.py").is_file()


def reference_path(module: str) -> str:
    """Site path of a module's page: ``reference/splitattn/models/registry.md``, packages ``.../index.md``."""
    path = "/".join(["reference", *module.split(".")])
    return f"{path}/index.md" if is_package(module) else f"{path}.md"


def _defines(module: str, name: str) -> bool:
    """Whether ``module``'s source defines ``name`` at its top level (a def, a class or an assignment)."""
    path = REPO.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return True
    return False


def _home(package: str, name: str, modules: Sequence[str]) -> Optional[str]:
    """The public module whose page documents ``package.name``: where its object says it was defined, else the
    first module under ``package`` that assigns it."""
    value = getattr(importlib.import_module(package), name)
    where = getattr(value, "__module__", None) if inspect.isclass(value) or inspect.isroutine(value) else None
    if where in modules and where != package:
        return where
    return next((m for m in modules if m.startswith(package + ".") and _defines(m, name)), None)


def package_page(package: str, modules: Sequence[str]) -> str:
    """The package's docstring, its public names (linked to the page of the module defining each), its modules."""
    lines = [f"# `{package}`\n", f"::: {package}\n    options:\n      show_root_heading: false\n      members: false\n"]
    exported = [n for n in getattr(importlib.import_module(package), "__all__", ()) if not n.startswith("_")]
    if exported:
        lines.append("## Public names\n\n| name | defined in |\n|---|---|")
        for name in exported:
            home = _home(package, name, modules)
            cell = f"[`{name}`][{home}.{name}]" if home else f"`{name}`"
            lines.append(f"| {cell} | " + (f"[`{home}`][{home}]" if home else "") + " |")
        lines.append("")
    children = [m for m in modules if m.rpartition(".")[0] == package]
    if children:
        lines.append("## Modules\n")
        lines += [f"- [`{child}`][{child}]" for child in children]
    return "\n".join(lines) + "\n"


def module_page(module: str) -> str:
    return f"::: {module}\n    options:\n      heading_level: 1\n"


def reference_nav(modules: Sequence[str], package: str = PACKAGE) -> List[Dict[str, Any]]:
    """Nav entries of ``package``'s pages: its own page, then its modules and subpackages (as sections)."""
    entries: List[Dict[str, Any]] = [{package: reference_path(package)}]
    for child in (m for m in modules if m.rpartition(".")[0] == package):
        entries.append({child: reference_nav(modules, child)} if is_package(child) else {child: reference_path(child)})
    return entries


# ---------------------------------------------------------------- links and markers


def site_links(markdown: str, page: str) -> str:
    """Rewrite links between repository files for the site: ``docs/x.md`` (from the root files) -> ``x.md``;
    ``README.md`` / ``BENCHMARKS.md`` (or ``../`` of them, from docs/) -> their site pages."""
    site_names = {source: page for page, source in ROOT_PAGES.items()}
    from_root = page in ROOT_PAGES

    def rewrite(match: re.Match) -> str:
        target = match.group(2)
        base = target[3:] if target.startswith("../") and not from_root else target
        if base in site_names:
            return match.group(1) + site_names[base]
        if from_root and target.startswith("docs/"):
            return match.group(1) + target[len("docs/") :]
        return match.group(0)

    return LINK.sub(rewrite, markdown)


GENERATORS = {"model-table": model_table, "weight-files": weight_files_table, "cli-reference": cli_reference}


def fill_markers(markdown: str, cache: Dict[str, str]) -> str:
    """Replace each ``<!-- generated: NAME -->`` (and the README's model table) with its generated text."""

    def generated(name: str) -> str:
        if name not in GENERATORS:
            raise ValueError(f"unknown generated block {name!r}; docs/hooks.py knows {', '.join(GENERATORS)}")
        if name not in cache:
            cache[name] = GENERATORS[name]()
        return cache[name]

    markdown = README_TABLE.sub(lambda m: m.group(1) + generated("model-table") + m.group(3), markdown)
    return MARKER.sub(lambda m: generated(m.group(1)), markdown)


# ---------------------------------------------------------------- the mkdocs events

_CACHE: Dict[str, str] = {}


def on_config(config: Any) -> Any:
    modules = public_modules()
    for entry in config["nav"] or ():
        if isinstance(entry, dict) and REFERENCE_SECTION in entry:
            entry[REFERENCE_SECTION] = [*entry[REFERENCE_SECTION], *reference_nav(modules)]
            return config
    raise ValueError(f"mkdocs.yml's nav needs an {REFERENCE_SECTION!r} section for the generated module pages")


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    _CACHE.clear()
    for page, source in ROOT_PAGES.items():
        if files.get_file_from_path(page) is not None:
            raise ValueError(f"docs/{page} would hide the page generated from {source}; edit {source} instead")
        files.append(File.generated(config, page, content=(REPO / source).read_text()))
    modules = public_modules()
    for module in modules:
        content = package_page(module, modules) if is_package(module) else module_page(module)
        files.append(File.generated(config, reference_path(module), content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri == "index.md":  # the README's title: an id of its own, not the package's
        markdown = re.sub(r"\A# (.+)", r"# \1 {#home}", markdown)
    return fill_markers(site_links(markdown, page.file.src_uri), _CACHE)


if __name__ == "__main__":  # refresh the README's copy of the model table
    readme = REPO / "README.md"
    text = readme.read_text()
    if not README_TABLE.search(text):
        sys.exit("README.md has no <!-- model-table --> ... <!-- end model-table --> block")
    readme.write_text(README_TABLE.sub(lambda m: m.group(1) + model_table() + m.group(3), text))
    print("README.md: model table rewritten from the registry")
