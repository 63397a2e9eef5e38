"""Per-class detection diagnostics read from an evaluated ``COCOeval``: AP and AP50 of every category,
precision-recall curves, and the missed and false detections drawn on the images.

Everything comes from what pycocotools computed, never a re-implementation: the per-category scores from
``coco_eval.eval["precision"]`` ([T, R, K, A, M]: IoU thresholds, recall thresholds, categories, area ranges,
max detections) averaged the way ``COCOeval.summarize`` averages the whole array (area range "all", the
largest max-detections setting, i.e. 100, and entries of -1, "no ground truth", left out); the errors from
the per-image matching in ``coco_eval.evalImgs`` at IoU 0.5 (greedy by score, crowd regions ignored).
Scores are in percent like the other detection metrics; a score COCOeval leaves undefined is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from matplotlib.figure import Figure
from pycocotools.cocoeval import COCOeval

from ...data.detection.dataset import DetectionDataset
from ...errors import UsageError
from ...viz.diagnostics import (
    CurvePanel,
    Diagnostics,
    curves_grid_figure,
    format_table,
    per_class_bars_figure,
    save_figure,
    shortlist,
    write_csv,
)
from ...viz.gallery import GalleryBox, GalleryTile, gallery_figure
from .evaluation import CocoEvaluator

COLUMNS = ("id", "name", "AP", "AP50", "AP75", "gt", "detections", "missed", "false")
ERROR_IOU = 0.5
MAX_CURVES = 20
MAX_IMAGES = 12

ImageFiles = Union[str, Path, Mapping[int, Union[str, Path]]]  # a folder of the file names, or image id -> file


@dataclass
class ImageErrors:
    """The matching of one image at IoU 0.5 among detections scoring at least the threshold.

    ``missed``: ground-truth annotations (dicts of the ground truth) no such detection matched. ``false``:
    such detections (result dicts) that match no ground truth of their category. ``found``: the matched
    detections.
    """

    image_id: int
    missed: List[Dict[str, Any]] = field(default_factory=list)
    false: List[Dict[str, Any]] = field(default_factory=list)
    found: List[Dict[str, Any]] = field(default_factory=list)


def _indices(coco_eval: COCOeval) -> Tuple[int, int, int]:
    """(IoU 0.5 index, area "all" index, max-detections index) into the precision array; checks the run."""
    params = coco_eval.params
    if not coco_eval.eval or "precision" not in coco_eval.eval:
        raise UsageError("the COCOeval has not been accumulated: call evaluate() and accumulate() first.")
    if not params.useCats:
        raise UsageError("per-class scores need a COCOeval with params.useCats = 1.")
    at_half = np.flatnonzero(np.isclose(params.iouThrs, ERROR_IOU))
    if not len(at_half) or "all" not in params.areaRngLbl:
        raise UsageError("per-class scores need IoU threshold 0.5 and the area range 'all' in the COCOeval params.")
    return int(at_half[0]), params.areaRngLbl.index("all"), len(params.maxDets) - 1


def _mean_defined(values: np.ndarray) -> Optional[float]:
    defined = values[values > -1]
    return float(defined.mean()) * 100 if defined.size else None


def per_category_scores(coco_eval: COCOeval) -> List[Dict[str, Any]]:
    """AP (IoU .50:.95), AP50 and AP75 in percent of every category of ``coco_eval.params.catIds``.

    Each is the mean of the category's slice of ``coco_eval.eval["precision"]`` at area "all" and the
    largest ``maxDets`` (100 by default), over the IoU thresholds (all, 0.5 or 0.75) and the 101 recall
    thresholds, excluding -1: ``COCOeval.summarize``'s rule applied to one category, so it equals the AP of a
    ``COCOeval`` run with ``params.catIds = [category]``. ``None`` for a category without ground truth in the
    evaluated images.

    Returns:
        One dict per category with ``id`` (the category id), ``name``, ``AP``, ``AP50``, ``AP75``.

    Raises:
        UsageError: ``coco_eval`` not accumulated, or without IoU 0.5 / the area range "all" / categories.
    """
    t50, area, max_dets = _indices(coco_eval)
    precision = coco_eval.eval["precision"][:, :, :, area, max_dets]  # [T, R, K]
    t75 = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, 0.75))
    rows = []
    for k, category in enumerate(coco_eval.params.catIds):
        rows.append(
            {
                "id": int(category),
                "name": coco_eval.cocoGt.cats[category]["name"],
                "AP": _mean_defined(precision[:, :, k]),
                "AP50": _mean_defined(precision[t50, :, k]),
                "AP75": _mean_defined(precision[t75[0], :, k]) if len(t75) else None,
            }
        )
    return rows


def image_errors(coco_eval: COCOeval, score_threshold: float = 0.5) -> Dict[int, ImageErrors]:
    """The missed, false and found detections of every evaluated image at IoU 0.5.

    Args:
        coco_eval: after ``evaluate()`` and ``accumulate()``.
        score_threshold: detections scoring less are left out.

    Returns:
        Image id -> ``ImageErrors``, for every image of ``coco_eval.params.imgIds``.

    Read from ``coco_eval.evalImgs`` (area "all", the largest ``maxDets``): COCOeval matches detections to
    ground truth greedily in decreasing score, so the matches of the detections scoring at least
    ``score_threshold`` are those it found. A ground-truth object it matched only with a lower-scoring
    detection counts as missed; crowd regions and what matches them count as neither.
    """
    t50, area, _ = _indices(coco_eval)
    params = coco_eval.params
    images, areas = len(params.imgIds), len(params.areaRng)
    errors = {int(image_id): ImageErrors(int(image_id)) for image_id in params.imgIds}
    for k in range(len(params.catIds)):
        for i, image_id in enumerate(params.imgIds):
            record = coco_eval.evalImgs[k * areas * images + area * images + i]
            if record is None:
                continue
            score_of = dict(zip(record["dtIds"], record["dtScores"]))
            entry = errors[int(image_id)]
            for g, gt_id in enumerate(record["gtIds"]):
                match = int(record["gtMatches"][t50, g])
                if not record["gtIgnore"][g] and (match == 0 or score_of[match] < score_threshold):
                    entry.missed.append(coco_eval.cocoGt.anns[gt_id])
            for d, dt_id in enumerate(record["dtIds"]):
                if record["dtScores"][d] < score_threshold or record["dtIgnore"][t50, d]:
                    continue
                matched = record["dtMatches"][t50, d] > 0
                (entry.found if matched else entry.false).append(coco_eval.cocoDt.anns[dt_id])
    return errors


def _xyxy(annotation: Dict[str, Any]) -> List[float]:
    x, y, w, h = annotation["bbox"]
    return [x, y, x + w, y + h]


def _image_file(coco_eval: COCOeval, image_root: ImageFiles, image_id: int) -> Path:
    if isinstance(image_root, Mapping):
        return Path(image_root[image_id])
    return Path(image_root) / coco_eval.cocoGt.imgs[image_id]["file_name"]


def errors_figure(
    coco_eval: COCOeval, errors: Dict[int, ImageErrors], image_root: ImageFiles, count: int, threshold: float
) -> Optional[Figure]:
    """A gallery of the images with the most errors.

    Args:
        coco_eval: the evaluation ``errors`` come from (for file names and category names).
        errors: ``image_errors``' result.
        image_root: folder of the ground truth's ``file_name`` paths, or image id -> image file.
        count: how many images to show.
        threshold: the score threshold ``errors`` used (for the title).

    Returns:
        The figure (missed objects dashed orange, false detections red with their score, found ones green),
        or ``None`` when no image has an error.
    """
    ranked = sorted(errors.values(), key=lambda e: (-(len(e.missed) + len(e.false)), e.image_id))
    ranked = [entry for entry in ranked if entry.missed or entry.false][:count]
    if not ranked:
        return None
    name = {cid: cat["name"] for cid, cat in coco_eval.cocoGt.cats.items()}
    tiles = []
    for entry in ranked:
        info = coco_eval.cocoGt.imgs[entry.image_id]
        boxes = [GalleryBox(_xyxy(d), "", "tab:green") for d in entry.found]
        boxes += [GalleryBox(_xyxy(g), name[g["category_id"]], "tab:orange", True) for g in entry.missed]
        boxes += [GalleryBox(_xyxy(d), f"{name[d['category_id']]} {d['score']:.2f}", "tab:red") for d in entry.false]
        caption = f"{info['file_name']}: {len(entry.missed)} missed, {len(entry.false)} false"
        tiles.append(GalleryTile(_image_file(coco_eval, image_root, entry.image_id), caption, boxes))
    title = (
        f"Images with the most errors at IoU {ERROR_IOU} and score \u2265 {threshold}: "
        "missed objects (dashed orange), false detections (red, with score), found (green)"
    )
    return gallery_figure(tiles, title, columns=3, tile_inches=4.8)


def pr_curves_figure(coco_eval: COCOeval, rows: List[Dict[str, Any]], count: int = MAX_CURVES) -> Optional[Figure]:
    """Precision-recall curves of the categories with the most ground truth.

    Args:
        coco_eval: after ``accumulate()``.
        rows: ``per_category_scores`` rows with their ``gt`` counts (as ``write_detection_diagnostics`` fills
            them), in ``coco_eval.params.catIds`` order.
        count: how many categories to draw.

    Returns:
        The figure: per category, COCOeval's interpolated precision at its 101 recall thresholds at IoU 0.5
        and 0.75; ``None`` when no category has ground truth.
    """
    t50, area, max_dets = _indices(coco_eval)
    params = coco_eval.params
    t75 = np.flatnonzero(np.isclose(params.iouThrs, 0.75))
    chosen = sorted((k for k, row in enumerate(rows) if row.get("gt")), key=lambda k: (-rows[k]["gt"], k))[:count]
    if not chosen:
        return None
    recall = np.asarray(params.recThrs)
    panels = []
    for k in chosen:
        lines = {"IoU 0.5": (recall, coco_eval.eval["precision"][t50, :, k, area, max_dets])}
        if len(t75):
            lines["IoU 0.75"] = (recall, coco_eval.eval["precision"][t75[0], :, k, area, max_dets])
        row = rows[k]
        ap50 = "-" if row["AP50"] is None else f"{row['AP50']:.1f}"
        panels.append(CurvePanel(f"{row['name']} ({row['gt']} gt): AP50 {ap50}", lines))
    total = sum(1 for row in rows if row.get("gt"))
    title = f"Precision-recall of the {len(chosen)} of {total} categories with the most ground truth"
    return curves_grid_figure(panels, title, "recall", "precision")


def write_detection_diagnostics(
    folder: Union[str, Path],
    coco_eval: COCOeval,
    image_root: Optional[ImageFiles] = None,
    score_threshold: float = 0.5,
    max_curves: int = MAX_CURVES,
    max_images: int = MAX_IMAGES,
) -> Diagnostics:
    """Write the per-class diagnostics of an evaluated, accumulated ``COCOeval`` (bbox or segm) into ``folder``.

    Files: ``per_class.csv`` (``COLUMNS``: category id and name, AP/AP50/AP75 in percent, then counts at IoU
    0.5: ``gt`` non-crowd objects, ``detections`` scoring >= ``score_threshold``, ``missed`` and ``false``,
    see ``image_errors``), ``per_class_ap.png`` (AP and AP50 bars of the categories with ground truth),
    ``pr_curves.png`` (``pr_curves_figure``) and, with ``image_root``, ``errors.png`` (the images with the
    most missed and false detections).

    Args:
        folder: where to write (created if needed).
        coco_eval: after ``evaluate()`` and ``accumulate()``, default parameters or any with IoU 0.5 and area
            range "all".
        image_root: folder of the ground truth's ``file_name`` paths, or image id -> image file (when the
            images lie in several folders), for the gallery.
        score_threshold: the score from which a detection counts for the error counts and the gallery.
        max_curves: categories drawn in ``pr_curves.png``.
        max_images: images in ``errors.png``.

    Returns:
        ``Diagnostics`` with one row per category, the printable table (above 25 categories the 15 with the
        lowest AP, see ``viz.diagnostics.shortlist``), the files and ``metrics["per_class"]`` (the rows).

    Raises:
        UsageError: ``coco_eval`` not accumulated or without per-category results (see ``per_category_scores``).
    """
    folder = Path(folder)
    rows = per_category_scores(coco_eval)
    errors = image_errors(coco_eval, score_threshold)
    index = {row["id"]: row for row in rows}
    for row in rows:
        row.update(gt=0, detections=0, missed=0, false=0)
    for entry in errors.values():
        for found in entry.found:
            index[found["category_id"]]["gt"] += 1
            index[found["category_id"]]["detections"] += 1
        for missed in entry.missed:
            index[missed["category_id"]]["gt"] += 1
            index[missed["category_id"]]["missed"] += 1
        for false in entry.false:
            index[false["category_id"]]["detections"] += 1
            index[false["category_id"]]["false"] += 1
    files = {"per_class_csv": write_csv(folder / "per_class.csv", rows, COLUMNS)}
    present = [row for row in rows if row["AP"] is not None]
    if present:
        series = {"AP": [row["AP"] for row in present], "AP50": [row["AP50"] for row in present]}
        bars = per_class_bars_figure([row["name"] for row in present], series, "AP per category", "AP (%)")
        files["per_class_png"] = save_figure(bars, folder / "per_class_ap.png")
    curves = pr_curves_figure(coco_eval, rows, max_curves)
    if curves is not None:
        files["pr_curves_png"] = save_figure(curves, folder / "pr_curves.png")
    if image_root is not None:
        gallery = errors_figure(coco_eval, errors, image_root, max_images, score_threshold)
        if gallery is not None:
            files["errors_png"] = save_figure(gallery, folder / "errors.png")
    shown, note = shortlist(rows, ("AP", "AP50"))
    table = format_table(shown, COLUMNS, decimals=1) + (f"\n{note}" if note else "")
    return Diagnostics(rows, table, files, {"per_class": rows})


def diagnose(
    folder: Union[str, Path], evaluator: CocoEvaluator, dataset: DetectionDataset
) -> Tuple[Dict[str, Diagnostics], Dict[str, Any]]:
    """``write_detection_diagnostics`` of each IoU type an evaluation scored, into ``folder/<iou type>/``.

    Args:
        folder: where to write (``bbox/`` and, for mask models, ``segm/`` are created in it).
        evaluator: the evaluation's ``CocoEvaluator`` after ``summarize`` (its ``evaluations``).
        dataset: the evaluation set (its image files go into the galleries).

    Returns:
        ``(IoU type -> Diagnostics, what metrics.json gains)``: ``{"per_class": {IoU type: rows}}``; both empty
        when nothing was detected (no ``COCOeval`` to read).
    """
    files = {record.image_id: record.path for record in dataset.records}
    written = {
        kind: write_detection_diagnostics(Path(folder) / kind, coco_eval, files)
        for kind, coco_eval in evaluator.evaluations.items()
    }
    metrics = {"per_class": {kind: result.metrics["per_class"] for kind, result in written.items()}}
    return written, metrics if written else {}
