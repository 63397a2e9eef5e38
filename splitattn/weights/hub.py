"""Repositories in timm's Hugging Face hub format: a run shared as one, and one (ours, or a timm ResNeSt
fine-tuned by anyone) read back as a model description.

A repository holds ``model.safetensors`` (timm's and our weight keys are the same), ``config.json``
(``timm_config``: the network and its evaluation preprocessing) and a model card ``README.md``
(``model_card``). Repository names: ``hf-hub:owner/name[@revision]`` (through ``hub_fetch``: the Hugging
Face cache, revision pinning, ``HF_HUB_OFFLINE``) and ``local-dir:DIR``, as in timm.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..errors import UsageError, WeightsError
from ..models.eval_config import EvalConfig
from .hub_fetch import hub_file
from .sources import hub_cache_repo
from .timm_config import parse_config

HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")  # timm's order of preference


def is_repo_name(name: str) -> bool:
    """Whether ``name`` names a repository (``hf-hub:...`` or ``local-dir:...``) rather than a registered model."""
    return isinstance(name, str) and name.startswith((HUB_PREFIX, LOCAL_PREFIX))


@dataclass(frozen=True)
class RepoModel:
    """What a repository's ``config.json`` (and weights file) says a model is.

    Attributes:
        source: ``hf-hub:owner/name@commit`` (the commit read) or ``local-dir:/absolute/path``.
        model_name: the registered model (timm names mapped to ours).
        num_classes: the classifier's outputs.
        model_args: ``create_model`` overrides (from timm's ``model_args``).
        eval_config: the evaluation preprocessing (from ``pretrained_cfg``).
        label_names: one name per class, or ``None``.
        weights: the weights file, or ``None`` when not asked for.
    """

    source: str
    model_name: str
    num_classes: int
    model_args: Dict[str, Any]
    eval_config: EvalConfig
    label_names: Optional[Tuple[str, ...]]
    weights: Optional[Path]

    def describe(self, model: Any) -> Any:
        """Set ``model.eval_config``, ``model.label_names`` (``None`` when ``model`` has another class count)
        and ``model.pretrained_source``; return ``model``."""
        model.eval_config = self.eval_config
        same = getattr(model, "num_classes", self.num_classes) == self.num_classes
        model.label_names = list(self.label_names) if self.label_names and same else None
        model.pretrained_source = self.source
        return model


def _split_hub_name(name: str, revision: Optional[str]) -> Tuple[str, Optional[str]]:
    repo, _, pinned = name[len(HUB_PREFIX) :].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UsageError(f"{name!r}: write a hub repository as hf-hub:owner/name or hf-hub:owner/name@revision.")
    if pinned and revision and pinned != revision:
        raise UsageError(f"{name!r} pins revision {pinned} but revision={revision!r} was passed; give one.")
    return repo, pinned or revision


def _hub_weights(repo: str, commit: Optional[str]) -> Path:
    for filename in WEIGHTS_NAMES:
        found = hub_file(repo, filename, commit, required=False)
        if found is not None:
            return found
    raise WeightsError(f"{HUB_PREFIX}{repo}@{commit} has none of {', '.join(WEIGHTS_NAMES)}.")


def _local_weights(folder: Path) -> Path:
    found = next((folder / f for f in WEIGHTS_NAMES if (folder / f).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{folder} has none of {', '.join(WEIGHTS_NAMES)}.")
    return found


def load_repo(name: str, pretrained: Union[bool, None] = None, revision: Optional[str] = None) -> RepoModel:
    """Read the repository ``name`` (``hf-hub:owner/name[@revision]`` or ``local-dir:DIR``).

    Args:
        name: the repository.
        pretrained: ``None`` or ``True``: also fetch the weights; ``False``: the description only (as timm's
            ``pretrained=False``).
        revision: branch, tag or commit of a hub repository (or ``@revision`` in ``name``).

    Returns:
        The ``RepoModel``; its ``weights`` file is read from the commit its ``config.json`` came from.

    Raises:
        UsageError: a malformed name, two different revisions, or ``pretrained`` that is a path.
        WeightsError: a configuration splitattn cannot build (another architecture or task, unknown options),
            or the files cannot be fetched (``DownloadError``).
        FileNotFoundError: a local folder without ``config.json`` or weights.
    """
    if pretrained is not None and not isinstance(pretrained, bool):
        raise UsageError(f"{name!r} brings its own weights; pretrained may only be True or False, not {pretrained!r}.")
    if name.startswith(HUB_PREFIX):
        repo, revision = _split_hub_name(name, revision)
        config_path = hub_file(repo, CONFIG_NAME, revision)
        assert config_path is not None  # required files raise instead
        commit = config_path.parent.name if hub_cache_repo(config_path) == repo else revision
        source = f"{HUB_PREFIX}{repo}" + (f"@{commit}" if commit else "")
        fetch_weights = partial(_hub_weights, repo, commit)
    else:
        if revision:
            raise UsageError(f"{name!r} is a local folder; revision={revision!r} applies to hf-hub: names only.")
        folder = Path(name[len(LOCAL_PREFIX) :]).expanduser().absolute()
        config_path, source = folder / CONFIG_NAME, f"{LOCAL_PREFIX}{folder}"
        if not config_path.is_file():
            raise FileNotFoundError(f"{name!r}: {config_path} does not exist; a repository folder holds config.json.")
        fetch_weights = partial(_local_weights, folder)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise WeightsError(f"{source}: {CONFIG_NAME} is not readable JSON ({error}).") from error
    model_name, num_classes, overrides, eval_config, label_names = parse_config(config, source)
    weights = fetch_weights() if pretrained is not False else None
    return RepoModel(source, model_name, num_classes, overrides, eval_config, label_names, weights)


def upload_folder(
    folder: Path,
    repo_id: str,
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
) -> str:
    """Upload ``folder`` to hub repository ``repo_id`` (created if missing) with ``huggingface_hub``.

    Args:
        folder: the repository's files (``write_repo``'s folder).
        repo_id: ``owner/name``.
        private: create the repository private (an existing repository keeps its visibility).
        revision: branch to commit to (created from ``main`` if missing); ``None``: ``main``.
        commit_message: ``None``: "Upload <folder name> with splitattn".

    Returns:
        The commit's URL.

    Raises:
        huggingface_hub's errors (not logged in: ``HfHubHTTPError`` 401, ...), unchanged.
    """
    from huggingface_hub import HfApi

    from ..version import __version__

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, library_name="splitattn", library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        revision=revision,
        commit_message=commit_message or f"Upload {folder.name} with splitattn",
    )
    return str(commit.commit_url)
