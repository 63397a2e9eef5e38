"""The ``splitattn`` command line: one entry point, a subcommand per job.

Each subcommand lives next to the code it drives and registers itself through an
``add_parser(subparsers)`` function listed in ``SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# module path -> its add_parser() registers one or more subcommands
SUBCOMMANDS = [
    "splitattn.models.cli",
    "splitattn.weights.cli",
    "splitattn.tasks.classification.cli",
    "splitattn.tasks.segmentation.cli",
    "splitattn.tasks.detection.cli",
    "splitattn.deploy.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitattn", description="ResNeSt models, weights and training.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in SUBCOMMANDS:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as error:
        if getattr(args, "debug", False):
            raise
        print(f"splitattn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
