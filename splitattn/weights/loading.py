"""Reading checkpoints without executing code, finding the weights in them, and fitting them to a model.

Pickle-based files go through ``torch.load(weights_only=True)``, which only rebuilds
tensors and plain containers; anything else (a class whose unpickling runs code) is
refused before it runs. Safetensors files hold nothing but tensors.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import struct
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import safetensors.torch
import torch
from torch import Tensor, nn

from ..errors import CheckpointMismatchError, UnsafeCheckpointError, UsageError, WeightsError
from .download import fetch_checkpoint, fetch_pretrained, fetch_url
from .files import atomic_path, check_sha256
from .runs import RunModel, is_run_checkpoint, is_state_dict, run_backbone, run_model, strip_wrapper_prefixes
from .sources import eval_config_for_file, hash_from_name

StateDict = Dict[str, Tensor]
PathLike = Union[str, "os.PathLike[str]"]

# Where training checkpoints keep the weights, tried in this order (the raw model before EMA copies).
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema", "ema")
CLASSIFIER_KEYS = ("fc.weight", "fc.bias")
SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_MAX_LISTED = 12


def checkpoint_format(path: Path) -> Optional[str]:
    """``"safetensors"`` or ``"torch"`` (a torch.save zip or a legacy pickle) by content, whatever the name;
    ``None`` for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < os.path.getsize(path):
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # zip archive; pickle protocol >= 2
        return "torch"
    return None


def read_checkpoint(path: PathLike) -> Any:
    """The object stored in a checkpoint file, loaded without executing any pickled code (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file {path} does not exist.")
    kind = checkpoint_format(path)
    if kind is None:
        raise WeightsError(
            f"{path} is not a readable PyTorch or safetensors checkpoint (neither a torch.save file nor a "
            "safetensors file); a truncated download or a different file format are the usual causes."
        )
    if kind == "safetensors":
        try:
            return safetensors.torch.load_file(str(path))
        except Exception as error:  # safetensors raises its own SafetensorError
            raise WeightsError(
                f"{path} is a damaged safetensors file ({error}); download or convert it again."
            ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = re.search(r"GLOBAL (\S+)", str(error))
        what = f"it references {blocked.group(1)}" if blocked else "it uses pickle instructions beyond plain data"
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: {what}, which only loads by executing code from the file. splitattn loads "
            "tensors and plain containers only (torch.load weights_only=True). If you trust the file's origin, "
            "load it yourself with torch.load(..., weights_only=False) and save just its state_dict."
        ) from None
    except Exception as error:  # torch raises RuntimeError, KeyError, EOFError ... on non-checkpoints
        raise WeightsError(
            f"{path} is not a readable PyTorch or safetensors checkpoint ({type(error).__name__}: {error}); "
            "a truncated download or a different file format are the usual causes."
        ) from error


def extract_state_dict(obj: Any, key: Optional[str] = None, origin: str = "checkpoint") -> StateDict:
    """The model weights in a loaded checkpoint.

    Args:
        obj: what ``read_checkpoint`` returned: a state dict, or a training checkpoint holding one.
        key: the entry holding the weights (default: the first of ``STATE_DICT_KEYS`` present).
        origin: the file, for messages.

    Returns:
        The state dict, wrapper prefixes (``module.``, ``_orig_mod.``) removed. A run checkpoint whose task
        wraps the ResNeSt (``splitattn detect|segment train``) names the backbone's key prefix in its
        ``backbone_prefix`` entry: the keys under it are returned without it (as ``features_only`` models
        have them; no classifier).

    Raises:
        UsageError: ``key`` is not an entry of the checkpoint.
        WeightsError: no state dict is found, the prefix matches no key, or a run checkpoint from before
            ``backbone_prefix`` existed holds its network below the top level.
    """
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            keys = list(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise UsageError(f"{origin} has no entry {key!r}; its top-level keys: {keys}.")
        obj = obj[key]
    elif is_run_checkpoint(obj):
        obj = run_backbone(obj, origin)
    elif not is_state_dict(obj) and isinstance(obj, Mapping):
        obj = next((obj[k] for k in STATE_DICT_KEYS if is_state_dict(obj.get(k))), obj)
    if not is_state_dict(obj):
        found = list(obj)[:_MAX_LISTED] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(
            f"{origin} holds no state dict (a mapping of names to tensors) at the top level or under any of "
            f"{', '.join(STATE_DICT_KEYS)}; found: {found}. Pick the entry with key=... (CLI: --key)."
        )
    return strip_wrapper_prefixes(obj)


def load_checkpoint(path: PathLike, key: Optional[str] = None) -> StateDict:
    """Read ``path`` safely and return its model weights (see ``extract_state_dict``)."""
    return extract_state_dict(read_checkpoint(path), key, origin=str(path))


def save_state_dict(state_dict: Mapping[str, Tensor], path: PathLike) -> Path:
    """Write a state dict atomically as safetensors (``.safetensors``) or a torch file (``.pth/.pt/.bin``)."""
    path = Path(path)
    if path.suffix not in TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,):
        raise UsageError(
            f"Cannot tell the format of {path}: name it *{SAFETENSORS_SUFFIX} or one of "
            f"{', '.join('*' + s for s in TORCH_SUFFIXES)}."
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        if path.suffix == SAFETENSORS_SUFFIX:
            safetensors.torch.save_file(tensors, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(tensors, tmp)
    return path


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """First-conv weights (out, c, kh, kw) for ``in_chans`` inputs.

    One channel: the filters summed over their inputs (a grey image replicated to RGB gives
    the same response). More: the filters cycled over the new channels and scaled by
    ``c / in_chans`` so the activations keep their magnitude (exactly, for a grey image, when
    ``in_chans`` is a multiple of ``c``).
    """
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def _listing(title: str, items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED]) + (
        f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    )
    return f"{len(items)} {title}: {shown}"


def fit_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], origin: str = "checkpoint", new_classifier: bool = False
) -> StateDict:
    """Check ``state_dict`` against ``model`` and adapt it where that is well defined; raise otherwise.

    - a model without classifier (``features_only``, ``num_classes=0``) drops the ``fc`` keys;
    - a classifier of another size (or none in the checkpoint): with ``new_classifier`` (the caller asked for a
      class count of its own: fine-tuning) the model keeps its fresh one, with a warning; otherwise it is an
      error, never a random classifier passed off as a trained one;
    - a first conv with another input channel count is adapted (``adapt_input_conv``).
    Any other missing/unexpected key or shape difference raises one ``CheckpointMismatchError`` listing all.
    """
    own = model.state_dict()
    sd = dict(state_dict)
    if "fc.weight" not in own:
        for key in CLASSIFIER_KEYS:
            sd.pop(key, None)
    elif "fc.weight" not in sd or sd["fc.weight"].shape != own["fc.weight"].shape:
        found = f"{sd['fc.weight'].shape[0]} classes" if "fc.weight" in sd else "no classifier"
        wanted = own["fc.weight"].shape[0]
        if not new_classifier:
            fix = (
                f"build the model with num_classes={sd['fc.weight'].shape[0]} (create_model takes the file's count "
                "when num_classes is left unset)"
                if "fc.weight" in sd
                else "build a backbone (features_only=True)"
            )
            raise CheckpointMismatchError(
                f"{origin} has {found} and the model {wanted}; nothing was loaded (a fresh classifier would "
                f"give random predictions). To predict, {fix}; to train a new classifier on these weights "
                "(fine-tuning), pass num_classes explicitly."
            )
        warnings.warn(
            f"{origin} has {found} and the model {wanted}: the classifier (fc) keeps its "
            "fresh initialisation and must be trained (fine-tuning).",
            UserWarning,
            stacklevel=3,
        )
        for key in CLASSIFIER_KEYS:
            if key in own:
                sd[key] = own[key]
    stem = "conv1.0.weight" if "conv1.0.weight" in own else "conv1.weight"
    if stem in sd and sd[stem].dim() == 4 and sd[stem].shape[1] != own[stem].shape[1]:
        sd[stem] = adapt_input_conv(sd[stem], own[stem].shape[1])

    def counted(key: str) -> bool:  # BatchNorm step counters carry no weights; torch fills them in
        return not key.endswith("num_batches_tracked")

    missing = [k for k in own if k not in sd and counted(k)]
    unexpected = [k for k in sd if k not in own and counted(k)]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        problems = [
            _listing(t, items)
            for t, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches (checkpoint vs model)", shapes),
            )
            if items
        ]
        name = getattr(model, "model_name", None) or type(model).__name__
        raise CheckpointMismatchError(
            f"{origin} does not fit {name}; nothing was loaded.\n"
            + "\n".join(problems)
            + "\nLoad a checkpoint of the same architecture, built with the same overrides (norm_layer, widths ...)."
        )
    return {k: v for k, v in sd.items() if k in own}


def load_state_dict_into(
    model: nn.Module, state_dict: Mapping[str, Tensor], origin: str = "checkpoint", new_classifier: bool = False
) -> nn.Module:
    """Load weights into ``model`` after ``fit_state_dict`` (all or nothing; ``new_classifier``: see there);
    return the model."""
    fitted = fit_state_dict(model, strip_wrapper_prefixes(state_dict), origin, new_classifier)
    model.load_state_dict(fitted, strict=True)
    return model


def _locate(
    name: str, pretrained: Union[bool, PathLike], progress: Optional[bool]
) -> Tuple[Path, Optional[Callable[[], Path]]]:
    """The local file behind ``pretrained`` and, for a downloaded (cached) file, how to fetch it again."""
    if pretrained is True:
        path, checkpoint = fetch_pretrained(name, progress)
        return path, lambda: fetch_checkpoint(checkpoint, progress, refresh=True)
    if not isinstance(pretrained, (str, os.PathLike)) or isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True, a file path or a URL, got {pretrained!r}.")
    text = os.fspath(pretrained)
    if re.match(r"^(https?|file)://", text):
        return fetch_url(text, progress), lambda: fetch_url(text, progress, refresh=True)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint file {path} does not exist; pass pretrained=True for the registered weights of {name}, "
            "or the path or URL of a checkpoint."
        )
    check_sha256(path, hash_from_name(path.name))
    return path, None


def read_pretrained(
    name: str, pretrained: Union[bool, PathLike], progress: Optional[bool] = None
) -> Tuple[Path, StateDict, Optional[RunModel]]:
    """The weights ``pretrained`` names for model ``name``, the file they were read from, and, for a training
    run's checkpoint, the model its options describe.

    Args:
        name: registered model name (for ``pretrained=True`` and the error messages).
        pretrained: ``True`` (the registered weights of ``name``), a path or a URL. URLs are cached like
            registered files; files named ``-<8 hex>.pth`` must match that hash (a local file failing it is
            refused, never deleted).
        progress: download progress bar; ``None``: on a terminal only.

    Returns:
        ``(path, state_dict, run_model(checkpoint))``.

    Raises:
        WeightsError: the file cannot be fetched (``DownloadError``), fails its hash (``ChecksumError``), holds
            pickled code (``UnsafeCheckpointError``) or no state dict. A downloaded file that cannot be read
            (damaged, cut short) is fetched again once, with a warning, before this is raised.
        FileNotFoundError: a local path that does not exist.
    """
    path, fetch_again = _locate(name, pretrained, progress)
    try:
        obj = read_checkpoint(path)
    except UnsafeCheckpointError:
        raise
    except WeightsError as error:
        if fetch_again is None:
            raise
        warnings.warn(f"{error} The cached copy is fetched again.", UserWarning, stacklevel=2)
        path = fetch_again()
        obj = read_checkpoint(path)
    return path, extract_state_dict(obj, origin=str(path)), run_model(obj)


def load_pretrained(
    model: nn.Module, name: str, pretrained: Union[bool, PathLike], progress: Optional[bool] = None
) -> nn.Module:
    """Load ``pretrained`` weights (``True``, a path or a URL, see ``read_pretrained``) into ``model`` built as
    ``name``; a model carrying ``eval_config`` gets the evaluation protocol of the file loaded. Returns it."""
    path, state_dict, _ = read_pretrained(name, pretrained, progress)
    load_state_dict_into(model, state_dict, origin=str(path))
    if hasattr(model, "eval_config"):
        model.eval_config = eval_config_for_file(name, path)
    return model
