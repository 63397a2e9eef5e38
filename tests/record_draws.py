"""``python record_draws.py FOLDER TASK STOP_AFTER -- SPLITATTN ARGS``: run ``splitattn ARGS`` with the task's
training set wrapped in a ``DrawRecorder`` (a test-only hook of ``tests/test_train_scale.py``, run by torchrun or
plainly; it needs no environment variable and no change to the library).

For every sample read, ``FOLDER/<rank>-<worker or main>.jsonl`` gets one line: the rank, the data-loading worker
(None: the training process), the index read, a digest of the random generators' states at that moment (``rng``)
and a digest of what those draws do to the training set's first sample (``draw``: the crop, flip, scale ...
actually applied to one fixed image). With ``STOP_AFTER`` > 0 the training process sends itself SIGTERM after
reading that many samples. ``FOLDER/all_reduce-<rank>.json`` counts the ``torch.distributed.all_reduce`` calls by
the file that made them.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import json
import os
import random
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, get_worker_info


def digest(value: Any) -> str:
    """A short hash of every tensor (and plain value) in ``value``."""
    hasher = hashlib.sha256()

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            hasher.update(item.detach().contiguous().cpu().numpy().tobytes())
        elif isinstance(item, dict):
            for key in sorted(item):
                feed(key)
                feed(item[key])
        elif isinstance(item, (list, tuple)):
            for part in item:
                feed(part)
        else:
            hasher.update(repr(item).encode())

    feed(value)
    return hasher.hexdigest()[:16]


def rng_digest() -> str:
    """A hash of the states of torch's CPU, Python's and NumPy's generators."""
    return digest([torch.get_rng_state(), repr(random.getstate()), torch.from_numpy(np.random.get_state()[1].copy())])


class DrawRecorder(Dataset):
    """``dataset`` that logs each read (see the module's text); other attributes are the data set's."""

    def __init__(self, dataset: Dataset, folder: Path, stop_after: int) -> None:
        self.dataset, self.folder, self.stop_after, self.reads = dataset, folder, stop_after, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # unpickling in a worker: not set yet
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        states = torch.get_rng_state(), random.getstate(), np.random.get_state()
        record = {"rng": rng_digest(), "draw": digest(self.dataset[0])}
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])
        sample = self.dataset[index]
        worker = get_worker_info()
        record.update(rank=int(os.environ.get("RANK", 0)), worker=worker.id if worker else None, index=int(index))
        name = f"{record['rank']}-{'main' if worker is None else worker.id}.jsonl"
        with open(self.folder / name, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.reads += 1
        if worker is None and self.stop_after and self.reads == self.stop_after:
            os.kill(os.getpid(), signal.SIGTERM)
        return sample


def main() -> int:
    folder, task, stop_after = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    args = sys.argv[sys.argv.index("--") + 1 :]
    folder.mkdir(parents=True, exist_ok=True)
    trainer = importlib.import_module(f"splitattn.tasks.{task}.trainer")
    build_datasets = trainer.build_datasets

    def recorded(config: Any) -> Any:
        train_set, *rest = build_datasets(config)
        return (DrawRecorder(train_set, folder, stop_after), *rest)

    trainer.build_datasets = recorded
    calls: collections.Counter = collections.Counter()
    all_reduce = dist.all_reduce

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[Path(traceback.extract_stack(limit=2)[0].filename).name] += 1
        return all_reduce(*args, **kwargs)

    dist.all_reduce = counted
    from splitattn.cli import main as splitattn_main

    try:
        return splitattn_main(args)
    finally:
        rank = os.environ.get("RANK", "0")
        (folder / f"all_reduce-{rank}.json").write_text(json.dumps(calls))


if __name__ == "__main__":
    sys.exit(main())
