"""Object detection data: COCO json, Pascal VOC XML (VOCdevkit tree or a plain folder) and YOLO txt
data sets in torchvision's detection convention.

``dataset[i]`` is ``(image, target)``: the image as a float [3, H, W] RGB ``tv_tensors.Image`` in
0..1 and a dict with ``boxes`` (``tv_tensors.BoundingBoxes`` float32 [N, 4], XYXY in pixels),
``labels`` (int64 [N], contiguous ids 1..K, 0 being the background), ``masks``
(``tv_tensors.Mask`` uint8 [N, H, W], COCO and YOLO polygons only), ``image_id`` (int, the
ground truth's image id), ``area`` (float32 [N]), ``iscrowd`` (int64 [N]) and ``orig_size``
((H, W)). Category ids that are not 1..K (COCO's 1..90 with gaps, VOC's names, YOLO's 0..K-1)
are mapped to 1..K; the evaluator maps predictions back. Images keep their size: the model's
own transform resizes and normalises them.

Layouts (``DATASET_KINDS``; ``detect_layout`` tells them apart when ``--dataset`` is not given):

- ``coco``: an instances json and its image folder;
- ``voc``: ``VOCdevkit/VOC20xx/{JPEGImages,Annotations,ImageSets/Main}``;
- ``voc-folder``: Pascal VOC XML files as labelImg, CVAT and Roboflow export them, beside their
  images or apart from them, split by sub-folders (``train/``, ``val/``) or by list files
  (``train.txt``); the class list is read from the files when not given;
- ``yolo``: ``images/`` and ``labels/`` (one ``class cx cy w h`` line per box, normalised to 0..1,
  or ``class x1 y1 x2 y2 ...`` polygon lines, which become masks) with a ``data.yaml`` naming the
  classes and the train/val folders, as Ultralytics reads them.

Every data set holds its evaluation ground truth as a pycocotools ``COCO`` object (``dataset.coco``)
built from the cleaned records, never from the raw file: the evaluator scores exactly the objects
training saw (crowd/difficult regions kept as ``iscrowd=1``, which COCOeval ignores), with
annotation ids renumbered 1..N, so on any file the loader accepts a detector that outputs the
cleaned ground truth scores AP 100 (the detection task checks it on every evaluation set it builds, by
scoring its ground truth on itself: ``splitattn.tasks.detection.evaluation.check_ground_truth``).

Bad input is handled as torchvision's references and detectron2 do, counted in
``dataset.stats`` (``STATS_KEYS``), never a crash:

- an annotation whose category is not in the category list is dropped (never relabelled);
- boxes with zero or negative width or height are dropped; boxes partly outside the image are
  clipped to it, boxes entirely outside are dropped;
- crowd regions (COCO ``iscrowd=1``, VOC ``difficult``) are left out of training targets;
  the ground truth keeps them and COCOeval ignores detections that fall on them;
- for training (``train=True``), images without a usable annotation are left out (detectron2's
  default, ``FILTER_EMPTY_ANNOTATIONS``); for evaluation every image is kept;
- a missing image file is found when the data set is built (one stat a file, cheap even for
  COCO's 118k images); an image that cannot be decoded, or whose size differs from the
  annotation's, is found when it is loaded. Training with ``skip_bad`` skips both: a missing
  file is left out, an unreadable sample is replaced by the next readable image (with a warning,
  since DataLoader worker processes cannot update the counts). An evaluation set never leaves an
  image out of the score: a missing file is counted and kept (COCO, VOC; a YOLO image's size
  comes from the file itself, so a missing one is left out and counted), and an unreadable image is
  served as ``(None, target)``, which the evaluation scores with no detections, its objects
  missed (training with ``skip_bad``), or reports as an error naming the file (``detect
  evaluate``). Without ``skip_bad`` each is an error naming the file.

A file that is malformed rather than noisy (a COCO image id that is not an integer, an image
without its size, an annotation of an image that is not listed, two categories of one name) is an
error naming the file, the entry and the field when the data set is built. COCO's optional fields
get the standard defaults: ``iscrowd`` 0, ``area`` the mask's pixel count, else the box's area.

Modules, one idea each: ``records`` (the target schema, ``ImageRecord``, box cleaning, the problem
counts, the ground truth built from the records), ``dataset`` (``DetectionDataset``: records served
as samples, and ``collate_detection``), ``coco``, ``voc`` and ``yolo`` (one per file format),
``layouts`` (``detect_layout`` and the factory ``build_detection_dataset``), ``transforms`` (the
training augmentation).
"""

from ...errors import DetectionDataError
from .coco import CocoDetectionDataset
from .dataset import DetectionDataset, collate_detection
from .layouts import DATASET_KINDS, build_detection_dataset, detect_layout
from .records import STATS_KEYS, ImageRecord, Target, clean_box, segmentation_to_mask
from .transforms import build_detection_train_transform
from .voc import VocDetectionDataset, VocFolderDetectionDataset
from .yolo import YoloDetectionDataset

__all__ = [
    "DATASET_KINDS",
    "STATS_KEYS",
    "CocoDetectionDataset",
    "DetectionDataError",
    "DetectionDataset",
    "ImageRecord",
    "Target",
    "VocDetectionDataset",
    "VocFolderDetectionDataset",
    "YoloDetectionDataset",
    "build_detection_dataset",
    "build_detection_train_transform",
    "clean_box",
    "collate_detection",
    "detect_layout",
    "segmentation_to_mask",
]
