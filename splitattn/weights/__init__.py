"""Pretrained weights: the registry of published checkpoints, cached verified downloads, safe loading."""

from ..errors import CheckpointMismatchError, ChecksumError, DownloadError, UnsafeCheckpointError, WeightsError
from .download import (
    cache_dir,
    checkpoint_url,
    download_file,
    fetch_checkpoint,
    fetch_pretrained,
    fetch_url,
)
from .files import sha256_file
from .loading import (
    adapt_input_conv,
    extract_state_dict,
    fit_state_dict,
    load_checkpoint,
    load_pretrained,
    load_state_dict_into,
    read_checkpoint,
    read_pretrained,
    save_state_dict,
)
from .runs import RunModel, run_model
from .sources import CHECKPOINTS, Checkpoint, checkpoints_for, find_checkpoint

__all__ = [
    "CHECKPOINTS",
    "Checkpoint",
    "RunModel",
    "CheckpointMismatchError",
    "ChecksumError",
    "DownloadError",
    "UnsafeCheckpointError",
    "WeightsError",
    "adapt_input_conv",
    "cache_dir",
    "checkpoint_url",
    "checkpoints_for",
    "download_file",
    "extract_state_dict",
    "fetch_checkpoint",
    "fetch_pretrained",
    "fetch_url",
    "find_checkpoint",
    "fit_state_dict",
    "load_checkpoint",
    "load_pretrained",
    "load_state_dict_into",
    "read_checkpoint",
    "read_pretrained",
    "run_model",
    "save_state_dict",
    "sha256_file",
]
