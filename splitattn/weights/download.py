"""Fetching checkpoint files: a thin layer over torch.hub's and huggingface_hub's downloads.

- Official release files, any ``pretrained=<URL>``, and every file when a mirror is set go through
  ``torch.hub.download_url_to_file``: a temporary file moved into place once complete, with its
  sha256-prefix check, into our cache: ``$SPLITATTN_HOME/checkpoints`` when set, else torch.hub's
  checkpoint folder (``$TORCH_HOME/hub/checkpoints``), so official files already fetched by the
  original ResNeSt code or ``torch.hub`` are reused.
- timm's hub copies go through ``huggingface_hub.hf_hub_download`` at their pinned revision, into the
  Hugging Face cache that timm uses too (files timm already fetched are reused; ``HF_HOME``,
  ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` apply as for any hub download).

What this layer adds: the mirror variable, retries of broken transfers, the order in which sources
are tried, and errors that say where to put a file by hand when offline. Loading (``loading.py``)
refuses pickles that are not plain tensors.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from ..errors import DownloadError, UsageError
from ..version import __version__
from .files import check_sha256, checksum_error
from .sources import HUB_FILENAME, Checkpoint, checkpoints_for, hash_from_name

HOME_ENV = "SPLITATTN_HOME"
MIRROR_ENV = "SPLITATTN_WEIGHTS_MIRROR"
RETRIES = 3
RETRY_BACKOFF_S = 1.0  # waits 1 s, 2 s, ... between attempts
_REPORTED_HASH = re.compile(r'got "([0-9a-f]{64})"')  # torch.hub's hash-mismatch message


def cache_dir() -> Path:
    """Folder of downloaded checkpoints: ``$SPLITATTN_HOME/checkpoints`` or ``$TORCH_HOME/hub/checkpoints``."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "checkpoints"
    return Path(torch.hub.get_dir()) / "checkpoints"


def _mirror() -> Optional[str]:
    """``$SPLITATTN_WEIGHTS_MIRROR`` checked to be a URL, or ``None`` when unset."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror and urllib.parse.urlparse(mirror).scheme not in ("http", "https", "file"):
        raise UsageError(
            f"{MIRROR_ENV}={mirror!r} is not a URL; set it to a base URL such as https://example.org/resnest/ "
            f"that serves the files under the names `splitattn weights list` shows."
        )
    return mirror or None


def checkpoint_url(checkpoint: Checkpoint) -> str:
    """Where ``checkpoint`` is fetched from: ``$SPLITATTN_WEIGHTS_MIRROR/<filename>`` when set, else its URL."""
    mirror = _mirror()
    return mirror.rstrip("/") + "/" + checkpoint.filename if mirror else checkpoint.url


def download_file(
    url: str, dest: Path, sha256: Optional[str] = None, progress: Optional[bool] = None, retries: int = RETRIES
) -> Path:
    """Download ``url`` to ``dest`` with ``torch.hub.download_url_to_file``, checking the sha256 prefix.

    ``progress``: ``None`` shows torch.hub's tqdm bar only on a terminal. A broken transfer or a
    server error (HTTP 5xx) is retried ``retries`` times in all; so is a hash mismatch, which is
    how a transfer cut short shows (torch.hub keeps whatever bytes arrived). Nothing is left at
    ``dest`` unless the complete file matched ``sha256``. Raises ``DownloadError`` (not found,
    cannot connect, kept breaking) or ``ChecksumError`` (every attempt gave other bytes).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    problem = ""
    for attempt in range(1, retries + 1):
        try:
            torch.hub.download_url_to_file(url, str(dest), hash_prefix=sha256, progress=show)
            return dest
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
            problem = f"server error HTTP {error.code}"
        except urllib.error.URLError as error:
            raise DownloadError(f"{url}: cannot connect ({error.reason})") from error
        except (http.client.HTTPException, ConnectionError, TimeoutError) as error:
            problem = f"connection broke ({error!r})"
        except RuntimeError as error:
            reported = _REPORTED_HASH.search(str(error))
            if reported is None:
                raise
            if attempt == retries:
                raise checksum_error(dest, sha256 or "", reported.group(1), deleted=True) from None
            problem = f"sha256 {reported.group(1)}"
        if attempt < retries:
            time.sleep(RETRY_BACKOFF_S * attempt)
    raise DownloadError(f"{url}: download failed {retries} times, last: {problem}")


def _from_hub(checkpoint: Checkpoint) -> Path:
    """A hub copy through ``hf_hub_download`` (the Hugging Face cache; offline: only what it holds)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download(
                checkpoint.repo,
                HUB_FILENAME,
                revision=checkpoint.revision,
                library_name="splitattn",
                library_version=__version__,
                endpoint=os.environ.get("HF_ENDPOINT") or None,
            )
        )
    except LocalEntryNotFoundError as error:
        raise DownloadError(
            f"{checkpoint.url}: cannot connect, and the Hugging Face cache has no copy ({type(error).__name__})"
        ) from error
    except HfHubHTTPError as error:
        raise DownloadError(f"{checkpoint.url}: {type(error).__name__} ({str(error).splitlines()[0]})") from error


def cached_file(checkpoint: Checkpoint) -> Optional[Path]:
    """The local copy of ``checkpoint`` if one exists (our cache, or for hub copies the Hugging Face cache)."""
    path = cache_dir() / checkpoint.filename
    if path.is_file():
        return path
    if checkpoint.repo is not None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(checkpoint.repo, HUB_FILENAME, revision=checkpoint.revision)
        if isinstance(found, str):
            return Path(found)
    return None


def fetch_checkpoint(checkpoint: Checkpoint, progress: Optional[bool] = None) -> Path:
    """The local file of ``checkpoint``, downloaded first if absent; a file in our cache is re-verified.

    Hub copies come from the Hugging Face cache or hub, unless a mirror is set (then from the mirror
    into our cache, like every other file) or a copy was put into our cache by hand.
    """
    path = cache_dir() / checkpoint.filename
    if path.is_file():
        check_sha256(path, checkpoint.sha256, delete=True)
        return path
    if checkpoint.repo is not None and _mirror() is None:
        return _from_hub(checkpoint)
    return download_file(checkpoint_url(checkpoint), path, checkpoint.sha256, progress)


def fetch_pretrained(name: str, progress: Optional[bool] = None) -> Tuple[Path, Checkpoint]:
    """The file of a model's registered weights: a cached source if any, else the first that downloads.

    When every source fails, one ``DownloadError`` says, for each, which URL to fetch by other
    means and the exact path to put it at.
    """
    sources = checkpoints_for(name)
    for checkpoint in sources:
        if cached_file(checkpoint) is not None:
            return fetch_checkpoint(checkpoint, progress), checkpoint
    failures: List[str] = []
    for checkpoint in sources:
        try:
            return fetch_checkpoint(checkpoint, progress), checkpoint
        except DownloadError as error:
            failures.append(
                f"  - {error}\n    copy {checkpoint_url(checkpoint)} to {cache_dir() / checkpoint.filename}"
            )
    raise DownloadError(
        f"No pretrained weights for {sources[0].model} are cached and none could be downloaded. To use them "
        f"offline, fetch one of these files elsewhere and copy it into the cache as shown:\n"
        + "\n".join(failures)
        + f"\n(Set {MIRROR_ENV} to a base URL serving these file names, or {HOME_ENV} to move the cache.)"
    )


def fetch_url(url: str, progress: Optional[bool] = None) -> Path:
    """Download any checkpoint URL into the cache (reused when present); ``-<8 hex>.pth`` names are hash-checked."""
    basename = Path(urllib.parse.urlparse(url).path).name
    if not basename:
        raise UsageError(f"{url!r} does not name a file; pass the URL of a checkpoint file.")
    expected = hash_from_name(basename)
    # Hashed names are unique by construction; others (model.safetensors ...) get the URL's hash in front.
    filename = basename if expected else f"url-{hashlib.sha256(url.encode()).hexdigest()[:12]}-{basename}"
    path = cache_dir() / filename
    if path.is_file():
        check_sha256(path, expected, delete=True)
        return path
    return download_file(url, path, expected, progress)
