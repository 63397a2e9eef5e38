"""A small ResNeSt learns real CIFAR-10 images: test accuracy far above chance (10%) after a few epochs on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import SHARED_DATA
from .train_helpers import TINY_MODEL, cli

CIFAR = SHARED_DATA / "cifar10-mini"
MIN_TOP1 = 30.0  # chance is 10%


@pytest.mark.slow
@pytest.mark.usefixtures("cifar10_mini")
def test_resnest14_learns_cifar10_mini(tmp_path: Path) -> None:
    output = tmp_path / "run"
    result = cli(
        [
            "train",
            "--data",
            str(CIFAR),
            "--output",
            str(output),
            *TINY_MODEL,
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--lr",
            "0.02",
            "--warmup-epochs",
            "0.3",
            "--rrc-scale",
            "0.5",
            "1",
            "--workers",
            "1",
            "--seed",
            "0",
            "--no-progress",
        ],
        threads=2,
    )
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["epoch"] == 3 and metrics["eval_images"] == 1000 and metrics["num_classes"] == 10
    assert metrics["top1"] >= MIN_TOP1, result.stdout
    assert "test accuracy after 3 epochs:" in result.stdout  # cifar10-mini evaluates on its test/ split
