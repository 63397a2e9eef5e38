"""`splitattn segment train|evaluate|predict` on real CamVid road scenes, and the configs."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from splitattn.cli import build_parser, main
from splitattn.config import SegmentConfig, resolve
from splitattn.data.segmentation import CAMVID_CLASSES
from splitattn.engine.optim import poly
from splitattn.weights import load_checkpoint

from .conftest import REPO_ROOT, SHARED_DATA
from .scale_helpers import camvid_subset

CAMVID = SHARED_DATA / "camvid-mini"
needs_camvid = pytest.mark.usefixtures("camvid_mini")


def _under(state: dict, prefix: str) -> dict:
    """The entries of ``state`` under ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _train_args(data, output, epochs: int) -> list:
    return [
        "segment",
        "train",
        "--data",
        str(data),
        "--classes",
        ",".join(CAMVID_CLASSES),
        "--ignore-value",
        "11",
        "--backbone",
        "resnest14",
        "--output-stride",
        "16",
        "--base-size",
        "128",
        "--crop-size",
        "64",
        "--batch-size",
        "4",
        "--epochs",
        str(epochs),
        "--eval-every",
        "4",
        "--lr",
        "0.01",
        "--head-lr-mult",
        "1",
        "--workers",
        "0",
        "--no-progress",
        "--device",
        "cpu",
        "--output",
        str(output),
        "--debug",
    ]


@needs_camvid
def test_camvid_train_resume_evaluate_predict(tmp_path, capsys):
    data = camvid_subset(tmp_path / "camvid", train=8, val=4)
    run = tmp_path / "run"
    assert main(_train_args(data, run, 2)) == 0
    for name in ("last.pt", "best.pt", "curves.png", "metrics.json", "options.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())

    # a finished run is not overwritten; --resume auto continues it, here for two more epochs
    with pytest.raises(ValueError, match="already holds a run"):
        main(_train_args(data, run, 4))
    assert main(_train_args(data, run, 4) + ["--resume", "auto"]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert "val_miou" in records[1] and "val_miou" in records[3] and "val_miou" not in records[2]
    assert "val_loss" in records[1] and records[1]["val_loss"] > 0
    # the resumed run follows its own 8-step poly schedule: after step 6 the lr is 0.01 x (2/8) ** 0.9
    assert records[2]["lr"] == pytest.approx(0.01 * 0.25**0.9)
    losses = [r["train_loss"] for r in records]
    # from ~1.2 x ln(11) = 2.9 at initialisation; two iterations an epoch on random crops are noisy
    assert losses[3] < 0.9 * losses[0] and losses[2] + losses[3] < losses[0] + losses[1], losses
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 4 and checkpoint["step"] == 8 and checkpoint["classes"] == list(CAMVID_CLASSES)
    # the run records where its ResNeSt sits: what pretrained=RUN/last.pt hands another model is that backbone
    backbone, body = load_checkpoint(run / "last.pt"), _under(checkpoint["model"], "backbone.")
    assert "conv1.0.weight" in backbone and backbone.keys() == body.keys()
    assert all(torch.equal(backbone[k], body[k]) for k in body)
    metrics = json.loads((run / "metrics.json").read_text())
    assert [row["name"] for row in metrics["per_class"]] == list(CAMVID_CLASSES)
    # mIoU: the mean over the classes that have an IoU (mmsegmentation's rule), as logged for the last epoch
    ious = [row["iou"] for row in metrics["per_class"] if row["iou"] is not None]
    assert metrics["miou"] == pytest.approx(sum(ious) / len(ious)) == pytest.approx(records[3]["val_miou"])
    assert metrics["miou"] > 0 and metrics["labelled_pixels"] > 0
    # the final evaluation's per-class diagnostics (RUN/diagnostics): the CSV holds metrics.json's per-class IoU
    with (run / "diagnostics" / "per_class.csv").open() as handle:
        written = [row["iou"] for row in csv.DictReader(handle)]
    assert written == ["" if row["iou"] is None else f"{row['iou']:.4f}" for row in metrics["per_class"]]

    capsys.readouterr()
    assert (
        main(
            [
                "segment",
                "evaluate",
                "--weights",
                str(run / "last.pt"),
                "--multi-scale",
                "--base-size",
                "64",
                "--device",
                "cpu",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert "mIoU" in capsys.readouterr().out
    evaluated = json.loads((run / "eval-val-ms" / "metrics.json").read_text())
    assert evaluated["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0] and evaluated["flip"] is True
    assert evaluated["images"] == 4 and len(evaluated["per_class"]) == 11
    assert {"per_class.csv", "per_class_iou.png", "confusion_matrix.png"} <= {
        p.name for p in (run / "eval-val-ms").iterdir()
    }

    images = sorted((data / "val" / "images").iterdir())[:2]
    out = tmp_path / "pred"
    assert (
        main(
            [
                "segment",
                "predict",
                *map(str, images),
                "--weights",
                str(run / "best.pt"),
                "--output",
                str(out),
                "--base-size",
                "96",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    for image in images:
        mask = Image.open(out / f"{image.stem}_mask.png")
        overlay = Image.open(out / f"{image.stem}_overlay.png")
        assert mask.mode == "P" and mask.size == (480, 360)
        assert overlay.height == 360 and overlay.width > 480  # the image and, on its right, the legend
        assert np.asarray(mask).max() < len(CAMVID_CLASSES)


def test_poly_schedule():
    """torch's PolynomialLR against DeepLab's poly factor (1 - step / total) ** power, transcribed."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = poly(optimizer, total=100, power=0.9)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(100):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([(1 - step / 100) ** 0.9 for step in range(101)], abs=1e-9)
    assert lrs[0] == 1.0 and lrs[100] == 0.0


def _resolve(argv):
    parser = build_parser()
    args = parser.parse_args(["segment", "train", *argv])
    return dataclasses.asdict(resolve(SegmentConfig, args)[0])


def test_ade20k_config_holds_the_paper_settings():
    options = _resolve(
        ["--config", str(REPO_ROOT / "configs/segmentation/ade20k_deeplabv3_resnest50.yaml"), "--data", "/data/ade"]
    )
    assert (options["dataset"], options["backbone"], options["head"]) == ("ade20k", "resnest50", "deeplabv3")
    assert (options["base_size"], options["crop_size"], options["scale_range"]) == (520, 480, [0.5, 2.0])
    assert (options["lr"], options["poly_power"], options["epochs"], options["global_batch"]) == (0.01, 0.9, 120, 16)
    assert options["sync_bn"] and options["aux"] and options["aux_weight"] == 0.2 and options["output_stride"] == 8


def test_camvid_config_and_flags_override_it():
    options = _resolve(
        [
            "--config",
            str(REPO_ROOT / "configs/segmentation/camvid_deeplabv3_resnest14.yaml"),
            "--epochs",
            "3",
            "--data",
            "camvid",
        ]
    )  # the config names no data path of ours
    assert options["classes"] == list(CAMVID_CLASSES) and options["ignore_value"] == 11
    assert options["epochs"] == 3 and options["backbone"] == "resnest14"


def test_config_with_unknown_key_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("crop_szie: 480\n")
    with pytest.raises(ValueError, match="did you mean 'crop_size'"):
        _resolve(["--config", str(config)])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "segment",
                "train",
                "--data",
                str(tmp_path / "missing"),
                "--classes",
                "a",
                "--output",
                str(tmp_path / "run"),
            ]
        )
        == 1
    )  # a run error (exit 2 is for usage errors)
    assert "data folder" in capsys.readouterr().err


def _synthetic_folder(root, sizes):
    """Random images with labels 0..2 and void 9, ``sizes`` per split as (height, width) lists."""
    rng = np.random.default_rng(0)
    for split, shapes in sizes.items():
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True)
        for index, (h, w) in enumerate(shapes):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                root / split / "images" / f"{index}.png"
            )
            Image.fromarray(rng.choice([0, 1, 2, 9], (h, w)).astype(np.uint8)).save(
                root / split / "labels" / f"{index}.png"
            )
    return root


def test_two_process_gloo_run_evaluates_every_image_once(tmp_path):
    val_shapes = [(40, 48), (36, 50), (44, 44)]  # three images on two ranks: one rank gets two
    data = _synthetic_folder(tmp_path / "data", {"train": [(64, 64)] * 4, "val": val_shapes})
    with socket.socket() as probe:  # a free port: --master_port=0 hangs in the workers' rendezvous here
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "-m",
        "splitattn",
        "segment",
        "train",
        "--data",
        str(data),
        "--classes",
        "a,b,c",
        "--ignore-value",
        "9",
        "--backbone",
        "resnest14",
        "--output-stride",
        "16",
        "--base-size",
        "48",
        "--crop-size",
        "48",
        "--batch-size",
        "2",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "run"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    labelled = sum(int((np.asarray(Image.open(p)) != 9).sum()) for p in sorted((data / "val" / "labels").iterdir()))
    assert metrics["images"] == 3 and metrics["labelled_pixels"] == labelled
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 1  # 4 images / (2 x 2) per step


def test_validation_loss_is_the_pixel_cross_entropy_over_labelled_pixels():
    """evaluate()'s ``loss`` against torch's cross_entropy with ignore_index (single scale, no resizing)."""
    from torch.utils.data import DataLoader

    from splitattn.data.segmentation import IGNORE_INDEX, collate_eval
    from splitattn.tasks.segmentation.engine import evaluate

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1)
    wrapped = type("Pixels", (torch.nn.Module,), {"forward": lambda self, x: {"out": model(x)}})()
    images = [torch.randn(3, 40, 48), torch.randn(3, 40, 48)]
    targets = [torch.randint(0, 4, (40, 48)) for _ in images]
    targets[1][:10] = IGNORE_INDEX
    loader = DataLoader(list(zip(images, targets)), batch_size=2, collate_fn=collate_eval)
    result = evaluate(wrapped.eval(), loader, 4, torch.device("cpu"), list("abcd"))
    with torch.no_grad():
        logits = torch.stack([model(image[None])[0] for image in images])
    expected = torch.nn.functional.cross_entropy(logits, torch.stack(targets), ignore_index=IGNORE_INDEX)
    assert result["loss"] == pytest.approx(expected.item(), rel=1e-5)
