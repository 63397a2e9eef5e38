"""The inference fast path: BatchNorm folding on every block type, optimize_for_inference, bf16 agreement."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import splitattn
from splitattn.layers import SplitAttention
from splitattn.optimize import inference as optimize_module
from splitattn.optimize.inference import fold_batch_norm, optimize_for_inference

from .conftest import SHARED_DATA, randomize_state_dict, relative_error

# Every block type: radix 0/1/2/4, cardinality > 1, avd first/last, no avd, dilated stages, frozen BN.
VARIANTS = {
    "radix2": ("resnest14", {}),
    "radix0_no_avd": ("resnet14d", {}),
    "radix1_avd_first": ("resnest14", {"radix": 1, "avd_first": True}),
    "radix4_card2": ("resnest14", {"radix": 4, "cardinality": 2, "bottleneck_width": 32}),
    "radix2_card4_dilated": ("resnest14", {"cardinality": 4, "bottleneck_width": 24, "output_stride": 8}),
    "frozenbn": ("resnest14", {"norm_layer": "frozenbn"}),
}


def random_model(name: str, overrides: dict, seed: int = 0) -> nn.Module:
    model = splitattn.create_model(name, num_classes=10, **overrides)
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed=seed))
    return model.eval()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_folding_matches_eager_on_every_block_type(variant):
    name, overrides = VARIANTS[variant]
    model = random_model(name, overrides)
    folded = fold_batch_norm(random_model(name, overrides))
    norms = (nn.BatchNorm2d, FrozenBatchNorm2d)
    assert not any(isinstance(m, norms) for m in folded.modules()), "a BatchNorm was left unfolded"
    for module in folded.modules():
        if isinstance(module, SplitAttention):
            assert module.conv.bias is not None and module.fc1.bias is not None
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert relative_error(folded(x), model(x)) < 1e-4


def test_groupnorm_is_left_in_place():
    model = random_model("resnest14", {"norm_layer": "groupnorm"})
    folded = fold_batch_norm(random_model("resnest14", {"norm_layer": "groupnorm"}))
    assert any(isinstance(m, nn.GroupNorm) for m in folded.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(folded(x), model(x)) < 1e-4


@pytest.mark.parametrize(
    "backend,channels_last",
    [("compile", True), ("torchscript", True), ("openvino", True), ("eager", False), ("eager", True)],
)
def test_fast_path_fp32_matches_eager_at_other_shapes(backend, channels_last):
    if backend == "openvino":
        pytest.importorskip("openvino")
    model = random_model("resnest14", {"cardinality": 2, "bottleneck_width": 32})
    fast = optimize_for_inference(model, "fp32", channels_last=channels_last, backend=backend, example_size=64)
    assert next(model.parameters()).dtype == torch.float32 and any(
        isinstance(m, nn.BatchNorm2d) for m in model.modules()
    )
    with torch.no_grad():
        for shape in [(1, 3, 64, 64), (3, 3, 96, 72)]:  # traced once at 1x64x64
            x = torch.randn(shape)
            out = fast(x)
            assert out.dtype == torch.float32 and out.shape == (shape[0], 10)
            assert relative_error(out, model(x)) < 1e-4


@pytest.mark.slow
def test_compile_backend_freezes_the_weights(monkeypatch):
    """Inductor's freezing pass runs on the fast path's graph and turns every parameter into a constant:
    the compiled graph keeps one runtime input, the image. Fails if the fast path stops freezing (a
    graph compiled without it keeps the weights as inputs), whatever the outputs."""
    import torch._inductor.freezing as freezing

    torch._dynamo.reset()
    preserved = []
    freeze = freezing.freeze

    def spy(dynamo_gm, aot_gm, example_inputs):
        frozen_gm, kept = freeze(dynamo_gm, aot_gm, example_inputs)
        preserved.append((len(example_inputs), kept))
        return frozen_gm, kept

    monkeypatch.setattr(freezing, "freeze", spy)  # compile_fx imports it at each compilation
    model = random_model("resnest14", {"bottleneck_width": 16, "stem_width": 16})
    fast = optimize_for_inference(model, "fp32", backend="compile")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(fast(x), model(x)) < 1e-4
    assert len(preserved) == 1, "Inductor's freezing pass did not run on the fast path's graph"
    n_inputs, kept = preserved[0]
    assert n_inputs > 10 and len(kept) == 1, f"{len(kept)} of {n_inputs} graph inputs stayed inputs (not frozen)"
    assert torch._dynamo.config.prepare_freezing is False and torch._inductor.config.freezing is False


def test_fast_path_on_a_feature_backbone():
    model = splitattn.create_model("resnest14", features_only=True, out_indices=(1, 4))
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed=1))
    model.eval()
    fast = optimize_for_inference(model, "fp32", example_size=64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(fast(x), model(x)):
            assert a.shape == b.shape and relative_error(a, b) < 1e-4


def test_bad_requests_explain_themselves(monkeypatch):
    model = splitattn.create_model("resnest14", num_classes=10)
    with pytest.raises(ValueError, match="Unknown precision"):
        optimize_for_inference(model, "int4")
    with pytest.raises(ValueError, match="int8.*needs calibration images"):
        optimize_for_inference(model, "int8")
    with pytest.raises(ValueError, match="fp16 inference is for GPUs"):
        optimize_for_inference(model, "fp16")
    with pytest.raises(ValueError, match="Unknown backend"):
        optimize_for_inference(model, backend="tensorrt")
    monkeypatch.setattr(optimize_module, "cpu_supports_bf16", lambda: False)
    with pytest.raises(RuntimeError, match="no bf16 instructions"):
        optimize_for_inference(model, "bf16")
    fast = optimize_for_inference(model, "fp32", backend="eager")
    with pytest.raises(ValueError, match="batch of images"):
        fast(torch.randn(3, 64, 64))


IMAGENETTE = SHARED_DATA / "imagenette-mini"


def load_images(split: str, size: int):
    """imagenette-mini images (greyscale ones converted to RGB), resized and centre-cropped to ``size``."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Lambda(lambda image: image.convert("RGB")),
            transforms.Resize(size + size // 8),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    dataset = datasets.ImageFolder(str(IMAGENETTE / split), transform)
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels)


@pytest.mark.slow
@pytest.mark.usefixtures("imagenette_mini")
@pytest.mark.skipif(not optimize_module.cpu_supports_bf16(), reason="this CPU has no bf16 instructions")
def test_bf16_fast_path_agrees_with_fp32_on_imagenette():
    """Train resnest14 briefly at 64 px until it is clearly better than chance, then compare the
    bf16 fast path's top-1 with the fp32 eager model's on the 500 real validation images."""
    size, batch, epochs = 64, 50, 2
    train_x, train_y = load_images("train", size)
    val_x, val_y = load_images("val", size)
    model = splitattn.create_model("resnest14", num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * (len(train_x) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_x))
        for start in range(0, len(train_x) - batch + 1, batch):
            index = order[start : start + batch]
            loss = nn.functional.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        eager = model(val_x).argmax(1)
        fast = {
            backend: optimize_for_inference(model, "bf16", backend=backend, example_size=size)(val_x).argmax(1)
            for backend in ("compile", "torchscript", "openvino")
        }
    accuracy = (eager == val_y).float().mean().item()
    assert accuracy > 0.3, f"the briefly trained model is too close to chance (10%): {accuracy:.1%}"
    for backend, predicted in fast.items():
        agreement = (predicted == eager).float().mean().item()
        assert agreement >= 0.99, (
            f"bf16 {backend} fast path agrees with fp32 eager on only {agreement:.1%} of 500 images"
        )
