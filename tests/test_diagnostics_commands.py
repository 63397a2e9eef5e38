"""The classification diagnostics as the commands write them: a run trained on an imbalanced subset of
imagenette-mini (one class with a tenth of the training images) writes per-class scores, at the end of training
and from `classify evaluate`, that equal scikit-learn's on the top-1 classes `classify predict` prints for the same
images; the evaluation pass pairs every prediction with its image when some files cannot be read; `predict --cam`
writes its pictures and refuses what it cannot explain."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

from splitattn.cli import main

from .conftest import SHARED_DATA
from .train_helpers import make_image_folder

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from sklearn.metrics import precision_recall_fscore_support  # noqa: E402

IMAGENETTE = SHARED_DATA / "imagenette-mini"
needs_imagenette = pytest.mark.usefixtures("imagenette_mini")  # skip where absent, fail under CI (conftest)
TRAIN_PER_CLASS, VAL_PER_CLASS, CLASSES = 20, 10, 3  # class 0 (the minority) gets a tenth of the training images
NARROW = ["--model", "resnest14", "--model-kwargs", "bottleneck_width=16", "stem_width=16", "--img-size", "64"]
CPU = ["--device", "cpu", "--workers", "0"]


def imbalanced_imagenette(root: Path) -> Path:
    """Links to the first images of the first ``CLASSES`` imagenette-mini classes: class 0 with a tenth of the
    training images of the others, and a balanced validation split."""
    names = sorted(path.name for path in (IMAGENETTE / "train").iterdir())[:CLASSES]
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for index, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            keep = count // 10 if split == "train" and index == 0 else count
            for image in sorted((IMAGENETTE / split / name).iterdir())[:keep]:
                (folder / image.name).symlink_to(image)
    return root


def run_cli(args: List[str]) -> Tuple[int, str, str]:
    """``splitattn ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Tuple[Path, Path, str]:
    """(data root, run folder, the training command's stdout) of a one-epoch run on the imbalanced subset."""
    root = tmp_path_factory.mktemp("imbalanced")
    data = imbalanced_imagenette(root / "data")
    run = root / "run"
    threads = torch.get_num_threads()
    code, out, err = run_cli(
        ["classify", "train", "--data", str(data), *NARROW, *CPU, "--epochs", "1", "--batch-size", "8", "--lr", "0.05"]
        + ["--threads", "1", "--no-progress", "--no-tensorboard", "--output", str(run)]
    )
    torch.set_num_threads(threads)
    assert code == 0, err
    return data, run, out


def read_csv(path: Path) -> Dict[str, Dict[str, str]]:
    with path.open() as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def predicted_top1(output: str) -> Dict[str, str]:
    """image path -> the class on the first line under it in ``classify predict``'s output."""
    found, path = {}, None
    for line in output.splitlines():
        match = re.match(r"\s+[\d.]+%\s+(\S+)$", line)
        if match and path is not None:
            found.setdefault(path, match.group(1))
        elif not line.startswith(" "):
            path = line.strip()
    return found


@needs_imagenette
def test_per_class_scores_equal_sklearn_on_predict_outputs(trained):
    data, run, train_output = trained
    code, out, err = run_cli(["classify", "evaluate", "--weights", str(run / "last.pt"), *CPU, "--batch-size", "8"])
    assert code == 0, err
    written = run / "eval-val"
    assert out.count("macro avg") == 1  # the table, printed once
    assert {"per_class.csv", "confusion_matrix.png", "metrics.json"} <= {p.name for p in written.iterdir()}

    images = sorted(str(path) for path in (data / "val").rglob("*.JPEG"))
    code, out, err = run_cli(["classify", "predict", *images, "--weights", str(run / "last.pt"), "--device", "cpu"])
    assert code == 0, err
    top1 = predicted_top1(out)
    assert len(top1) == len(images) == CLASSES * VAL_PER_CLASS
    names = sorted(path.name for path in (data / "val").iterdir())
    truth = [Path(path).parent.name for path in top1]
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, list(top1.values()), labels=names, zero_division=np.nan
    )
    rows = read_csv(written / "per_class.csv")
    assert list(rows) == names
    for i, name in enumerate(names):
        for column, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            expected = "" if np.isnan(values[i]) else f"{values[i] * 100:.4f}"
            assert rows[name][column] == expected, (name, column)
        assert int(rows[name]["support"]) == support[i] == VAL_PER_CLASS
    assert len({row["recall"] for row in rows.values()}) > 1, "every class has the same recall: nothing compared"
    print(f"recall per class (minority first): {[rows[name]['recall'] for name in names]}")

    # the end of training wrote the same from its final evaluation, and metrics.json carries the rows
    assert (run / "diagnostics" / "per_class.csv").read_text() == (written / "per_class.csv").read_text()
    assert train_output.count("macro avg") == 1 and str(run / "diagnostics") in train_output
    metrics = json.loads((written / "metrics.json").read_text())
    assert [row["recall"] for row in metrics["per_class"]] == pytest.approx(
        [None if np.isnan(r) else r * 100 for r in recall], nan_ok=True
    )
    assert set(metrics["macro_avg"]) == {"precision", "recall", "f1"}


def test_evaluation_pairs_predictions_with_readable_images(tmp_path):
    """Each collected prediction is the model's output on the image at its position, with unreadable files in
    the middle of batches: the per-image forward pass is the independent reference."""
    from PIL import Image
    from torch.utils.data import DataLoader

    from splitattn import create_model
    from splitattn.data.classification import collate_skip_bad, load_split
    from splitattn.data.transforms import build_eval_transform
    from splitattn.tasks.classification.diagnostics import sample_images
    from splitattn.tasks.classification.engine import evaluate

    root = make_image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=3, splits=("val",), size=40)
    for name in ("a/0x.png", "b/2x.png", "b/3x.png"):  # sorted between readable files
        (root / "val" / name).write_bytes(b"not an image")
    transform = build_eval_transform(32)
    dataset = load_split(root / "val", transform)
    model = create_model("resnest14", num_classes=3, bottleneck_width=16, stem_width=16).eval()
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_skip_bad)
    result = evaluate(model, loader, torch.device("cpu"), collect=True)
    predictions = result["predictions"]
    assert result["bad_images"] == 3 and len(predictions.labels) == 9
    paths = sample_images(dataset, predictions.positions.tolist())
    assert all(not path.endswith("x.png") for path in paths)
    for path, label, probabilities in zip(paths, predictions.labels, predictions.probabilities):
        assert label == "abc".index(Path(path).parent.name)
        with torch.no_grad():
            alone = model(transform(Image.open(path).convert("RGB"))[None]).softmax(-1)[0]
        assert np.allclose(probabilities, alone.numpy(), atol=1e-5), path


@needs_imagenette
def test_predict_cam_writes_pictures_and_refuses_what_it_cannot_explain(trained, tmp_path, monkeypatch):
    pytest.importorskip("captum")
    _, run, _ = trained
    image = sorted((IMAGENETTE / "val").rglob("*.JPEG"))[0]
    weights = ["--weights", str(run / "last.pt"), "--device", "cpu"]
    out_dir = tmp_path / "cam"
    code, out, err = run_cli(
        [
            "classify",
            "predict",
            str(image),
            *weights,
            "--cam",
            "--cam-block",
            "layer3.0.conv2",
            "--output",
            str(out_dir),
        ]
    )
    assert code == 0, err
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == [f"{image.stem}_attention.png", f"{image.stem}_cam.png"]
    assert f"pictures: {out_dir / written[1]}" in out
    assert all((out_dir / name).stat().st_size > 20_000 for name in written)

    for extra, message in (
        (["--fast"], "eager model.*drop --fast"),
        (["--cam-block", "layer9.0.conv2"], "not a Split-Attention block.*layer4.0.conv2"),
    ):
        code, _, err = run_cli(["classify", "predict", str(image), *weights, "--cam", *extra])
        assert code == 2 and re.search(message, err), err
    code, _, err = run_cli(["classify", "predict", str(image), *weights, "--cam-block", "layer3.0.conv2"])
    assert code == 2 and "add --cam" in err
    monkeypatch.setitem(sys.modules, "captum", None)  # as if not installed: importing it raises ImportError
    code, _, err = run_cli(["classify", "predict", str(image), *weights, "--cam"])
    assert code == 1 and "pip install 'splitattn[explain]'" in err, err


def test_a_gallery_tile_whose_file_cannot_be_read_says_so(tmp_path):
    """An image counted as an error can be unreadable (a detection evaluation scores its objects as missed): its
    tile is left empty with a note instead of the whole gallery failing."""
    from PIL import Image

    from splitattn.viz.gallery import GalleryTile, gallery_figure

    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    figure = gallery_figure([GalleryTile(broken, "broken.jpg: 3 missed"), GalleryTile(good, "readable")], "errors")
    assert figure.axes[0].get_title() == "broken.jpg: 3 missed\n(the image cannot be read)"
    assert not figure.axes[0].images and figure.axes[1].get_title() == "readable" and figure.axes[1].images
