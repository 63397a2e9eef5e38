"""Cascade R-CNN box heads (Cai and Vasconcelos, 2018) assembled from torchvision's RoI pieces.

Three stages, each a torchvision ``RoIHeads`` used for its sampling (``select_training_samples``:
ground truth appended to the proposals, ``Matcher`` at the stage's IoU, 512 RoIs per image with 25%
positives) and its ``BoxCoder`` (the stage's regression weights), with its own box head (a new one per
stage from ``make_box_head``: torchvision's ``TwoMLPHead`` by default, or the authors' 4-conv-1-fc
``FastRCNNConvFCHead``) and a class-agnostic ``AgnosticBoxPredictor``:

- stage k trains on the detached, clipped boxes refined by stage k-1 (stage 0 on the RPN proposals),
  matched at IoU 0.5 / 0.6 / 0.7 with weights (10, 10, 5, 5) / (20, 20, 10, 10) / (30, 30, 15, 15);
- each stage's losses are torchvision's Fast R-CNN losses (cross-entropy, smooth L1 with beta 1/9 over
  the sampled RoIs) scaled by ``stage_loss_weights``, 1 each as in the paper and detectron2 (mmdetection
  uses 1, 0.5, 0.25); detectron2's extra 1/3 gradient scaling inside the heads is not applied;
- inference runs the three stages in turn on the refined boxes, averages their softmax class
  probabilities (``cascade_scores``) and keeps the last stage's boxes, then applies the score
  threshold, per-class NMS and the per-image cap as torchvision's ``RoIHeads.postprocess_detections``;
- the optional mask head trains on stage 0's positive RoIs (as detectron2) and predicts on the final boxes.

The module scripts with ``torch.jit.script`` as torchvision's ``RoIHeads`` does (so the whole detector
does, returning ``(losses, detections)`` as scripted torchvision detectors do).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_inference, maskrcnn_loss
from torchvision.ops import boxes as box_ops

from ...errors import UsageError

CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_REG_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


class AgnosticBoxPredictor(nn.Module):
    """Shape: (N, C) RoI features -> class logits (N, K) and one class-agnostic box delta (N, 4)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


def cascade_scores(stage_probs: List[Tensor]) -> Tensor:
    """The cascade's class probabilities: the mean of the stages' (N, K) softmax outputs."""
    return torch.stack(stage_probs).mean(0)


class CascadeRoIHeads(nn.Module):
    """Drop-in ``roi_heads`` of a torchvision ``GeneralizedRCNN`` (see the module docstring).

    ``forward(features, proposals, image_shapes, targets)`` -> (detections, losses) like
    ``RoIHeads``: detections are dicts of ``boxes`` (n, 4), ``labels`` (n,), ``scores`` (n,)
    [+ ``masks`` (n, 1, 28, 28) probabilities] in the resized image's pixels; losses are
    ``loss_classifier_{k}``, ``loss_box_reg_{k}`` per stage k [+ ``loss_mask``].

    ``make_box_head`` is called once per stage and must return a module mapping the pooled (n, C, 7, 7)
    RoI features to (n, ``representation_size``); by default ``TwoMLPHead(in_features, representation_size)``.
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        in_features: int,
        num_classes: int,
        ious: Sequence[float] = CASCADE_IOUS,
        reg_weights: Sequence[Sequence[float]] = CASCADE_REG_WEIGHTS,
        representation_size: int = 1024,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        stage_loss_weights: Sequence[float] = (1.0, 1.0, 1.0),
        mask_roi_pool: Optional[nn.Module] = None,
        mask_head: Optional[nn.Module] = None,
        mask_predictor: Optional[nn.Module] = None,
        make_box_head: Optional[Callable[[], nn.Module]] = None,
    ) -> None:
        super().__init__()
        if not len(ious) == len(reg_weights) == len(stage_loss_weights):
            raise UsageError(
                f"one IoU, regression weights and loss weight per stage: got {len(ious)} IoUs, "
                f"{len(reg_weights)} weights and {len(stage_loss_weights)} loss weights."
            )
        if make_box_head is None:

            def make_box_head() -> nn.Module:
                return TwoMLPHead(in_features, representation_size)

        self.stages = nn.ModuleList(
            RoIHeads(
                box_roi_pool,
                make_box_head(),
                AgnosticBoxPredictor(representation_size, num_classes),
                iou,
                iou,
                batch_size_per_image,
                positive_fraction,
                tuple(weights),
                score_thresh,
                nms_thresh,
                detections_per_img,
            )
            for iou, weights in zip(ious, reg_weights)
        )
        self.stage_loss_weights: List[float] = [float(w) for w in stage_loss_weights]
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.mask_roi_pool, self.mask_head, self.mask_predictor = mask_roi_pool, mask_head, mask_predictor

    def has_mask(self) -> bool:
        return self.mask_roi_pool is not None and self.mask_head is not None and self.mask_predictor is not None

    def forward(
        self,
        features: Dict[str, Tensor],
        proposals: List[Tensor],
        image_shapes: List[Tuple[int, int]],
        targets: Optional[List[Dict[str, Tensor]]] = None,
    ) -> Tuple[List[Dict[str, Tensor]], Dict[str, Tensor]]:
        if self.training:
            needed = ["boxes", "labels", "masks"] if self.has_mask() else ["boxes", "labels"]
            message = "training needs targets with " + ", ".join(needed) + " for every image."
            if targets is None:
                raise UsageError(message)
            for target in targets:
                for key in needed:
                    if key not in target:
                        raise UsageError(message)
        losses: Dict[str, Tensor] = {}
        stage_probs: List[Tensor] = []
        boxes = proposals
        # stage 0's sampled RoIs, their matched ground truth and labels: where the mask head trains
        mask_boxes: List[Tensor] = []
        mask_matched: List[Tensor] = []
        mask_labels: List[Tensor] = []
        for k, stage in enumerate(self.stages):
            labels: List[Tensor] = []
            regression_targets: List[Tensor] = []
            if self.training:
                boxes, matched_idxs, labels, regression_targets = stage.select_training_samples(boxes, targets)
                if k == 0:
                    mask_boxes, mask_matched, mask_labels = boxes, matched_idxs, labels
            class_logits, deltas = stage.box_predictor(
                stage.box_head(stage.box_roi_pool(features, boxes, image_shapes))
            )
            if self.training:
                # fastrcnn_loss picks each RoI's deltas at its class: give every class the agnostic ones
                loss_cls, loss_box = fastrcnn_loss(
                    class_logits, deltas.repeat(1, class_logits.shape[1]), labels, regression_targets
                )
                losses["loss_classifier_" + str(k)] = self.stage_loss_weights[k] * loss_cls
                losses["loss_box_reg_" + str(k)] = self.stage_loss_weights[k] * loss_box
            stage_probs.append(F.softmax(class_logits.float(), -1))
            refined = stage.box_coder.decode(deltas.detach().float(), boxes).reshape(
                -1, 4
            )  # float boxes under autocast
            boxes = [
                box_ops.clip_boxes_to_image(b, shape)
                for b, shape in zip(refined.split([len(b) for b in boxes]), image_shapes)
            ]
            if self.training:  # degenerate boxes cannot be matched: drop them before the next stage
                boxes = [b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])] for b in boxes]

        result: List[Dict[str, Tensor]] = []
        if not self.training:
            result = self.postprocess_detections(cascade_scores(stage_probs).split([len(b) for b in boxes]), boxes)
        if self.mask_roi_pool is not None and self.mask_head is not None and self.mask_predictor is not None:
            if self.training:
                positive = [torch.where(label > 0)[0] for label in mask_labels]
                mask_boxes = [b[i] for b, i in zip(mask_boxes, positive)]
                mask_matched = [m[i] for m, i in zip(mask_matched, positive)]
            else:
                mask_boxes = [r["boxes"] for r in result]
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_boxes, image_shapes)))
            if self.training:
                assert targets is not None  # checked above; refines the type for TorchScript
                losses["loss_mask"] = maskrcnn_loss(
                    mask_logits, mask_boxes, [t["masks"] for t in targets], [t["labels"] for t in targets], mask_matched
                )
            else:
                for probs, r in zip(maskrcnn_inference(mask_logits, [r["labels"] for r in result]), result):
                    r["masks"] = probs
        return result, losses

    def postprocess_detections(self, scores: List[Tensor], boxes: List[Tensor]) -> List[Dict[str, Tensor]]:
        """Per image, (n, K) class probabilities and (n, 4) boxes -> detections: every (box, foreground
        class) pair above ``score_thresh``, non-empty, after per-class NMS, the best ``detections_per_img``."""
        result: List[Dict[str, Tensor]] = []
        for probs, image_boxes in zip(scores, boxes):
            count, num_classes = probs.shape[0], probs.shape[1]
            labels = torch.arange(1, num_classes, device=probs.device).expand(count, num_classes - 1).reshape(-1)
            flat_boxes = image_boxes[:, None].expand(count, num_classes - 1, 4).reshape(-1, 4)
            flat_scores = probs[:, 1:].reshape(-1)
            keep = torch.where(flat_scores > self.score_thresh)[0]
            keep = keep[box_ops.remove_small_boxes(flat_boxes[keep], min_size=1e-2)]
            keep = keep[box_ops.batched_nms(flat_boxes[keep], flat_scores[keep], labels[keep], self.nms_thresh)]
            keep = keep[: self.detections_per_img]
            result.append({"boxes": flat_boxes[keep], "labels": labels[keep], "scores": flat_scores[keep]})
        return result
