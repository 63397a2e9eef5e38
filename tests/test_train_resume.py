"""Kill a training run at an arbitrary moment, resume it with --resume auto, and get bit-identical weights."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .train_helpers import REPO, TINY_MODEL, child_env, cli, make_image_folder

EPOCHS = 4


def _train_args(data: Path, output: Path) -> list:
    # Every random consumer is on: crops/flips in a worker process, mixup, label smoothing, DropBlock, EMA.
    return [
        "train",
        "--data",
        str(data),
        "--output",
        str(output),
        *TINY_MODEL,
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "8",
        "--lr",
        "0.05",
        "--warmup-epochs",
        "1",
        "--mixup",
        "0.2",
        "--label-smoothing",
        "0.1",
        "--drop-block",
        "0.1",
        "--ema",
        "--ema-decay",
        "0.9",
        "--rrc-scale",
        "0.5",
        "1",
        "--workers",
        "1",
        "--seed",
        "3",
        "--deterministic",
        "--threads",
        "1",
        "--no-progress",
        "--no-tensorboard",
    ]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    cli(_train_args(data, tmp_path / "straight"))

    resumed_dir = tmp_path / "resumed"
    process = subprocess.Popen(
        [sys.executable, "-m", "splitattn", *_train_args(data, resumed_dir)],
        cwd=REPO,
        env=child_env(1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = resumed_dir / "log.jsonl"
    while process.poll() is None and not (log.exists() and log.read_text().count("\n") >= 1):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it was killed: {process.stderr.read()}"
    killed_at = _load(resumed_dir / "last.pt")["epoch"] if (resumed_dir / "last.pt").exists() else 0
    assert killed_at < EPOCHS

    result = cli(_train_args(data, resumed_dir) + ["--resume", "auto"])
    if killed_at:
        assert f"resuming after epoch {killed_at}" in result.stdout

    straight, resumed = _load(tmp_path / "straight" / "last.pt"), _load(resumed_dir / "last.pt")
    assert resumed["epoch"] == straight["epoch"] == EPOCHS and resumed["step"] == straight["step"]
    for key in ("model", "ema"):
        assert straight[key].keys() == resumed[key].keys()
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs after resuming"
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    epochs_logged = [line for line in (resumed_dir / "log.jsonl").read_text().splitlines() if line]
    assert len(epochs_logged) == EPOCHS  # the killed epoch is logged once, by the resumed run


def test_resume_refuses_to_overwrite_and_finished_run_reports(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=4)
    args = [
        "train",
        "--data",
        str(data),
        "--output",
        str(tmp_path / "run"),
        *TINY_MODEL,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--no-progress",
        "--no-tensorboard",
    ]
    cli(args)
    again = cli(args, check=False)
    assert again.returncode == 2 and "--resume auto" in again.stderr and "--exist-ok" in again.stderr
    recorded = (tmp_path / "run" / "metrics.json").read_bytes()
    finished = cli(args + ["--resume", "auto"])  # a finished run is reported, never re-run nor overwritten
    assert "is finished (metrics.json): nothing to train" in finished.stdout
    assert (tmp_path / "run" / "metrics.json").read_bytes() == recorded


def test_resumed_with_more_epochs_continues_on_the_longer_schedule(tmp_path: Path) -> None:
    """A 1-epoch run resumed with --epochs 3 follows the 3-epoch cosine (never a finished schedule at lr 0)."""
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    args = [
        "train",
        "--data",
        str(data),
        "--output",
        str(tmp_path / "run"),
        *TINY_MODEL,
        "--batch-size",
        "4",
        "--lr",
        "0.1",
        "--workers",
        "0",
        "--threads",
        "1",
        "--no-progress",
        "--no-tensorboard",
    ]
    cli(args + ["--epochs", "1"])  # 2 steps: the cosine ends at lr 0
    first = _load(tmp_path / "run" / "last.pt")
    cli(args + ["--epochs", "3", "--resume", "auto"])
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[0]["lr"] == 0.0  # the 1-epoch schedule
    # the 3-epoch schedule after 4 of 6 steps, the recipe's cosine transcribed
    assert records[1]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 4 / 6)))
    last = _load(tmp_path / "run" / "last.pt")
    assert last["step"] == 6 and any(not torch.equal(first["model"][k], last["model"][k]) for k in first["model"])
