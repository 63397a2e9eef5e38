"""The code blocks of the documentation, and a runner that executes a page's Python blocks as a reader would.

``python tests/docs_snippets.py PAGE.md`` runs every ```` ```python ```` block of the page in order, in one
namespace, in the current folder, with name resolution limited to 127.0.0.1 (the test that starts it provides
the pretrained weights in a local cache). A failure's traceback names the page and its line.

Shell blocks (```` ```bash ````) are read as command lines: ``commands`` finds each ``splitattn ...``,
``python -m splitattn ...`` and ``torchrun ... -m splitattn ...`` (continuation lines joined, comments and
other commands of the line dropped) for ``tests/test_docs.py`` to parse with the real argument parser.
"""

from __future__ import annotations

import re
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

FENCE = re.compile(r"^```(\w*)[^\n]*$")
INLINE_COMMAND = re.compile(r"`((?:python3? -m )?splitattn [^`]+)`")
PRINTED = re.compile(r"splitattn [a-z ]*[a-z]: ")  # a message the command line printed
SHELL_LANGUAGES = ("bash", "sh", "shell")
OPERATORS = ("&&", "||", ";", "|")


@dataclass(frozen=True)
class Block:
    page: Path
    language: str
    line: int  # line number of the block's first code line (1-based)
    code: str


def blocks(page: Path) -> List[Block]:
    """The fenced code blocks of a markdown page, in order."""
    found: List[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].startswith("```")), None)
        if end is None:
            raise ValueError(f"{page}:{index + 1}: a code block that is never closed")
        found.append(Block(page, match.group(1), index + 2, "\n".join(lines[index + 1 : end]) + "\n"))
        index = end + 1
    return found


def prose(page: Path) -> str:
    """The page's text outside the fenced code blocks."""
    text, inside = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside:
            text.append(line)
    return "\n".join(text)


def shell_lines(block: Block) -> Iterator[Tuple[int, List[str]]]:
    """``(line number, tokens)`` of each command line of a shell block, continuation lines joined."""
    pending, start = "", block.line
    for offset, line in enumerate(block.code.splitlines()):
        if not pending:
            start = block.line + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        tokens = shlex.split(pending + line, comments=True)
        pending = ""
        if tokens:
            yield start, tokens


def splitattn_argv(tokens: List[str]) -> List[List[str]]:
    """The splitattn argument lists of one shell line: after ``splitattn`` or ``-m splitattn``, up to the next
    ``&&``/``||``/``;``/``|``. Environment assignments (``PYTHONPATH=.``) in front are skipped."""
    commands, segment = [], []
    for token in [*tokens, ";"]:
        if token not in OPERATORS:
            segment.append(token)
            continue
        words = [word for word in segment if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word)] or [""]
        module_at = [i + 2 for i, pair in enumerate(zip(words, words[1:])) if pair == ("-m", "splitattn")]
        if words[0] == "splitattn":
            commands.append(words[1:])
        elif module_at:
            commands.append(words[module_at[0] :])
        segment = []
    return commands


def commands(page: Path) -> Iterator[Tuple[str, List[str]]]:
    """``("page:line", argv)`` of every splitattn command line in the page's shell blocks."""
    for block in blocks(page):
        if block.language in SHELL_LANGUAGES:
            for line, tokens in shell_lines(block):
                for argv in splitattn_argv(tokens):
                    yield f"{page}:{line}", argv


def inline_commands(page: Path) -> Iterator[Tuple[str, List[str]]]:
    """``("page", argv)`` of every inline code span in the prose that is a splitattn command line (not a quoted
    message such as ``splitattn train: error: ...``)."""
    for match in INLINE_COMMAND.finditer(prose(page)):
        if PRINTED.match(match.group(1)):
            continue
        words = shlex.split(match.group(1))
        yield str(page), words[words.index("splitattn") + 1 :]


def _local_only() -> None:
    """Refuse to resolve any host name but the local one, as a machine without a network would."""
    resolve = socket.getaddrinfo

    def local(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(f"no network in the documentation tests ({host})")
        return resolve(host, *args, **kwargs)

    socket.getaddrinfo = local


def run_python_blocks(page: Path) -> None:
    """Execute the page's Python blocks in order in one namespace; line numbers in tracebacks are the page's."""
    namespace: Dict[str, object] = {"__name__": "__main__"}
    for block in blocks(page):
        if block.language == "python":
            print(f"--- {page}:{block.line}", flush=True)
            exec(compile("\n" * (block.line - 1) + block.code, str(page), "exec"), namespace)


if __name__ == "__main__":
    _local_only()
    run_python_blocks(Path(sys.argv[1]))
