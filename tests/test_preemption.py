"""SIGTERM mid-epoch (as a cluster sends it before a preemption: to the training process and its data-loading
workers) saves last.pt at the step reached, exits with 128 + 15 and one line saying how to continue, and
``--resume auto`` ends with exactly the weights of an uninterrupted run (``--deterministic``, CPU)."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

from .scale_helpers import COCO128, assert_same_weights, camvid_subset, load, run, run_until
from .train_helpers import TINY_MODEL, make_image_folder

COMMON = ["--workers", "1", "--deterministic", "--threads", "1", "--device", "cpu", "--no-tensorboard", "--seed", "2"]


def _stopped_and_resumed(tmp_path: Path, args: list, total: int, at: int) -> dict:
    """Run ``args`` straight, and again stopped by SIGTERM at step ``at`` of ``total`` then resumed; returns the
    stopped run's last.pt as the signal left it."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    splitattn = [sys.executable, "-m", "splitattn"]
    run([*splitattn, *args, "--output", str(straight), "--no-progress"])
    result = run_until([*splitattn, *args, "--output", str(stopped), "--progress"], total, at)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    lines = result.stderr.replace("\r", "\n").splitlines()
    message = [line for line in lines if "SIGTERM" in line and "--resume auto" in line]
    assert len(message) == 1 and "Traceback" not in result.stderr, result.stderr
    checkpoint = load(stopped / "last.pt")
    assert checkpoint["step"] == int(re.search(r"(?:step|iteration) (\d+)", message[0]).group(1))
    run([*splitattn, *args, "--output", str(stopped), "--no-progress", "--resume", "auto"])
    assert_same_weights(straight / "last.pt", stopped / "last.pt")
    return checkpoint


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_the_step_and_resumes_exactly(tmp_path: Path) -> None:
    """``splitattn train``: 64 images in steps of 4, 2 epochs of 16 steps, augmentation, EMA, a loader worker."""
    data = make_image_folder(tmp_path / "data", per_class=16)
    args = ["train", "--data", str(data), *TINY_MODEL, "--epochs", "2", "--batch-size", "4", "--ema", *COMMON]
    checkpoint = _stopped_and_resumed(tmp_path, args, total=32, at=18)
    assert 18 <= checkpoint["step"] < 32 and checkpoint["step"] != 16, checkpoint["step"]  # not the epoch's end
    assert (checkpoint["epoch"], checkpoint["epoch_images"]) == (1, (checkpoint["step"] - 16) * 4)


@pytest.mark.slow
@pytest.mark.usefixtures("coco128")
def test_sigterm_stops_detection_between_checkpoints_and_resumes_exactly(tmp_path: Path) -> None:
    """``splitattn detect train``: 12 iterations, no periodic checkpoint before the end."""
    args = ["detect", "train", "--data", str(COCO128), "--backbone", "resnest14", "--norm", "groupnorm"]
    args += ["--model-kwargs", "bottleneck_width=16", "stem_width=16", "--min-size", "96", "--max-size", "128"]
    args += ["--max-images", "4", "--batch-size", "1", "--max-iter", "12", "--steps", "8", "--warmup-iters", "2"]
    args += ["--eval-every", "100", "--checkpoint-every", "100", "--log-every", "100", *COMMON]
    checkpoint = _stopped_and_resumed(tmp_path, args, total=12, at=4)
    assert 4 <= checkpoint["iter"] < 12, checkpoint["iter"]


@pytest.mark.slow
@pytest.mark.usefixtures("camvid_mini")
def test_sigterm_stops_segmentation_mid_epoch_and_resumes_exactly(tmp_path: Path) -> None:
    """``splitattn segment train``: 16 CamVid images in steps of 2, 2 epochs of 8 steps, scales/crops/flips."""
    data = camvid_subset(tmp_path / "camvid", train=16, val=1)
    args = ["segment", "train", "--data", str(data), "--classes", "a,b,c,d,e,f,g,h,i,j,k", "--ignore-value", "11"]
    args += ["--backbone", "resnest14", "--output-stride", "16", "--base-size", "96", "--crop-size", "48"]
    args += ["--batch-size", "2", "--epochs", "2", *COMMON]
    checkpoint = _stopped_and_resumed(tmp_path, args, total=16, at=11)
    assert 11 <= checkpoint["step"] < 16 and checkpoint["step"] != 8, checkpoint["step"]  # not the epoch's end
