"""Checks every task's data loading shares: why samples were skipped (counted by kind, the first of each named),
and training and validation sets that hold the same images.

``Problem`` is the reason a sample was skipped: its text (a ``str``, as the data sets' ``skipped`` lists always
held) with a ``kind`` to count it by. ``describe_problems`` turns a list of them into the one line a data set
left without a usable sample raises with. ``warn_about_overlap`` compares the files of two splits by path and by
content (sha256), so a single COCO json or folder used for both is named when the data is loaded, not after a
suspiciously good evaluation.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

from ..weights.files import sha256_file

PathLike = Union[str, Path]
HASH_THREADS = 8


class SplitOverlapWarning(UserWarning):
    """The training and validation sets share images (``warn_about_overlap``)."""


class Problem(str):
    """Why one sample was skipped: the text (this string) and its ``kind`` (e.g. ``"label values outside the
    classes"``), by which ``describe_problems`` counts."""

    kind: str

    def __new__(cls, kind: str, text: str) -> Problem:
        problem = super().__new__(cls, text)
        problem.kind = kind
        return problem


def describe_problems(problems: Sequence[str], first: int = 3) -> str:
    """``"100 skipped: 100 label values outside the classes (first: ...)"``: the problems counted by kind (a
    plain string is its own kind), the most frequent first, each with its first case; at most ``first`` kinds
    are shown, the others counted."""
    kinds = Counter(getattr(p, "kind", "other problems") for p in problems)
    examples: Dict[str, str] = {}
    for problem in problems:
        examples.setdefault(getattr(problem, "kind", "other problems"), str(problem).rstrip("."))
    parts = [f"{count} {kind} (first: {examples[kind]})" for kind, count in kinds.most_common(first)]
    rest = sum(count for _, count in kinds.most_common()[first:])
    return f"{len(problems)} skipped: " + "; ".join(parts) + (f"; {rest} with other problems" if rest else "")


def _digests(paths: Iterable[Path]) -> Dict[Path, str]:
    paths = list(paths)
    workers = max(1, min(HASH_THREADS, os.cpu_count() or 1, len(paths)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(paths, pool.map(sha256_file, paths)))


def warn_about_overlap(
    train: Sequence[PathLike], val: Sequence[PathLike], train_name: str = "training", val_name: str = "validation"
) -> Optional[str]:
    """Warn (``SplitOverlapWarning``) when the two splits share images, by file (the same resolved path) or by
    content (the same sha256: a copy under another name); returns the warning's text, None when they share none.

    Only files of equal size are hashed (a file's size comes with the listing), so the cost is one read of the
    files whose size occurs in both splits, usually none. Files that cannot be read are left out (the loaders
    report them).
    """
    train_files = {Path(p).resolve() for p in train}
    val_files = {Path(p).resolve() for p in val}
    same_files = sorted(train_files & val_files)
    sizes: Dict[Path, int] = {}
    for path in (train_files | val_files) - set(same_files):
        try:
            sizes[path] = path.stat().st_size
        except OSError:
            continue
    common_sizes = {sizes[p] for p in train_files if p in sizes} & {sizes[p] for p in val_files if p in sizes}
    candidates = [p for p, size in sizes.items() if size in common_sizes]
    digests = _digests(candidates)
    train_digests: Dict[str, Path] = {d: p for p, d in digests.items() if p in train_files}
    copies: List[str] = [
        f"{path} = {train_digests[d]}"
        for path, d in sorted(digests.items())
        if path in val_files and d in train_digests
    ]
    if not same_files and not copies:
        return None
    count = len(same_files) + len(copies)
    shown = [str(p) for p in same_files[:2]] + copies[: max(0, 2 - len(same_files))]
    message = (
        f"the {train_name} and {val_name} sets share {count} of {len(val_files)} {val_name} image(s) "
        f"({len(same_files)} the same file{'s' if len(same_files) != 1 else ''}, {len(copies)} identical "
        f"content{'s' if len(copies) != 1 else ''}; e.g. {', '.join(shown)}): the {val_name} scores will measure "
        f"memory, not generalisation. Use separate images for {val_name}."
    )
    warnings.warn(message, SplitOverlapWarning, stacklevel=2)
    return message
