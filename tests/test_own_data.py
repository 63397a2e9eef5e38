"""No silent or mute failure on a user's own data: weights whose classifier does not fit are an error or give
their own class count (never a random head), ``pretrained=RUN`` rebuilds the run's architecture, a data set left
without a usable sample says why, a picture without detections says so, and training on the validation images
is warned about."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from PIL import Image

from splitattn import create_model
from splitattn.cli import main
from splitattn.config import ClassifyConfig, DetectConfig
from splitattn.data.checks import SplitOverlapWarning, warn_about_overlap
from splitattn.engine.checkpoint import atomic_save
from splitattn.errors import CheckpointMismatchError, DataError, UsageError, WeightsError
from splitattn.weights.loading import load_state_dict_into

from .conftest import SHARED_DATA
from .train_helpers import make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")
NARROW = {"bottleneck_width": 16, "stem_width": 16}
QUIET = dict(workers=0, threads=1, device="cpu", progress=False, tensorboard=False)
CAMVID = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian", "bicyclist")


def test_weights_with_a_classifier_of_their_own_predict_with_it(tmp_path: Path, capsys) -> None:
    """`predict --model resnest14 --weights my.safetensors` on a 3-class file: the file's trained classifier (its
    logits), label numbers, never ImageNet names; a class count that does not fit is an error for inference
    (export --num-classes), a fresh classifier only when asked for (fine-tuning), and a backbone without
    classifier needs features_only or num_classes."""
    torch.manual_seed(0)
    trained = create_model("resnest14", num_classes=3).eval()
    weights = tmp_path / "my.safetensors"
    safetensors.torch.save_file(trained.state_dict(), str(weights))
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(image)

    assert main(["predict", str(image), "--model", "resnest14", "--weights", str(weights), "--topk", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in lines[1:]] != [] and {line.split()[-1] for line in lines[1:]} == {
        "0",
        "1",
        "2",
    }
    loaded = create_model("resnest14", pretrained=str(weights))
    assert loaded.num_classes == 3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), trained(x))

    assert main(["export", "--model", "resnest14", "--weights", str(weights), "--num-classes", "1000",
                 "--format", "torchscript", "--output", str(tmp_path / "m.pt")]) == 1  # fmt: skip
    assert "has 3 classes and the model 1000; nothing was loaded" in capsys.readouterr().err
    with pytest.warns(UserWarning, match=r"has 3 classes and the model 5: the classifier .* \(fine-tuning\)"):
        assert create_model("resnest14", num_classes=5, pretrained=str(weights)).num_classes == 5

    backbone = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in trained.state_dict().items() if not k.startswith("fc.")}, backbone)
    with pytest.raises(WeightsError, match="without a classifier.*features_only=True.*num_classes=N"):
        create_model("resnest14", pretrained=str(backbone))
    with pytest.raises(CheckpointMismatchError, match="no classifier and the model 1000"):
        load_state_dict_into(create_model("resnest14"), torch.load(backbone, weights_only=True))
    assert create_model("resnest14", pretrained=str(backbone), features_only=True).channels[-1] == 2048


def test_pretrained_run_rebuilds_the_runs_architecture_and_classes(tmp_path: Path) -> None:
    """create_model(NAME, pretrained=RUN/last.pt) needs none of the run's settings restated: a narrow 1-channel
    classification run comes back narrow, 1-channel, with its classes and its names, the same logits as the
    checkpoint loader's model; a detection run's backbone (found generically under its backbone prefix) builds with
    its own widths and norm; a run of another model is named."""
    from splitattn.tasks.classification.checkpoint import load_trained_model
    from splitattn.tasks.classification.trainer import train
    from splitattn.tasks.finetune import with_pretrained_architecture

    data = make_image_folder(tmp_path / "data", classes=("ant", "bee", "cat"), per_class=4)
    run = tmp_path / "run"
    kwargs = dict(NARROW, in_chans=1)
    train(
        ClassifyConfig(
            data=str(data), model_kwargs=kwargs, img_size=32, epochs=1, batch_size=4, output=str(run), **QUIET
        )
    )
    model = create_model("resnest14", pretrained=str(run / "last.pt")).eval()
    reference, classes, _ = load_trained_model(run / "last.pt")
    assert (model.in_chans, model.num_classes, model.label_names) == (1, 3, ["ant", "bee", "cat"]) == (1, 3, classes)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    with pytest.raises(UsageError, match="is a run of resnest14, not resnest50"):
        create_model("resnest50", pretrained=str(run / "last.pt"))
    fine_tune = with_pretrained_architecture(ClassifyConfig(data=str(data), pretrained=str(run / "last.pt")))
    assert fine_tune.model_kwargs == kwargs  # classify train --pretrained RUN builds (and stores) the run's network

    backbone = create_model("resnest14", features_only=True, norm_layer="groupnorm", **NARROW)
    checkpoint = dict(
        model={f"backbone.body.{k}": v for k, v in backbone.state_dict().items()},
        task="detection",
        backbone_prefix="backbone.body.",
        model_name="resnest14",
        classes=["__background__", "a"],
        args=dataclasses.asdict(DetectConfig(data="x", backbone="resnest14", model_kwargs=NARROW)),
    )
    atomic_save(checkpoint, tmp_path / "detect.pt")
    rebuilt = create_model("resnest14", pretrained=str(tmp_path / "detect.pt"), features_only=True)
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in backbone.state_dict().items())
    assert type(rebuilt.bn1).__name__ == "GroupNorm"  # DetectConfig's default norm, read from the run


def test_a_data_set_with_every_sample_skipped_says_why(tmp_path: Path, capsys) -> None:
    """camvid label maps hold the void value 11: without --ignore-value every pair is skipped, and the error
    counts them by kind with the first reason and names the option; a classification split of unreadable files
    names the error; a COCO json whose images are elsewhere names the first missing file."""
    from splitattn.data.classification import load_split
    from splitattn.data.detection.layouts import build_detection_dataset

    camvid = SHARED_DATA / "camvid-mini"
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (tmp_path / "seg" / split / kind).mkdir(parents=True)
            for path in sorted((camvid / split / kind).glob("*.png"))[:3]:
                shutil.copy(path, tmp_path / "seg" / split / kind)
    argv = ["segment", "train", "--data", str(tmp_path / "seg"), "--classes", ",".join(CAMVID), "--model", "resnest14"]
    assert main([*argv, "--output", str(tmp_path / "run"), "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    assert (
        "no usable image/label pairs: 3 skipped: 3 label maps with values that are no class nor the ignore value"
        in error
    )
    assert "(first: label map" in error and "holds value(s) [11]" in error and "--ignore-value" in error

    broken = tmp_path / "cls" / "train"
    for name in ("a", "b"):
        (broken / name).mkdir(parents=True)
        (broken / name / "x.jpg").write_bytes(b"not a picture")
    dataset = load_split(broken, replace_bad=True)
    with pytest.raises(DataError, match=r"none of the 2 images .* 2 skipped: 2 unreadable images \(Unidentified"):
        dataset[0]

    with pytest.raises(
        DataError, match=r"no usable images.*First cases: images_missing: .*000000000009.jpg does not exist"
    ):
        build_detection_dataset("coco", SHARED_DATA / "coco128", "train", True, images=tmp_path)


def test_a_picture_without_detections_says_so_and_names_the_threshold(tmp_path: Path, capsys) -> None:
    from splitattn.tasks.detection.checkpoint import model_from_config

    config = DetectConfig(data="x", backbone="resnest14", model_kwargs=NARROW, min_size=[64], max_size=96)
    torch.manual_seed(0)
    model = model_from_config(config, 3)
    checkpoint = dict(
        model=model.state_dict(), args=dataclasses.asdict(config), classes=["__background__", "a", "b"],
        contiguous_to_coco={1: 1, 2: 2}, task="detection", command="detect train",
    )  # fmt: skip
    atomic_save(checkpoint, tmp_path / "last.pt")
    image = tmp_path / "street.png"
    Image.new("RGB", (96, 64), (90, 90, 90)).save(image)
    argv = ["detect", "predict", str(image), "--weights", str(tmp_path / "last.pt"), "--output", str(tmp_path)]
    assert main([*argv, "--score-threshold", "1.01", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "street_detections.png (no detections: " in captured.out and "--score-threshold" in captured.out
    assert "shows no detections" in captured.err and "--score-threshold" in captured.err
    assert "highest score" in captured.out or "no object at all" in captured.out


def test_training_and_validation_on_the_same_images_is_warned_about(tmp_path: Path) -> None:
    """Same files (coco128's single json serves both splits; camvid's train split as validation) and copies
    under other names (content hash) are named; separate splits are not. A classification run whose val/ copies
    train/ warns when its data is loaded."""
    from splitattn.data.detection.layouts import build_detection_dataset
    from splitattn.tasks.classification.trainer import train

    coco = SHARED_DATA / "coco128"
    train_set = build_detection_dataset("coco", coco, "train", True, with_masks=False)
    val_set = build_detection_dataset("coco", coco, "val", False, with_masks=False)
    with pytest.warns(SplitOverlapWarning, match="share 126 of 128 validation image.*126 the same files"):
        warn_about_overlap([r.path for r in train_set.records], [r.path for r in val_set.records])
    camvid = SHARED_DATA / "camvid-mini"
    assert warn_about_overlap(sorted(camvid.glob("train/images/*")), sorted(camvid.glob("val/images/*"))) is None

    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=3, splits=("train",))
    shutil.copytree(data / "train", data / "val")
    (data / "val" / "a" / "0.png").rename(data / "val" / "a" / "renamed.png")
    config = ClassifyConfig(data=str(data), model_kwargs=NARROW, img_size=32, epochs=1, batch_size=2, **QUIET)
    with pytest.warns(SplitOverlapWarning, match=r"share 6 of 6 val image.*0 the same files, 6 identical contents"):
        train(dataclasses.replace(config, output=str(tmp_path / "run")))
