"""Detection models: ResNeSt-FPN backbone, the four detectors, freezing, the cascade's stages and
score averaging, classification checkpoints as backbone weights, and clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from splitattn.models.registry import create_model
from splitattn.tasks.detection import ARCHS, create_detection_model, resnest_fpn_backbone
from splitattn.tasks.detection.cascade import CASCADE_IOUS, CASCADE_REG_WEIGHTS, CascadeRoIHeads, cascade_scores
from splitattn.tasks.classification.checkpoint import model_overrides
from splitattn.engine.checkpoint import atomic_save

pytestmark = pytest.mark.usefixtures("one_thread")
NARROW = {"bottleneck_width": 16, "stem_width": 16}
SMALL = dict(min_size=128, max_size=160, backbone_kwargs=NARROW, rpn_pre_nms_top_n_test=100,
             rpn_post_nms_top_n_test=50, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
             box_batch_size_per_image=64, box_detections_per_img=20)


def _batch():
    images = [torch.rand(3, 120, 150), torch.rand(3, 96, 90)]
    masks = torch.zeros(2, 120, 150, dtype=torch.uint8)
    masks[0, 10:70, 10:60] = masks[1, 20:90, 30:100] = 1
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 70], [30, 20, 100, 90]]), "labels": torch.tensor([1, 3]),
                "masks": masks},
               {"boxes": torch.tensor([[5.0, 5, 50, 50]]), "labels": torch.tensor([2]),
                "masks": torch.ones(1, 96, 90, dtype=torch.uint8)}]
    return images, targets


def test_fpn_backbone_levels_and_strides():
    backbone = resnest_fpn_backbone("resnest14", norm="groupnorm", **NARROW).eval()
    out = backbone(torch.rand(1, 3, 128, 96))
    assert list(out) == ["0", "1", "2", "3", "pool"] and backbone.out_channels == 256
    assert backbone.strides == [4, 8, 16, 32, 64]
    for feature, stride in zip(out.values(), backbone.strides):
        assert feature.shape == (1, 256, -(-128 // stride), -(-96 // stride))


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_trains_and_detects(arch):
    torch.manual_seed(0)
    model = create_detection_model(arch, "resnest14", num_classes=4, norm="groupnorm", **SMALL)
    images, targets = _batch()
    losses = model.train()(images, targets)
    expected = {"loss_objectness", "loss_rpn_box_reg"} | ({"loss_mask"} if "mask" in arch else set())
    expected |= ({f"loss_{k}_{s}" for k in ("classifier", "box_reg") for s in range(3)} if arch.startswith("cascade")
                 else {"loss_classifier", "loss_box_reg"})
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.roi_heads.score_thresh = 0.0  # an untrained model: keep every detection to check their format
    with torch.no_grad():
        outputs = model.eval()(images)
    for image, output in zip(images, outputs):
        boxes, labels = output["boxes"], output["labels"]
        assert len(boxes) > 0 and boxes.shape[1] == 4 and len(labels) == len(boxes) == len(output["scores"])
        height, width = image.shape[1:]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and labels.min() >= 1 and labels.max() <= 3
        if "mask" in arch:
            assert output["masks"].shape == (len(boxes), 1, height, width)
        else:
            assert "masks" not in output


@pytest.mark.parametrize("norm,layers", [("frozenbn", None), ("batchnorm", 2), ("groupnorm", 0)])
def test_trainable_layers_freeze_parameters_and_statistics(norm, layers):
    torch.manual_seed(0)
    model = create_detection_model("faster_rcnn", "resnest14", 4, norm=norm, trainable_layers=layers, **SMALL)
    body = model.backbone.body
    trained = {None: 3, 2: 2, 0: 0}[layers]
    trained_stages = ("layer4", "layer3", "layer2", "layer1", "conv1")[:trained]
    for name, parameter in body.named_parameters():
        assert parameter.requires_grad == name.startswith(trained_stages), name
    frozen_modules = [m for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
                      if not name.startswith(trained_stages) for m in getattr(body, name).modules()]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in frozen_modules)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    images, targets = _batch()
    model.train()
    sum(model(images, targets).values()).backward()
    optimizer.step()
    after = body.state_dict()
    assert all(torch.equal(after[key], before[key]) for key in after if not key.startswith(trained_stages))
    if trained:  # the trained stages did learn
        assert any(not torch.equal(after[key], before[key]) for key in after if key.startswith(trained_stages))
    if norm == "frozenbn":  # frozen BN everywhere: no running statistics anywhere can move
        assert all(isinstance(m, FrozenBatchNorm2d) for m in body.modules() if "Norm" in type(m).__name__)


def test_cascade_stages_have_their_own_thresholds_and_weights():
    model = create_detection_model("cascade_rcnn", "resnest14", 3, **SMALL)
    heads = model.roi_heads
    assert isinstance(heads, CascadeRoIHeads) and len(heads.stages) == 3
    assert [s.proposal_matcher.high_threshold for s in heads.stages] == list(CASCADE_IOUS) == [0.5, 0.6, 0.7]
    assert [s.proposal_matcher.low_threshold for s in heads.stages] == [0.5, 0.6, 0.7]
    assert [tuple(s.box_coder.weights) for s in heads.stages] == list(CASCADE_REG_WEIGHTS)
    assert len({id(s.box_head) for s in heads.stages}) == 3 and heads.stages[0].box_predictor.bbox_pred.out_features == 4


class _ZeroPool(nn.Module):
    def forward(self, features, boxes, image_shapes):
        return torch.zeros(sum(len(b) for b in boxes), 4)


class _FixedPredictor(nn.Module):
    def __init__(self, logits, delta):
        super().__init__()
        self.logits, self.delta = logits, delta

    def forward(self, x):
        return self.logits.expand(len(x), -1), self.delta.expand(len(x), -1)


def test_cascade_inference_averages_stage_scores_and_keeps_last_boxes():
    torch.manual_seed(0)
    heads = CascadeRoIHeads(nn.Identity(), 4, num_classes=3, representation_size=4, score_thresh=0.0,
                            nms_thresh=0.5, detections_per_img=10).eval()
    # each stage: fixed class logits and a delta moving every box 2 px right (dx = 2 / 20 px of width)
    logits = [torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0]])]
    for stage, stage_logits in zip(heads.stages, logits):
        stage.box_roi_pool = _ZeroPool()
        stage.box_head = nn.Identity()
        stage.box_predictor = _FixedPredictor(stage_logits, torch.tensor([[0.1 * stage.box_coder.weights[0], 0, 0, 0]]))
    proposals = [torch.tensor([[10.0, 10.0, 30.0, 40.0]])]
    detections, losses = heads({}, proposals, [(100, 100)])
    expected = (sum(torch.softmax(lg, -1) for lg in logits) / 3)[0]
    assert torch.allclose(cascade_scores([torch.softmax(lg, -1) for lg in logits]), expected[None])
    result = detections[0]
    assert losses == {} and result["labels"].tolist() == [1, 2]  # foreground classes by averaged score
    assert torch.allclose(result["scores"], expected[1:], atol=1e-6)
    # three stages each moved the box by 2 px: the last stage's box, not the first's
    assert torch.allclose(result["boxes"], torch.tensor([[16.0, 10.0, 36.0, 40.0]] * 2), atol=1e-4)


def test_backbone_loads_our_classification_checkpoint(tmp_path):
    """A checkpoint in `splitattn train`'s format (weights under "model", options, classes) as backbone weights."""
    options = {"model": "resnest14", "model_kwargs": NARROW, "norm": "batchnorm", "dropout": 0.0, "drop_block": 0.0}
    classifier = create_model("resnest14", num_classes=10, **model_overrides(options))
    state = {k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in classifier.state_dict().items()}
    atomic_save({"model": state, "optimizer": {}, "epoch": 1, "step": 10, "args": options,
                 "classes": list("abcdefghij"), "model_name": "resnest14"}, tmp_path / "last.pt")
    model = create_detection_model("faster_rcnn", "resnest14", 3, norm="frozenbn", pretrained=str(tmp_path / "last.pt"),
                                   **SMALL)
    loaded = model.backbone.body.state_dict()
    compared = [k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert compared and all(torch.equal(loaded[k], state[k]) for k in compared)


@pytest.mark.parametrize("kwargs,message", [
    (dict(arch="faster_rcn", backbone="resnest14"), "Did you mean faster_rcnn"),
    (dict(arch="faster_rcnn", backbone="resnest51"), "Did you mean"),
    (dict(arch="faster_rcnn", backbone="resnest14", trainable_layers=6), "trainable_layers must be 0..5"),
    (dict(arch="faster_rcnn", backbone="resnest14", num_classes=1), "counts the background"),
])
def test_clear_errors(kwargs, message):
    kwargs = dict(dict(num_classes=3, **SMALL), **kwargs)
    with pytest.raises(ValueError, match=message):
        create_detection_model(**kwargs)
