"""The exceptions splitattn raises on purpose, under one base class.

Every error the library raises deliberately (a bad option, a damaged file, data it cannot use, a
missing optional package) is a ``SplitAttnError``, so a caller can catch the library's errors in one
``except`` clause and the command line can tell them from bugs by their type alone: a
``UsageError`` exits with code 2, any other ``SplitAttnError`` (and an ``OSError`` such as a missing
file) with code 1 and one line of text; anything else is reported as a likely bug.

Each class also derives from the built-in exception that its callers caught before it existed
(``ValueError`` for bad values, ``RuntimeError`` for run failures, ``ImportError`` for missing
packages), so ``except ValueError`` keeps working.

This module imports nothing, so every layer of the package can use it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MissingDependencyError",
    "NonFiniteLossError",
    "SplitAttnError",
    "TrainingInterrupted",
    "UsageError",
    "WeightsError",
]


class SplitAttnError(Exception):
    """Base class of every error splitattn raises on purpose; its message says what is wrong and the fix."""


class UsageError(SplitAttnError, ValueError):
    """Options or arguments that cannot work together (the command line exits with code 2)."""


class ConfigError(UsageError):
    """A training option that is unknown, of the wrong type or out of range, found before any data is read."""


class DataError(SplitAttnError, ValueError):
    """A data set, annotation file or label map that cannot be used as it is; the message names the file."""


class WeightsError(SplitAttnError, RuntimeError):
    """A weights file or checkpoint that cannot be fetched, verified or loaded."""


class CheckpointError(SplitAttnError, ValueError):
    """A run checkpoint that does not fit the command (another task's run, bare weights, a damaged entry)."""


class MissingDependencyError(SplitAttnError, ImportError):
    """An optional package a command needs is not installed; the message gives the pip command."""


class NonFiniteLossError(SplitAttnError, RuntimeError):
    """The training loss became NaN or infinite; the last checkpoint is intact."""


class TrainingInterrupted(SplitAttnError, RuntimeError):
    """Training stopped on a signal (SIGTERM, SIGUSR1, Ctrl-C) after saving ``last.pt`` at the current step."""
