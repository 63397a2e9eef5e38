"""Training under torchrun on real images: augmentation draws per rank and worker, evaluation of what is saved,
a stop and resume that is bit-exact, and resumes with another number of processes or batch size.

Every run is 2 Gloo processes on the CPU (``torchrun --nproc_per_node 2``) unless said otherwise, with a narrow
resnest14; ``record_draws.py`` records, per rank and data-loading worker, the random draws of every sample read.
"""

from __future__ import annotations

import collections
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from splitattn.cli import main
from splitattn.engine.tally import AGREE_EVERY

from .scale_helpers import (
    CAMVID,
    CIFAR,
    COCO128,
    assert_same_weights,
    camvid_subset,
    cifar_subset,
    final_record,
    load,
    read_records,
    recorded,
    run,
    run_until,
    torchrun,
)
from .train_helpers import TINY_MODEL

needs_data = pytest.mark.skipif(
    not (CIFAR.is_dir() and COCO128.is_dir() and CAMVID.is_dir()), reason="shared data sets not found"
)
pytestmark = needs_data
COMMON = ["--threads", "1", "--device", "cpu", "--no-tensorboard", "--seed", "5"]


def _classify(data: Path, output: Path, *extra: str) -> list:
    # augmentation on (the recipe's random-resized crop and flip, colour jitter), BatchNorm, EMA
    return [
        "train",
        "--data",
        str(data),
        "--output",
        str(output),
        *TINY_MODEL,
        "--batch-size",
        "4",
        "--lr",
        "0.05",
        "--color-jitter",
        "0.3",
        "--ema",
        "--deterministic",
        *COMMON,
        *extra,
    ]


def _check_draws(records: list, workers: int, exact: bool) -> None:
    """Per rank and worker, the draws differ: every sample's generator state is new, and the draws applied to one
    fixed image differ from sample to sample (``exact``) or at least between the ranks (a flip: one bit)."""
    streams = collections.defaultdict(list)
    for record in records:
        streams[record["rank"], record["worker"]].append(record)
    expected = {(rank, worker) for rank in (0, 1) for worker in (range(workers) if workers else [None])}
    assert set(streams) == expected
    assert len({r["rng"] for r in records}) == len(records), "two samples started from the same generator state"
    if exact:
        assert len({r["draw"] for r in records}) == len(records), "two samples drew the same augmentation"
    else:
        by_rank = [[r["draw"] for r in records if r["rank"] == rank] for rank in (0, 1)]
        assert by_rank[0] != by_rank[1] and len(set(by_rank[0] + by_rank[1])) == 2


@pytest.mark.slow
def test_two_process_classification_draws_evaluation_and_sigterm_resume(tmp_path: Path) -> None:
    """2 processes, real CIFAR images, augmentation on, ``--workers 2``, BatchNorm, EMA; 12 steps per epoch.

    The straight run records its draws: they differ per rank and worker (and the ranks' own generators, which
    drive the model's randomness, differ too). Its logged final val top-1 and loss are those of `classify
    evaluate` on its saved last.pt. The same run stopped by SIGTERM to every process in epoch 1 saves the step
    the ranks agreed on (no epoch has ended yet), and ``--resume auto`` ends with bit-identical weights. (The
    draws of 2 processes with ``--workers 0`` are checked in the resume test below.)"""
    data = cifar_subset(tmp_path / "cifar", train=24, val=8)  # 96 images: 12 steps of 2 x 4 per epoch
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    args = ["--epochs", "2", "--workers", "2"]
    run(torchrun(recorded(tmp_path / "draws", "classification", _classify(data, straight, "--no-progress", *args))))
    records = read_records(tmp_path / "draws")
    _check_draws(records, workers=2, exact=True)
    last = load(straight / "last.pt")
    assert len(last["rng"]) == 2 and not torch.equal(last["rng"][0]["torch"], last["rng"][1]["torch"])
    calls = json.loads((tmp_path / "draws" / "all_reduce-0.json").read_text())
    check_points = {step for step in range(1, 25) if step % AGREE_EVERY == 0 or step % 12 == 0}  # + epoch ends
    assert calls["tally.py"] == len(check_points), calls  # one all-reduce per check point, none per step

    # evaluation of what is saved: the logged metric is `evaluate` of last.pt
    evaluate = ["classify", "evaluate", "--weights", str(straight / "last.pt"), "--data", str(data), "--workers", "0"]
    assert main(evaluate) == 0
    evaluated, logged = json.loads((straight / "eval-val" / "metrics.json").read_text()), final_record(straight)
    assert logged["val_top1"] == evaluated["top1"]
    assert logged["val_loss"] == pytest.approx(evaluated["loss"], rel=1e-5)

    # SIGTERM to every process (torchrun, both ranks, their loader workers) at step 3: the ranks agree at step 10
    result = run_until(torchrun(["-m", "splitattn", *_classify(data, stopped, "--progress", *args)]), 24, 3)
    assert result.returncode != 0 and "--resume auto" in result.stderr, result.stderr
    assert load(stopped / "last.pt")["step"] == AGREE_EVERY
    run(torchrun(["-m", "splitattn", *_classify(data, stopped, "--no-progress", "--resume", "auto", *args)]))
    assert_same_weights(straight / "last.pt", stopped / "last.pt", keys=("model", "ema"))
    assert [json.loads(line)["epoch"] for line in (stopped / "log.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_two_process_draws_differ_per_rank_and_worker(tmp_path: Path, task: str) -> None:
    """Detection (flips, on coco128) and segmentation (scales, crops, flips, on CamVid): 2 processes,
    ``--workers 2``: every sample starts from its own generator state, and the draws differ between ranks."""
    if task == "detection":
        args = ["detect", "train", "--data", str(COCO128), "--backbone", "resnest14", "--norm", "groupnorm"]
        args += ["--model-kwargs", "bottleneck_width=16", "stem_width=16", "--min-size", "96", "--max-size", "128"]
        args += ["--max-images", "8", "--batch-size", "2", "--max-iter", "2", "--steps", "--warmup-iters", "1"]
        args += ["--eval-every", "100", "--checkpoint-every", "100", "--log-every", "2"]
    else:
        data = camvid_subset(tmp_path / "camvid", train=16, val=1)
        args = ["segment", "train", "--data", str(data), "--classes", "a,b,c,d,e,f,g,h,i,j,k", "--ignore-value", "11"]
        args += ["--backbone", "resnest14", "--output-stride", "16", "--base-size", "96", "--crop-size", "48"]
        args += ["--batch-size", "2", "--epochs", "1"]
    args += ["--workers", "2", "--output", str(tmp_path / "run"), "--no-progress", *COMMON]
    run(torchrun(recorded(tmp_path / "draws", task, args)))
    _check_draws(read_records(tmp_path / "draws"), workers=2, exact=task == "segmentation")


@pytest.mark.slow
def test_resume_with_other_processes_or_batch_size_trains_exactly_the_remaining_images(tmp_path: Path) -> None:
    """One process (batch 4, 32 images: 8 steps per epoch, 2 epochs) stops by SIGTERM after 44 images (11 steps,
    12 images into epoch 2). Resumed with 2 processes x 4 it trains the 20 images epoch 2 has left in 2 steps of
    8 (4 dropped, as every epoch drops what fills no step) and ends at step 8 of its own 8-step schedule; resumed
    in one process with --batch-size 6 it trains 3 steps of 6 and ends at step 10 of 10. The images are counted by
    the reads of each run; no image of epoch 2 is trained twice. The 2 processes read with ``--workers 0``: their
    draws differ per rank as well."""
    data = cifar_subset(tmp_path / "cifar", train=8, val=2)
    first = tmp_path / "first"
    base = ["--epochs", "2", "--workers", "0", "--no-progress"]
    reads = tmp_path / "first-reads"
    result = run([sys.executable, *recorded(reads, "classification", _classify(data, first, *base), 44)], check=False)
    assert result.returncode != 0 and "SIGTERM" in result.stderr, result.stderr
    stopped = load(first / "last.pt")
    assert (stopped["step"], stopped["epoch"], stopped["epoch_images"], stopped["images_seen"]) == (11, 1, 12, 44)
    first_reads = [r["index"] for r in read_records(reads)]
    assert len(first_reads) == 44 and sorted(first_reads[:32]) == list(range(32))
    trained_in_epoch_2 = set(first_reads[32:])

    for processes, batch, total_steps, steps_left in ((2, 4, 8, 2), (1, 6, 10, 3)):
        output, reads = tmp_path / f"{processes}x{batch}", tmp_path / f"{processes}x{batch}-reads"
        shutil.copytree(first, output)
        args = _classify(data, output, *base, "--resume", "auto") + ["--batch-size", str(batch)]
        script = recorded(reads, "classification", args)
        result = run(torchrun(script) if processes > 1 else [sys.executable, *script])
        assert "this run takes" in result.stdout
        if processes > 1:  # --workers 0: each training process draws, differently
            _check_draws(read_records(reads), workers=0, exact=True)
        indices = [r["index"] for r in read_records(reads)]
        global_batch = processes * batch
        assert len(indices) == steps_left * global_batch == len(set(indices)), indices
        assert not set(indices) & trained_in_epoch_2
        assert len(set(indices) | trained_in_epoch_2) == 32 - (20 - steps_left * global_batch)
        end = load(output / "last.pt")
        assert (end["step"], end["epoch"], end["images_seen"]) == (total_steps, 2, 44 + len(indices))
        records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
        assert [(r["epoch"], r["images_seen"]) for r in records] == [(1, 32), (2, 44 + len(indices))]
