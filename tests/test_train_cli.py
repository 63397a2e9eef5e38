"""Options, config files, recipe configs, transforms, bad input and the evaluate/predict commands."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from splitattn.cli import build_parser, main
from splitattn.data import Lighting, build_eval_transform, digits_datasets, load_split, mixup_batch
from splitattn.data.labels import imagenet_class_names
from splitattn.engine.checkpoint import atomic_save
from splitattn.engine.optim import parameter_groups, warmup_cosine
from splitattn.tasks.classification import NonFiniteLossError, engine, train
from splitattn.tasks.classification.cli import resolve_train_config

from .train_helpers import REPO, TINY_MODEL, child_env, independent_top1, make_image_folder

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
# model: (train crop, eval crop, dropout) from the paper's recipe
RECIPE_SIZES = {
    "resnest14": (224, 224, 0.0),
    "resnest26": (224, 224, 0.0),
    "resnest50": (224, 224, 0.0),
    "resnest101": (224, 256, 0.0),
    "resnest200": (256, 320, 0.2),
    "resnest269": (320, 416, 0.2),
}


def _options(argv):
    return resolve_train_config(build_parser().parse_args(["train", *argv]))


def test_config_file_is_overridden_by_flags(tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("epochs: 7\nbatch-size: 16\nlr: 0.3\nmodel_kwargs: {stem_width: 16}\n")
    options = _options(["--config", str(yaml_file), "--epochs", "2"])
    assert (options.epochs, options.batch_size, options.lr) == (2, 16, 0.3)
    assert options.model_kwargs == {"stem_width": 16}
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"amp": "bf16", "augment": False}))
    options = _options(["--config", str(json_file), "--model-kwargs", "bottleneck_width=32"])
    assert options.amp == "bf16" and options.augment is False
    assert options.model_kwargs == {"bottleneck_width": 32}


def test_unknown_config_key_is_one_clear_error(tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 3\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "unknown key(s): 'learning_rate'" in error and error.count("\n") == 1
    config.write_text("amp: fp8\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "amp must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_shipped_configs_follow_the_paper_recipe(config: Path) -> None:
    options = _options(["--config", str(config)])
    recipe = dict(
        momentum=0.9,
        weight_decay=1e-4,
        base_lr=0.1,
        warmup_epochs=5,
        epochs=270,
        label_smoothing=0.1,
        mixup=0.2,
        auto_augment=True,
        color_jitter=0.4,
        pca_lighting=0.1,
        zero_init_last=True,
        drop_block=0.1,
        hflip=0.5,
        rrc_scale=[0.08, 1.0],
        crop_pct=0.875,
        lr=None,
    )
    assert {key: getattr(options, key) for key in recipe} == recipe
    base_model = options.model.split("_fast")[0]
    train_size, eval_size, dropout = RECIPE_SIZES[base_model]
    assert (options.img_size, options.eval_img_size, options.dropout) == (train_size, eval_size, dropout)
    assert options.global_batch % options.batch_size == 0


def test_every_published_model_has_a_config() -> None:
    names = {c.stem for c in CONFIGS}
    assert {"resnest14", "resnest26", "resnest50", "resnest101", "resnest200", "resnest269"} <= names
    assert any(name.startswith("resnest50_fast_") for name in names)


def test_schedule_groups_and_batch_transforms() -> None:
    # the recipe's schedule, transcribed: (step + 1) / warmup, then 0.5 (1 + cos(pi progress))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, warmup=4, total=14)
    lrs = [optimizer.param_groups[0]["lr"]] + [
        optimizer.step() or scheduler.step() or optimizer.param_groups[0]["lr"] for _ in range(14)
    ]
    expected = [(s + 1) / 4 if s < 4 else 0.5 * (1 + math.cos(math.pi * (s - 4) / 10)) for s in range(15)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    decay, no_decay = parameter_groups(model, 1e-4)
    assert [p.ndim for p in decay["params"]] == [4, 2] and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias

    torch.manual_seed(0)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, targets = mixup_batch(images, labels, num_classes=5, alpha=0.2, smoothing=0.1)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    lam = (targets[0, 0] - 0.02) / 0.9  # class 0 only comes from sample 0, weighted by lambda
    assert torch.allclose(mixed[0], lam * images[0] + (1 - lam) * images[3], atol=1e-6)

    image = torch.full((3, 4, 4), 0.5)
    assert torch.equal(Lighting(0.0)(image), image)
    shifted = Lighting(0.1)(image)
    assert not torch.equal(shifted, image) and torch.allclose(shifted.std((1, 2)), torch.zeros(3))


def test_eval_transform_resizes_then_centre_crops() -> None:
    # A run trained here is evaluated with timm's rule: short side to floor(size / crop_pct), centre crop.
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    reference = T.Compose(
        [
            T.Resize(256, T.InterpolationMode.BILINEAR),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    assert torch.equal(build_eval_transform(224)(image), reference(image))
    assert build_eval_transform(416, 0.928, "bicubic").transforms[0].size == math.floor(416 / 0.928) == 448


def test_digits_ship_with_scikit_learn() -> None:
    train_set, test_set = digits_datasets(build_eval_transform(32, 1.0), build_eval_transform(32, 1.0))
    assert (len(train_set), len(test_set)) == (1438, 359)
    image, label, bad = train_set[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10 and bad == ()
    assert sorted(set(test_set.labels)) == list(range(10))


def _bad_input_folder(root: Path) -> Path:
    make_image_folder(root, classes=("a", "b"), per_class=3, splits=("train",))
    make_image_folder(root, classes=("a", "b"), per_class=2, splits=("val",), seed=1)
    (root / "train" / "a" / "corrupt.jpg").write_bytes(b"not an image at all")
    rgb = (np.random.default_rng(2).random((36, 36, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).convert("L").save(root / "train" / "b" / "grey.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "train" / "b" / "cmyk.jpg")
    Image.fromarray(rgb).convert("RGBA").save(root / "val" / "b" / "rgba.png")
    jpeg = root / "val" / "a" / "truncated.jpg"
    Image.fromarray(rgb).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    return root


def _tiny_options(data: Path, output: Path, **changes):
    options = _options(
        [
            "--data",
            str(data),
            "--output",
            str(output),
            *TINY_MODEL,
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--no-progress",
            "--threads",
            str(torch.get_num_threads()),
        ]
    )
    return dataclasses.replace(options, **changes)


def test_bad_images_are_skipped_and_counted_and_odd_modes_converted(tmp_path: Path, capsys) -> None:
    data = _bad_input_folder(tmp_path / "data")
    dataset = load_split(data / "train", transform=None)
    modes = {Path(path).name: dataset[i][0].mode for i, (path, _) in enumerate(dataset.samples) if dataset[i][2] == ()}
    assert modes["grey.png"] == modes["cmyk.jpg"] == "RGB"

    metrics = train(_tiny_options(data, tmp_path / "run", epochs=1))
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records[0]["train_bad_images"] == 1 and records[0]["val_bad_images"] == 1
    assert metrics["epoch"] == 1 and "top5" in metrics
    assert metrics["top1"] == pytest.approx(independent_top1(tmp_path / "run", data / "val"))
    assert "corrupt.jpg" in capsys.readouterr().err
    for name in ("last.pt", "best.pt", "metrics.json", "curves.png", "log.jsonl"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert any((tmp_path / "run" / "tensorboard").iterdir())

    checkpoint = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "rng", "args", "classes"} <= set(
        checkpoint
    )
    evaluate = ["evaluate", "--data", str(data), *TINY_MODEL[:2], "--weights", str(tmp_path / "run" / "last.pt")]
    assert main(evaluate) == 1  # an image left out would change the score: evaluate names it instead
    assert "truncated.jpg cannot be read" in capsys.readouterr().err
    (data / "val" / "a" / "truncated.jpg").unlink()
    assert main(evaluate) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "at 32px" in out
    fast = ["--fast", "--backend", "torchscript"]
    assert (
        main(["evaluate", "--data", str(data), *TINY_MODEL[:2], "--weights", str(tmp_path / "run" / "last.pt"), *fast])
        == 0
    )
    fast_out = capsys.readouterr().out
    assert fast_out.split("loss")[0] == out.split("loss")[0]  # same top-1/top-5; the loss may differ in rounding
    image = data / "val" / "b" / "rgba.png"
    predict = ["predict", str(image), *TINY_MODEL[:2], "--weights", str(tmp_path / "run" / "last.pt"), "--topk", "2"]
    assert main(predict) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and {line.split()[-1] for line in lines[1:]} == {"a", "b"}
    assert main([*predict, *fast]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert main([*predict, "--fast"]) == 0  # auto: OpenVINO for fp32 where installed, said on stderr
    captured = capsys.readouterr()
    assert captured.out.splitlines() == lines
    installed = importlib.util.find_spec("openvino") is not None
    assert f"fast path: {'openvino' if installed else 'torchscript'} backend" in captured.err
    assert main([*predict, "--precision", "bf16"]) == 2
    assert "add --fast" in capsys.readouterr().err


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("empty", "has no train/"),
        ("no_val", "has no val/"),
        ("empty_class", "has no images"),
        ("no_classes", "no class sub-folders"),
    ],
)
def test_bad_data_folders_are_one_clear_error(tmp_path: Path, capsys, layout: str, message: str) -> None:
    data = tmp_path / "data"
    if layout != "missing":
        data.mkdir()
    if layout in ("no_val", "empty_class", "no_classes"):
        make_image_folder(data, classes=("a", "c"), per_class=2, splits=("train",))  # 1 class is an error of its own
    if layout == "empty_class":
        make_image_folder(data, classes=("a",), per_class=2, splits=("val",))
        (data / "train" / "b").mkdir()
        (data / "train" / "b" / "notes.txt").write_text("no images here")
    if layout == "no_classes":
        (data / "val").mkdir()
    assert main(["train", "--data", str(data), "--output", str(tmp_path / "run"), "--no-progress"]) == 1  # a run error
    error = capsys.readouterr().err
    assert message in error and error.startswith("splitattn train: error:")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    calls = []
    real_loss = engine.soft_cross_entropy

    def loss_turning_nan(logits, targets, weight=None):
        calls.append(1)
        loss = real_loss(logits, targets, weight)
        return loss * math.nan if len(calls) > 2 else loss  # 2 steps per epoch: epoch 2 goes NaN

    monkeypatch.setattr(engine, "soft_cross_entropy", loss_turning_nan)
    with pytest.raises(NonFiniteLossError, match="last checkpoint is intact"):
        train(_tiny_options(data, tmp_path / "run"))
    checkpoint = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 1 and all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_failed_checkpoint_write_leaves_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1, "weight": torch.ones(3)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        atomic_save({"epoch": 2, "weight": torch.zeros(3), "oops": lambda: None}, path)
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["weight"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_imagenet_class_names_are_built_in() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet tissue"


def test_csv_lists_of_path_and_label(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=2, splits=("all",))
    rows = [f"images/all/{name}/{i}.png,{name}" for name in ("dog", "cat") for i in range(2)]
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "val.csv").write_text("images/all/cat/0.png,cat\nimages/all/dog/1.png,bird\n")
    from splitattn.data import find_split

    train_set = load_split(find_split(tmp_path, ["train"]))
    assert train_set.classes == ["cat", "dog"] and len(train_set) == 4
    image, label, bad = train_set[0]
    assert image.mode == "RGB" and label == 1 and bad == ()  # first row is a dog
    with pytest.raises(ValueError, match="labels not in the training set: \\['bird'\\]"):
        load_split(find_split(tmp_path, ["val", "test"]), classes=train_set.classes)


@pytest.mark.parametrize(
    "changes",
    [
        {"amp": "bf16", "channels_last": True},
        {"grad_checkpointing": True, "ema": True, "drop_block": 0.1, "mixup": 0.2, "label_smoothing": 0.1},
        {"compile": True, "memory_budget": 0.6},
    ],
    ids=["bf16-channels-last", "checkpointing-ema-dropblock-mixup", "compile-memory-budget"],
)
def test_training_options_run_end_to_end(tmp_path: Path, changes: dict) -> None:
    """Each option trains two epochs, logs finite losses and writes loadable checkpoints."""
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    metrics = train(_tiny_options(data, tmp_path / "run", **changes))
    # the run's evaluation against an independent one of its checkpoint (bf16/compiled kernels may flip one image)
    assert metrics["epoch"] == 2
    assert abs(metrics["top1"] - independent_top1(tmp_path / "run", data / "val")) <= 100 / 8 + 1e-9
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(math.isfinite(r["train_loss"]) for r in log)
    checkpoint = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 2 and all(
        torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point()
    )
    if changes.get("ema"):
        assert checkpoint["ema"] is not None


WRONG_TASK_COMMANDS = {"classification": "classify", "detection": "detect", "segmentation": "segment"}


@pytest.mark.parametrize(
    "task, command",  # the matching pairings are exercised by the training tests
    [
        (t, c)
        for t in [*WRONG_TASK_COMMANDS, "bare"]
        for c in ("classify", "detect", "segment")
        if WRONG_TASK_COMMANDS.get(t) != c
    ],
)
@pytest.mark.parametrize("action", ["evaluate", "predict"])
def test_weights_of_another_task_name_the_right_command(
    tmp_path: Path, capsys, task: str, command: str, action: str
) -> None:
    """Each command taking --weights says in one line which command a foreign checkpoint belongs to (exit 1)."""
    path = tmp_path / "last.pt"
    if task == "bare":
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    else:  # the entries every run checkpoint carries; the error comes before any model is built
        atomic_save(
            {
                "task": task,
                "command": f"{WRONG_TASK_COMMANDS[task]} train",
                "model": {},
                "classes": ["a"],
                "args": {"norm": "batchnorm"},
            },
            path,
        )
    image = make_image_folder(tmp_path / "images", classes=("a",), per_class=1, splits=("x",)) / "x" / "a" / "0.png"
    argv = [command, action, "--weights", str(path)] + ([str(image)] if action == "predict" else [])
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"splitattn {command} {action}: error:")
    if task == "bare":
        assert "bare weights" in error and "--model" in error
    else:
        assert f"splitattn {WRONG_TASK_COMMANDS[task]} {action} --weights" in error


def test_config_schema_rejects_wrong_types_and_bad_values(tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: ten\n")
    assert main(["classify", "train", "--config", str(config)]) == 2
    assert "epochs must be int, got 'ten'" in capsys.readouterr().err
    assert main(["classify", "train", "--drop-block", "1.0"]) == 2
    assert "--drop-block" in capsys.readouterr().err
    for command in (["classify", "train"], ["segment", "train", "--data", "x"], ["detect", "train", "--data", "x"]):
        assert main([*command, "--norm", "frozenbn"]) == 2
        error = capsys.readouterr().err
        assert all(word in error for word in ("groupnorm", "syncbn", "--pretrained")), error
    with pytest.raises(SystemExit):  # no prefix matching: --model-kw is not --model-kwargs
        main(["detect", "train", "--data", "x", "--model-kw", "stem_width=16"])
    assert build_parser().parse_args(["detect", "train", "--model", "resnest14"]).backbone == "resnest14"
    from splitattn import config as schema
    from splitattn.data import detection, segmentation
    from splitattn.engine.runtime import AMP_DTYPES
    from splitattn.layers.norm import NORM_LAYERS
    from splitattn.optimize.inference import BACKENDS
    from splitattn.tasks.detection.model import ARCHS
    from splitattn.tasks.segmentation.inference import MULTI_SCALES
    from splitattn.tasks.segmentation.model import HEADS

    assert schema.NORMS == NORM_LAYERS and schema.AMP == tuple(AMP_DTYPES) and schema.DETECTION_ARCHS == ARCHS
    assert schema.DETECTION_DATASETS == detection.DATASET_KINDS and schema.SEGMENTATION_HEADS == HEADS
    assert schema.SEGMENTATION_DATASETS == segmentation.DATASET_KINDS and schema.FAST_BACKENDS == BACKENDS
    assert schema.SEGMENTATION_MULTI_SCALES == MULTI_SCALES
    from splitattn.config.schemas import MAX_FROZEN_STAGES, OPTIMIZERS
    from splitattn.engine import optim
    from splitattn.optimize import training

    assert OPTIMIZERS == optim.OPTIMIZERS and MAX_FROZEN_STAGES == training.MAX_FROZEN_STAGES
    with pytest.raises(schema.ConfigError, match="unknown key.*'learning_rate'"):  # the Python API: same schema
        train({"learning_rate": 0.1})


def test_a_second_run_without_output_gets_a_fresh_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=2)
    monkeypatch.chdir(tmp_path)
    argv = [
        "classify",
        "train",
        "--data",
        str(data),
        *TINY_MODEL,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--threads",
        "1",
    ]
    assert main(argv) == 0 and main(argv) == 0
    out = capsys.readouterr().out
    assert f"run folder {Path('runs') / 'resnest14'}\n" in out and f"run folder {Path('runs') / 'resnest14-2'}\n" in out
    assert (tmp_path / "runs" / "resnest14" / "last.pt").is_file()
    assert (tmp_path / "runs" / "resnest14-2" / "last.pt").is_file()


@pytest.mark.slow
def test_export_of_the_readme_demo_run_matches_eager_in_onnx_runtime(tmp_path: Path) -> None:
    """`splitattn train` without --data (the narrow demo network), then `splitattn export --weights RUN/last.pt`:
    the model comes from the checkpoint's own options, and ONNX Runtime agrees with the eager model."""
    onnxruntime = pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--epochs",
                "1",
                "--output",
                str(run),
                "--workers",
                "0",
                "--no-progress",
                "--no-tensorboard",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    # the README's `evaluate --weights RUN/best.pt` scores a digits run on its held-out split, as training did
    assert main(["evaluate", "--weights", str(run / "best.pt"), "--workers", "0"]) == 0
    evaluated = json.loads((run / "eval-digits-test" / "metrics.json").read_text())
    assert evaluated["top1"] == pytest.approx(json.loads((run / "metrics.json").read_text())["top1"])
    onnx_file = tmp_path / "demo.onnx"
    assert main(["export", "--weights", str(run / "last.pt"), "--format", "onnx", "--output", str(onnx_file)]) == 0
    from splitattn.tasks.classification.checkpoint import load_trained_model

    model, classes, options = load_trained_model(run / "last.pt")
    assert options.model_kwargs == {"bottleneck_width": 16, "stem_width": 16} and len(classes) == 10
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    ours = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    with torch.no_grad():
        eager = model(images).numpy()
    assert np.allclose(ours, eager, rtol=1e-4, atol=1e-4)


def test_one_channel_run_trains_exports_and_predicts_in_onnx_runtime(tmp_path: Path, capsys) -> None:
    """A 1-channel model (``--model-kwargs in_chans=1``) trains from the CLI on greyscale-read images, exports as a
    1-channel ONNX file (metadata says so), matches the eager model in ONNX Runtime, and ``predict --onnx`` prints
    what ``predict --weights`` prints."""
    onnxruntime = pytest.importorskip("onnxruntime")
    data = make_image_folder(tmp_path / "data", classes=("dark", "mid", "light"), per_class=6)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--output",
                str(run),
                "--model",
                "resnest14",
                "--model-kwargs",
                "in_chans=1",
                "bottleneck_width=16",
                "stem_width=16",
                "--img-size",
                "32",
                "--epochs",
                "1",
                "--batch-size",
                "6",
                "--workers",
                "0",
                "--no-progress",
                "--no-tensorboard",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    onnx_file = tmp_path / "grey.onnx"
    assert main(["export", "--weights", str(run / "last.pt"), "--format", "onnx", "--output", str(onnx_file)]) == 0
    from splitattn.deploy.export import read_export_metadata
    from splitattn.tasks.classification.checkpoint import load_trained_model

    model, classes, _ = load_trained_model(run / "last.pt")
    assert model.in_chans == 1 and read_export_metadata(onnx_file)["in_chans"] == 1
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == 1
    images = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model(images).numpy()
    assert np.allclose(
        session.run(None, {session.get_inputs()[0].name: images.numpy()})[0], eager, rtol=1e-4, atol=1e-4
    )
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(run / "last.pt"), "--workers", "0"]) == 0
    evaluated = json.loads((run / "eval-val" / "metrics.json").read_text())
    assert evaluated["top1"] == pytest.approx(json.loads((run / "metrics.json").read_text())["top1"])
    photos = [str(data / "val" / name / "0.png") for name in classes]
    capsys.readouterr()
    assert main(["predict", *photos, "--weights", str(run / "last.pt"), "--topk", "3"]) == 0
    from_checkpoint = capsys.readouterr().out
    assert main(["predict", *photos, "--onnx", str(onnx_file), "--topk", "3"]) == 0
    assert capsys.readouterr().out == from_checkpoint and from_checkpoint.count("%") == 9
    (tmp_path / "broken.jpg").write_bytes(b"not an image")  # an unreadable image: named on stderr, exit code 1
    for source in (["--weights", str(run / "last.pt")], ["--onnx", str(onnx_file)]):
        assert main(["predict", photos[0], str(tmp_path / "broken.jpg"), *source]) == 1
        captured = capsys.readouterr()
        assert captured.out.startswith(photos[0]) and "broken.jpg: cannot read image" in captured.err


def test_run_logs_are_strict_json(tmp_path: Path) -> None:
    """NaN and infinities become null in log.jsonl and metrics.json (json.loads with no NaN allowed reads them)."""
    from splitattn.engine.log import RunLogger

    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log({"step": 1, "val_loss": math.nan, "val_top1": math.inf, "nested": [1.0, -math.inf]}, 1)
    logger.finish({"top1": math.nan, "per_class": [{"iou": math.nan}]}, "done")

    def strict(text: str) -> dict:
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))

    record = strict((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert record == {"step": 1, "val_loss": None, "val_top1": None, "nested": [1.0, None]}
    assert strict((tmp_path / "metrics.json").read_text()) == {"top1": None, "per_class": [{"iou": None}]}


def test_checkpoint_is_written_before_the_evaluation_that_fails(tmp_path: Path, monkeypatch) -> None:
    """The last step's last.pt survives an evaluation (or anything after the step) that crashes."""
    from splitattn.tasks.classification import trainer

    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)

    def broken_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(trainer, "evaluate", broken_evaluation)
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        train(_tiny_options(data, tmp_path / "run", epochs=1))
    checkpoint = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["step"] == 2 and checkpoint["task"] == "classification"
    assert checkpoint["command"] == "classify train"


def test_missing_optional_package_names_its_pip_command(tmp_path: Path) -> None:
    """With an optional package missing (tensorboard hidden here), a command stops with one line naming the extra
    to install, not a traceback (exit 1)."""
    hide = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def hidden(name, *args, **kwargs):\n"
        "    if name.split('.')[0] == 'tensorboard' or name.startswith('torch.utils.tensorboard'):\n"
        "        raise ModuleNotFoundError(\"No module named 'tensorboard'\", name='tensorboard')\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = hidden\n"
        "from splitattn.cli import main\n"
        f"sys.exit(main(['train', '--epochs', '1', '--output', {str(tmp_path / 'run')!r}, '--no-progress', "
        "'--workers', '0', '--threads', '1']))\n"
    )
    result = subprocess.run([sys.executable, "-c", hide], cwd=REPO, env=child_env(), capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "splitattn train: error: the Python package 'tensorboard' is not installed. Install it with "
        "`pip install 'splitattn[train]'` (or `pip install tensorboard`)."
    ]


def test_usage_errors_name_the_fix_with_exit_code_2(capsys) -> None:
    """A misspelled flag gets the command's own usage and the close flag; an unknown model the close names."""
    with pytest.raises(SystemExit) as stopped:
        main(["detect", "train", "--max-iters", "5"])
    assert stopped.value.code == 2
    assert (
        "splitattn detect train: error: unrecognized arguments: --max-iters (did you mean --max-iter?) 5"
        in capsys.readouterr().err
    )
    assert main(["train", "--model", "resnest15"]) == 2
    assert "Unknown model 'resnest15'. Did you mean: resnest50" in capsys.readouterr().err
