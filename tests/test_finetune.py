"""Fine-tuning controls, each checked against an independent computation: layer-wise lr decay and the weight-decay
rules against timm's ``param_groups_layer_decay``; frozen stages (parameters and BatchNorm statistics) against the
pretrained file after real training steps; AdamW's state through a resume; the class-balanced sampler's class
frequencies and shards; class weights against scikit-learn, ``F.cross_entropy`` and a numpy transcription of
median frequency balancing on camvid-mini; repeat factors against detectron2's rule on coco128."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from splitattn import create_model
from splitattn.config import ClassifyConfig, ConfigError, DetectConfig, SegmentConfig, from_dict
from splitattn.engine.balance import (
    WeightedSampler,
    balanced_class_weights,
    class_counts,
    inverse_frequency,
    median_frequency_weights,
    repeat_factors,
)
from splitattn.engine.data import ResumableSampler
from splitattn.engine.optim import parameter_groups
from splitattn.tasks.finetune import learning_rate_scales

from .conftest import SHARED_DATA
from .test_detection_layouts import _write_labelimg
from .test_segmentation_train import _synthetic_folder
from .train_helpers import make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")
NARROW = {"bottleneck_width": 16, "stem_width": 16}
QUIET = dict(workers=0, threads=1, device="cpu", progress=False, tensorboard=False)


def _lr_and_decay(model: torch.nn.Module, groups: list) -> dict:
    """``{parameter name: (lr factor, weight decay)}`` of optimizer groups (timm's ``lr_scale`` or ours)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_layer_decay_and_weight_decay_follow_timms_parameter_groups() -> None:
    """Our groups for resnest14 give every parameter the lr factor and weight decay timm's
    ``param_groups_layer_decay`` gives the same parameter of timm's resnest14d (same names); in a detector and a
    segmenter the backbone keeps those factors, every other parameter learns at 1x (segmentation heads at 10x)."""
    import timm
    from timm.optim import param_groups_layer_decay

    from splitattn.tasks.detection.model import BACKBONE_PREFIX as DETECTION_PREFIX
    from splitattn.tasks.detection.model import create_detection_model
    from splitattn.tasks.segmentation.model import create_segmentation_model

    with torch.device("meta"):
        ours, twin = create_model("resnest14", num_classes=7), timm.create_model("resnest14d", num_classes=7)
    expected = _lr_and_decay(twin, param_groups_layer_decay(twin, weight_decay=0.05, layer_decay=0.6))
    groups = parameter_groups(ours, 0.05, lr=2.0, lr_scales=learning_rate_scales(ours, ours, "", 0.6))
    got = _lr_and_decay(ours, groups)
    assert got.keys() == expected.keys()
    for name, (scale, decay) in expected.items():
        assert got[name] == (pytest.approx(scale, rel=1e-12), decay), name
    assert all(g["lr"] == pytest.approx(2.0 * g["lr_scale"]) for g in groups)
    assert groups[0]["lr_scale"] == 1.0 and len({scale for scale, _ in got.values()}) == 6  # stem, 4 blocks, fc

    with torch.device("meta"):
        detector = create_detection_model("faster_rcnn", "resnest14", 3, norm="batchnorm")
        segmenter = create_segmentation_model("resnest14", 4, norm_layer="batchnorm")
    for model, prefix, heads, mult in (
        (detector, DETECTION_PREFIX, [], 1.0),
        (segmenter, "backbone.", [*segmenter.head.parameters(), *segmenter.aux_head.parameters()], 10.0),
    ):
        backbone = detector.backbone.body if model is detector else segmenter.backbone
        scales = _lr_and_decay(
            model, parameter_groups(model, 0.05, 1.0, learning_rate_scales(model, backbone, prefix, 0.6, heads, mult))
        )
        head_ids = {id(p) for p in heads}
        for name, parameter in model.named_parameters():
            if name.startswith(prefix):
                assert scales[name] == (
                    pytest.approx(expected[name[len(prefix) :]][0]),
                    expected[name[len(prefix) :]][1],
                )
            else:
                assert scales[name][0] == (mult if id(parameter) in head_ids else 1.0), name


def _pretrained_file(tmp_path: Path, num_classes: int = 2) -> Path:
    """A narrow resnest14 classifier's weights with trained-looking BatchNorm statistics, as a .pth file."""
    torch.manual_seed(0)
    model = create_model("resnest14", num_classes=num_classes, **NARROW)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.0)
    path = tmp_path / "pretrained.pth"
    torch.save(model.state_dict(), path)
    return path


FROZEN = ("conv1.", "bn1.", "layer1.", "layer2.")  # --freeze-stages 2: the stem and layer1-2


def _assert_frozen_as_pretrained(trained: dict, pretrained: dict, prefix: str = "") -> None:
    """The stem and stages 1-2 (parameters and BatchNorm statistics) equal the pretrained file's; stage 4 moved."""
    frozen = [k for k in pretrained if k.startswith(FROZEN) and not k.endswith("num_batches_tracked")]
    assert frozen and all(torch.equal(trained[prefix + k], pretrained[k]) for k in frozen)
    assert any(k.endswith("running_mean") for k in frozen)
    moved = [k for k in pretrained if k.startswith("layer4.") and k.endswith(("conv1.weight", "running_mean"))]
    assert moved and all(not torch.equal(trained[prefix + k], pretrained[k]) for k in moved)


def test_each_task_fine_tunes_with_frozen_stages_layer_decay_adamw_and_imbalance_options(tmp_path: Path) -> None:
    """A short run per task from the same pretrained file with --freeze-stages 2 --layer-decay 0.5 --optimizer
    adamw (and --balanced-sampler / --class-weights auto where they apply): the frozen stages and their
    BatchNorm statistics are exactly the file's after training (the engine calls model.train() every step), the
    rest learnt, the optimizer state is AdamW's and each group's peak lr is lr x 0.5 ** (depth - layer)."""
    from splitattn.tasks.classification.trainer import train as classify
    from splitattn.tasks.detection.trainer import train as detect
    from splitattn.tasks.segmentation.trainer import train as segment

    pretrained = _pretrained_file(tmp_path)
    weights = torch.load(pretrained, weights_only=True)
    common = dict(
        pretrained=str(pretrained), model_kwargs=NARROW, freeze_stages=2, layer_decay=0.5, optimizer="adamw", **QUIET
    )
    images = make_image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=4)
    runs = [
        (classify, ClassifyConfig(data=str(images), img_size=32, epochs=1, batch_size=4, balanced_sampler=True, **common), ""),
        (
            detect,
            DetectConfig(
                data=str(_write_labelimg(tmp_path / "boxes")), backbone="resnest14", norm="batchnorm", min_size=[64],
                max_size=96, max_iter=2, warmup_iters=0, steps=[], detections_per_img=10, balanced_sampler=True,
                repeat_threshold=0.9, **common,
            ),
            "backbone.body.",
        ),
        (
            segment,
            SegmentConfig(
                data=str(_synthetic_folder(tmp_path / "pixels", {"train": [(48, 48)] * 4, "val": [(40, 48)]})),
                classes="a,b,c", ignore_value=9, backbone="resnest14", output_stride=16, base_size=48, crop_size=48,
                batch_size=2, epochs=1, class_weights="auto", **common,
            ),
            "backbone.",
        ),
    ]  # fmt: skip
    for index, (train, config, prefix) in enumerate(runs):
        output = tmp_path / f"run{index}"
        train(dataclasses.replace(config, output=str(output)))
        checkpoint = torch.load(output / "last.pt", weights_only=True)
        _assert_frozen_as_pretrained(checkpoint["model"], weights, prefix)
        state = checkpoint["optimizer"]
        assert state["state"] and all({"exp_avg", "exp_avg_sq", "step"} <= set(s) for s in state["state"].values())
        head = 10.0 if isinstance(config, SegmentConfig) else 1.0  # segmentation's heads learn at 10x
        peak = max(g["initial_lr"] for g in state["param_groups"]) / head
        ratios = {round(g["initial_lr"] / peak, 9) for g in state["param_groups"]}
        assert ratios == {head, 0.5, 0.25}  # heads; layer4.0 (0.5 ** 1) and layer3.0 (0.5 ** 2); the rest frozen


def test_classification_layer_decay_reaches_the_optimizer() -> None:
    """The groups the engine's optimizer gets for --layer-decay 0.5: peak lr x 0.5 ** (5 - layer)."""
    from splitattn.engine.optim import create_optimizer

    model = create_model("resnest14", num_classes=3, **NARROW)
    groups = parameter_groups(model, 0.05, 0.01, learning_rate_scales(model, model, "", 0.5))
    optimizer = create_optimizer("adamw", groups, 0.01, 0.9, (0.8, 0.99), 1e-6)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {round(g["lr"] / 0.01, 9) for g in optimizer.param_groups} == {round(0.5**k, 9) for k in range(6)}
    assert all(g["betas"] == (0.8, 0.99) and g["eps"] == 1e-6 for g in optimizer.param_groups)
    assert isinstance(create_optimizer("sgd", groups, 0.01, 0.9, (0.9, 0.999), 1e-8), torch.optim.SGD)


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (ClassifyConfig, {"freeze_stages": 2}, r"--freeze-stages fine-tunes pretrained weights.*add --pretrained"),
        (
            ClassifyConfig,
            {"layer_decay": 1.5, "pretrained": "w.pth"},
            r"--layer-decay is a factor per layer in \(0, 1\]",
        ),
        (SegmentConfig, {"layer_decay": 0.7}, r"--layer-decay fine-tunes pretrained weights"),
        (ClassifyConfig, {"optimizer": "adamw", "momentum": 0.5}, r"--optimizer adamw has no --momentum"),
        (DetectConfig, {"opt_eps": 1e-6}, r"--optimizer sgd has no --opt-betas/--opt-eps"),
        (ClassifyConfig, {"balanced_sampler": True, "class_weights": "auto"}, r"use one"),
        (DetectConfig, {"repeat_threshold": 0.0}, r"--repeat-threshold is a fraction"),
    ],
)
def test_fine_tuning_options_are_checked_before_any_data_is_read(cls, values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(cls, {"data": "data", **values})


def test_optimizer_defaults_follow_the_optimizer_and_old_detection_checkpoints_keep_their_frozen_stages() -> None:
    from splitattn.config.values import from_checkpoint_args

    assert (ClassifyConfig().base_lr, ClassifyConfig().weight_decay) == (0.1, 1e-4)
    assert (ClassifyConfig(optimizer="adamw").base_lr, ClassifyConfig(optimizer="adamw").weight_decay) == (2.5e-4, 0.05)
    assert (DetectConfig(optimizer="adamw").lr, SegmentConfig(optimizer="adamw").lr) == (1e-4, 6e-5)
    assert ClassifyConfig(optimizer="adamw", weight_decay=0.01).weight_decay == 0.01
    # trainable_layers (stages trained from the last, 5 = all) -> freeze_stages (stem + K stages frozen)
    for trained, frozen in ((None, None), (5, None), (4, 0), (3, 1), (0, 4)):
        config = from_checkpoint_args(DetectConfig, {"data": "x", "trainable_layers": trained}, "old")
        assert config.freeze_stages == frozen


def test_balanced_sampler_draws_each_class_equally_often_and_shards_and_resumes() -> None:
    """Class frequencies of many passes against 1/K (a chi-square test, scipy); the two ranks' shares of a pass
    interleave to the one-process draw; the same seed and pass give the same draw, another pass another;
    resuming at batch 3 gives the rest of the pass."""
    from scipy.stats import chisquare

    labels = [c for c in range(10) for _ in range(20 if c == 3 else 200)]
    weights = inverse_frequency(labels, 10)
    sampler = WeightedSampler(weights, seed=5)
    drawn = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        drawn += list(sampler)
    counts = class_counts([labels[i] for i in drawn], 10)
    assert len(drawn) == 20 * len(labels) and chisquare(counts).pvalue > 1e-3
    assert counts[3] > 10 * 0.5 * len(drawn) / 10 / 10  # the minority is no longer 1% of the draws

    sampler.set_epoch(7)
    one = list(sampler)
    ranks = [ResumableSampler(WeightedSampler(weights, seed=5), 8, rank, 2) for rank in (0, 1)]
    for rank in ranks:
        rank.set_epoch(7)
    shares = [[index for index, _ in rank] for rank in ranks]
    rounds = len(one) // 16 * 16
    assert shares[0] == one[0:rounds:2] and shares[1] == one[1:rounds:2] and len(ranks[0]) == rounds // 2
    sampler.set_epoch(8)
    assert list(sampler) != one
    resumable = ResumableSampler(WeightedSampler(weights, seed=5), batch_size=16)
    resumable.set_epoch(7, start=48)
    assert [index for index, _ in resumable] == one[48 : 48 + (len(one) - 48) // 16 * 16]
    with pytest.raises(ValueError, match="all zero"):
        WeightedSampler([0.0, 0.0])


def test_imbalanced_imagenette_subset_is_balanced_by_the_loader(tmp_path: Path) -> None:
    """The reduced imbalanced experiment (benchmarks/imbalanced.py): imagenette-mini with one class cut to a
    tenth of its training images, listed in a CSV; the training loader of --balanced-sampler draws that class as
    often as the others (about 1/10 of a pass), the plain loader at its share (20 / 1820)."""
    from splitattn.data.classification import load_split
    from splitattn.engine.data import train_loader
    from splitattn.engine.distributed import DistContext

    root = SHARED_DATA / "imagenette-mini" / "train"
    rows = ["path,label"]
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        rows += [f"{f},{folder.name}" for f in (files[:20] if folder.name == "n03394916" else files)]
    (tmp_path / "train.csv").write_text("\n".join(rows))
    dataset = load_split(tmp_path / "train.csv")
    minority = dataset.classes.index("n03394916")
    shares = {}
    for name, weights in (("plain", None), ("balanced", inverse_frequency(dataset.labels, 10))):
        loader = train_loader(dataset, 32, DistContext(device=torch.device("cpu")), 0, 0, sample_weights=weights)
        drawn = []
        for epoch in range(3):
            loader.sampler.set_epoch(epoch)
            drawn += [dataset.labels[i] for i, _ in loader.sampler]
        shares[name] = class_counts(drawn, 10)[minority] / len(drawn)
    assert len(dataset) == 1820 and shares["plain"] == pytest.approx(20 / 1820, abs=1e-3)
    assert shares["balanced"] == pytest.approx(0.1, abs=0.02)


def test_class_weights_match_scikit_learn_and_the_weighted_losses_match_torch_and_numpy() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    from splitattn.errors import DataError
    from splitattn.tasks.classification.engine import soft_cross_entropy
    from splitattn.tasks.segmentation.model import segmentation_loss

    labels = np.array([0] * 50 + [1] * 5 + [2] * 20)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    weights = balanced_class_weights(class_counts(labels, 3))
    assert weights == pytest.approx(expected, rel=1e-12)
    with pytest.raises(DataError, match=r"no sample of class\(es\) \[3\]"):
        balanced_class_weights(class_counts(labels, 4))

    torch.manual_seed(0)
    logits, targets = torch.randn(12, 3), torch.randint(0, 3, (12,))
    w = torch.tensor(weights, dtype=torch.float32)
    ours = soft_cross_entropy(logits, F.one_hot(targets, 3).float(), w)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, targets, weight=w).item(), rel=1e-6)
    assert soft_cross_entropy(logits, F.one_hot(targets, 3).float()).item() == pytest.approx(
        F.cross_entropy(logits, targets).item(), rel=1e-6
    )

    pixels = torch.randn(2, 4, 6, 5)
    target = torch.randint(0, 4, (2, 6, 5))
    target[0, :2] = 255  # ignored
    pixel_weights = torch.tensor([0.5, 2.0, 1.0, 3.0])
    loss = segmentation_loss({"out": pixels}, target, 255, class_weights=pixel_weights).item()
    log_p = pixels.log_softmax(1).numpy()
    t, valid = target.numpy(), target.numpy() != 255
    picked = np.take_along_axis(log_p, np.where(valid, t, 0)[:, None], 1)[:, 0]
    wt = pixel_weights.numpy()[np.where(valid, t, 0)] * valid
    assert loss == pytest.approx(float(-(wt * picked).sum() / wt.sum()), rel=1e-5)


def test_median_frequency_weights_on_camvid_match_a_transcription_of_segnets_rule() -> None:
    """SegNet's weights (median frequency balancing) for camvid-mini's training label maps: our data set's pixel
    counts through ``median_frequency_weights`` vs the rule computed with PIL and numpy from the PNGs."""
    from splitattn.data.segmentation.layouts import build_dataset

    root = SHARED_DATA / "camvid-mini"
    dataset = build_dataset("folder", root, "train", classes=[str(c) for c in range(11)], ignore_value=11)
    ours = median_frequency_weights(dataset.pixel_counts())
    totals, present_pixels = np.zeros(11), np.zeros(11)
    for label in sorted((root / "train" / "labels").glob("*.png")):
        values = np.array(Image.open(label))
        for c in range(11):
            n = int((values == c).sum())
            totals[c] += n
            present_pixels[c] += (values != 11).sum() if n else 0
    freq = totals / present_pixels
    assert ours == pytest.approx(np.median(freq) / freq, rel=1e-9)
    assert ours.argmax() in (2, 6, 9, 10)  # a thin or rare class (pole, sign, pedestrian, bicyclist) weighs most


def test_repeat_factors_on_coco128_follow_detectron2s_rule() -> None:
    """LVIS repeat factors of coco128's training images, transcribed from detectron2's
    ``repeat_factors_from_category_frequency`` over the json read by pycocotools (images without a non-crowd
    object left out, as training does), against ours from the data set's records."""
    from pycocotools.coco import COCO

    from splitattn.data.detection.layouts import build_detection_dataset
    from splitattn.tasks.detection.trainer import image_classes

    root, threshold = SHARED_DATA / "coco128", 0.05
    dataset = build_detection_dataset("coco", root, "train", True, with_masks=False)
    ours = repeat_factors(image_classes(dataset, len(dataset)), threshold)
    coco = COCO(str(root / "annotations" / "instances.json"))
    per_image = []
    for image_id in sorted(coco.imgs):
        cats = {a["category_id"] for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)}
        if cats:
            per_image.append(cats)
    frequency = {c: sum(c in cats for cats in per_image) / len(per_image) for cats in per_image for c in cats}
    rule = {c: max(1.0, math.sqrt(threshold / f)) for c, f in frequency.items()}
    expected = [max(rule[c] for c in cats) for cats in per_image]
    assert len(ours) == len(expected) and ours == pytest.approx(expected, rel=1e-12)
    assert (ours > 1).sum() > 10
