"""Detection models: ResNeSt-FPN backbone, the four detectors, freezing, the cascade's stages and
score averaging, the paper's 4conv1fc head and normalised FPN, TorchScript, classification checkpoints as
backbone weights, and clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from splitattn.config import ClassifyConfig, DetectConfig, read_config_file
from splitattn.data.detection import CocoDetectionDataset, collate_detection
from splitattn.engine.checkpoint import atomic_save
from splitattn.errors import WeightsError
from splitattn.models import create_model
from splitattn.tasks.classification.checkpoint import model_overrides
from splitattn.tasks.detection import ARCHS, create_detection_model, resnest_fpn_backbone
from splitattn.tasks.detection.cascade import CascadeRoIHeads, cascade_scores
from splitattn.tasks.detection.checkpoint import model_from_config
from splitattn.tasks.detection.model import BACKBONE_PREFIX as DETECTION_PREFIX

from .conftest import REPO_ROOT, SHARED_DATA

pytestmark = pytest.mark.usefixtures("one_thread")
NARROW = {"bottleneck_width": 16, "stem_width": 16}
SMALL = dict(
    min_size=128,
    max_size=160,
    backbone_kwargs=NARROW,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    box_batch_size_per_image=64,
    box_detections_per_img=20,
)


def _batch():
    images = [torch.rand(3, 120, 150), torch.rand(3, 96, 90)]
    masks = torch.zeros(2, 120, 150, dtype=torch.uint8)
    masks[0, 10:70, 10:60] = masks[1, 20:90, 30:100] = 1
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10, 60, 70], [30, 20, 100, 90]]),
            "labels": torch.tensor([1, 3]),
            "masks": masks,
        },
        {
            "boxes": torch.tensor([[5.0, 5, 50, 50]]),
            "labels": torch.tensor([2]),
            "masks": torch.ones(1, 96, 90, dtype=torch.uint8),
        },
    ]
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
    expected |= (
        {f"loss_{k}_{s}" for k in ("classifier", "box_reg") for s in range(3)}
        if arch.startswith("cascade")
        else {"loss_classifier", "loss_box_reg"}
    )
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


@pytest.mark.parametrize("norm,frozen", [("frozenbn", None), ("batchnorm", 2), ("groupnorm", 4)])
def test_freeze_stages_freeze_parameters_and_statistics(norm, frozen):
    """The stem and the first K stages frozen (frozenbn's default: K = 1, torchvision's trainable_layers=3)."""
    torch.manual_seed(0)
    model = create_detection_model("faster_rcnn", "resnest14", 4, norm=norm, freeze_stages=frozen, **SMALL)
    body = model.backbone.body
    trained = {None: 3, 2: 2, 4: 0}[frozen]
    trained_stages = ("layer4", "layer3", "layer2", "layer1", "conv1")[:trained]
    for name, parameter in body.named_parameters():
        assert parameter.requires_grad == name.startswith(trained_stages), name
    frozen_modules = [
        m
        for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
        if not name.startswith(trained_stages)
        for m in getattr(body, name).modules()
    ]
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
    # detectron2's defaults (config/defaults.py, ROI_BOX_CASCADE_HEAD: IOUS and BBOX_REG_WEIGHTS), after the paper
    assert [s.proposal_matcher.high_threshold for s in heads.stages] == [0.5, 0.6, 0.7]
    assert [s.proposal_matcher.low_threshold for s in heads.stages] == [0.5, 0.6, 0.7]
    assert [tuple(s.box_coder.weights) for s in heads.stages] == [(10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)]
    assert (
        len({id(s.box_head) for s in heads.stages}) == 3 and heads.stages[0].box_predictor.bbox_pred.out_features == 4
    )


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
    heads = CascadeRoIHeads(
        nn.Identity(), 4, num_classes=3, representation_size=4, score_thresh=0.0, nms_thresh=0.5, detections_per_img=10
    ).eval()
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
    classifier = create_model("resnest14", num_classes=10, **model_overrides(ClassifyConfig(**options)))
    state = {k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in classifier.state_dict().items()}
    atomic_save(
        {
            "model": state,
            "optimizer": {},
            "epoch": 1,
            "step": 10,
            "args": options,
            "classes": list("abcdefghij"),
            "model_name": "resnest14",
        },
        tmp_path / "last.pt",
    )
    model = create_detection_model(
        "faster_rcnn", "resnest14", 3, norm="frozenbn", pretrained=str(tmp_path / "last.pt"), **SMALL
    )
    loaded = model.backbone.body.state_dict()
    compared = [k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert compared and all(torch.equal(loaded[k], state[k]) for k in compared)


def test_backbones_move_between_detection_and_segmentation_run_checkpoints(tmp_path):
    """``pretrained=`` takes a detection or segmentation run's checkpoint (its ``backbone_prefix`` entry, written by
    the task, says where the ResNeSt sits in its model) and loads that backbone, strictly, into the other task's
    model and into a ``features_only`` backbone. A run checkpoint from before the entry existed is refused with
    the fix, not guessed at."""
    from splitattn.tasks.segmentation.model import BACKBONE_PREFIX as SEGMENTATION_PREFIX
    from splitattn.tasks.segmentation.model import create_segmentation_model

    detector = create_detection_model("faster_rcnn", "resnest14", 3, norm="groupnorm", **SMALL)
    detector_state = {
        k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in detector.state_dict().items()
    }
    entries = {"model": detector_state, "task": "detection", "args": {}, "classes": ["bg", "a", "b"]}
    atomic_save({**entries, "backbone_prefix": DETECTION_PREFIX}, tmp_path / "det.pt")
    segmenter = create_segmentation_model(
        "resnest14", 4, norm_layer="groupnorm", output_stride=16, pretrained=str(tmp_path / "det.pt"), **NARROW
    )
    body = {k[len("backbone.body.") :]: v for k, v in detector_state.items() if k.startswith("backbone.body.")}
    assert body and all(torch.equal(segmenter.backbone.state_dict()[k], v) for k, v in body.items())

    atomic_save(
        {
            "model": segmenter.state_dict(),
            "task": "segmentation",
            "args": {},
            "classes": list("abcd"),
            "backbone_prefix": SEGMENTATION_PREFIX,
        },
        tmp_path / "seg.pt",
    )
    features = create_model(
        "resnest14", features_only=True, norm_layer="groupnorm", pretrained=str(tmp_path / "seg.pt"), **NARROW
    )
    assert all(torch.equal(features.state_dict()[k], v) for k, v in body.items())

    atomic_save(entries, tmp_path / "old.pt")  # written before runs recorded their backbone prefix
    with pytest.raises(WeightsError, match=r"old.pt is a detection run checkpoint .*Retrain it .*backbone's own"):
        create_model("resnest14", features_only=True, norm_layer="groupnorm", pretrained=str(tmp_path / "old.pt"))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(arch="faster_rcn", backbone="resnest14"), "Did you mean faster_rcnn"),
        (dict(arch="faster_rcnn", backbone="resnest51"), "Did you mean"),
        (dict(arch="faster_rcnn", backbone="resnest14", freeze_stages=5), "freeze_stages must be 0..4"),
        (dict(arch="faster_rcnn", backbone="resnest14", num_classes=1), "counts the background"),
    ],
)
def test_clear_errors(kwargs, message):
    kwargs = dict(dict(num_classes=3, **SMALL), **kwargs)
    with pytest.raises(ValueError, match=message):
        create_detection_model(**kwargs)


def _box_heads(model):
    heads = model.roi_heads
    return [stage.box_head for stage in heads.stages] if isinstance(heads, CascadeRoIHeads) else [heads.box_head]


def _reference_4conv1fc(head, x, norm):
    """The authors' head written out (detectron2 FastRCNNConvFCHead, NUM_CONV 4, NUM_FC 1): conv 3x3 -> norm ->
    ReLU four times, flatten, fc -> ReLU, with the weights of ``head`` read by layer type."""
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in head.modules() if isinstance(m, nn.GroupNorm)]
    (fc,) = [m for m in head.modules() if isinstance(m, nn.Linear)]
    for index, conv in enumerate(convs):
        x = F.conv2d(x, conv.weight, conv.bias, padding=1)
        if norm:
            x = F.group_norm(x, 32, norms[index].weight, norms[index].bias)
        x = F.relu(x)
    return F.relu(F.linear(x.flatten(1), fc.weight, fc.bias))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head_norm", [None, "groupnorm"])
def test_4conv1fc_head_parameters_and_shapes(arch, head_norm):
    """Four 3x3 convs 256->256 (+ norm: gamma and beta, no conv bias; else a conv bias), one fc 256*7*7->1024,
    one head per cascade stage; outputs equal the head written out with functional ops."""
    model = create_detection_model(
        arch, "resnest14", 4, norm="groupnorm", box_head="4conv1fc", head_norm=head_norm, fpn_norm="groupnorm", **SMALL
    )
    conv = 256 * 256 * 3 * 3 + (2 * 256 if head_norm else 256)
    expected = 4 * conv + (256 * 7 * 7 * 1024 + 1024)
    heads = _box_heads(model)
    assert len(heads) == (3 if arch.startswith("cascade") else 1) and len({id(h) for h in heads}) == len(heads)
    x = torch.randn(5, 256, 7, 7)
    for head in heads:
        assert sum(p.numel() for p in head.parameters()) == expected
        convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
        assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
            (256, 256, (3, 3), (1, 1))
        ] * 4
        assert all((c.bias is None) == bool(head_norm) for c in convs)
        assert len([m for m in head.modules() if isinstance(m, nn.GroupNorm)]) == (4 if head_norm else 0)
        out = head(x)
        assert out.shape == (5, 1024)
        assert torch.allclose(out, _reference_4conv1fc(head, x, head_norm), atol=1e-5)
    fpn_norms = [m for m in model.backbone.fpn.modules() if isinstance(m, nn.GroupNorm)]
    assert len(fpn_norms) == 8  # after each of the 4 lateral and 4 output convs
    if "mask" in arch:
        mask_norms = [m for m in model.roi_heads.mask_head.modules() if isinstance(m, nn.GroupNorm)]
        assert len(mask_norms) == (4 if head_norm else 0)


def test_2fc_head_is_the_default_and_torchvisions():
    """Without box_head the head stays torchvision's TwoMLPHead (fc 256*7*7->1024, fc 1024->1024), so
    checkpoints written before the option load."""
    model = create_detection_model("faster_rcnn", "resnest14", 4, **SMALL)
    (head,) = _box_heads(model)
    assert type(head).__name__ == "TwoMLPHead"
    assert sum(p.numel() for p in head.parameters()) == 256 * 7 * 7 * 1024 + 1024 + 1024 * 1024 + 1024


PAPER_CONFIGS = sorted((REPO_ROOT / "configs" / "detection").glob("*_resnest50_fpn_syncbn_1x.yaml"))


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=[c.stem for c in PAPER_CONFIGS])
def test_paper_configs_use_the_authors_heads(config):
    """The four COCO configs build SyncBN in the FPN, the 4conv1fc box head (one per cascade stage) and the
    mask head, as detectron2-ResNeSt's configs (a narrow resnest14 stands in for resnest50, for speed)."""
    options = read_config_file(str(config))
    assert (options["box_head"], options["fpn_norm"], options["head_norm"]) == ("4conv1fc", "syncbn", "syncbn")
    options.update(backbone="resnest14", model_kwargs=NARROW, pretrained=False)
    model = model_from_config(DetectConfig(**options), 81)
    for head in _box_heads(model):
        assert len([m for m in head.modules() if isinstance(m, nn.SyncBatchNorm)]) == 4
    assert len([m for m in model.backbone.fpn.modules() if isinstance(m, nn.SyncBatchNorm)]) == 8
    if "mask" in options["arch"]:
        assert len([m for m in model.roi_heads.mask_head.modules() if isinstance(m, nn.SyncBatchNorm)]) == 4


COCO128 = SHARED_DATA / "coco128"


@pytest.mark.slow
@pytest.mark.usefixtures("coco128")
def test_cascade_mask_rcnn_with_the_papers_heads_learns_a_few_coco_images():
    """As the other detectors' learning tests (tests/test_detection_train.py): ten SGD steps on two coco128
    images with a narrow resnest14, GroupNorm everywhere (the CPU stand-in for SyncBN); the summed loss of
    the three 4conv1fc stages, the RPN and the normalised mask head falls clearly."""
    torch.manual_seed(0)
    dataset = CocoDetectionDataset(
        COCO128 / "images", COCO128 / "annotations" / "instances.json", train=True, with_masks=True
    )
    images, targets = collate_detection([dataset[0], dataset[1]])
    model = create_detection_model(
        "cascade_mask_rcnn",
        "resnest14",
        dataset.num_classes,
        norm="groupnorm",
        fpn_norm="groupnorm",
        box_head="4conv1fc",
        head_norm="groupnorm",
        **dict(SMALL, box_batch_size_per_image=32),
    )  # the 4 convs cost 20x the 2 fc
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    model.train()
    losses = []
    for step in range(10):
        for group in optimizer.param_groups:  # linear warm-up over 4 steps from 0.2x, as the detector tests
            group["lr"] = 0.005 * min(1.0, 0.2 + 0.8 * step / 4)
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.75 * first, losses


@pytest.mark.parametrize("arch", ["cascade_rcnn", "cascade_mask_rcnn"])
def test_scripted_cascade_detects_and_trains_as_eager(arch):
    torch.manual_seed(0)
    model = create_detection_model(
        arch, "resnest14", 4, norm="groupnorm", box_head="4conv1fc", head_norm="groupnorm", **SMALL
    ).eval()
    model.roi_heads.score_thresh = 0.0  # untrained: keep every detection so there is something to compare
    images = [torch.rand(3, 120, 150)]
    script = torch.jit.script(model)
    with torch.no_grad():
        eager = model(images)[0]
        losses, scripted = script(images)  # scripted torchvision detectors return both
    scripted = scripted[0]
    assert losses == {} and set(scripted) == set(eager) and len(eager["boxes"]) > 0
    for key in eager:
        assert scripted[key].shape == eager[key].shape
        assert torch.allclose(scripted[key].float(), eager[key].float(), atol=1e-5), key
    # training too: the same RoIs sampled from the same seed give the same losses
    batch, targets = _batch()
    torch.manual_seed(1)
    eager_losses = model.train()(batch[:1], targets[:1])
    torch.manual_seed(1)
    scripted_losses, _ = script.train()(batch[:1], targets[:1])
    assert set(scripted_losses) == set(eager_losses)
    assert all(torch.allclose(scripted_losses[k], eager_losses[k], atol=1e-5) for k in eager_losses), scripted_losses


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(box_head="4conv"), "unknown box_head '4conv'; choose one of 2fc, 4conv1fc"),
        (dict(head_norm="groupnorm"), "faster_rcnn with box_head='2fc' has none"),
        (dict(box_head="4conv1fc", head_norm="frozenbn"), "head_norm='frozenbn'.*freeze nothing"),
        (dict(fpn_norm="frozenbn"), "fpn_norm='frozenbn'.*freeze nothing"),
    ],
)
def test_head_options_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_detection_model("faster_rcnn", "resnest14", 3, **SMALL, **kwargs)


@pytest.mark.parametrize("build", ["detector", "classifier"])
def test_pretrained_with_a_norm_without_statistics_fails_before_building(build: str, monkeypatch) -> None:
    """The ImageNet weights hold BatchNorm statistics: asking them for a GroupNorm model is refused at once,
    naming the fix, before any weights file is looked for."""
    import splitattn.models.factory as factory
    from splitattn.errors import UsageError

    monkeypatch.setattr(factory, "read_pretrained", lambda *a, **k: pytest.fail("weights were looked for"))
    with pytest.raises(UsageError, match="frozenbn"):
        if build == "detector":
            create_detection_model("faster_rcnn", "resnest14", num_classes=3, norm="groupnorm", pretrained=True)
        else:
            factory.create_model("resnest14", pretrained=True, norm_layer="groupnorm")
