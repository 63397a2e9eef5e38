"""Detection training on real COCO images (coco128): each detector learns, `splitattn detect
train|evaluate|predict` end to end with an exact resume, the schedule, clear option errors, and
every config under configs/detection builds its model."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from splitattn.cli import main
from splitattn.config import DetectConfig, from_dict, read_config_file
from splitattn.data.detection import CocoDetectionDataset, collate_detection
from splitattn.engine.optim import warmup_multistep
from splitattn.tasks.detection import ARCHS, create_detection_model
from splitattn.tasks.detection.checkpoint import model_from_config
from splitattn.tasks.detection.engine import detection_loss
from splitattn.weights import load_checkpoint

from .conftest import REPO_ROOT, SHARED_DATA

COCO128 = SHARED_DATA / "coco128"
needs_coco128 = pytest.mark.usefixtures("coco128")
pytestmark = pytest.mark.usefixtures("one_thread")
NARROW = {"bottleneck_width": 16, "stem_width": 16}
# Fewer proposals and RoIs than the defaults: the same code paths at a fraction of the CPU time.
LIGHT = dict(
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=150,
    rpn_pre_nms_top_n_test=150,
    rpn_post_nms_top_n_test=100,
    box_batch_size_per_image=64,
    box_detections_per_img=10,
)
TINY_ARGS = [
    "--backbone",
    "resnest14",
    "--model-kwargs",
    "bottleneck_width=16",
    "stem_width=16",
    "--norm",
    "groupnorm",
    "--min-size",
    "128",
    "--max-size",
    "160",
    "--detector-kwargs",
    "rpn_pre_nms_top_n_train=300",
    "rpn_post_nms_top_n_train=150",
    "rpn_pre_nms_top_n_test=150",
    "rpn_post_nms_top_n_test=100",
    "box_batch_size_per_image=64",
    "--detections-per-img",
    "10",
]


def _coco128(**kwargs) -> CocoDetectionDataset:
    return CocoDetectionDataset(COCO128 / "images", COCO128 / "annotations" / "instances.json", **kwargs)


@needs_coco128
@pytest.mark.parametrize("arch", ARCHS)
def test_each_detector_learns_a_few_coco_images(arch):
    """Ten SGD steps on the same two COCO images: the summed loss falls clearly (lr 0 would leave it
    flat up to sampling noise, which the margin is well above)."""
    torch.manual_seed(0)
    dataset = _coco128(train=True, with_masks="mask" in arch)
    images, targets = collate_detection([dataset[0], dataset[1]])
    model = create_detection_model(
        arch,
        "resnest14",
        dataset.num_classes,
        norm="groupnorm",
        min_size=128,
        max_size=160,
        backbone_kwargs=NARROW,
        **LIGHT,
    )
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    scheduler = warmup_multistep(optimizer, [], gamma=0.1, warmup=4, warmup_factor=0.2)
    losses = []
    for _ in range(10):
        model.train()
        loss, sums = detection_loss(model, images, targets, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(sums["loss"] / sums["images"])
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.75 * first, losses


def test_warmup_multistep_schedule():
    """torch's LinearLR x MultiStepLR against detectron2's WarmupMultiStepLR factor, transcribed."""

    def detectron2(it, steps=(60, 80), gamma=0.1, warmup_iters=10, warmup_factor=0.001):
        factor = gamma ** sum(it >= s for s in steps)
        if it < warmup_iters:
            alpha = it / warmup_iters
            factor *= warmup_factor * (1 - alpha) + alpha
        return factor

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_multistep(optimizer, [60, 80], gamma=0.1, warmup=10, warmup_factor=0.001)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(100):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([detectron2(it) for it in range(101)], rel=1e-9)


def _train_args(output, max_iter: int) -> list:
    return [
        "detect",
        "train",
        "--data",
        str(COCO128),
        "--arch",
        "mask_rcnn",
        *TINY_ARGS,
        "--max-images",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "0.01",
        "--max-iter",
        str(max_iter),
        "--steps",
        "5",
        "--warmup-iters",
        "2",
        "--log-every",
        "2",
        "--eval-every",
        "100",
        "--checkpoint-every",
        "2",
        "--workers",
        "0",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--no-tensorboard",
        "--output",
        str(output),
        "--debug",
    ]


@needs_coco128
def test_cli_train_resume_evaluate_predict(tmp_path, capsys):
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    assert main(_train_args(interrupted, 4)) == 0
    assert torch.load(interrupted / "last.pt", weights_only=True)["iter"] == 4
    with pytest.raises(ValueError, match="already holds a run"):
        main(_train_args(interrupted, 6))
    assert main(_train_args(interrupted, 6) + ["--resume", "auto"]) == 0
    assert main(_train_args(straight, 6)) == 0

    # the resumed run continues at iteration 4 and ends with exactly the weights of the uninterrupted one
    resumed, reference = (torch.load(run / "last.pt", weights_only=True) for run in (interrupted, straight))
    assert resumed["iter"] == reference["iter"] == 6
    assert all(torch.equal(resumed["model"][k], reference["model"][k]) for k in reference["model"])
    # the run records where its ResNeSt sits: what pretrained=RUN/last.pt hands another model is that backbone
    backbone = load_checkpoint(interrupted / "last.pt")
    body = {k[len("backbone.body.") :]: v for k, v in resumed["model"].items() if k.startswith("backbone.body.")}
    assert "conv1.0.weight" in backbone and backbone.keys() == body.keys()
    assert all(torch.equal(backbone[k], body[k]) for k in body)
    records = [json.loads(line) for line in (interrupted / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [2, 4, 6]
    assert {"train_loss_classifier", "train_loss_box_reg", "train_loss_mask"} <= set(records[0])
    assert (interrupted / "best.pt").is_file()
    assert records[2]["lr"] == pytest.approx(0.01 * 0.1)  # past --steps 5
    assert "val_bbox_AP" in records[1] and "val_segm_AP" in records[2]
    metrics = json.loads((interrupted / "metrics.json").read_text())
    assert set(metrics["bbox"]) == set(metrics["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert (interrupted / "curves.png").is_file()
    assert "COCO instances.json: 126 of 128 images" in capsys.readouterr().out  # the data summary

    assert (
        main(["detect", "evaluate", "--weights", str(interrupted / "last.pt"), "--device", "cpu", "--workers", "0"])
        == 0
    )
    evaluated = json.loads((interrupted / "eval-val" / "metrics.json").read_text())
    assert {"bbox", "segm"} <= set(evaluated) and evaluated["images"] == 2
    assert (interrupted / "eval-val" / "detections.json").is_file()

    images = sorted((COCO128 / "images").iterdir())[:2]
    out = tmp_path / "pictures"
    assert (
        main(
            [
                "detect",
                "predict",
                *map(str, images),
                "--weights",
                str(interrupted / "last.pt"),
                "--output",
                str(out),
                "--score-threshold",
                "0.0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [f"{image.stem}_detections.png" for image in images]


@needs_coco128
@pytest.mark.parametrize(
    "extra,message",
    [
        (["--norm", "syncbn"], "needs GPUs.*frozenbn or --norm groupnorm"),
        (["--norm", "batchnorm", "--batch-size", "1"], "batch-size 1.*frozenbn or groupnorm"),
        (["--arch", "fast_rcnn"], "invalid choice"),
    ],
)
def test_bad_options_fail_clearly(tmp_path, capsys, extra, message):
    args = [
        "detect",
        "train",
        "--data",
        str(COCO128),
        "--backbone",
        "resnest14",
        "--max-iter",
        "1",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "run"),
        *extra,
    ]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    assert code == 2
    assert __import__("re").search(message, capsys.readouterr().err)


CONFIGS = sorted((REPO_ROOT / "configs" / "detection").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_configs_build_their_models(config):
    values = {"data": "data", **read_config_file(str(config))}
    if values["norm"] == "syncbn":  # the paper's GPU configs: validated for GPUs (on CPUs syncbn is refused)
        values["device"] = "cuda"
    options = from_dict(DetectConfig, values, config.name)
    model = model_from_config(options, 81, pretrained=False)
    assert model.arch == options.arch and model.transform.min_size[-1] == options.min_size[-1]
    if "resnest50" in config.name:  # the paper's 1x schedule
        assert options.min_size == list(range(640, 801, 32)) and options.max_size == 1333
        assert (options.max_iter, options.steps, options.lr) == (90000, [60000, 80000], 0.02)
        assert options.norm == "syncbn" and options.pretrained is True and options.warmup_iters == 1000


def test_a_shortened_run_that_keeps_a_long_schedule_is_warned_about():
    with pytest.warns(
        UserWarning,
        match=r"--max-iter 20 ends before the warm-up \(--warmup-iters 1000\) and the "
        r"lr steps \[60000, 80000\]",
    ):
        from_dict(DetectConfig, {"data": "data", "max_iter": 20})
    config = REPO_ROOT / "configs" / "detection" / "coco128_faster_rcnn_resnest14.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped CPU config's schedule fits its length
        from_dict(DetectConfig, {"data": "data", **read_config_file(str(config))})
