"""Exported detectors and segmenters against their eager models on real data (issue 18, scope 1-3).

One tiny Mask R-CNN run overfits two coco128 images, and serves as a Faster R-CNN run too (its checkpoint
without the mask head: the same boxes, a graph without the mask branch); one tiny DeepLabV3 run trains on a few camvid-mini images (``task_runs``: session fixtures); each is
exported with ``splitattn export`` to ONNX and to OpenVINO IR. Then ``evaluate --exported FILE`` must score the eager ``evaluate --weights`` AP / mIoU
within 0.2 points (the same evaluator, fed by ONNX Runtime or OpenVINO), and the Python runtime
(``splitattn.deploy.runtime``: NumPy and Pillow preprocessing, not the eager code) must predict what the eager
model predicts at two image sizes, one of them non-square: boxes within 1 px and masks (label maps) agreeing on at
least 99.5% of the pixels. int8 (scope 4): the change ``export --int8`` prints equals the difference of the
separate evaluations of the int8 file and of the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from splitattn.cli import main
from splitattn.data.segmentation.transforms import normalize_image
from splitattn.deploy.runtime import ExportedDetector, ExportedSegmenter, load_exported
from splitattn.tasks.detection.checkpoint import load_detection_model
from splitattn.tasks.segmentation.checkpoint import load_segmentation_model
from splitattn.tasks.segmentation.inference import predict_probs

from .task_runs import FORMATS, evaluate, export

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = [(192, 192), (160, 256)]  # (height, width): square, and non-square (landscape)
AP_POINTS = 0.2  # largest difference of AP / mIoU (percentage points) between the exported file and eager
BOX_PX = 1.0
MASK_AGREEMENT = 0.995


DETECTORS = ["detection_run", "faster_rcnn_run"]  # Mask R-CNN, and the same run as a Faster R-CNN


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("detector", DETECTORS)
def test_exported_detector_scores_the_eager_ap(detector, fmt, tmp_path, request):
    run, eager, files = request.getfixturevalue(detector)
    kinds = ("bbox", "segm") if detector == "detection_run" else ("bbox",)
    assert all(eager[kind]["AP"] > 5 for kind in kinds), eager  # learned: the comparison means something
    exported = evaluate("detect", ["--exported", str(files[fmt])], tmp_path / "eval")
    assert exported["images"] == eager["images"] == 2 and set(kinds) <= set(exported)
    for kind in kinds:
        print(f"{detector} {fmt} {kind} AP {exported[kind]['AP']:.3f}, eager {eager[kind]['AP']:.3f}")
        assert abs(exported[kind]["AP"] - eager[kind]["AP"]) <= AP_POINTS, (kind, exported[kind], eager[kind])


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _coco_image(coco128: Path, index: int, size) -> Image.Image:
    """The ``index``-th training image of the run, resized to ``size`` (height, width)."""
    path = sorted((coco128 / "images").glob("*.jpg"))[index]
    return Image.open(path).convert("RGB").resize(size[::-1], Image.Resampling.BILINEAR)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("detector", DETECTORS)
def test_exported_detector_predicts_the_eager_boxes_and_masks(detector, coco128, fmt, request):
    run, _, files = request.getfixturevalue(detector)
    model = load_detection_model(run / "last.pt", "predict")[0]
    runtime = load_exported(files[fmt])
    masks = detector == "detection_run"
    assert isinstance(runtime, ExportedDetector) and ("masks" in runtime.metadata["output_names"]) == masks
    threshold, mask_threshold = runtime.metadata["score_threshold"], runtime.metadata["mask_threshold"]
    compared, box_px, agreement = set(), 0.0, 1.0
    for index in range(2):
        for size in SIZES:
            image = _coco_image(coco128, index, size)
            with torch.no_grad():
                eager = {k: v.numpy() for k, v in model([TF.pil_to_tensor(image).float() / 255])[0].items()}
            got = runtime.predict(image, score_threshold=0.0)
            assert not masks or got["masks"].shape[-2:] == size
            for i in np.flatnonzero(eager["scores"] >= threshold):
                same = np.flatnonzero(got["labels"] == eager["labels"][i])
                assert len(same), f"{size}: eager detection {i} has no counterpart in the {fmt} file"
                j = same[np.argmax(_iou(eager["boxes"][i], got["boxes"][same]))]
                box_px = max(box_px, float(np.abs(got["boxes"][j] - eager["boxes"][i]).max()))
                assert box_px <= BOX_PX, (size, i, box_px)
                if masks:
                    agree = np.mean((got["masks"][j] > mask_threshold) == (eager["masks"][i] > mask_threshold))
                    agreement = min(agreement, float(agree))
                    assert agree >= MASK_AGREEMENT, (size, i, agree)
                compared.add((index, size, i))
    print(
        f"{detector} {fmt}: {len(compared)} detections, boxes within {box_px:.2e} px, masks agree on >= {100 * agreement:.3f}%"
    )
    # the overfit run finds objects above predict's threshold at both sizes (5 detections over the 4 images here)
    assert {size for _, size, _ in compared} == set(SIZES), compared


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_segmenter_scores_the_eager_miou(segmentation_run, fmt, tmp_path):
    _, eager, files = segmentation_run
    exported = evaluate("segment", ["--exported", str(files[fmt])], tmp_path / "eval")
    assert exported["images"] == eager["images"] == 4 and eager["miou"] > 0
    print(f"{fmt} mIoU {exported['miou']:.4f}, eager {eager['miou']:.4f}")
    assert abs(exported["miou"] - eager["miou"]) <= AP_POINTS, (exported["miou"], eager["miou"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_segmenter_predicts_the_eager_label_maps(segmentation_run, camvid_mini, fmt):
    run, _, files = segmentation_run
    model = load_segmentation_model(run / "last.pt", "predict")[0]
    runtime = load_exported(files[fmt])
    assert isinstance(runtime, ExportedSegmenter)
    path = sorted((camvid_mini / "val" / "images").glob("*.png"))[0]
    for size in SIZES:
        image = Image.open(path).convert("RGB").resize(size[::-1], Image.Resampling.BILINEAR)
        # base_size given: the runtime takes None for its stored base size, predict_probs for the image's own
        protocol = dict(scales=[1.0, 1.5], flip=True, base_size=max(size), crop_size=None)
        with torch.no_grad():
            eager = predict_probs(model, normalize_image(image), **protocol).argmax(0).numpy()
        got = runtime.predict(image, **protocol)
        assert got.shape == eager.shape == size
        print(f"{fmt} {size}: label maps agree on {100 * np.mean(got == eager):.3f}% of the pixels")
        assert np.mean(got == eager) >= MASK_AGREEMENT, (size, np.mean(got == eager))


INT8_OPTIONS = ["--calibration-images", "8", "--max-metric-drop", "-100", "--force"]  # forced: always written


def _export_int8(weights: Path, fmt: str, output: Path, capsys) -> Dict:
    """``splitattn export --int8`` (forced through), its printed ``{class: (fp32, int8, change)}`` rows and
    the ``int8`` entry stored in the written file."""
    assert (
        main(["export", "--weights", str(weights), "--format", fmt, "--int8", *INT8_OPTIONS, "--output", str(output)])
        == 0
    )
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = line.rsplit(None, 3)
        if len(cells) == 4 and cells[-1][:1] in "+-" and cells[-1] != "-":
            rows[cells[0]] = tuple(float(cell) for cell in cells[1:])
    return {"rows": rows, "stored": load_exported(output).metadata["int8"]}


def _assert_change(printed: Dict, metric: str, eager: float, int8: float, per_class: Dict) -> None:
    """The change export printed (overall and per class) is the difference of the two separate evaluations."""
    fp32_value, int8_value, change = printed["rows"].pop(metric)
    assert (fp32_value, int8_value) == pytest.approx((eager, int8), abs=0.006)
    assert change == pytest.approx(int8 - eager, abs=0.011)
    assert printed["stored"]["change"] == pytest.approx(int8_value - fp32_value, abs=0.006)
    assert printed["stored"]["forced"] is True and printed["stored"]["calibration_split"] == "train"
    assert printed["rows"], "no per-class row printed"
    for name, (fp32_class, int8_class, _) in printed["rows"].items():
        assert (fp32_class, int8_class) == pytest.approx(per_class[name], abs=0.006), name


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_segmenter_change_equals_separate_evaluations(segmentation_run, fmt, tmp_path, capsys):
    """`export --int8` of a DeepLabV3 run (ONNX: NNCF's QDQ file; OpenVINO: FakeQuantize IR) prints the mIoU
    change and per-class IoU changes that `segment evaluate --weights` and `--exported INT8` find separately."""
    run, eager, _ = segmentation_run
    output = tmp_path / FORMATS[fmt].replace("model", "int8")
    printed = _export_int8(run / "last.pt", fmt, output, capsys)
    int8 = evaluate("segment", ["--exported", str(output)], tmp_path / "eval")
    eager_iou = {row["name"]: row["iou"] for row in eager["per_class"]}
    per_class = {row["name"]: (eager_iou[row["name"]], row["iou"]) for row in int8["per_class"]}
    _assert_change(printed, "mIoU", eager["miou"], int8["miou"], per_class)
    print(f"{fmt} int8 mIoU {int8['miou']:.3f} against {eager['miou']:.3f}")


def test_int8_detector_quantises_its_backbone_and_its_change_equals_separate_evaluations(
    detection_run, tmp_path, capsys
):
    """A Mask R-CNN run quantised to OpenVINO IR: every int8 convolution is in the backbone (body and FPN), the
    heads stay in float, and the printed box AP change is what `detect evaluate` finds for the int8 file and for
    the checkpoint separately."""
    import openvino

    run, eager, _ = detection_run
    output = tmp_path / "int8.xml"
    printed = _export_int8(run / "last.pt", "openvino", output, capsys)
    int8 = evaluate("detect", ["--exported", str(output)], tmp_path / "eval")
    eager_ap = {row["name"]: row["AP"] for row in eager["per_class"]["bbox"]}
    per_class = {row["name"]: (eager_ap[row["name"]], row["AP"]) for row in int8["per_class"]["bbox"]}
    _assert_change(printed, "bbox AP", eager["bbox"]["AP"], int8["bbox"]["AP"], per_class)
    model = openvino.Core().read_model(str(output))
    quantized = {
        target.get_node().get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() == "FakeQuantize"
        for target in op.output(0).get_target_inputs()
        if target.get_node().get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
    }
    assert len(quantized) >= 20 and all(name.startswith("/model/backbone/") for name in quantized), sorted(quantized)


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_detector_returns_nothing_where_eager_finds_nothing(detection_run, coco128, fmt, tmp_path):
    """No box passes the score threshold (the run's checkpoint with ``box_score_thresh`` 0.9999): no detection,
    as eager; OpenVINO once returned a background row (label 0, score near 0) there, from the box selection's
    Gather on an empty tensor."""
    from splitattn.engine.checkpoint import atomic_save, load_checkpoint_file

    run, _, _ = detection_run
    checkpoint = load_checkpoint_file(run / "last.pt")
    checkpoint["args"]["detector_kwargs"] = {**checkpoint["args"]["detector_kwargs"], "box_score_thresh": 0.9999}
    atomic_save(checkpoint, tmp_path / "strict.pt")
    file = export(tmp_path / "strict.pt", fmt, tmp_path / FORMATS[fmt])
    model = load_detection_model(tmp_path / "strict.pt", "predict")[0]
    image = _coco_image(coco128, 0, SIZES[1])
    with torch.no_grad():
        eager = model([TF.pil_to_tensor(image).float() / 255])[0]
    assert len(eager["scores"]) == 0, "no box was meant to pass the threshold"
    got = load_exported(file).detect(image)
    assert {name: len(value) for name, value in got.items()} == {name: 0 for name in got}, got
