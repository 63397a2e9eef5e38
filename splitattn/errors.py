"""The exceptions splitattn raises on purpose, under one base class.

Every error the library raises deliberately (a bad option, a damaged file, data it cannot use, a
missing optional package) is a ``SplitAttnError``, so a caller can catch the library's errors in one
``except`` clause and the command line can tell them from bugs by their type alone: a
``UsageError`` exits with code 2, any other ``SplitAttnError`` (and an ``OSError`` such as a missing
file) with code 1 and one line of text; anything else is reported as a likely bug.

Each class also derives from the built-in exception that its callers caught before it existed
(``ValueError`` for bad values, ``RuntimeError`` for run failures, ``ImportError`` for missing
packages, ``LookupError`` for a query that found nothing, ``TypeError`` for an unknown keyword argument; ``DeviceError`` is a ``ValueError`` and a
``RuntimeError``), so ``except ValueError`` keeps working.

The hierarchy::

    SplitAttnError
    ├── UsageError (ValueError)                 exit code 2
    │   ├── ConfigError                         a training option
    │   ├── DeviceError (RuntimeError)          an option this machine cannot honour
    │   └── UnknownArgumentError (TypeError)    a keyword a function does not take
    ├── DataError (ValueError)
    │   ├── DetectionDataError
    │   └── SegmentationDataError
    ├── WeightsError (RuntimeError)
    │   ├── ChecksumError
    │   ├── DownloadError
    │   ├── UnsafeCheckpointError
    │   └── CheckpointMismatchError
    ├── CheckpointError (ValueError)
    ├── NotFoundError (LookupError)             a listing that matches nothing
    ├── ExportError (RuntimeError)
    ├── MissingDependencyError (ImportError)
    ├── NonFiniteLossError (RuntimeError)
    ├── DistributedError (RuntimeError)         another process of the job ended or stopped answering
    └── TrainingInterrupted (RuntimeError)

This module imports nothing, so every layer of the package can use it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ChecksumError",
    "ConfigError",
    "DataError",
    "DetectionDataError",
    "DeviceError",
    "DistributedError",
    "DownloadError",
    "ExportError",
    "MissingDependencyError",
    "NonFiniteLossError",
    "NotFoundError",
    "SegmentationDataError",
    "SplitAttnError",
    "TrainingInterrupted",
    "UnknownArgumentError",
    "UnsafeCheckpointError",
    "UsageError",
    "WeightsError",
]


class SplitAttnError(Exception):
    """Base class of every error splitattn raises on purpose; its message says what is wrong and the fix."""


class UsageError(SplitAttnError, ValueError):
    """An argument, option or combination of them that cannot work (the command line exits with code 2)."""


class ConfigError(UsageError):
    """A training option that is unknown, of the wrong type or out of range, found before any data is read."""


class DeviceError(UsageError, RuntimeError):
    """An option this machine cannot honour: a GPU that is not there, bf16 without the CPU instructions."""


class UnknownArgumentError(UsageError, TypeError):
    """A keyword argument that a function does not take (``create_model``'s overrides, ``--model-kwargs``)."""


class DataError(SplitAttnError, ValueError):
    """A data set, annotation file or label map that cannot be used as it is; the message names the file."""


class DetectionDataError(DataError):
    """A detection image or annotation file that cannot be used (malformed, or bad when ``skip_bad`` is off)."""


class SegmentationDataError(DataError):
    """A segmentation data set whose files cannot be paired or whose label maps do not fit the class list."""


class WeightsError(SplitAttnError, RuntimeError):
    """A weights file or checkpoint that cannot be fetched, verified or loaded."""


class ChecksumError(WeightsError):
    """A file's sha256 differs from the registered (or file-name) hash."""


class DownloadError(WeightsError):
    """A file could not be fetched (offline, not found, or the transfer kept breaking)."""


class UnsafeCheckpointError(WeightsError):
    """A pickle-based checkpoint that would need to run code to load."""


class CheckpointMismatchError(WeightsError):
    """A state dict whose keys or shapes do not fit the model."""


class CheckpointError(SplitAttnError, ValueError):
    """A run checkpoint that does not fit the command (another task's run, bare weights, a damaged entry)."""


class NotFoundError(SplitAttnError, LookupError):
    """A registry query that found nothing: no model or no published weights match a pattern or a source."""


class ExportError(SplitAttnError, RuntimeError):
    """An export that failed or whose file does not compute what the eager model computes."""


class MissingDependencyError(SplitAttnError, ImportError):
    """An optional package a command needs is not installed; the message gives the pip command."""


class NonFiniteLossError(SplitAttnError, RuntimeError):
    """The training loss became NaN or infinite; the last checkpoint is intact."""


class DistributedError(SplitAttnError, RuntimeError):
    """Another process of a distributed job ended or did not answer within the process group's timeout."""


class TrainingInterrupted(SplitAttnError, RuntimeError):
    """Training stopped on a signal (SIGTERM, SIGUSR1, Ctrl-C) after saving ``last.pt`` at the current step.

    The command line exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1 on
    Linux; 143 on a process that only learnt from the others that the job stops) and prints the command that
    continues the run (``--resume auto --output RUN``).

    Args:
        message: what stopped and where (the step reached, the checkpoint saved).
        signal: the signal this process received, as ``signal.Signals`` names it (``"SIGTERM"``), or None.
        checkpoint: the ``last.pt`` saved (its folder is the run to continue), or None.
    """

    def __init__(self, message: str, signal: str | None = None, checkpoint: object | None = None) -> None:
        super().__init__(message)
        self.signal = signal
        self.checkpoint = checkpoint

    def __reduce__(self) -> tuple:  # picklable with its fields (handed between processes)
        return (type(self), (str(self), self.signal, self.checkpoint))
