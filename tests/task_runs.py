"""Small trained runs of every task on the shared data, built once per session (``conftest`` fixtures
``imagenette_run``, ``detection_run``, ``segmentation_run``) for the tests that export, quantise and serve them.

- classification: a narrow ResNeSt-14 trained for three epochs on imagenette-mini at 48 px (about 43% top-1,
  well above chance; at 32 px its int8 file lost 2.8 points and the default gate of 1 point refused it);
- detection: a tiny Mask R-CNN overfitting the first two coco128 images (its boxes and masks serve both kinds of
  detector output), with its eager ``detect evaluate`` scores;
- detection, Faster R-CNN: the same run as a Faster R-CNN (its checkpoint without the mask head, ``arch``
  ``faster_rcnn``): the same trained boxes, a graph without the mask branch;
- segmentation: a tiny DeepLabV3 trained on eight camvid-mini images (four for validation), with its eager
  ``segment evaluate`` scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

from splitattn.cli import main
from splitattn.data.segmentation import CAMVID_CLASSES

from .scale_helpers import camvid_subset
from .test_detection_train import TINY_ARGS
from .train_helpers import TINY_MODEL, cli

FORMATS = {"onnx": "model.onnx", "openvino": "model.xml"}
DETECTION_TRAIN = [
    *["--arch", "mask_rcnn", *TINY_ARGS],  # resnest14 narrow, groupnorm, 128-160 px, fewer proposals
    *"--max-images 2 --batch-size 2 --max-iter 40 --steps 35 --warmup-iters 10".split(),
    # sgd at lr 0.01 diverges from scratch on two images; adamw reaches ~24 box AP in 40 iterations
    *"--optimizer adamw --lr 0.001 --weight-decay 0.0001".split(),
    *"--eval-every 1000 --checkpoint-every 1000 --log-every 1000 --workers 0 --threads 1 --device cpu".split(),
    *["--no-progress", "--no-tensorboard"],
]
TaskRun = Tuple[Path, Dict, Dict[str, Path]]  # run folder, eager evaluate's metrics.json, exported files by format


def export(weights: Path, fmt: str, output: Path) -> Path:
    """``splitattn export`` (fp32) of ``weights`` to ``output``."""
    assert main(["export", "--weights", str(weights), "--format", fmt, "--output", str(output)]) == 0
    return output


def evaluate(command: str, source: List[str], output: Path) -> Dict:
    """``splitattn COMMAND evaluate SOURCE`` and the metrics.json it wrote."""
    assert main([command, "evaluate", *source, "--workers", "0", "--output", str(output)]) == 0
    return json.loads((output / "metrics.json").read_text())


IMAGENETTE_SIZE = 48


def imagenette_run(imagenette: Path, root: Path) -> Path:
    run = root / "run"
    model = [*TINY_MODEL[: TINY_MODEL.index("--img-size")], "--img-size", str(IMAGENETTE_SIZE)]
    options = ["--epochs", "3", "--batch-size", "32", "--lr", "0.02", "--workers", "0"]
    cli(["train", "--data", str(imagenette), "--output", str(run), *model, *options, "--no-progress"], threads=2)
    return run


def detection_run(coco128: Path, root: Path) -> TaskRun:
    run = root / "run"
    assert main(["detect", "train", "--data", str(coco128), *DETECTION_TRAIN, "--output", str(run)]) == 0
    eager = evaluate("detect", ["--weights", str(run / "last.pt")], root / "eval-eager")
    files = {fmt: export(run / "last.pt", fmt, root / fmt / name) for fmt, name in FORMATS.items()}
    return run, eager, files


def faster_rcnn_run(mask_rcnn: Path, root: Path) -> TaskRun:
    """``mask_rcnn``'s run folder as a Faster R-CNN run (``last.pt`` without the mask head), its eager scores and
    exports."""
    from splitattn.engine.checkpoint import atomic_save, load_checkpoint_file

    checkpoint = load_checkpoint_file(mask_rcnn / "last.pt")
    checkpoint["args"]["arch"] = "faster_rcnn"
    checkpoint["model"] = {k: v for k, v in checkpoint["model"].items() if not k.startswith("roi_heads.mask_")}
    run = root / "run"
    run.mkdir(parents=True)
    atomic_save(checkpoint, run / "last.pt")
    eager = evaluate("detect", ["--weights", str(run / "last.pt")], root / "eval-eager")
    files = {fmt: export(run / "last.pt", fmt, root / fmt / name) for fmt, name in FORMATS.items()}
    return run, eager, files


def segmentation_run(root: Path) -> TaskRun:
    data = camvid_subset(root / "camvid", train=8, val=4)  # symbolic links: no data copied
    run = root / "run"
    train = ["segment", "train", "--data", str(data), "--classes", ",".join(CAMVID_CLASSES), "--ignore-value", "11"]
    options = ["--backbone", "resnest14", "--output-stride", "16", "--base-size", "128", "--crop-size", "64"]
    schedule = ["--batch-size", "4", "--epochs", "4", "--eval-every", "4", "--lr", "0.01", "--workers", "0"]
    assert main([*train, *options, *schedule, "--no-progress", "--device", "cpu", "--output", str(run)]) == 0
    eager = evaluate("segment", ["--weights", str(run / "last.pt")], root / "eval-eager")
    files = {fmt: export(run / "last.pt", fmt, root / fmt / name) for fmt, name in FORMATS.items()}
    return run, eager, files
