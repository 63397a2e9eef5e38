"""An exported run predicts what its checkpoint predicts, from the exported file and its metadata alone.

A tiny run is trained with ``python -m splitattn train``, exported to ONNX and TorchScript with
``splitattn export``; the metadata is read back with ``onnx`` / ``torch.jit.load`` and compared with the
checkpoint (read with ``torch.load``) and its sha256 (``hashlib``); ``splitattn predict --onnx`` must print
what ``splitattn predict`` prints for the checkpoint on two real photos (one of them a greyscale JPEG). The runtime's preprocessing is checked pixel for pixel against a plain PIL/numpy
transcription of the stored protocol (the README's "Using the exported ONNX file" recipe).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from splitattn.deploy.runtime import ExportedClassifier

from .conftest import sample_photos
from .train_helpers import TINY_MODEL, cli, make_image_folder

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow
CLASSES = ("tench", "church", "golf ball", "parachute")


@pytest.fixture(scope="module")
def real_images(tmp_path_factory):
    """A real RGB photo and a real photo stored as a greyscale JPEG."""
    colour, other = sample_photos()
    grey = tmp_path_factory.mktemp("photos") / "grey.jpg"
    Image.open(other).convert("L").save(grey, quality=90)
    return [colour, grey]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch tiny run (4 classes, 32 px) and its ONNX and TorchScript exports."""
    root = tmp_path_factory.mktemp("exported")
    data = make_image_folder(root / "data", classes=CLASSES, per_class=4)
    cli(
        [
            "train",
            "--data",
            str(data),
            "--output",
            str(root / "run"),
            *TINY_MODEL,
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--no-progress",
            "--no-tensorboard",
        ]
    )
    checkpoint = root / "run" / "last.pt"
    files = {}
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        files[fmt] = root / name
        printed = cli(
            [
                "export",
                "--model",
                "resnest14",
                "--weights",
                str(checkpoint),
                "--format",
                fmt,
                "--output",
                str(files[fmt]),
            ]
        ).stdout
        assert "max relative error" in printed and "4 class names" in printed, printed
    return checkpoint, files


def test_onnx_metadata_matches_the_checkpoint(run):
    checkpoint_path, files = run
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    stored = {prop.key: json.loads(prop.value) for prop in onnx.load(str(files["onnx"])).metadata_props}
    assert stored["model_name"] == checkpoint["model_name"] == "resnest14"
    assert stored["classes"] == list(checkpoint["classes"]) == sorted(CLASSES)
    assert stored["checkpoint_sha256"] == hashlib.sha256(checkpoint_path.read_bytes()).hexdigest()
    assert stored["in_chans"] == 3
    protocol = stored["eval_config"]
    assert stored["input_size"] == protocol["input_size"] == checkpoint["args"]["img_size"] == 32
    assert protocol["crop_pct"] == checkpoint["args"]["crop_pct"]
    extra = {"splitattn.json": ""}
    torch.jit.load(str(files["torchscript"]), _extra_files=extra)
    from_torchscript = json.loads(extra["splitattn.json"])
    assert stored["opset"] == 18 and "opset" not in from_torchscript  # the ONNX opset written
    assert {k: v for k, v in from_torchscript.items() if k != "exporter"} == {
        k: v for k, v in stored.items() if k not in ("exporter", "opset")
    }


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_predict_from_the_export_prints_what_the_checkpoint_prints(run, fmt, real_images):
    checkpoint, files = run
    images = [str(path) for path in real_images]
    expected = cli(["predict", *TINY_MODEL[:2], "--weights", str(checkpoint), "--topk", "3", *images]).stdout
    got = cli(["predict", f"--{fmt}", str(files[fmt]), "--topk", "3", *images]).stdout
    assert expected.count("%") == 6  # 3 classes for each of the 2 images
    assert got == expected


def plain_preprocess(image: Image.Image, meta: dict) -> np.ndarray:
    """The README's recipe (PIL and numpy only), line for line: short side to int(size / crop_pct), centre crop,
    normalise."""
    p, size = meta["eval_config"], meta["input_size"]
    short = int(size / p["crop_pct"])  # noqa: E702
    image = image.convert({1: "L", 3: "RGB", 4: "RGBA"}[meta["in_chans"]])
    w, h = image.size  # noqa: E702
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    image = image.resize(new, Image.Resampling[p["interpolation"].upper()]).crop((left, top, left + size, top + size))
    x = (np.asarray(image, np.float32).reshape(size, size, -1) / 255 - p["mean"]) / p["std"]
    return x.transpose(2, 0, 1)[None].astype(np.float32)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_runtime_preprocessing_is_the_stored_protocol(run, fmt, real_images):
    classifier = ExportedClassifier(run[1][fmt])
    assert classifier.classes == sorted(CLASSES) and classifier.format == fmt
    for path in real_images:
        image = Image.open(path)
        for picture in (image, image.crop((0, 0, image.height - 43, image.height))):  # landscape and portrait
            np.testing.assert_allclose(
                classifier.preprocess(picture), plain_preprocess(picture, classifier.metadata), atol=1e-6
            )
        probs = classifier.predict(image)
        assert probs.shape == (4,) and abs(float(probs.sum()) - 1) < 1e-5


def test_evaluations_of_files_side_by_side_go_to_their_own_folders(tmp_path):
    """evaluate of a model and of its int8 copy in one folder: two folders, neither overwritten."""
    from argparse import Namespace

    from splitattn.config.arguments import evaluation_folder

    folders = {
        evaluation_folder(Namespace(output=None, exported=str(tmp_path / f"{name}.onnx"), weights=None), "eval-val")
        for name in ("model", "model-int8")
    }
    assert folders == {tmp_path / "model-eval-val", tmp_path / "model-int8-eval-val"}
    run = Namespace(output=None, exported=None, weights=str(tmp_path / "run" / "best.pt"))
    assert evaluation_folder(run, "eval-val") == tmp_path / "run" / "eval-val"
    given = Namespace(output=str(tmp_path / "here"), exported=str(tmp_path / "model.onnx"), weights=None)
    assert evaluation_folder(given, "eval-val") == tmp_path / "here"
