"""File helpers shared by downloading, converting and pushing: atomic writes, JSON files, hashing and its errors."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import ChecksumError

CHUNK_BYTES = 1 << 20

__all__ = ["atomic_path", "check_sha256", "checksum_error", "sha256_file", "write_json"]


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success it replaces ``dest`` atomically.

    The temporary file is hidden (leading dot) and removed on any error, so readers of
    ``dest`` never see a half-written file and a failed write leaves nothing behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> Path:
    """``obj`` as indented JSON at ``path``, written atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_error(path: Path, expected: str, actual: str, deleted: bool) -> ChecksumError:
    """The error for a file whose sha256 ``actual`` does not start with ``expected``."""
    fate = "it was deleted" if deleted else "it was not loaded"
    return ChecksumError(
        f"{path.name}: sha256 is {actual} but {expected} was expected ({path}); {fate}. The file is "
        "corrupt, truncated or not the published one: download it again or get it from a trusted copy."
    )


def check_sha256(path: Path, expected: Optional[str], delete: bool = False) -> str:
    """Check that ``path``'s sha256 starts with ``expected`` (skipped when ``None``); return the hash.

    On a mismatch the file is deleted when ``delete`` (cache files) and ``ChecksumError``
    names the file, the expected and the actual hash.
    """
    actual = sha256_file(path)
    if expected is None or actual.startswith(expected):
        return actual
    if delete:
        path.unlink(missing_ok=True)
    raise checksum_error(path, expected, actual, deleted=delete)
