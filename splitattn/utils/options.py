"""Command options declared once as a table, so every option is also a config-file key (task-agnostic).

A table row is ``(flags, default, argparse keywords)``. ``add_options`` puts the rows on a
parser built with ``argument_default=argparse.SUPPRESS`` (so only flags typed on the command
line reach the namespace) and ``resolve_options`` merges defaults < config file < command line
through ``merge_options``.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Sequence, Tuple

from .config import merge_options

OptionRow = Tuple[Tuple[str, ...], Any, Dict[str, Any]]


def option_name(flags: Sequence[str]) -> str:
    """``("--batch-size", "-b")`` -> ``"batch_size"``."""
    return flags[0].lstrip("-").replace("-", "_")


def option_defaults(table: Sequence[OptionRow]) -> Dict[str, Any]:
    return {option_name(flags): default for flags, default, _ in table}


def add_options(parser: argparse.ArgumentParser, table: Sequence[OptionRow]) -> None:
    """Add every row, its default shown in the help."""
    for flags, default, keywords in table:
        keywords = dict(keywords)
        keywords["help"] = f"{keywords.get('help', '')} (default: {default})".strip()
        parser.add_argument(*flags, **keywords)


def resolve_options(args: argparse.Namespace, table: Sequence[OptionRow], config_key: str = "config") -> Dict[str, Any]:
    """Defaults < the ``--config`` file < the command line, as one dict; bad keys/choices are errors."""
    defaults = option_defaults(table)
    explicit = {key: value for key, value in vars(args).items() if key in defaults}
    choices = {option_name(flags): kw["choices"] for flags, _, kw in table if "choices" in kw}
    return merge_options(defaults, explicit, explicit.get(config_key), choices)

