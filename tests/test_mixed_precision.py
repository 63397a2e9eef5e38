"""Mixed precision (``--amp bf16|fp16``): what is reduced, normalised or decoded under autocast is as accurate as
float32 allows, checked against float32 steps, float64 recomputations and torchvision's float32 ops.

CPU autocast runs bf16 and, in torch >= 2.4, fp16 too; with a GPU the detection check also runs under CUDA.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator

import splitattn
from splitattn.data import mixup_batch
from splitattn.layers import DropBlock2d
from splitattn.tasks.classification.engine import soft_cross_entropy
from splitattn.tasks.detection import create_detection_model
from splitattn.tasks.segmentation.model import segmentation_loss

LOW_PRECISION = (torch.bfloat16, torch.float16)


def autocast_pairs() -> list:
    pairs = [("cpu", dtype) for dtype in LOW_PRECISION]
    return pairs + ([("cuda", dtype) for dtype in LOW_PRECISION] if torch.cuda.is_available() else [])


def training_step(dtype: Optional[torch.dtype]) -> Dict[str, object]:
    """One resnest14 step as the loop runs it (mixup 0.2, label smoothing 0.1, DropBlock 0.1 in stages 3-4,
    SGD, GradScaler for fp16, EMA), under CPU autocast to ``dtype`` (None: float32), from seed 0."""
    torch.manual_seed(0)
    # Every block's last BN starts non-zero, so the DropBlock after it has something to drop.
    model = splitattn.create_model("resnest14", num_classes=10, drop_block_prob=0.1, zero_init_last=False).train()
    drop_blocks: List[Dict[str, float]] = []

    def record(module, inputs, output) -> None:
        x, y = inputs[0].detach().double(), output.detach().double()
        drop_blocks.append(
            {
                "units": float((x != 0).sum()),
                "kept": float(((y != 0) & (x != 0)).sum()),
                "mean_abs": float(y.abs().mean()),
                "dtype": output.dtype,
            }
        )

    for module in model.modules():
        if isinstance(module, DropBlock2d):  # stages 3 and 4
            module.register_forward_hook(record)
    bn = model.layer3[0].bn1
    bn_input: List[torch.Tensor] = []
    bn.register_forward_hook(lambda module, inputs, output: bn_input.append(inputs[0].detach()))
    running_mean, running_var = bn.running_mean.clone(), bn.running_var.clone()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9998), use_buffers=True)
    ema.update_parameters(model)  # the first update copies; the one after the step averages
    ema_before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)

    images, labels = torch.randn(4, 3, 112, 112), torch.arange(4)
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        inputs, targets = mixup_batch(images, labels, 10, 0.2, 0.1)
        logits = model(inputs)
        loss = soft_cross_entropy(logits, targets)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    ema.update_parameters(model)
    return dict(
        model=model,
        ema=ema,
        ema_before=ema_before,
        loss=loss,
        logits=logits.detach(),
        targets=targets,
        drop_blocks=drop_blocks,
        bn=(bn, bn_input[0], running_mean, running_var),
    )


@pytest.fixture(scope="module")
def fp32_step() -> Dict[str, object]:
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return training_step(None)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_resnest14_training_step_under_autocast(fp32_step, dtype) -> None:
    step = training_step(dtype)
    ours, reference = step["drop_blocks"], fp32_step["drop_blocks"]
    # DropBlock of stages 3-4 (32,768 to 200,704 units each here, most above fp16's 65,504): non-zero outputs,
    # the kept fraction of the float32 step (the same seed draws the same float32 mask), and the same mean |y|.
    # The float32 and bf16 steps differ only by activation rounding (2**-9 relative per op, unbiased), whose
    # effect on a mean over >= 32k units measured <= 3e-4; a DropBlock statistic off by one bf16 rounding of
    # its scale (up to 0.35%) or by 0.012 in kept fraction (bf16 draws) is beyond 0.3% / 0.005.
    assert len(ours) == len(reference) == 6
    for layer, fp32 in zip(ours, reference):
        assert layer["dtype"] == dtype
        assert layer["kept"] / layer["units"] > 0.8, layer
        assert abs(layer["kept"] / layer["units"] - fp32["kept"] / fp32["units"]) < 0.005, (layer, fp32)
        assert abs(layer["mean_abs"] / fp32["mean_abs"] - 1) < 3e-3, (layer, fp32)
    # The loss is float32: equal to a float64 soft cross-entropy of the same low-precision logits, and
    # within 1% of the float32 step's (measured 0.2% in bf16).
    logits, targets = step["logits"], step["targets"]
    assert logits.dtype == dtype and step["loss"].dtype == torch.float32
    expected = -(targets.double() * torch.log_softmax(logits.double(), -1)).sum(-1).mean()
    assert abs(step["loss"].item() - expected.item()) < 1e-6 * expected.item()
    assert abs(step["loss"].item() / fp32_step["loss"].item() - 1) < 0.01
    # BatchNorm statistics: float32 buffers updated from float32 sums over the low-precision input.
    bn, x, mean_before, var_before = step["bn"]
    assert x.dtype == dtype and bn.running_mean.dtype == torch.float32
    x = x.double()
    torch.testing.assert_close(
        bn.running_mean.double(), 0.9 * mean_before.double() + 0.1 * x.mean((0, 2, 3)), rtol=1e-5, atol=1e-7
    )
    var = x.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_var.double(), 0.9 * var_before.double() + 0.1 * var, rtol=1e-5, atol=1e-7)
    # Parameters stay float32 under autocast, so the EMA averages float32 values: equal to a float64 lerp.
    params = dict(step["model"].state_dict())
    for name, value in step["ema"].module.state_dict().items():
        if not value.is_floating_point():
            continue
        assert value.dtype == params[name].dtype == torch.float32, name
        expected = 0.9998 * step["ema_before"][name].double() + 0.0002 * params[name].double()
        torch.testing.assert_close(value.double(), expected, rtol=2e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_segmentation_loss_is_float32_under_autocast(dtype) -> None:
    torch.manual_seed(0)
    outputs = {"out": torch.randn(2, 21, 128, 128).mul(4).to(dtype), "aux": torch.randn(2, 21, 128, 128).to(dtype)}
    target = torch.randint(0, 21, (2, 128, 128))
    target[:, :10] = 255  # void
    with torch.autocast("cpu", dtype=dtype):
        loss = segmentation_loss(outputs, target, 255, aux_weight=0.4)
    expected = F.cross_entropy(outputs["out"].double(), target, ignore_index=255) + 0.4 * F.cross_entropy(
        outputs["aux"].double(), target, ignore_index=255
    )
    assert loss.dtype == torch.float32 and abs(loss.item() - expected.item()) < 1e-6 * expected.item()


@pytest.mark.parametrize("device,dtype", autocast_pairs())
def test_detection_anchors_boxes_and_scores_are_float32_under_autocast(device, dtype) -> None:
    """bf16 has 8 significant bits: before, anchors were up to 7 px off (4,200 of 217,413 duplicated) and
    proposals and detections up to 10 px from a float64 decoding of the same deltas on an 800x1067 image.
    A thin image reaches the same coordinates at a fraction of the cost (CPU fp16 convolutions are slow)."""
    torch.manual_seed(0)
    model = create_detection_model(
        "faster_rcnn",
        "resnest14",
        4,
        norm="groupnorm",
        min_size=64,
        max_size=1040,
        backbone_kwargs={"bottleneck_width": 16, "stem_width": 16},
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100,
    ).to(device)
    model.eval().roi_heads.score_thresh = 0.0  # untrained: keep detections to look at
    seen: Dict[str, object] = {}
    model.rpn.anchor_generator.register_forward_hook(
        lambda module, inputs, output: seen.update(
            images=inputs[0], sizes=[f.shape[-2:] for f in inputs[1]], anchors=output[0]
        )
    )
    decoded = []
    for name, coder in (("rpn", model.rpn.box_coder), ("roi", model.roi_heads.box_coder)):

        def recording_decode(rel_codes, boxes, decode=coder.decode, name=name):
            out = decode(rel_codes, boxes)
            decoded.append((name, rel_codes, [b.clone() for b in boxes], out))
            return out

        coder.decode = recording_decode
    image = torch.rand(3, 64, 1040, device=device)  # x up to 1040: bf16 steps of 4 and 8 px
    with torch.no_grad(), torch.autocast(device, dtype=dtype):
        detections = model([image])[0]
    # Anchors: torchvision's AnchorGenerator (same sizes) on float32 maps of the same shapes, exactly.
    generator = model.rpn.anchor_generator
    maps = [torch.zeros(1, 1, *size, device=device) for size in seen["sizes"]]
    expected = AnchorGenerator(generator.sizes, generator.aspect_ratios)(seen["images"], maps)[0]
    assert torch.equal(seen["anchors"].float(), expected) and seen["anchors"].dtype == torch.float32
    # Decoding: float64 decoding of the same deltas and reference boxes (torchvision's BoxCoder).
    assert [entry[0] for entry in decoded] == ["rpn", "roi"]
    for name, rel_codes, boxes, out in decoded:
        coder = model.rpn.box_coder if name == "rpn" else model.roi_heads.box_coder
        reference = BoxCoder(coder.weights, coder.bbox_xform_clip).decode(
            rel_codes.double(), [b.double() for b in boxes]
        )
        # float32 rounding (relative 6e-8, a few ulp through exp); before: 0.5-1 px (fp16), 4-10 px (bf16).
        torch.testing.assert_close(out.double(), reference, rtol=1e-5, atol=1e-3, msg=name)
        assert out.dtype == torch.float32, name
    assert detections["boxes"].dtype == detections["scores"].dtype == torch.float32
    assert len(detections["boxes"]) > 0
