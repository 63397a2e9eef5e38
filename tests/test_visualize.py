"""Pictures a user looks at: detection drawings on a real COCO image, the segmentation overlay's legend,
class palettes. Measurements use PIL's own luma (``Image.convert("L")``, ITU-R 601) and pixel counts,
not the drawing code's helpers."""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from splitattn.data.segmentation import CAMVID_CLASSES, CAMVID_IGNORE_VALUE
from splitattn.tasks.detection.inference import captions, draw_detections, label_rects
from splitattn.tasks.segmentation.visualize import (
    KNOWN_PALETTES,
    overlay_with_legend,
    save_segmentation_outputs,
    segmentation_palette,
    voc_colours,
)
from splitattn.viz.drawing import color_palette

from .conftest import SHARED_DATA

COCO128 = SHARED_DATA / "coco128"
CAMVID = SHARED_DATA / "camvid-mini"
COCO_IMAGE_ID = 74  # 640x426 street scene: a dog, a bicycle at the top edge, small people in the distance
AERT_BRIGHTNESS_DIFFERENCE = 125  # W3C's "Techniques for Accessibility Evaluation and Repair" threshold


def _coco_ground_truth() -> Tuple[Image.Image, Dict[str, torch.Tensor], List[str]]:
    """The COCO image and its non-crowd ground-truth boxes as detections (scores descending), read with pycocotools."""
    from pycocotools.coco import COCO

    coco = COCO(str(COCO128 / "annotations" / "instances.json"))
    category_ids = sorted(coco.getCatIds())
    classes = ["__background__"] + [coco.loadCats(c)[0]["name"] for c in category_ids]
    info = coco.loadImgs(COCO_IMAGE_ID)[0]
    annotations = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=COCO_IMAGE_ID)) if not a["iscrowd"]]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)])
    labels = torch.tensor([category_ids.index(a["category_id"]) + 1 for a in annotations])
    output = {"boxes": boxes, "labels": labels, "scores": torch.linspace(0.99, 0.5, len(annotations))}
    image = Image.open(COCO128 / "images" / info["file_name"]).convert("RGB")
    return image, output, classes


@pytest.mark.usefixtures("coco128")
@pytest.mark.parametrize("long_side", [640, 4000])
def test_detection_labels_are_legible_at_any_image_size(long_side, tmp_path):
    image, output, classes = _coco_ground_truth()
    scale = long_side / max(image.size)
    if scale != 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        output["boxes"] = output["boxes"] * scale
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    picture = draw_detections(tensor, output, classes)
    assert picture.dtype == torch.uint8 and picture.shape == tensor.shape
    path = tmp_path / "drawn.png"
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(path, compress_level=1)  # lossless; level 1 is fast
    drawn = Image.open(path).convert("RGB")
    rgb, luma = np.asarray(drawn), np.asarray(drawn.convert("L")).astype(float)

    rects = label_rects(output["boxes"], captions(output, classes), image.height, image.width)
    free = [
        i
        for i, a in enumerate(rects)  # labels no other label overlaps
        if not any(j != i and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3] for j, b in enumerate(rects))
    ]
    assert len(free) >= 3
    palette = color_palette(len(classes))
    for index in free:
        left, top, right, bottom = rects[index]
        patch, patch_luma = rgb[top:bottom, left:right].reshape(-1, 3), luma[top:bottom, left:right]
        colours, counts = np.unique(patch, axis=0, return_counts=True)
        background = colours[counts.argmax()]
        # a filled background in the class colour covers most of the label
        assert counts.max() / len(patch) > 0.5
        assert background.tolist() == palette[output["labels"][index]].tolist()
        # the text: pixels far from the background's luma; its height and its contrast
        background_luma = float(np.asarray(Image.fromarray(background[None, None].astype(np.uint8)).convert("L"))[0, 0])
        distance = np.abs(patch_luma - background_luma)
        assert distance.max() >= AERT_BRIGHTNESS_DIFFERENCE, (
            classes[output["labels"][index]],
            background,
            distance.max(),
        )
        text_rows = np.nonzero((distance >= distance.max() / 2).any(axis=1))[0]
        text_height = text_rows.max() - text_rows.min() + 1
        assert text_height >= 0.02 * image.height, (text_height, image.height)


@pytest.mark.usefixtures("coco128")
def test_detection_masks_are_blended_not_painted():
    from pycocotools.coco import COCO

    image, output, classes = _coco_ground_truth()
    coco = COCO(str(COCO128 / "annotations" / "instances.json"))
    annotations = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=COCO_IMAGE_ID)) if not a["iscrowd"]]
    masks = np.stack([coco.annToMask(a) for a in annotations]).astype(bool)
    output["masks"] = torch.from_numpy(masks).float()[:, None]
    original = np.asarray(image)
    tensor = torch.from_numpy(original.copy()).permute(2, 0, 1).float() / 255
    picture = draw_detections(tensor, output, classes).permute(1, 2, 0).numpy().astype(int)
    largest = int(masks.sum((1, 2)).argmax())  # the dog
    inside = masks[largest] & (masks.sum(0) == 1)
    colour = color_palette(len(classes))[output["labels"][largest]].astype(int)
    drawn, below = picture[inside], original[inside].astype(int)
    # every masked pixel moved towards the class colour but kept part of the image under it
    changed = np.abs(drawn - below).sum(1) > 0
    assert changed.mean() > 0.95
    between = ((drawn >= np.minimum(below, colour) - 1) & (drawn <= np.maximum(below, colour) + 1)).all(1)
    assert between.mean() > 0.9  # boxes and labels cover the rest
    assert (np.abs(drawn - colour).sum(1) > 10).mean() > 0.9  # not painted over


def test_detection_drawing_keeps_the_image_without_detections():
    image = torch.rand(3, 40, 60)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    picture = draw_detections(image, empty, ["__background__", "thing"])
    assert torch.equal(picture, (image * 255).round().to(torch.uint8))


def _has_solid_square(mask: np.ndarray, side: int) -> bool:
    """Whether ``mask`` (H, W) bool holds a ``side`` x ``side`` square of True (a legend swatch, not anti-aliased text)."""
    if mask.shape[0] < side or mask.shape[1] < side:
        return False
    total = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    windows = total[side:, side:] - total[:-side, side:] - total[side:, :-side] + total[:-side, :-side]
    return bool((windows == side * side).any())


@pytest.mark.usefixtures("camvid_mini")
def test_segmentation_overlay_legend_lists_exactly_the_classes_present(tmp_path):
    name = sorted((CAMVID / "val" / "images").iterdir())[0].name
    image = Image.open(CAMVID / "val" / "images" / name).convert("RGB")
    prediction = np.array(Image.open(CAMVID / "val" / "labels" / name)).astype(np.int64)
    prediction[prediction == CAMVID_IGNORE_VALUE] = CAMVID_CLASSES.index("road")  # a prediction has no void
    prediction[prediction == CAMVID_CLASSES.index("pole")] = CAMVID_CLASSES.index("building")  # one class absent
    classes = list(CAMVID_CLASSES)
    present = {classes[i] for i in np.unique(prediction)}
    assert "pole" not in present and len(present) >= 5

    mask_path, overlay_path = save_segmentation_outputs(image, prediction, classes, tmp_path / "scene")
    assert (mask_path.name, overlay_path.name) == ("scene_mask.png", "scene_overlay.png")
    mask = Image.open(mask_path)
    assert mask.mode == "P" and np.array_equal(np.asarray(mask), prediction)  # pixel value = class id

    overlay = np.asarray(Image.open(overlay_path).convert("RGB"))
    assert overlay.shape[0] == image.height and overlay.shape[1] > image.width
    legend = overlay[:, image.width :]
    palette = segmentation_palette(classes)
    listed = {classes[i] for i, colour in enumerate(palette) if _has_solid_square((legend == colour).all(-1), 6)}
    assert listed == present


def test_overlay_rejects_a_prediction_of_another_size():
    with pytest.raises(ValueError, match="shape"):
        overlay_with_legend(Image.new("RGB", (40, 30)), np.zeros((20, 20), np.int64), ["a", "b"], color_palette(2))


def voc_labelcolormap(num_classes: int) -> list:
    """VOCdevkit's ``labelcolormap.m``, transcribed: bits 0, 1, 2 of the class id go to the high bit of R, G, B,
    the next three to the bit below, and so on."""
    colours = []
    for index in range(num_classes):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
        colours.append(rgb)
    return colours


def test_known_data_sets_get_their_customary_palettes():
    from torchvision.datasets import Cityscapes

    from .test_segmentation_data import CAMVID_COLOURS  # typed from CamVid's colour list (Brostow et al.)

    camvid = [list(colour) for colour in CAMVID_COLOURS]
    assert segmentation_palette(list(CAMVID_CLASSES)).tolist() == camvid  # recognised by its class list
    # Cityscapes' 19 train ids: torchvision's copy of cityscapesScripts' labels.py
    train = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < 255), key=lambda c: c.train_id)
    cityscapes = [list(c.color) for c in train]
    assert segmentation_palette([c.name for c in train]).tolist() == cityscapes
    assert segmentation_palette([f"c{i}" for i in range(19)], "cityscapes").tolist() == cityscapes
    # Pascal VOC's published colour map, but the background (black in VOC's map, void here) white
    voc = voc_colours()
    assert voc[1:].tolist() == voc_labelcolormap(21)[1:] and voc[0].tolist() == [255, 255, 255]
    assert [voc[i].tolist() for i in (1, 7, 15, 20)] == [[128, 0, 0], [128, 128, 128], [192, 128, 128], [0, 64, 128]]
    assert segmentation_palette(["a", "b", "c"]).tolist() == color_palette(3).tolist()


def test_no_class_colour_is_black_in_any_palette():
    palettes = {name: colours for name, (_, colours) in KNOWN_PALETTES.items()}
    palettes.update({f"generic-{n}": color_palette(n) for n in (2, 11, 21, 81, 256)})
    for name, colours in palettes.items():
        assert colours.dtype == np.uint8 and colours.shape[1] == 3
        assert not (colours == 0).all(axis=1).any(), f"{name} has a black class"
    for names, colours in KNOWN_PALETTES.values():
        assert len(names) == len(colours)
    generic = color_palette(256)
    assert generic.max(axis=1).min() >= 170  # HSV value of at least 2/3: not near black either
    assert len({tuple(c) for c in color_palette(81).tolist()}) == 81  # COCO's 80 classes + background: all distinct
