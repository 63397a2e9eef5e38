"""Files of Hugging Face hub repositories through ``huggingface_hub``, failing fast offline and checked.

``hf_hub_download`` keeps its cache (the one timm shares; ``HF_HOME``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``
apply) and its own length check of every transfer. Two things are added:

- **Offline fails in seconds.** When the host cannot be reached and the file is not cached,
  ``hf_hub_download`` retries its metadata request with growing waits (about 30 s in all). One metadata
  request without retries (``get_hf_file_metadata``, ``TIMEOUT_S``) comes first: if it cannot connect, the
  file is taken from the cache only (``local_files_only``) or the error comes at once.
- **The hub's checksum is checked.** The hub names each large (LFS) file by its sha256 (the ``ETag`` that
  becomes the blob's name in the cache); ``huggingface_hub`` checks the length of a download but not its
  hash. A file whose blob name is a sha256 is hashed at every use; a mismatch fetches it again once, with
  a warning, then raises ``ChecksumError``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Optional

from ..errors import ChecksumError, DownloadError
from ..version import __version__
from .files import sha256_file

# seconds for one connection attempt or one read, here and in download.py's transfers
TIMEOUT_S = 10.0
_SHA256 = re.compile(r"[0-9a-f]{64}")


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read by ``huggingface_hub`` when it is imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _endpoint() -> Optional[str]:
    return os.environ.get("HF_ENDPOINT") or None


def _unreachable(url: str) -> Optional[str]:
    """``None`` when the hub answers a metadata request for ``url`` (even with an HTTP error, which
    ``hf_hub_download`` then reports); else why it cannot be reached. One attempt, no retries."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(url, timeout=TIMEOUT_S, library_name="splitattn", library_version=__version__)
    except HfHubHTTPError:
        return None
    except Exception as error:  # httpx or requests (by huggingface_hub version): DNS, refused, timeout
        return f"cannot connect: {type(error).__name__}: {error}"
    return None


def _download(repo: str, filename: str, revision: Optional[str], refresh: bool) -> Optional[Path]:
    from huggingface_hub import hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    url = hf_hub_url(repo, filename, revision=revision, endpoint=_endpoint())
    why = "HF_HUB_OFFLINE is set" if offline() else _unreachable(url)
    if refresh and why is not None:
        raise DownloadError(f"{url}: the cached copy is damaged and the hub cannot be reached ({why})")
    try:
        return Path(
            hf_hub_download(
                repo,
                filename,
                revision=revision,
                library_name="splitattn",
                library_version=__version__,
                endpoint=_endpoint(),
                local_files_only=why is not None,
                force_download=refresh,
            )
        )
    except LocalEntryNotFoundError as error:  # (a subclass of EntryNotFoundError)
        raise DownloadError(
            f"{url}: not fetched ({why}) and the Hugging Face cache {hf_cache_dir()} has no copy"
            + (f" of revision {revision}" if revision else "")
        ) from error
    except EntryNotFoundError:  # on the hub, the repository has no such file
        return None
    except HfHubHTTPError as error:
        raise DownloadError(f"{url}: {type(error).__name__} ({str(error).splitlines()[0]})") from error
    except OSError as error:  # huggingface_hub's length check ("Consistency check failed ...")
        raise DownloadError(f"{url}: {str(error).splitlines()[0]}") from error


def hub_sha256(path: Path) -> Optional[str]:
    """The sha256 the hub published for a cached file: its blob's name when that is a sha256 (LFS files)."""
    blob = Path(os.path.realpath(path)).name
    return blob if _SHA256.fullmatch(blob) else None


def hub_file(
    repo: str, filename: str, revision: Optional[str] = None, required: bool = True, refresh: bool = False
) -> Optional[Path]:
    """The local path of ``filename`` in hub repository ``repo`` at ``revision``, fetched unless cached.

    Args:
        repo: ``owner/name``.
        filename: path inside the repository, e.g. ``model.safetensors``.
        revision: branch, tag or commit id; ``None`` is ``main``.
        required: when ``False``, a file the repository does not have gives ``None`` instead of an error.
        refresh: fetch again even if cached (a cached copy that failed to load).

    Returns:
        The file in the Hugging Face cache (``.../snapshots/<commit>/<filename>``), or ``None`` (see ``required``).

    Raises:
        DownloadError: not cached and the hub cannot be reached (within one attempt), the repository,
            revision or file does not exist, or the transfer failed ``huggingface_hub``'s length check.
        ChecksumError: the file's sha256 differs from the hub's, also after fetching it again.
    """
    path = _download(repo, filename, revision, refresh)
    if path is None:
        if required:
            raise DownloadError(f"{repo}" + (f"@{revision}" if revision else "") + f" has no file {filename}")
        return None
    expected = hub_sha256(path)
    if expected is None:
        return path
    actual = sha256_file(path)
    if actual == expected:
        return path
    message = f"{path}: sha256 is {actual} but the hub published {expected}"
    if refresh:
        raise ChecksumError(f"{message}, also after fetching it again. The hub or a proxy serves other bytes.")
    warnings.warn(f"{message} (damaged or cut short); it is fetched again.", UserWarning, stacklevel=2)
    return hub_file(repo, filename, revision, required, refresh=True)
