"""Fetching checkpoint files into a cache, checked before anything is kept.

- Official release files, any ``pretrained=<URL>``, and every file when a mirror is set are streamed
  (``urllib``) to a temporary file that is moved into our cache only when complete: as many bytes as the
  server's ``Content-Length`` announced and, where one is known, the sha256 prefix. The cache is
  ``$SPLITATTN_HOME/checkpoints`` when set, else torch.hub's checkpoint folder
  (``$TORCH_HOME/hub/checkpoints``), so official files already fetched by the original ResNeSt code or
  ``torch.hub`` are reused.
- timm's hub copies go through ``huggingface_hub`` (``hub_fetch.hub_file``) at their pinned revision, into
  the Hugging Face cache that timm uses too.

What this layer adds: the mirror variable, retries of broken transfers (never of a host that cannot be
reached: offline fails in seconds), the order in which sources are tried, a second fetch of a cached file
that turns out damaged, and errors that say where to put a file by hand when offline. Loading
(``loading.py``) refuses pickles that are not plain tensors.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from ..errors import ChecksumError, DownloadError, UsageError
from ..version import __version__
from .files import CHUNK_BYTES, atomic_path, check_sha256, checksum_error
from .hub_fetch import TIMEOUT_S, hf_cache_dir, hub_file, offline
from .sources import HUB_FILENAME, Checkpoint, checkpoints_for, hash_from_name

HOME_ENV = "SPLITATTN_HOME"
MIRROR_ENV = "SPLITATTN_WEIGHTS_MIRROR"
RETRIES = 3
RETRY_BACKOFF_S = 1.0  # waits 1 s, 2 s, ... between attempts


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


class _CutShort(Exception):
    """A transfer that ended before the announced ``Content-Length``."""


class _OtherBytes(Exception):
    """A complete transfer whose sha256 is not the expected one."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"sha256 {digest}")
        self.digest = digest


def _transfer(url: str, tmp: Path, show: bool) -> str:
    """Stream ``url`` into ``tmp``; return the sha256 of what arrived. Raises ``_CutShort`` when fewer bytes
    arrived than the server announced (``urllib`` ends such a read silently)."""
    from tqdm import tqdm  # a dependency of huggingface_hub

    request = urllib.request.Request(url, headers={"User-Agent": f"splitattn/{__version__}"})
    digest, received = hashlib.sha256(), 0
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
        length = response.headers.get("Content-Length")
        identity = response.headers.get("Content-Encoding", "identity") == "identity"
        expected = int(length) if length and identity else None
        with tqdm(total=expected, disable=not show, unit="B", unit_scale=True, unit_divisor=1024) as bar:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise _CutShort(f"transfer cut short: {received:,} of {expected:,} bytes")
    return digest.hexdigest()


def download_file(
    url: str, dest: Path, sha256: Optional[str] = None, progress: Optional[bool] = None, retries: int = RETRIES
) -> Path:
    """Download ``url`` to ``dest``: complete (the server's ``Content-Length``) and matching ``sha256``, or nothing.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: where the file goes (written atomically: nothing is left there unless the complete file arrived
            and matched ``sha256``).
        sha256: expected sha256 or its prefix (lower-case hex); ``None`` checks the length only.
        progress: ``None`` shows a tqdm bar only on a terminal.
        retries: attempts in all for a broken or short transfer, a server error (HTTP 5xx) or a hash mismatch.

    Returns:
        ``dest``.

    Raises:
        DownloadError: not found, offline (``HF_HUB_OFFLINE=1`` and ``url`` is not the mirror), the host
            cannot be reached (DNS failure, refused, connect timeout: one attempt, never retried, so offline
            fails in seconds), or the transfer kept breaking.
        ChecksumError: every attempt gave other bytes than ``sha256``.
    """
    mirror = _mirror()
    if offline() and urllib.parse.urlparse(url).scheme != "file" and not (mirror and url.startswith(mirror)):
        raise DownloadError(f"{url}: not fetched, HF_HUB_OFFLINE is set (only caches and {MIRROR_ENV} are used)")
    show = sys.stderr.isatty() if progress is None else progress
    problem = ""
    for attempt in range(1, retries + 1):
        try:
            with atomic_path(dest) as tmp:
                digest = _transfer(url, tmp, show)
                if sha256 and not digest.startswith(sha256):
                    raise _OtherBytes(digest)
            return dest
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
            problem = f"server error HTTP {error.code}"
        except urllib.error.URLError as error:  # DNS failure, refused, unreachable, connect timeout
            raise DownloadError(f"{url}: cannot connect ({error.reason})") from error
        except (http.client.HTTPException, ConnectionError, TimeoutError) as error:
            problem = f"connection broke ({error!r})"
        except _CutShort as error:
            problem = str(error)
        except _OtherBytes as error:  # a transfer cut short without Content-Length shows this way too
            if attempt == retries:
                raise checksum_error(dest, sha256 or "", error.digest, deleted=True) from None
            problem = str(error)
        if attempt < retries:
            time.sleep(RETRY_BACKOFF_S * attempt)
    raise DownloadError(f"{url}: download failed {retries} times, last: {problem}")


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


def _reusable(path: Path, sha256: Optional[str], refresh: bool) -> bool:
    """Whether ``path`` in our cache can be used as it is. It cannot when absent, when ``refresh`` (it is
    deleted: the caller found it damaged) or when it fails ``sha256`` (deleted, with a warning)."""
    if not path.is_file():
        return False
    if refresh:
        path.unlink()
        return False
    try:
        check_sha256(path, sha256, delete=True)
    except ChecksumError as error:
        warnings.warn(f"{error} It is fetched again.", UserWarning, stacklevel=3)
        return False
    return True


def fetch_checkpoint(checkpoint: Checkpoint, progress: Optional[bool] = None, refresh: bool = False) -> Path:
    """The local file of ``checkpoint``, downloaded first if absent; a file in our cache is re-verified.

    Hub copies come from the Hugging Face cache or hub, unless a mirror is set (then from the mirror
    into our cache, like every other file) or a copy was put into our cache by hand. ``refresh``
    replaces a cached copy (one that failed to load) by a new download.
    """
    path = cache_dir() / checkpoint.filename
    if _reusable(path, checkpoint.sha256, refresh):
        return path
    if checkpoint.repo is not None and _mirror() is None:
        return hub_file(checkpoint.repo, HUB_FILENAME, checkpoint.revision, refresh=refresh)
    return download_file(checkpoint_url(checkpoint), path, checkpoint.sha256, progress)


def fetch_pretrained(name: str, progress: Optional[bool] = None) -> Tuple[Path, Checkpoint]:
    """The file of a model's registered weights: a cached source if any, else the first that downloads.

    When every source fails, one ``DownloadError`` says, for each, which URL to fetch by other
    means and the exact path to put it at, and how to work offline.
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
    hub_repos = [c.repo for c in sources if c.repo]
    hub_note = f" (hub copies as timm stores them, {', '.join(hub_repos)})" if hub_repos else ""
    raise DownloadError(
        f"No pretrained weights for {sources[0].model} are cached and none could be downloaded. To use them "
        f"offline, fetch one of these files elsewhere and copy it into the cache as shown:\n"
        + "\n".join(failures)
        + f"\nCaches searched: {cache_dir()} and the Hugging Face cache {hf_cache_dir()}{hub_note}. "
        f"Without network: set HF_HUB_OFFLINE=1 to use the caches only, without any connection attempt; "
        f"{MIRROR_ENV}=<base URL or file:// folder> to fetch these file names from a mirror; {HOME_ENV} to "
        "move our cache."
    )


def fetch_url(url: str, progress: Optional[bool] = None, refresh: bool = False) -> Path:
    """Download any checkpoint URL into the cache (reused when present); ``-<8 hex>.pth`` names are hash-checked.

    ``refresh`` replaces a cached copy (one that failed to load) by a new download.
    """
    basename = Path(urllib.parse.urlparse(url).path).name
    if not basename:
        raise UsageError(f"{url!r} does not name a file; pass the URL of a checkpoint file.")
    expected = hash_from_name(basename)
    # Hashed names are unique by construction; others (model.safetensors ...) get the URL's hash in front.
    filename = basename if expected else f"url-{hashlib.sha256(url.encode()).hexdigest()[:12]}-{basename}"
    path = cache_dir() / filename
    if _reusable(path, expected, refresh):
        return path
    return download_file(url, path, expected, progress)
