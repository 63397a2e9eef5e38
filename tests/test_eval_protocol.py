"""Evaluation preprocessing is the published one for each weight source.

Official files: the authors' protocol, transcribed below from zhanghang1989/ResNeSt
``scripts/torch/verify.py`` (``ECenterCrop``) with the PIL calls it makes. timm hub copies:
``timm.data.create_transform`` with the matching timm model's pretrained config.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List

import pytest
import torch
from PIL import Image
from torchvision import transforms

import splitattn
from splitattn.data import build_eval_transform, create_eval_transform, eval_transform_for
from splitattn.models import EvalConfig
from splitattn.weights.sources import CHECKPOINTS, OFFICIAL, TIMM_HUB, default_eval_config, eval_config_for_file

from .conftest import sample_photos

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # verify.py's Normalize arguments


def verify_py_transform(crop_size: int):
    """The authors' evaluation transform, written as verify.py writes it (PIL crop box, PIL bicubic resize)."""

    def ecenter_crop(img: Image.Image) -> Image.Image:
        image_width, image_height = img.size
        image_short = min(image_width, image_height)
        crop = float(crop_size) / (crop_size + 32) * image_short
        crop_top = int(round((image_height - crop) / 2.0))
        crop_left = int(round((image_width - crop) / 2.0))
        img = img.crop((crop_left, crop_top, crop_left + crop, crop_top + crop))
        return img.resize((crop_size, crop_size), Image.BICUBIC)

    return transforms.Compose([ecenter_crop, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def real_images() -> List[Image.Image]:
    colour = [Image.open(f).convert("RGB") for f in sample_photos()]  # 640x427 photos
    images = colour + [colour[1].convert("L").convert("RGB")]  # a greyscale photo, as a greyscale JPEG is read
    # Square and portrait views of real images: the short side must drive the crop, in either orientation.
    images += [images[0].crop((0, 10, 224, 234)), images[1].crop((13, 0, 190, 224))]
    return images


@pytest.mark.parametrize(
    "name,size", [("resnest50", 224), ("resnest101", 256), ("resnest200", 320), ("resnest269", 416)]
)
def test_official_weights_use_the_authors_protocol_pixel_for_pixel(name: str, size: int) -> None:
    assert CHECKPOINTS[name][0].source == OFFICIAL  # the default weights are the official file
    ours = create_eval_transform(name)
    theirs = verify_py_transform(size)
    for image in real_images():
        got, expected = ours(image), theirs(image)
        assert got.shape == (3, size, size)
        assert torch.equal(got, expected)
    # A model built by create_model carries the same protocol.
    model = splitattn.create_model(name, layers=(1, 1, 1, 1), bottleneck_width=8, stem_width=8)
    assert torch.equal(create_eval_transform(model)(image), theirs(image))


def test_the_old_rule_would_fail_this_comparison() -> None:
    """Resize-to-size/0.875 + centre crop (the former rule) differs from verify.py: the test can fail."""
    image = real_images()[0]
    old = build_eval_transform(416, 0.875, "bicubic")
    assert not torch.allclose(old(image), verify_py_transform(416)(image), atol=1e-2)


HUB = [
    (c.model, c.filename[: -len(".safetensors")])
    for sources in CHECKPOINTS.values()
    for c in sources
    if c.source == TIMM_HUB
]


@pytest.mark.parametrize("name,timm_tag", HUB, ids=[n for n, _ in HUB])
def test_hub_copies_use_timms_pretrained_config(name: str, timm_tag: str) -> None:
    timm = pytest.importorskip("timm")
    arch = timm_tag.split(".")[0]
    cfg = timm.models.get_pretrained_cfg(timm_tag)
    with torch.device("meta"):  # only its pretrained config is read
        twin = timm.create_model(arch, pretrained=False, pretrained_cfg=cfg)
    data_config = timm.data.resolve_data_config(model=twin)
    reference = timm.data.create_transform(**data_config)
    hub = next(c for c in CHECKPOINTS[name] if c.source == TIMM_HUB)
    ours = eval_transform_for(hub.eval_config)
    for image in real_images():
        assert torch.equal(ours(image), reference(image))
    # Hub-only weights (ResNeSt-14/26): the model's default protocol is timm's.
    if CHECKPOINTS[name][0].source == TIMM_HUB:
        assert torch.equal(create_eval_transform(name)(real_images()[0]), reference(real_images()[0]))
        assert default_eval_config(name).crop_mode == "center"


def test_loaded_weights_choose_the_protocol(tmp_path: Path) -> None:
    official, hub = CHECKPOINTS["resnest200"]
    assert eval_config_for_file("resnest200", official.filename).crop_mode == "crop_resize"
    assert eval_config_for_file("resnest200", hub.filename) == hub.eval_config
    assert eval_config_for_file("resnest200", "my-weights.pth") == default_eval_config("resnest200")
    # pretrained=<file named like the hub copy>: the model carries timm's protocol.
    model = splitattn.create_model("resnest14", num_classes=3, bottleneck_width=16, stem_width=16)
    path = tmp_path / CHECKPOINTS["resnest14"][0].filename
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = splitattn.create_model(
        "resnest14", num_classes=3, bottleneck_width=16, stem_width=16, pretrained=str(path)
    )
    assert loaded.eval_config == CHECKPOINTS["resnest14"][0].eval_config


def test_sizes_and_errors() -> None:
    image = real_images()[0]
    assert create_eval_transform("resnest50", input_size=288)(image).shape == (3, 288, 288)
    assert torch.equal(create_eval_transform("resnest50", input_size=320)(image), verify_py_transform(320)(image))
    # Runs trained here: timm's resize-then-crop with the run's crop_pct and interpolation.
    run = build_eval_transform(64, 0.5, "bilinear")
    reference = transforms.Compose(
        [
            transforms.Resize(128, transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(64),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    assert torch.equal(run(image), reference(image))
    with pytest.raises(ValueError, match="crop_pct must be in"):
        build_eval_transform(224, 1.5)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        EvalConfig(224, 0.875, "lanczos4")
    with pytest.raises(TypeError, match="registered model name"):
        create_eval_transform(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Unknown model"):
        create_eval_transform("resnest51")
    assert math.isclose(EvalConfig.resnest(416).crop_pct, 416 / 448)  # verify.py: size / (size + 32)


def test_evaluate_and_predict_use_the_protocol_of_the_weights_file(tmp_path: Path) -> None:
    """`splitattn evaluate/predict --weights <published file>` pick that source's protocol."""
    from argparse import Namespace

    from safetensors.torch import save_file

    from splitattn.tasks.classification.cli import _inference_setup

    hub = CHECKPOINTS["resnest14"][0]
    path = tmp_path / hub.filename
    save_file({k: v.contiguous() for k, v in splitattn.create_model("resnest14").state_dict().items()}, str(path))
    args = Namespace(
        model="resnest14",
        weights=str(path),
        exported=None,
        ema=False,
        img_size=None,
        fast=False,
        precision="fp32",
        backend="eager",
        device="cpu",
    )
    setup = _inference_setup(args, "evaluate")
    timm = pytest.importorskip("timm")
    with torch.device("meta"):  # only its pretrained config is read
        twin = timm.create_model(
            "resnest14d", pretrained=False, pretrained_cfg=timm.models.get_pretrained_cfg("resnest14d.gluon_in1k")
        )
    reference = timm.data.create_transform(**timm.data.resolve_data_config(model=twin))
    image = real_images()[0]
    assert setup.classes is None and setup.size == 224 and torch.equal(setup.transform(image), reference(image))
    args.img_size = 192
    assert _inference_setup(args, "predict").transform(image).shape == (3, 192, 192)
