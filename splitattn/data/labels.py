"""Class names: the class lists of the standard data sets, and the text a classification prediction is
printed as.

Neutral ground for every task and for the deployment code: ``imagenet_class_names`` (read from
torchvision's weights metadata), the Pascal VOC classes (segmentation uses all 21, detection the 20
objects), ADE20K's 150 SceneParsing classes, Cityscapes' 19 evaluated classes with their label ids, and
CamVid's 11 classes; ``format_predictions`` gives the lines ``predict`` prints for an image, for a
checkpoint and for an exported file alike.
"""

from __future__ import annotations

from typing import List, Sequence

ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
# Cityscapes label id -> train id for the 19 evaluated classes; every other id (0..33) is ignored.
CITYSCAPES_TRAIN_IDS = {
    7: ("road", 0),
    8: ("sidewalk", 1),
    11: ("building", 2),
    12: ("wall", 3),
    13: ("fence", 4),
    17: ("pole", 5),
    19: ("traffic light", 6),
    20: ("traffic sign", 7),
    21: ("vegetation", 8),
    22: ("terrain", 9),
    23: ("sky", 10),
    24: ("person", 11),
    25: ("rider", 12),
    26: ("car", 13),
    27: ("truck", 14),
    28: ("bus", 15),
    31: ("train", 16),
    32: ("motorcycle", 17),
    33: ("bicycle", 18),
}
CITYSCAPES_NUM_LABEL_IDS = 34  # label ids 0..33 of gtFine_labelIds.png
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign/symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_IGNORE_VALUE = 11  # the stored value of CamVid's void pixels (after the 11 classes)


def imagenet_class_names() -> List[str]:
    """ImageNet-1k class names in label order (1000 names), from torchvision's weights metadata (no download).

    Returns:
        The names of labels 0..999, as torchvision's ``ResNet50_Weights.IMAGENET1K_V2.meta["categories"]``
        lists them.
    """
    from torchvision.models import ResNet50_Weights  # here: importing torchvision also loads Dynamo

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def format_predictions(
    path: str, probabilities: Sequence[float], indices: Sequence[int], classes: Sequence[str]
) -> str:
    """The lines ``predict`` prints for one image: its path, then ``  <prob>%  <class>`` per top-k class.

    Args:
        path: the image, as named on the command line.
        probabilities: the top-k probabilities in 0..1, highest first.
        indices: their class indices into ``classes``.
        classes: the class names of the model's labels.

    Returns:
        ``1 + k`` lines joined by newlines (no trailing newline).
    """
    return "\n".join(
        [str(path)] + [f"  {prob * 100:6.2f}%  {classes[index]}" for prob, index in zip(probabilities, indices)]
    )
