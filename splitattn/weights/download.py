"""Fetching checkpoint files into the local cache: mirror, retries, progress and hash checks.

Cache: ``$SPLITATTN_HOME/checkpoints`` when set, else torch.hub's checkpoint folder
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), so official
files already fetched by the original ResNeSt code or ``torch.hub`` are reused. A file is
downloaded to a hidden temporary file in the cache folder, its sha256 computed on the fly,
and only a complete, verified file is moved into place.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from tqdm import tqdm

from .. import __version__
from .files import CHUNK_BYTES, WeightsError, atomic_path, check_sha256, checksum_error
from .sources import Checkpoint, checkpoints_for, hash_from_name

HOME_ENV = "SPLITATTN_HOME"
MIRROR_ENV = "SPLITATTN_WEIGHTS_MIRROR"
RETRIES = 3
RETRY_BACKOFF_S = 1.0  # waits 1 s, 2 s, ... between attempts
TIMEOUT_S = 60.0


class DownloadError(WeightsError):
    """A file could not be fetched (offline, not found, or the transfer kept breaking)."""


class _BrokenTransfer(Exception):
    """A transfer that started but broke: worth another attempt."""


def cache_dir() -> Path:
    """Folder of downloaded checkpoints: ``$SPLITATTN_HOME/checkpoints`` or ``$TORCH_HOME/hub/checkpoints``."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "checkpoints"
    return Path(torch.hub.get_dir()) / "checkpoints"


def checkpoint_url(checkpoint: Checkpoint) -> str:
    """Where ``checkpoint`` is fetched from: ``$SPLITATTN_WEIGHTS_MIRROR/<filename>`` when set, else its URL."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return checkpoint.url
    if urllib.parse.urlparse(mirror).scheme not in ("http", "https", "file"):
        raise ValueError(
            f"{MIRROR_ENV}={mirror!r} is not a URL; set it to a base URL such as https://example.org/resnest/ "
            f"that serves the files under the names `splitattn weights list` shows."
        )
    return mirror.rstrip("/") + "/" + checkpoint.filename


def _transfer(url: str, dest: Path, label: str, progress: Optional[bool]) -> str:
    """Stream ``url`` into ``dest`` (``label`` on the progress bar); return the sha256. Raise ``_BrokenTransfer`` if worth retrying."""
    request = urllib.request.Request(url, headers={"User-Agent": f"splitattn/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise _BrokenTransfer(f"server error HTTP {error.code}") from error
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"{url}: cannot connect ({reason})") from error
    digest, received = hashlib.sha256(), 0
    with response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  disable=None if progress is None else not progress) as bar:
            try:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as error:
                raise _BrokenTransfer(f"connection broke after {received} bytes ({error})") from error
    if total is not None and received != total:
        raise _BrokenTransfer(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def download_file(url: str, dest: Path, sha256: Optional[str] = None, progress: Optional[bool] = None,
                  retries: int = RETRIES) -> Path:
    """Download ``url`` to ``dest`` atomically, retrying broken transfers, and check its sha256 prefix.

    ``progress``: ``None`` shows a tqdm bar only on a terminal. Nothing is left at ``dest``
    (or next to it) unless the complete file matched ``sha256``.
    """
    problem = ""
    for attempt in range(1, retries + 1):
        try:
            with atomic_path(dest) as tmp:
                actual = _transfer(url, tmp, dest.name, progress)
                if sha256 is not None and not actual.startswith(sha256):
                    raise checksum_error(dest, sha256, actual, deleted=True)  # atomic_path removes it
            return dest
        except _BrokenTransfer as error:
            problem = str(error)
            if attempt < retries:
                time.sleep(RETRY_BACKOFF_S * attempt)
    raise DownloadError(f"{url}: download failed {retries} times, last: {problem}")


def fetch_checkpoint(checkpoint: Checkpoint, progress: Optional[bool] = None) -> Path:
    """The cached file of ``checkpoint``, downloaded first if absent; a cached file is re-verified, no network."""
    path = cache_dir() / checkpoint.filename
    if path.is_file():
        check_sha256(path, checkpoint.sha256, delete=True)
        return path
    return download_file(checkpoint_url(checkpoint), path, checkpoint.sha256, progress)


def fetch_pretrained(name: str, progress: Optional[bool] = None) -> Tuple[Path, Checkpoint]:
    """The file of a model's registered weights: a cached source if any, else the first that downloads.

    When every source fails, one ``DownloadError`` says, for each, which URL to fetch by other
    means and the exact path to put it at.
    """
    sources = checkpoints_for(name)
    for checkpoint in sources:
        if (cache_dir() / checkpoint.filename).is_file():
            return fetch_checkpoint(checkpoint, progress), checkpoint
    failures: List[str] = []
    for checkpoint in sources:
        try:
            return fetch_checkpoint(checkpoint, progress), checkpoint
        except DownloadError as error:
            failures.append(f"  - {error}\n    copy {checkpoint_url(checkpoint)} to {cache_dir() / checkpoint.filename}")
    raise DownloadError(
        f"No pretrained weights for {sources[0].model} are cached and none could be downloaded. To use them "
        f"offline, fetch one of these files elsewhere and copy it into the cache as shown:\n" + "\n".join(failures)
        + f"\n(Set {MIRROR_ENV} to a base URL serving these file names, or {HOME_ENV} to move the cache.)"
    )


def fetch_url(url: str, progress: Optional[bool] = None) -> Path:
    """Download any checkpoint URL into the cache (reused when present); ``-<8 hex>.pth`` names are hash-checked."""
    basename = Path(urllib.parse.urlparse(url).path).name
    if not basename:
        raise ValueError(f"{url!r} does not name a file; pass the URL of a checkpoint file.")
    expected = hash_from_name(basename)
    # Hashed names are unique by construction; others (model.safetensors ...) get the URL's hash in front.
    filename = basename if expected else f"url-{hashlib.sha256(url.encode()).hexdigest()[:12]}-{basename}"
    path = cache_dir() / filename
    if path.is_file():
        check_sha256(path, expected, delete=True)
        return path
    return download_file(url, path, expected, progress)
