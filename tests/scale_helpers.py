"""Shared pieces of the multi-process and preemption tests: real-image subsets, torchrun, recorded draws."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from .conftest import SHARED_DATA
from .train_helpers import REPO, child_env

CIFAR = SHARED_DATA / "cifar10-mini"
COCO128 = SHARED_DATA / "coco128"
CAMVID = SHARED_DATA / "camvid-mini"
RECORDER = str(Path(__file__).with_name("record_draws.py"))


def cifar_subset(root: Path, train: int = 8, val: int = 4, classes: int = 4) -> Path:
    """An ImageFolder of symbolic links to the first CIFAR-10 images of ``classes`` classes (no data copied)."""
    names = sorted(p.name for p in (CIFAR / "train").iterdir())[:classes]
    for split, source, count in (("train", "train", train), ("val", "test", val)):
        for name in names:
            folder = root / split / name
            folder.mkdir(parents=True)
            for image in sorted((CIFAR / source / name).iterdir())[:count]:
                (folder / image.name).symlink_to(image)
    return root


def camvid_subset(root: Path, train: int = 8, val: int = 2) -> Path:
    """A CamVid folder of symbolic links to the first images of each split."""
    for split, count in (("train", train), ("val", val)):
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True)
        for image in sorted((CAMVID / split / "images").glob("*.png"))[:count]:
            (root / split / "images" / image.name).symlink_to(image)
            (root / split / "labels" / image.name).symlink_to(CAMVID / split / "labels" / image.name)
    return root


def torchrun(script: Sequence[str], nproc: int = 2) -> List[str]:
    """The command running ``script`` (a file or ``-m module`` and its arguments) under torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *script]


def recorded(folder: Path, task: str, args: Sequence[str], stop_after: int = 0) -> List[str]:
    """``record_draws.py`` arguments: ``splitattn ARGS`` with ``task``'s training reads recorded in ``folder``."""
    return [RECORDER, str(folder), task, str(stop_after), "--", *args]


def run(command: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run ``command`` from the repository root (this checkout imported, one thread)."""
    result = subprocess.run(list(command), cwd=REPO, env=child_env(1), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def read_records(folder: Path) -> List[Dict]:
    """Every read ``record_draws.py`` logged in ``folder``, file by file in read order."""
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


def descendants(pid: int) -> List[int]:
    """The processes started by ``pid``, their children and so on (from /proc)."""
    parents: Dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def run_until(command: Sequence[str], total: int, at: int, sig: int = signal.SIGTERM) -> subprocess.CompletedProcess:
    """Run ``command`` with a progress bar of ``total`` steps and send ``sig`` to it and every process it
    started (as a cluster does: torchrun's workers and their data-loading workers included) once the bar
    shows step ``at``."""
    process = subprocess.Popen(
        list(command),
        cwd=REPO,
        env=child_env(1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: List[bytes] = []
    sent = threading.Event()
    pattern = re.compile(rb"(\d+)/" + str(total).encode() + rb"\b")

    def watch() -> None:
        buffer = b""
        while True:
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                return
            seen.append(chunk)
            buffer = (buffer + chunk)[-256:]
            steps = [int(m) for m in pattern.findall(buffer)]
            if not sent.is_set() and steps and max(steps) >= at:
                sent.set()
                for pid in [process.pid, *descendants(process.pid)]:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    stdout = process.stdout.read()
    process.wait()
    watcher.join()
    assert sent.is_set(), f"the run ended before step {at}:\n{b''.join(seen).decode(errors='replace')}"
    return subprocess.CompletedProcess(list(command), process.returncode, stdout.decode(), b"".join(seen).decode())


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: Path, b: Path, keys: Sequence[str] = ("model",)) -> None:
    """The checkpoints ``a`` and ``b`` hold bit-identical tensors under each of ``keys``."""
    first, second = load(a), load(b)
    for key in keys:
        assert first[key].keys() == second[key].keys(), key
        for name, tensor in first[key].items():
            assert torch.equal(tensor, second[key][name]), f"{key}.{name} differs"


def final_record(run_dir: Path) -> Optional[Dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else None
