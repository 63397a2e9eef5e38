"""Where every published ResNeSt checkpoint lives, and what is known about each file.

Two sources exist. The official release files carry the first 8 hex digits of their
sha256 in the file name, so a download can be checked byte for byte. For the timm copies on
the Hugging Face hub no hash is recorded here: a download is checked against the sha256 the
hub serves with it (the LFS ETag, ``hub_fetch``) and by loading it strictly (every key and
shape must match the model). They are the only source of the ResNeSt-14/26 weights.

``CHECKPOINTS`` maps a registered model name to its sources, in the order they are tried.
It is a plain dict on purpose: a deployment (or a test) can add or replace entries, e.g.
``CHECKPOINTS["resnest50"] = (Checkpoint(...),)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from ..errors import UsageError
from ..models.eval_config import EvalConfig
from ..models.registry import MODEL_SPECS, get_model_spec

OFFICIAL_BASE_URL = "https://github.com/zhanghang1989/ResNeSt/releases/download/weights_step1/"
HUB_URL = "https://huggingface.co/{repo}/resolve/{revision}/{filename}"
HUB_FILENAME = "model.safetensors"
# The hub revision every timm repository is fetched at. A commit id pins the bytes; "main" follows the
# branch. It stays "main" until the commit ids are recorded (look one up with
# `huggingface_hub.HfApi().model_info(repo).sha`); until then a file is checked against the sha256 the hub
# serves with it and by loading it strictly (every key and shape).
HUB_REVISION = "main"
OFFICIAL = "official"
TIMM_HUB = "timm-hub"

_HUB_CACHE_PREFIX = "models--"  # huggingface_hub's folder of a model repository: models--<owner>--<name>
# A file name that carries its own hash, as the official release and torch.hub name them.
HASHED_NAME = re.compile(r"-([0-9a-f]{8})\.pth$")
_HEX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class Checkpoint:
    """One published file of pretrained weights.

    ``filename`` is both the name in the local cache and the name under which a mirror
    (``SPLITATTN_WEIGHTS_MIRROR``) serves the file. ``sha256`` is the published hash or
    its prefix (lower-case hex, at least 8 digits); ``None`` where nothing is published.
    ``eval_config`` is the evaluation preprocessing under which the file's accuracy was
    published; ``None`` stands for the model's registered one (the authors' protocol).
    ``repo`` and ``revision``: the Hugging Face hub repository and revision of a hub copy
    (fetched through ``huggingface_hub``, whose cache timm shares); ``None`` for other files.
    """

    model: str
    filename: str
    url: str
    source: str
    sha256: Optional[str] = None
    eval_config: Optional[EvalConfig] = None
    repo: Optional[str] = None
    revision: Optional[str] = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_SPECS:
            raise UsageError(f"Checkpoint for unknown model {self.model!r}; use a name from `splitattn models`.")
        if not self.filename or "/" in self.filename or "\\" in self.filename or self.filename.startswith("."):
            raise UsageError(f"Checkpoint filename must be a plain file name, got {self.filename!r}.")
        if self.sha256 is not None and not _HEX.fullmatch(self.sha256):
            raise UsageError(f"sha256 must be 8 to 64 lower-case hex digits, got {self.sha256!r}.")
        if self.eval_config is None:
            object.__setattr__(self, "eval_config", MODEL_SPECS[self.model].eval_config)


def official(model: str, sha256_prefix: str) -> Checkpoint:
    """An official release file ``{model}-{hash}.pth``."""
    filename = f"{model}-{sha256_prefix}.pth"
    return Checkpoint(model, filename, OFFICIAL_BASE_URL + filename, OFFICIAL, sha256_prefix)


def timm_hub(model: str, repo: str, crop_pct: float, interpolation: str, revision: str = HUB_REVISION) -> Checkpoint:
    """The safetensors file of a timm hub repository such as ``timm/resnest14d.gluon_in1k`` at ``revision``.

    ``crop_pct`` and ``interpolation`` are those of timm's pretrained config for the file
    (``timm.models.get_pretrained_cfg``): the copy is evaluated with timm's protocol.
    """
    config = EvalConfig(MODEL_SPECS[model].eval_config.input_size, crop_pct, interpolation, crop_mode="center")
    url = HUB_URL.format(repo=repo, revision=revision, filename=HUB_FILENAME)
    return Checkpoint(
        model, f"{repo.split('/')[-1]}.safetensors", url, TIMM_HUB, eval_config=config, repo=repo, revision=revision
    )


_OFFICIAL_HASHES = {
    "resnest50": "528c19ca",
    "resnest101": "22405ba7",
    "resnest200": "75117900",
    "resnest269": "0cc87c48",
    "resnest50_fast_1s1x64d": "d8fbf808",
    "resnest50_fast_2s1x64d": "44938639",
    "resnest50_fast_4s1x64d": "f74f3fc3",
    "resnest50_fast_1s2x40d": "32830b84",
    "resnest50_fast_2s2x40d": "9d126481",
    "resnest50_fast_4s2x40d": "41d14ed0",
    "resnest50_fast_1s4x24d": "d4a4f76f",
}
# Hub repository, and the crop_pct and interpolation of timm's pretrained config for it.
_HUB_REPOS = {
    "resnest14": ("timm/resnest14d.gluon_in1k", 0.875, "bilinear"),
    "resnest26": ("timm/resnest26d.gluon_in1k", 0.875, "bilinear"),
    "resnest50": ("timm/resnest50d.in1k", 0.875, "bilinear"),
    "resnest101": ("timm/resnest101e.in1k", 0.875, "bilinear"),
    "resnest200": ("timm/resnest200e.in1k", 0.909, "bicubic"),
    "resnest269": ("timm/resnest269e.in1k", 0.928, "bicubic"),
    "resnest50_fast_4s2x40d": ("timm/resnest50d_4s2x40d.in1k", 0.875, "bicubic"),
    "resnest50_fast_1s4x24d": ("timm/resnest50d_1s4x24d.in1k", 0.875, "bicubic"),
}


def _published(name: str) -> Tuple[Checkpoint, ...]:
    sources = []
    if name in _OFFICIAL_HASHES:
        sources.append(official(name, _OFFICIAL_HASHES[name]))
    if name in _HUB_REPOS:
        sources.append(timm_hub(name, *_HUB_REPOS[name]))
    return tuple(sources)


CHECKPOINTS: Dict[str, Tuple[Checkpoint, ...]] = {
    name: _published(name) for name in MODEL_SPECS if name in _OFFICIAL_HASHES or name in _HUB_REPOS
}


def checkpoints_for(name: str) -> Tuple[Checkpoint, ...]:
    """The sources of a model's pretrained weights (name or timm alias), in the order they are tried."""
    spec = get_model_spec(name)
    sources = CHECKPOINTS.get(spec.name, ())
    if not sources:
        raise UsageError(
            f"No pretrained weights are published for {spec.name}; models with weights: "
            f"{', '.join(CHECKPOINTS)}. Pass pretrained=<path or URL> to load a checkpoint of your own."
        )
    return sources


def find_checkpoint(filename: str) -> Optional[Checkpoint]:
    """The registered checkpoint stored under ``filename`` (a cache or mirror file name), if any."""
    matches: List[Checkpoint] = [c for sources in CHECKPOINTS.values() for c in sources if c.filename == filename]
    return matches[0] if matches else None


def hub_cache_repo(path: Union[str, os.PathLike[str]]) -> Optional[str]:
    """``owner/name`` of a file in the Hugging Face cache's layout
    (``.../models--<owner>--<name>/snapshots/<revision>/<file>``), else ``None``."""
    parts = Path(path).parts
    if len(parts) >= 4 and parts[-3] == "snapshots" and parts[-4].startswith(_HUB_CACHE_PREFIX):
        return parts[-4][len(_HUB_CACHE_PREFIX) :].replace("--", "/")
    return None


def checkpoint_for_file(path: Union[str, os.PathLike[str]]) -> Optional[Checkpoint]:
    """The registered checkpoint a local file is a copy of: by its name in our cache or a mirror
    (``resnest50-528c19ca.pth``, ``resnest50d.in1k.safetensors``), or by its place in the Hugging Face cache
    (``models--timm--resnest50d.in1k/snapshots/<rev>/model.safetensors``); ``None`` for other files."""
    path = Path(path)
    repo = hub_cache_repo(path) if path.name == HUB_FILENAME else None
    if repo is not None:
        matches = [c for sources in CHECKPOINTS.values() for c in sources if c.repo == repo]
        if matches:
            return matches[0]
    return find_checkpoint(path.name)


def default_eval_config(name: str) -> EvalConfig:
    """The evaluation protocol of a model's default weights (its first source), or its registered one.

    ``name`` is a registered name or alias. Official files and models without published
    weights use the authors' protocol; a model whose first source is a timm hub copy
    (ResNeSt-14/26) uses timm's.
    """
    spec = get_model_spec(name)
    sources = CHECKPOINTS.get(spec.name, ())
    return sources[0].eval_config if sources else spec.eval_config


def eval_config_for_file(name: str, path: Union[str, os.PathLike[str]]) -> EvalConfig:
    """The evaluation protocol for weights of model ``name`` loaded from the file at ``path``.

    A copy of a registered checkpoint (``checkpoint_for_file``: in our cache, a mirror's name, or the Hugging
    Face cache) gets its source's protocol; any other file the model's default (``default_eval_config``).
    """
    checkpoint = checkpoint_for_file(path)
    if checkpoint is not None and checkpoint.model == get_model_spec(name).name:
        return checkpoint.eval_config
    return default_eval_config(name)


def hash_from_name(filename: str) -> Optional[str]:
    """The sha256 prefix embedded in a ``name-<8 hex>.pth`` file name, else ``None``."""
    match = HASHED_NAME.search(filename)
    return match.group(1) if match else None
