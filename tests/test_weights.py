"""The checkpoint registry, safe reading of every supported format, and fitting weights to a model."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from splitattn import create_model
from splitattn.models import MODEL_SPECS
from splitattn.weights import (
    CHECKPOINTS,
    Checkpoint,
    CheckpointMismatchError,
    ChecksumError,
    UnsafeCheckpointError,
    WeightsError,
    adapt_input_conv,
    checkpoints_for,
    load_checkpoint,
    load_state_dict_into,
    save_state_dict,
)
from splitattn.weights.sources import HUB_REVISION, OFFICIAL, TIMM_HUB

from .weights_testing import SavedWeights, assert_same_weights, isolated, tiny, tiny_model  # noqa: F401

# The official release URLs, transcribed from the authors' code (zhanghang1989/ResNeSt at 1dfb3e88,
# resnest/torch/models/resnest.py and ablation.py: `_url_format` filled from `_model_sha256`). The file
# name carries the first 8 hex digits of the file's sha256 (torch.hub's check_hash convention).
OFFICIAL_URLS = [
    f"https://github.com/zhanghang1989/ResNeSt/releases/download/weights_step1/{name}-{digest}.pth"
    for name, digest in [
        ("resnest50", "528c19ca"),
        ("resnest101", "22405ba7"),
        ("resnest200", "75117900"),
        ("resnest269", "0cc87c48"),
        ("resnest50_fast_1s1x64d", "d8fbf808"),
        ("resnest50_fast_2s1x64d", "44938639"),
        ("resnest50_fast_4s1x64d", "f74f3fc3"),
        ("resnest50_fast_1s2x40d", "32830b84"),
        ("resnest50_fast_2s2x40d", "9d126481"),
        ("resnest50_fast_4s2x40d", "41d14ed0"),
        ("resnest50_fast_1s4x24d", "d4a4f76f"),
    ]
]


def _official_expected(url: str) -> tuple:
    """(model, (source, filename, sha256 prefix, url)) read off an official URL by torch.hub's own rule."""
    filename = url.rsplit("/", 1)[1]
    digest = torch.hub.HASH_REGEX.search(filename).group(1)
    return filename[: -len(f"-{digest}.pth")], (OFFICIAL, filename, digest, url)


def _timm_hub_repos() -> dict:
    """Our model name -> the hub repository of timm's default pretrained weights for its timm alias."""
    repos = {}
    for name, spec in MODEL_SPECS.items():
        for alias in spec.aliases:
            cfg = timm.models.get_pretrained_cfg(alias) if alias in timm.list_models() else None
            if cfg is not None and cfg.hf_hub_id:
                repos[name] = cfg.hf_hub_id
    return repos


def test_registry_lists_every_published_file() -> None:
    """Every source equals an independent reference: the official URLs (the authors' code) and the hub
    repositories of timm's pretrained configurations, fetched at the pinned revision."""
    official = dict(_official_expected(url) for url in OFFICIAL_URLS)
    hub = _timm_hub_repos()
    assert len(official) == 11 and len(hub) == 8
    assert set(CHECKPOINTS) == set(official) | set(hub)
    for name, sources in CHECKPOINTS.items():
        expected = [official[name]] if name in official else []
        if name in hub:
            repo = hub[name]
            expected.append(
                (
                    TIMM_HUB,
                    f"{repo.split('/')[1]}.safetensors",
                    None,
                    f"https://huggingface.co/{repo}/resolve/{HUB_REVISION}/model.safetensors",
                )
            )
        assert [(c.source, c.filename, c.sha256, c.url) for c in sources] == expected
        assert [c.repo for c in sources if c.source == TIMM_HUB] == ([hub[name]] if name in hub else [])
    assert checkpoints_for("resnest50d") == CHECKPOINTS["resnest50"]  # timm alias
    with pytest.raises(ValueError, match="No pretrained weights are published for resnet50d.*pretrained=<path"):
        checkpoints_for("resnet50d")


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        (dict(model="resnest51"), "unknown model"),
        (dict(filename="../evil.pth"), "plain file name"),
        (dict(sha256="528C19CA"), "lower-case hex"),
        (dict(sha256="528c19"), "8 to 64"),
    ],
)
def test_checkpoint_entries_are_validated(kwargs: dict, problem: str) -> None:
    fields = dict(model="resnest50", filename="x.pth", url="http://127.0.0.1/x.pth", source=OFFICIAL, sha256=None)
    with pytest.raises(ValueError, match=problem):
        Checkpoint(**{**fields, **kwargs})


def test_timm_hub_files_have_our_keys_and_shapes() -> None:
    """What can be checked of the unhashed hub copies offline: timm's models (whose weights they
    are) have exactly our keys and shapes, so a strict load accepts the right file only."""
    for name, sources in CHECKPOINTS.items():
        for checkpoint in sources:
            if checkpoint.source != TIMM_HUB:
                continue
            with torch.device("meta"):
                ours = create_model(name).state_dict()
                theirs = timm.create_model(checkpoint.filename.removesuffix(".safetensors")).state_dict()
            assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}, name


def test_formats_give_the_same_weights(tmp_path: Path, tiny: SavedWeights) -> None:
    sd = tiny.state_dict
    ddp = {f"module.{k}": v for k, v in sd.items()}
    compiled_ema = {"n_averaged": torch.tensor(3), **{f"module._orig_mod.{k}": v for k, v in sd.items()}}
    files = {
        "plain.pth": sd,
        "training.pth": {"model": ddp, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "epoch": 7},
        "lightning.ckpt.pt": {"state_dict": sd, "hyper_parameters": {"lr": 0.1}},
        "ema_only.pth": {"model_ema": compiled_ema, "epoch": 7},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    safetensors.torch.save_file(sd, str(tmp_path / "weights.bin"))  # recognised by content, not name
    for name in [*files, "weights.bin"]:
        assert_same_weights(load_checkpoint(tmp_path / name), sd)
    shifted = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"model": sd, "model_ema": shifted}, tmp_path / "both.pth")
    assert_same_weights(load_checkpoint(tmp_path / "both.pth"), sd)  # the raw model comes first
    assert_same_weights(load_checkpoint(tmp_path / "both.pth", key="model_ema"), shifted)
    with pytest.raises(ValueError, match="no entry 'ema'.*'model', 'model_ema'"):
        load_checkpoint(tmp_path / "both.pth", key="ema")


def test_unreadable_and_unsafe_files_are_refused_clearly(tmp_path: Path, tiny: SavedWeights) -> None:
    torch.save({"model": tiny.state_dict, "args": argparse.Namespace(lr=0.1)}, tmp_path / "namespace.pth")
    with pytest.raises(UnsafeCheckpointError, match="references argparse.Namespace.*weights_only=False"):
        load_checkpoint(tmp_path / "namespace.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="text.pth is not a readable PyTorch or safetensors checkpoint"):
        load_checkpoint(tmp_path / "text.pth")
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "no_weights.pth")
    with pytest.raises(WeightsError, match=r"holds no state dict.*found: \['epoch', 'optimizer'\]"):
        load_checkpoint(tmp_path / "no_weights.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist; pass pretrained=True"):
        tiny_model(pretrained=str(tmp_path / "missing.pth"))


def test_hash_in_a_local_file_name_is_checked_but_the_file_kept(tmp_path: Path, tiny: SavedWeights) -> None:
    good, bad = tmp_path / f"mine-{tiny.sha256[:8]}.pth", tmp_path / "mine-00000000.pth"
    good.write_bytes(tiny.data)
    bad.write_bytes(tiny.data)
    assert_same_weights(tiny_model(pretrained=good).state_dict(), tiny.state_dict)
    with pytest.raises(ChecksumError, match=f"sha256 is {tiny.sha256} but 00000000 was expected.*not loaded"):
        tiny_model(pretrained=str(bad))
    assert bad.exists()


def test_other_num_classes_reinitialise_the_classifier_with_a_warning(tmp_path: Path, tiny: SavedWeights) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(tiny.data)
    with pytest.warns(UserWarning, match="has 1000 classes and the model 10: the classifier .* \\(fine-tuning\\)"):
        model = tiny_model(num_classes=10, pretrained=str(path))
    loaded = model.state_dict()
    assert loaded["fc.weight"].shape == (10, 2048)
    assert_same_weights(
        {k: v for k, v in loaded.items() if not k.startswith("fc.")},
        {k: v for k, v in tiny.state_dict.items() if not k.startswith("fc.")},
    )


def test_features_only_drops_the_classifier(tmp_path: Path, tiny: SavedWeights) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(tiny.data)
    backbone = tiny_model(features_only=True, pretrained=str(path))
    assert_same_weights(backbone.state_dict(), {k: v for k, v in tiny.state_dict.items() if not k.startswith("fc.")})


@pytest.mark.parametrize("in_chans", [1, 4, 6])
def test_first_conv_is_adapted_to_other_input_channels(tmp_path: Path, tiny: SavedWeights, in_chans: int) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(tiny.data)
    model = tiny_model(in_chans=in_chans, pretrained=str(path))
    rgb = tiny.state_dict["conv1.0.weight"]
    adapted = model.state_dict()["conv1.0.weight"]
    assert adapted.shape == (rgb.shape[0], in_chans, 3, 3)
    if in_chans == 4:  # R, G, B, R again, scaled by 3/4
        assert torch.allclose(adapted, torch.cat([rgb, rgb[:, :1]], 1) * 0.75)
    else:  # sum, or RGB twice at half scale: a grey image gives exactly the RGB response
        grey = torch.rand(1, 1, 32, 32)
        response = torch.nn.functional.conv2d(grey.expand(1, in_chans, 32, 32), adapted)
        assert torch.allclose(response, torch.nn.functional.conv2d(grey.expand(1, 3, 32, 32), rgb), atol=1e-5)
    assert adapt_input_conv(rgb, 3).equal(rgb)


def test_mismatches_are_listed_in_one_error_and_nothing_is_loaded(tiny: SavedWeights) -> None:
    sd = dict(tiny.state_dict)
    del sd["layer1.0.conv1.weight"]
    sd["layer5.0.conv1.weight"] = torch.zeros(1)
    sd["layer2.0.conv3.weight"] = torch.zeros(3, 3, 1, 1)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as error:
        load_state_dict_into(model, sd, origin="my.pth")
    message = str(error.value)
    assert message.startswith("my.pth does not fit resnest14; nothing was loaded.")
    assert "1 missing keys: layer1.0.conv1.weight" in message
    assert "1 unexpected keys: layer5.0.conv1.weight" in message
    assert re.search(r"1 shape mismatches .*layer2\.0\.conv3\.weight \(3, 3, 1, 1\) vs \(512, 16, 1, 1\)", message)
    assert_same_weights(model.state_dict(), before)
    with pytest.raises(CheckpointMismatchError, match=r"\d+ shape mismatches .*\(\d+ more\)"):
        load_state_dict_into(create_model("resnest14", stem_width=16, bottleneck_width=8), tiny.state_dict)


def test_frozen_batchnorm_takes_the_weights(tiny: SavedWeights) -> None:
    model = load_state_dict_into(tiny_model(norm_layer="frozenbn"), tiny.state_dict)
    expected = {k: v for k, v in tiny.state_dict.items() if not k.endswith("num_batches_tracked")}
    assert_same_weights(model.state_dict(), expected)


def test_save_state_dict_round_trips_atomically(tmp_path: Path, tiny: SavedWeights) -> None:
    for name in ("w.safetensors", "w.pth"):
        save_state_dict(tiny.state_dict, tmp_path / name)
        assert_same_weights(load_checkpoint(tmp_path / name), tiny.state_dict)
    with pytest.raises(ValueError, match=r"Cannot tell the format of .*w\.npz"):
        save_state_dict(tiny.state_dict, tmp_path / "w.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth", "w.safetensors"]
