"""Sharing a run in timm's hub format (issue 19, item 3): ``splitattn push`` and ``create_model("hf-hub:...")``.

Independent references: timm (``timm.create_model("local-dir:DIR", pretrained=True)`` and its own
``save_for_hf`` for repositories written by others), transformers' image-classification pipeline (its
``TimmWrapper``), ``huggingface_hub``'s upload and download code against a hub on 127.0.0.1
(``hub_testing.FakeHub``), and the run's own checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path
from typing import List, Type

import pytest
import safetensors.torch
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image

import splitattn
from splitattn.cli import build_parser, main
from splitattn.config.arguments import resolve
from splitattn.config.schemas import ClassifyConfig, DetectConfig, RunConfig, SegmentConfig
from splitattn.data.transforms import create_eval_transform
from splitattn.deploy.run_card import LOCAL_OPTIONS
from splitattn.errors import DownloadError, UsageError, WeightsError
from splitattn.weights.loading import strip_wrapper_prefixes

from .conftest import SHARED_DATA, sample_photos
from .hub_testing import FakeHub
from .train_helpers import cli
from .weights_testing import isolated  # noqa: F401 (autouse: private caches, no name resolution but 127.0.0.1)

IMAGENETTE = SHARED_DATA / "imagenette-mini"
CLASSES = 3  # the first three imagenette classes


def real_images(count: int = 12) -> List[Image.Image]:
    files = sorted((IMAGENETTE / "val").glob("*/*.JPEG"))[:: max(1, 500 // count)][:count]
    return [Image.open(f).convert("RGB") for f in files]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, imagenette_mini: Path) -> Path:
    """A resnest14 (widths 16) trained 2 epochs at 64 px on 3 imagenette classes, with EMA weights."""
    root = tmp_path_factory.mktemp("hub-run")
    for split, per_class in (("train", 16), ("val", 6)):
        for folder in sorted((IMAGENETTE / split).iterdir())[:CLASSES]:
            (root / "data" / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:per_class]:
                (root / "data" / split / folder.name / image.name).symlink_to(image)
    args = ["train", "--data", str(root / "data"), "--output", str(root / "run"), "--model", "resnest14"]
    args += ["--model-kwargs", "bottleneck_width=16", "stem_width=16", "--img-size", "64", "--epochs", "2"]
    args += ["--batch-size", "8", "--lr", "0.05", "--workers", "0", "--no-progress", "--no-tensorboard"]
    cli(args + ["--ema", "--ema-decay", "0.5"], threads=2)
    return root / "run"


@pytest.fixture(scope="module")
def pushed(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pushed") / "repo"
    assert main(["push", str(run), "--local-dir", str(folder)]) == 0
    return folder


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
    yield server
    server.stop()


def card_command_config(card: str, cls: Type[RunConfig]) -> RunConfig:
    """The config the card's training command gives, parsed by the real command line (``splitattn.cli``)."""
    command = re.search(r"```bash\n(.*?)\n```", card, re.S).group(1).replace("\\\n", " ")
    words = shlex.split(command)
    assert words[0] == "splitattn"
    return resolve(cls, build_parser().parse_args(words[1:]))[0]


def trained_options(config: RunConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in LOCAL_OPTIONS}


def test_local_options_are_options_of_every_run() -> None:
    assert set(LOCAL_OPTIONS) <= {item.name for item in dataclasses.fields(RunConfig)}


def test_push_writes_the_ema_weights_and_timms_config(run: Path, pushed: Path) -> None:
    checkpoint = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    pushed_weights = safetensors.torch.load_file(str(pushed / "model.safetensors"))
    ema = strip_wrapper_prefixes(checkpoint["ema"])
    assert pushed_weights.keys() == ema.keys()
    assert all(torch.equal(pushed_weights[k], ema[k]) for k in ema)
    assert any(not torch.equal(ema[k], checkpoint["model"][k]) for k in ema)  # EMA really differs from the model
    config = json.loads((pushed / "config.json").read_text())
    assert config["architecture"] == "resnest14d" and config["num_classes"] == CLASSES
    assert config["label_names"] == checkpoint["classes"]
    assert config["model_args"] == {"in_chans": 3, "base_width": 16, "stem_width": 16}
    cfg = config["pretrained_cfg"]
    assert (cfg["input_size"], cfg["crop_pct"], cfg["interpolation"], cfg["crop_mode"]) == (
        [3, 64, 64],
        0.875,
        "bilinear",
        "center",
    )
    card = (pushed / "README.md").read_text()
    assert card.startswith("---\n") and "license: apache-2.0" in card and "library_name: timm" in card
    assert "EMA weights" in card and "ema_val" not in card and "| top1 |" in card
    assert "--model-kwargs bottleneck_width=16 stem_width=16" in card and "Training time:" in card
    assert "splitattn classify train" in card and "--epochs 2" in card and "--ema " in card
    stored = ClassifyConfig(**checkpoint["args"])
    assert trained_options(card_command_config(card, ClassifyConfig)) == trained_options(stored)


def test_timm_loads_the_pushed_run_with_the_same_logits(run: Path, pushed: Path, capsys) -> None:
    timm = pytest.importorskip("timm")
    from splitattn.tasks.classification.checkpoint import load_trained_model

    theirs = timm.create_model(f"local-dir:{pushed}", pretrained=True).eval()
    ours = splitattn.create_model(f"local-dir:{pushed}").eval()
    trained, classes, _ = load_trained_model(run / "last.pt", use_ema=True)
    assert ours.label_names == classes
    their_transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=theirs))
    images = real_images()
    x_theirs = torch.stack([their_transform(image) for image in images])
    x_ours = torch.stack([create_eval_transform(ours)(image) for image in images])
    assert torch.equal(x_ours, x_theirs)
    with torch.no_grad():
        logits_timm, logits_ours, logits_run = theirs(x_theirs), ours(x_ours), trained(x_ours)
    diff = (logits_timm - logits_ours).abs().max().item()
    with capsys.disabled():
        print(f"\n[hub] pushed run: max |logits timm - logits splitattn| = {diff:.3g} on {len(images)} real images")
    assert diff < 1e-5
    assert torch.equal(logits_ours, logits_run)  # nothing changed on the way
    assert logits_ours.std(0).min() > 0  # the images give different logits: the comparison is not vacuous


def test_transformers_pipeline_gives_the_same_classes_offline(pushed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from transformers import pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and no name resolves but 127.0.0.1 (``isolated``)
    classify = pipeline("image-classification", model=str(pushed))
    ours = splitattn.create_model(f"local-dir:{pushed}").eval()
    images = real_images()
    with torch.no_grad():
        probabilities = ours(torch.stack([create_eval_transform(ours)(image) for image in images])).softmax(1)
    for image, p in zip(images, probabilities):
        (top,) = classify(image, top_k=1)
        assert top["label"] == ours.label_names[int(p.argmax())]
        assert abs(top["score"] - float(p.max())) < 1e-5


def test_push_uploads_and_hf_hub_loads_with_revisions_and_offline(
    run: Path, pushed: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = "alice/resnest14-imagenette"
    assert main(["push", str(run), "--repo", repo, "--private", "--commit-message", "first run"]) == 0
    assert main(["push", str(run), "--repo", repo, "--revision", "raw", "--no-ema"]) == 0
    stored = hub.repos[repo]
    assert stored.private and hub.tokens and set(hub.tokens) == {"hf_fake_token"}
    first = stored.branches["main"]
    assert stored.messages[first] == "first run"
    files = hub.files(repo)
    assert {name: files[name] for name in ("model.safetensors", "config.json")} == {
        name: (pushed / name).read_bytes() for name in ("model.safetensors", "config.json")
    }
    assert files["README.md"] == (pushed / "README.md").read_bytes().replace(b"OWNER/NAME", repo.encode())
    checkpoint = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    raw = safetensors.torch.load_file(str(pushed / "model.safetensors"))  # EMA, as on main
    main_model = splitattn.create_model(f"hf-hub:{repo}")
    branch_model = splitattn.create_model(f"hf-hub:{repo}", revision="raw")
    pinned = splitattn.create_model(f"hf-hub:{repo}@{first}")
    for key, value in checkpoint["model"].items():
        assert torch.equal(branch_model.state_dict()[key], value)
        assert torch.equal(main_model.state_dict()[key], raw[key])
        assert torch.equal(pinned.state_dict()[key], raw[key])
    assert main_model.label_names == checkpoint["classes"] and main_model.eval_config.input_size == 64
    assert main_model.pretrained_source == f"hf-hub:{repo}@{first}"

    hub.stop()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    for name in (f"hf-hub:{repo}", f"hf-hub:{repo}@raw", f"hf-hub:{repo}@{first}"):
        splitattn.create_model(name)  # from the Hugging Face cache
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set.*has no copy of revision v9"):
        splitattn.create_model(f"hf-hub:{repo}@v9")


def test_a_timm_repo_written_by_timm_loads_with_its_config(tmp_path: Path, hub: FakeHub) -> None:
    """A ResNeSt fine-tuned and saved by someone else with timm's own ``save_for_hf``, read from the hub."""
    timm = pytest.importorskip("timm")
    from huggingface_hub import HfApi
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    theirs = timm.create_model("resnest26d", num_classes=5, pretrained=False).eval()
    with torch.no_grad():  # BN statistics of a trained network, not the fresh 0/1
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    names = ["tench", "springer", "cassette", "chain saw", "church"]
    save_for_hf(theirs, tmp_path / "repo", model_config={"label_names": names}, safe_serialization=True)
    api = HfApi(endpoint=hub.url)
    api.create_repo("bob/resnest26d-ft")
    api.upload_folder(repo_id="bob/resnest26d-ft", folder_path=str(tmp_path / "repo"))

    ours = splitattn.create_model("hf-hub:bob/resnest26d-ft").eval()
    assert ours.model_name == "resnest26" and ours.label_names == names
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=theirs))
    images = [Image.open(path).convert("RGB") for path in sample_photos()]
    x = torch.stack([transform(image) for image in images])
    assert torch.equal(torch.stack([create_eval_transform(ours)(image) for image in images]), x)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() < 1e-4


def _write(folder: Path, config: dict) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return f"local-dir:{folder}"


def test_repositories_splitattn_cannot_build_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="architecture 'resnet18' is not a ResNeSt.*timm.create_model"):
        splitattn.create_model(_write(tmp_path / "a", {"architecture": "resnet18", "num_classes": 2}), pretrained=False)
    unknown = {"architecture": "resnest50d", "num_classes": 2, "model_args": {"attn_layer": "se"}}
    with pytest.raises(WeightsError, match=r"model_args \['attn_layer'\] have no equivalent"):
        splitattn.create_model(_write(tmp_path / "b", unknown), pretrained=False)
    detector = {"task": "object-detection", "architecture": "faster_rcnn", "backbone": "resnest50"}
    with pytest.raises(WeightsError, match="holds a object-detection run"):
        splitattn.create_model(_write(tmp_path / "c", detector))
    with pytest.raises(FileNotFoundError, match="none of model.safetensors"):
        splitattn.create_model(_write(tmp_path / "d", {"architecture": "resnest50d", "num_classes": 2}))
    with pytest.raises(UsageError, match="pins revision a but revision='b'"):
        splitattn.create_model("hf-hub:x/y@a", revision="b")
    with pytest.raises(UsageError, match="pretrained may only be True or False"):
        splitattn.create_model("hf-hub:x/y", pretrained="weights.pth")
    described = splitattn.create_model(
        _write(tmp_path / "d", {"architecture": "resnest50d", "num_classes": 2}), pretrained=False
    )
    assert described.num_classes == 2 and described.model_name == "resnest50"


def _push_fake_run(tmp_path: Path, config: RunConfig, model: torch.nn.Module, classes: list, **entries) -> Path:
    """A run folder whose last.pt holds ``model`` as ``splitattn <task> train`` would save it, pushed to a folder."""
    (tmp_path / "run").mkdir()
    task = {DetectConfig: "detection", SegmentConfig: "segmentation"}[type(config)]
    args = dataclasses.asdict(config)
    checkpoint = {"task": task, "model": model.state_dict(), "args": args, "classes": classes, **entries}
    torch.save(checkpoint, tmp_path / "run" / "last.pt")
    assert main(["push", str(tmp_path / "run"), "--local-dir", str(tmp_path / "repo"), "--license", "mit"]) == 0
    return tmp_path / "repo"


def _card_rebuilds(folder: Path, model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The card's own Python snippet, run with the repository's files, rebuilds the model from config.json
    alone, and the pushed weights load into it strictly: the same tensors as the run's model."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, filename: str(folder / filename))
    card = (folder / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)\n```", card, re.S)
    namespace: dict = {}
    exec(snippet, namespace)
    rebuilt, expected = namespace["model"], model.state_dict()
    assert not rebuilt.training and rebuilt.state_dict().keys() == expected.keys()
    assert all(torch.equal(rebuilt.state_dict()[k], expected[k]) for k in expected)
    return json.loads((folder / "config.json").read_text())


def test_detection_run_pushes_a_repo_that_rebuilds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from splitattn.tasks.detection.checkpoint import model_from_config

    run_config = DetectConfig(
        data="data/coco128",  # never read: the card and config.json leave the data folder out
        backbone="resnest14",
        model_kwargs={"bottleneck_width": 8, "stem_width": 8},
        norm="batchnorm",
        min_size=[96],
        max_size=128,
    )
    classes = ["__background__", "person", "dog"]
    model = model_from_config(run_config, len(classes)).eval()
    repo = _push_fake_run(tmp_path, run_config, model, classes, contiguous_to_coco={1: 1, 2: 18}, iter=5)
    config = _card_rebuilds(repo, model, monkeypatch)
    assert (config["task"], config["architecture"], config["backbone"]) == (
        "object-detection",
        "faster_rcnn",
        "resnest14",
    )
    assert config["label_names"] == classes and config["contiguous_to_coco"] == {"1": 1, "2": 18}
    assert config["thresholds"] == {"score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_img": 100}
    assert config["preprocessing"]["min_size"] == [96] and "data" not in config["train_options"]
    card = (repo / "README.md").read_text()
    assert "license: mit" in card and "pipeline_tag: object-detection" in card and "No other library" in card
    assert "faster_rcnn on resnest14, 2 classes" in card
    assert trained_options(card_command_config(card, DetectConfig)) == trained_options(run_config)
    with pytest.raises(WeightsError, match="holds a object-detection run"):
        splitattn.create_model(f"local-dir:{repo}")


def test_segmentation_run_pushes_a_repo_that_rebuilds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from splitattn.tasks.segmentation.checkpoint import model_from_config

    run_config = SegmentConfig(
        data="data/camvid-mini",
        backbone="resnest14",
        model_kwargs={"bottleneck_width": 8, "stem_width": 8, "in_chans": 1},
        norm="syncbn",
    )
    classes = ["sky", "building", "road"]
    model = model_from_config(dataclasses.replace(run_config, norm="batchnorm"), len(classes)).eval()
    repo = _push_fake_run(tmp_path, run_config, model, classes, epoch=1, best_miou=0.1)
    config = _card_rebuilds(repo, model, monkeypatch)
    assert (config["task"], config["architecture"], config["output_stride"]) == ("image-segmentation", "deeplabv3", 8)
    assert config["preprocessing"]["mean"] == pytest.approx([0.449]) and config["train_options"]["norm"] == "batchnorm"
    card = (repo / "README.md").read_text()
    assert "--norm syncbn" in card  # the card says how the run trained; config.json how to rebuild it


def test_push_refuses_what_is_not_a_run_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = {"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}
    torch.save(weights, tmp_path / "bare.pt")
    assert main(["push", str(tmp_path / "bare.pt"), "--local-dir", str(tmp_path / "a")]) == 2
    assert "holds bare weights, not a run" in capsys.readouterr().err
    torch.save({"model": weights, "args": {}, "classes": ["x", "y"]}, tmp_path / "old.pt")
    assert main(["push", str(tmp_path / "old.pt"), "--local-dir", str(tmp_path / "b")]) == 1
    assert "without the `task` entry" in capsys.readouterr().err
    torch.save({"task": "tracking", "model": weights, "args": {}, "classes": ["x", "y"]}, tmp_path / "other.pt")
    assert main(["push", str(tmp_path / "other.pt"), "--local-dir", str(tmp_path / "c")]) == 1
    assert "'tracking' run; push shares runs of ['classification', 'detection', 'segmentation']" in (
        capsys.readouterr().err
    )
    assert not any((tmp_path / name).exists() for name in "abc")  # nothing written
