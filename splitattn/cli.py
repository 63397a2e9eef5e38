"""The ``splitattn`` command line: one entry point, a subcommand per job.

Each subcommand lives next to the code it drives and registers itself through an
``add_parser(subparsers)`` function listed in ``SUBCOMMANDS``; those modules import torch and the
models lazily, inside the functions that run a command, so ``--help`` answers at once.

Exit codes, decided by the exception's type (``splitattn.errors``): 0 done; 2 a usage error (argparse,
or a ``UsageError`` such as a ``ConfigError``: an unknown or ill-typed option, an option combination
that cannot work); 1 a run error (any other ``SplitAttnError``: data it cannot use, a damaged file, a
wrong checkpoint, a non-finite loss, a missing optional package; or an ``OSError`` such as a missing
file), each shown as one line. Running out of memory says how to use less. Any other exception is a
bug (a ``TypeError``, a ``KeyError`` ...): it is shown as what it is, where it was raised, with
``--debug`` for the traceback, and exits 1. A training run stopped by a signal (``TrainingInterrupted``: it
saved ``last.pt`` at the step it reached) exits with 128 + the signal's number (143 for SIGTERM, 130 for
SIGINT, 138 for SIGUSR1 on Linux) and one line saying how to continue.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import signal
import sys
import warnings
from types import TracebackType
from typing import Any, Iterator, List, Optional

from .deps import missing_dependency
from .errors import SplitAttnError, TrainingInterrupted, UsageError

# module path -> its add_parser() registers one or more subcommands
SUBCOMMANDS = [
    "splitattn.models.cli",
    "splitattn.weights.cli",
    "splitattn.deploy.push",
    "splitattn.tasks.classification.cli",
    "splitattn.tasks.segmentation.cli",
    "splitattn.tasks.detection.cli",
    "splitattn.deploy.cli",
]


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                yield from _parsers(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitattn", description="ResNeSt models, weights and training.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in SUBCOMMANDS:
        importlib.import_module(module).add_parser(subparsers)
    for each in _parsers(parser):
        each.allow_abbrev = False  # `detect train --model x` is an error, not a prefix of --model-kwargs
        each.set_defaults(parser_=each)  # the innermost one wins: the command's own, for its usage errors
    return parser


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    """The command line, or exit 2 with the command's own usage, naming the unknown flags and the close ones."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        command: argparse.ArgumentParser = args.parser_
        flags = [flag for flag in command._option_string_actions if flag.startswith("--")]
        hints = [
            f"{word} (did you mean {close[0]}?)" if close else word
            for word in unknown
            for close in [difflib.get_close_matches(word.split("=")[0], flags, n=1) if word.startswith("-") else []]
        ]
        command.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def _command(args: argparse.Namespace) -> str:
    words = [args.command] + [
        value for key, value in vars(args).items() if key.endswith("_command") and isinstance(value, str)
    ]
    return " ".join(words)


def _last_frame(error: BaseException) -> Optional[TracebackType]:
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace


def _show_warnings_plainly(name: str) -> None:
    """Warnings of this command as ``<name>: warning: <message>``, each text once, without source paths (set
    inside ``warnings.catch_warnings``, so the setting ends with the command). Left alone while warnings are
    being recorded (``catch_warnings(record=True)``, pytest.warns)."""
    if not inspect.isfunction(getattr(warnings, "_showwarnmsg_impl", None)):  # a recorder's list.append
        return
    shown = set()

    def show(message: Warning, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        text = str(message).strip()
        if text not in shown:
            shown.add(text)
            print(f"{name}: warning: {text}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    name = f"splitattn {_command(args)}"
    try:
        with warnings.catch_warnings():
            if not getattr(args, "debug", False):
                _show_warnings_plainly(name)
            return int(args.func(args) or 0)
    except Exception as error:
        if getattr(args, "debug", False):
            raise
        error = missing_dependency(error) or error
        if isinstance(error, TrainingInterrupted):  # saved last.pt at the step reached: 128 + the signal's number
            print(f"{name}: {error}", file=sys.stderr)
            return 128 + int(getattr(signal, getattr(error, "signal", None) or "SIGTERM", signal.SIGTERM))
        if isinstance(error, UsageError):
            print(f"{name}: error: {error}", file=sys.stderr)
            return 2
        if type(error).__name__ == "OutOfMemoryError":
            print(
                f"{name}: out of memory: {error}\nLower --batch-size (or use --amp bf16, --grad-checkpointing); "
                "--debug shows the traceback.",
                file=sys.stderr,
            )
            return 1
        if isinstance(error, (SplitAttnError, OSError)):
            print(f"{name}: error: {error}", file=sys.stderr)
            return 1
        where = _last_frame(error)
        at = f" (at {where.tb_frame.f_code.co_filename}:{where.tb_lineno})" if where is not None else ""
        print(
            f"{name}: unexpected {type(error).__name__}: {error}{at}\nThis is likely a bug; rerun with --debug "
            "for the full traceback and report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
