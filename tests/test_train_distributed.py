"""A 2-process Gloo run under torchrun takes the same optimizer steps as one process on the same global batch.

"Same update" is exactly true only when a sample's gradient does not depend on which
process holds it, so the model uses GroupNorm (no batch statistics), no random
augmentation, no mixup and no dropout. Then the DDP run (4 images per process), a
single process (8 images) and a single process accumulating 2 x 4 images all average
the gradients of the same 8 images per step; only the summation order differs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from splitattn import create_model
from splitattn.engine.checkpoint import seed_everything

from .train_helpers import REPO, TINY_MODEL, child_env, cli, make_image_folder

COMMON = [
    *TINY_MODEL,
    "--norm",
    "groupnorm",
    "--no-augment",
    "--epochs",
    "1",
    "--global-batch",
    "8",
    "--lr",
    "0.01",
    "--label-smoothing",
    "0.1",
    "--workers",
    "0",
    "--seed",
    "7",
    "--no-progress",
    "--no-tensorboard",
    "--device",
    "cpu",
]


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]


def test_two_process_gloo_run_matches_single_process(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=8)  # 32 images: 4 steps of 8
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "splitattn",
        "train",
        "--data",
        str(data),
        "--output",
        str(tmp_path / "ddp"),
        "--batch-size",
        "4",
        *COMMON,
    ]
    result = subprocess.run(torchrun, cwd=REPO, env=child_env(1), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 = 4 x 2 process(es) x 1 accumulation" in result.stdout
    cli(["train", "--data", str(data), "--output", str(tmp_path / "single"), "--batch-size", "8", *COMMON])
    cli(["train", "--data", str(data), "--output", str(tmp_path / "accum"), "--batch-size", "4", *COMMON])

    reference = _weights(tmp_path / "single")
    assert torch.load(tmp_path / "single" / "last.pt", weights_only=True)["step"] == 4
    seed_everything(7)  # the trainer's seeding before it builds the model: the common starting point
    initial = create_model("resnest14", num_classes=4, bottleneck_width=16, stem_width=16, norm_layer="groupnorm")
    moved = max((reference[k] - v).abs().max().item() for k, v in initial.state_dict().items())
    assert moved > 1e-3, "the steps did not change the weights, so their equality would prove nothing"
    for other in ("ddp", "accum"):
        weights = _weights(tmp_path / other)
        for name, tensor in reference.items():
            torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-6, msg=f"{other}: {name}")

    # Metrics are reduced over both ranks: the DDP run evaluated all 32 images once.
    single_log = json.loads((tmp_path / "single" / "log.jsonl").read_text().splitlines()[0])
    ddp_log = json.loads((tmp_path / "ddp" / "log.jsonl").read_text().splitlines()[0])
    assert abs(ddp_log["val_top1"] - single_log["val_top1"]) <= 100 / 32
    assert abs(ddp_log["train_loss"] - single_log["train_loss"]) < 1e-4
    # Only rank 0 wrote: one record per epoch, not one per process.
    assert len((tmp_path / "ddp" / "log.jsonl").read_text().splitlines()) == 1
