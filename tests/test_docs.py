"""The documentation: the site builds with ``--strict``, its generated parts equal what the command line prints,
and every code block of README.md, BENCHMARKS.md and docs/ runs (Python) or parses (shell) as pasted.

Rules for the code blocks (``tests/docs_snippets.py`` reads them):

- each page's ```` ```python ```` blocks run in order in one namespace, in a fresh folder laid out like the
  repository's (``configs/`` beside it, ``../shared/data`` above it), offline: pretrained weights are
  random-valued files of the right shapes in a local ``SPLITATTN_HOME`` cache, as a user without network
  would provide them;
- every ``splitattn ...`` / ``python -m splitattn ...`` / ``torchrun ... -m splitattn ...`` line of a
  ```` ```bash ```` block is parsed by ``splitattn.cli.build_parser()``; ``--help``, ``models`` and
  ``weights list`` are run; ``configs/...`` and ``benchmarks/...`` files they name must exist;
- every inline ```` `splitattn ...` ```` span in the prose names real subcommands and flags.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from .conftest import REPO_ROOT, SHARED_DATA
from .docs_snippets import blocks, commands, inline_commands, shell_lines

DOCS = REPO_ROOT / "docs"
PAGES = [REPO_ROOT / "README.md", REPO_ROOT / "BENCHMARKS.md", *sorted(DOCS.rglob("*.md"))]
PYTHON_PAGES = [page for page in PAGES if any(block.language == "python" for block in blocks(page))]
COLUMNS = 100  # the CLI reference's width; the subprocesses get the same COLUMNS
RUN_ALWAYS = (["models"], ["weights", "list"])  # quick commands that run here; also anything with --help


def _name(page: Path) -> str:
    return str(page.relative_to(REPO_ROOT))


def _hooks():
    spec = importlib.util.spec_from_file_location("splitattn_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(tmp: Path) -> Dict[str, str]:
    """A child process's environment: this checkout, one thread, private caches, no hub access."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
        COLUMNS=str(COLUMNS),
        SPLITATTN_HOME=str(tmp / "home"),
        TORCH_HOME=str(tmp / "torch"),
        HF_HOME=str(tmp / "hf"),
        HF_HUB_OFFLINE="1",
        MPLBACKEND="Agg",
        NO_MKDOCS_2_WARNING="1",
    )
    env.pop("SPLITATTN_WEIGHTS_MIRROR", None)
    return env


def _runnable(argv: List[str]) -> bool:
    return "--help" in argv or "-h" in argv or any(argv[: len(prefix)] == prefix for prefix in RUN_ALWAYS)


def _needs_shared_data() -> None:
    if not SHARED_DATA.is_dir():
        message = f"the documentation's examples read {SHARED_DATA}, which is absent"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def cli_output(tmp_path_factory: pytest.TempPathFactory):
    """``python -m splitattn ARGV`` run once per argv in this module: its stdout (it must exit 0)."""
    tmp = tmp_path_factory.mktemp("cli")
    cache: Dict[Tuple[str, ...], str] = {}

    def run(argv: List[str]) -> str:
        if tuple(argv) not in cache:
            result = subprocess.run(
                [sys.executable, "-m", "splitattn", *argv], cwd=tmp, env=_env(tmp), capture_output=True, text=True
            )
            assert result.returncode == 0, f"splitattn {' '.join(argv)}:\n{result.stdout}\n{result.stderr}"
            cache[tuple(argv)] = result.stdout
        return cache[tuple(argv)]

    return run


# ---------------------------------------------------------------- fast checks of the pages' text


def test_readme_is_a_front_page_that_starts_with_the_two_setup_commands() -> None:
    readme = REPO_ROOT / "README.md"
    lines = readme.read_text().splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; move details into docs/"
    first = blocks(readme)[0]
    assert first.code.splitlines() == [
        'python3 -m pip install -e ".[all]" && splitattn train     # set-up, then the main job: train on built-in data',
        'python3 -m pip install -e ".[test]" && python3 -m pytest  # set-up, then the test suite (what CI runs)',
    ]
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme.read_text()


def test_every_page_is_in_the_nav_and_every_link_target_exists() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())

    def pages(nav) -> List[str]:
        if isinstance(nav, str):
            return [nav]
        items = nav.values() if isinstance(nav, dict) else nav
        return [page for item in items for page in pages(item)]

    listed = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk <= listed, f"pages missing from mkdocs.yml's nav: {sorted(on_disk - listed)}"
    for page in (REPO_ROOT / "README.md", REPO_ROOT / "BENCHMARKS.md"):
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{_name(page)} links to a missing {target}"


def test_shell_command_lines_parse_with_the_real_parser() -> None:
    """Every splitattn command line of a shell block parses (a renamed or removed flag fails here), and the
    repository files the shell blocks name exist."""
    from splitattn.cli import build_parser

    checked = 0
    for page in PAGES:
        for where, argv in commands(page):
            if _runnable(argv):
                continue  # run by test_quick_commands_run
            try:
                build_parser().parse_args(argv)
            except SystemExit as error:
                pytest.fail(f"{where}: `splitattn {' '.join(argv)}` does not parse (exit {error.code})")
            checked += 1
        for block in blocks(page):
            if block.language == "bash":
                for line, tokens in shell_lines(block):
                    for token in tokens:
                        if token.startswith(("configs/", "benchmarks/")):
                            assert (REPO_ROOT / token).exists(), f"{_name(page)}:{line}: no file {token}"
    assert checked > 30


def test_inline_command_spans_name_real_subcommands_and_flags() -> None:
    from splitattn.cli import build_parser

    for page in PAGES:
        for where, argv in inline_commands(page):
            parser = build_parser()
            for word in argv:
                choices = next((a.choices for a in parser._actions if isinstance(a.choices, dict)), {})
                if word not in choices:
                    break
                parser = choices[word]
            for flag in (word.split("=")[0] for word in argv if word.startswith("--")):
                assert flag in parser._option_string_actions, f"{where}: `splitattn {' '.join(argv)}`: no {flag}"


# ---------------------------------------------------------------- commands, the model table, the CLI reference


@pytest.mark.slow
def test_quick_commands_run(cli_output) -> None:
    """The command lines of the pages that run in seconds here (--help, models, weights list) exit 0."""
    found = {tuple(argv) for page in PAGES for _, argv in commands(page) if _runnable(argv)}
    assert ("models",) in found and ("train", "--help") in found
    for argv in sorted(found):
        cli_output(list(argv))


def _parse_models_table(text: str) -> List[Tuple[str, ...]]:
    """The rows of ``splitattn models``'s fixed-width table (a source's further protocols on lines below)."""
    header, _, *lines = text.splitlines()
    starts = [header.index(title) for title in ("published", "evaluation per weight source", "aliases")]
    rows: List[List[str]] = []
    for line in lines:
        if line[:1].strip():
            name, params, gmacs, size = line[: starts[0]].split()
            cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], len(line)])]
            rows.append([name, params, gmacs, size, *cells])
        else:
            rows[-1][5] += "; " + line.strip()
    return [tuple(row) for row in rows]


@pytest.mark.slow
def test_generated_model_table_equals_the_models_command(cli_output) -> None:
    hooks = _hooks()
    rows = hooks.model_rows()
    assert rows == _parse_models_table(cli_output(["models"]))
    readme = (REPO_ROOT / "README.md").read_text()
    assert hooks.README_TABLE.search(readme).group(2) == hooks.markdown_table(hooks.MODEL_COLUMNS, rows), (
        "README.md's model table differs from the registry: run `python docs/hooks.py` to rewrite it"
    )


@pytest.mark.slow
def test_generated_cli_reference_equals_every_help_text(cli_output) -> None:
    hooks = _hooks()
    pairs = hooks.cli_commands()
    assert {"splitattn", "splitattn classify train", "splitattn detect train", "splitattn weights list"} <= {
        prog for prog, _ in pairs
    }
    with ThreadPoolExecutor(2) as pool:
        printed = list(pool.map(lambda pair: cli_output([*pair[0].split()[1:], "--help"]), pairs))
    reference = hooks.cli_reference()
    for (prog, parser), text in zip(pairs, printed):
        assert hooks.help_text(parser, COLUMNS) == text, prog
        assert f"`{prog}` {{#cli{''.join('-' + w for w in prog.split()[1:])}}}\n\n```text\n{text}```" in reference, prog


# ---------------------------------------------------------------- the site and the Python blocks


@pytest.mark.slow
def test_site_builds_strict_with_generated_pages(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO_ROOT / "mkdocs.yml")]
        + ["--site-dir", str(site)],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    hooks = _hooks()
    cli_page = (site / "cli" / "index.html").read_text()
    for prog, _ in hooks.cli_commands():
        assert f"<code>{prog}</code>" in cli_page, prog
    table_page = (site / "model-table" / "index.html").read_text()
    assert all(f"<td>{name}</td>" in table_page for name in ("resnest14", "resnest269", "resnet50d"))
    assert "resnest50-528c19ca.pth" in table_page
    registry = (site / "reference" / "splitattn" / "index.html").read_text()
    assert 'id="splitattn"' in registry and "create_model" in registry
    pages = list((site / "reference").rglob("index.html"))
    assert len(pages) == len(hooks.public_modules()) + 1  # + the reference's own index
    documented = [p.read_text() for p in pages if "doc-section-title" in p.read_text()]
    assert any("<th>Name</th>" in page and "<th>Default</th>" in page for page in documented)  # parameter tables
    for html in site.rglob("*.html"):
        assert "<!-- generated:" not in html.read_text(), html


@pytest.fixture(scope="module")
def offline_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``SPLITATTN_HOME`` whose cache holds the hub copy of every model a page loads with pretrained weights:
    random values of the right shapes, as a user copies files to a machine without network."""
    return tmp_path_factory.mktemp("offline") / "home"


def _provide_weights(page: Path, home: Path) -> None:
    from safetensors.torch import save_file

    import splitattn
    from splitattn.weights import checkpoints_for

    code = "".join(block.code for block in blocks(page) if block.language == "python")
    loaded = {name for line in code.splitlines() if "pretrained=True" in line for name in re.findall(r'"(\w+)"', line)}
    for name in sorted(loaded & set(splitattn.list_models())):
        hub = next(c for c in checkpoints_for(name) if c.repo is not None)
        path = home / "checkpoints" / hub.filename
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(splitattn.create_model(name).state_dict(), str(path))


@pytest.mark.slow
@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_name)
def test_python_blocks_run_as_pasted(page: Path, tmp_path: Path, offline_home: Path) -> None:
    _needs_shared_data()
    _provide_weights(page, offline_home)
    work = tmp_path / "work"
    work.mkdir()
    (work / "configs").symlink_to(REPO_ROOT / "configs")
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)
    env = _env(tmp_path)
    env["SPLITATTN_HOME"] = str(offline_home)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "docs_snippets.py"), str(page)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"{_name(page)}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
