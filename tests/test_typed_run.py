"""A typed run: each task trains from its config object and reads only the options it has; option combinations
that cannot work are refused by ``validate()`` before any data is read; checkpoints of older versions (extra or
missing ``args`` keys) still evaluate, and one without a ``task`` entry is a clear error."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from splitattn.cli import main
from splitattn.config import ClassifyConfig, ConfigError, DetectConfig, SegmentConfig, from_dict
from splitattn.engine.checkpoint import atomic_save
from splitattn.errors import CheckpointError

from .conftest import REPO_ROOT
from .test_detection_layouts import _write_labelimg
from .test_segmentation_train import _synthetic_folder
from .train_helpers import make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")
NARROW = {"bottleneck_width": 16, "stem_width": 16}
QUIET = dict(workers=0, threads=1, device="cpu", progress=False, tensorboard=False)


def _strict(config):
    """``config`` as an instance of a subclass whose reads of anything but its fields, methods and properties fail
    loudly: ``getattr(config, "name", default)`` or a dict-style read of an option the task does not have cannot
    fall back to a default silently."""
    cls = type(config)
    allowed = {f.name for f in dataclasses.fields(cls)} | set(dir(cls))

    class Strict(cls):
        def __getattribute__(self, name):
            if not name.startswith("__") and name not in allowed:
                raise AssertionError(f"{cls.__name__} has no option {name!r}, but the run read it")
            return super().__getattribute__(name)

        def __getitem__(self, key):
            raise AssertionError(f"the run read {cls.__name__} as a dict ({key!r})")

    Strict.__name__ = Strict.__qualname__ = cls.__name__
    return Strict(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def test_each_task_trains_from_its_config_reading_only_its_options(tmp_path: Path) -> None:
    """One short run per task (data, model, loss, evaluation, checkpoint, curves) from a config whose unknown
    attribute reads fail; the stored ``args`` are the config's fields, and rebuild it."""
    from splitattn.tasks.classification.trainer import train as classify
    from splitattn.tasks.detection.trainer import train as detect
    from splitattn.tasks.segmentation.trainer import train as segment

    images = make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=4)
    boxes = _write_labelimg(tmp_path / "boxes")
    pixels = _synthetic_folder(tmp_path / "pixels", {"train": [(48, 48)] * 4, "val": [(40, 48)]})
    runs = [
        (
            classify,
            ClassifyConfig(
                data=str(images), model_kwargs=NARROW, img_size=32, epochs=1, batch_size=4, ema=True, **QUIET
            ),
        ),
        (
            detect,
            DetectConfig(
                data=str(boxes),
                backbone="resnest14",
                model_kwargs=NARROW,
                min_size=[64],
                max_size=96,
                max_iter=1,
                warmup_iters=0,
                steps=[],
                detections_per_img=10,
                **QUIET,
            ),
        ),
        (
            segment,
            SegmentConfig(
                data=str(pixels),
                classes="a,b,c",
                ignore_value=9,
                backbone="resnest14",
                model_kwargs=NARROW,
                output_stride=16,
                base_size=48,
                crop_size=48,
                batch_size=2,
                epochs=1,
                **QUIET,
            ),
        ),
    ]
    for index, (train, config) in enumerate(runs):
        output = tmp_path / f"run{index}"
        train(_strict(dataclasses.replace(config, output=str(output))))
        checkpoint = torch.load(output / "last.pt", weights_only=True)
        assert set(checkpoint["args"]) == {f.name for f in dataclasses.fields(config)}
        assert json.loads((output / "options.json").read_text()) == json.loads(json.dumps(checkpoint["args"]))
        assert type(config)(**checkpoint["args"]) == dataclasses.replace(config, output=str(output))
        assert (output / "curves.png").stat().st_size > 0


def test_the_engine_knows_no_config_and_no_flags() -> None:
    """``splitattn/engine`` imports nothing of ``splitattn.config`` (lazily neither), and its messages name no
    command-line flag (the checks that need flags run in the configs' ``validate()``)."""
    for path in sorted((REPO_ROOT / "splitattn" / "engine").glob("*.py")):
        tree = ast.parse(path.read_text())
        documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, documented) and node.body and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert "config" not in module.split("."), f"{path.name} imports {module}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert " --" not in node.value and not node.value.startswith("--"), f"{path.name}: {node.value!r}"


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (DetectConfig, {"pretrained": True}, r"--pretrained .* --norm groupnorm .*--norm frozenbn"),
        (ClassifyConfig, {"pretrained": True, "norm": "groupnorm"}, r"cannot take.*--norm frozenbn"),
        (DetectConfig, {"norm": "syncbn", "device": "cpu"}, r"--norm syncbn needs GPUs.*--norm groupnorm"),
        (SegmentConfig, {"norm": "syncbn", "device": "cpu"}, r"--norm syncbn needs GPUs"),
        (ClassifyConfig, {"norm": "syncbn", "device": "cpu"}, r"--norm syncbn needs GPUs"),
        (ClassifyConfig, {"memory_budget": 0.5}, r"--memory-budget applies to compiled training; add --compile"),
        (DetectConfig, {"amp": "fp16", "device": "cpu"}, r"--amp fp16 is for GPUs"),
        (SegmentConfig, {"batch_size": 1}, r"needs --batch-size >= 2"),
    ],
)
def test_validate_refuses_what_cannot_work(cls, values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(cls, {"data": "data", **values})


def test_validate_refuses_what_cannot_work_under_torchrun(monkeypatch) -> None:
    """Under torchrun (WORLD_SIZE) on CPUs, --sync-bn is refused, and --global-batch must split into whole
    micro-batches of all processes."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--sync-bn needs GPUs.*--norm groupnorm"):
        from_dict(SegmentConfig, {"data": "data", "sync_bn": True, "device": "cpu"})
    with pytest.raises(ConfigError, match="--global-batch 12 is not a multiple of --batch-size x processes = 8"):
        from_dict(ClassifyConfig, {"batch_size": 4, "global_batch": 12})
    from_dict(ClassifyConfig, {"batch_size": 4, "global_batch": 16})
    monkeypatch.setenv("WORLD_SIZE", "1")
    from_dict(SegmentConfig, {"data": "data", "sync_bn": True, "device": "cpu"})  # one process: nothing to sync


@pytest.mark.parametrize(
    "argv",
    [
        ["detect", "train", "--pretrained"],
        ["detect", "train", "--norm", "syncbn", "--device", "cpu"],
        ["classify", "train", "--memory-budget", "0.7"],
        ["segment", "train", "--norm", "syncbn", "--device", "cpu", "--classes", "a,b"],
    ],
)
def test_refusals_come_before_any_data_is_read(tmp_path: Path, capsys, argv) -> None:
    """The data folder does not exist: a usage error (exit 2) shows that nothing was read before the refusal."""
    assert main([*argv, "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--" in error and not (tmp_path / "run").exists()


def test_one_default_for_the_detection_norm_everywhere() -> None:
    """The backbone norm (and the other model options) default alike on the command line, in YAML, in the
    Python API and in the checkpoint loader: all read ``DetectConfig``'s fields."""
    import inspect

    from splitattn.cli import build_parser
    from splitattn.config import resolve
    from splitattn.config.values import from_checkpoint_args
    from splitattn.tasks.detection.model import create_detection_model, resnest_fpn_backbone
    from splitattn.tasks.segmentation.model import create_segmentation_model

    command_line = resolve(DetectConfig, build_parser().parse_args(["detect", "train", "--data", "x"]))[0]
    stored = from_checkpoint_args(DetectConfig, {"data": "x"}, "an old checkpoint")
    api = inspect.signature(create_detection_model).parameters
    for name in ("norm", "freeze_stages", "fpn_norm", "head_norm", "box_head", "max_size"):
        assert api[name].default == getattr(command_line, name) == getattr(stored, name), name
    assert list(api["min_size"].default) == command_line.min_size
    assert inspect.signature(resnest_fpn_backbone).parameters["norm"].default == command_line.norm
    segment = inspect.signature(create_segmentation_model).parameters
    defaults = SegmentConfig(data="x")
    for name, field in (("head", "head"), ("output_stride", "output_stride"), ("aux", "aux"), ("norm_layer", "norm")):
        assert segment[name].default == getattr(defaults, field), name


def test_digits_demo_defaults_are_the_same_from_the_command_line_and_python() -> None:
    from splitattn.cli import build_parser
    from splitattn.config import resolve

    command_line = resolve(ClassifyConfig, build_parser().parse_args(["train"]))[0]
    from splitattn.models.complexity import count_params
    from splitattn.models.factory import create_model

    assert command_line == ClassifyConfig() == from_dict(ClassifyConfig, {})
    folder = ClassifyConfig(data="x")
    # the digits demo: no flips (digits are not mirror images), a shorter run and a narrower model than a folder's
    assert command_line.hflip == 0.0 < folder.hflip and command_line.epochs < folder.epochs
    with torch.device("meta"):
        demo, full = (create_model("resnest14", **c.model_kwargs) for c in (command_line, folder))
    assert count_params(demo) < count_params(full) and not folder.model_kwargs
    assert ClassifyConfig(epochs=3).epochs == 3 and ClassifyConfig(data="x", hflip=0.0).hflip == 0.0


def _classifier_checkpoint(tmp_path: Path, data: Path, **entries) -> Path:
    """A ``classify train`` checkpoint as an older version wrote it: ``args`` with an option that no longer
    exists and without one added since (``ema_decay``)."""
    from splitattn import create_model

    config = ClassifyConfig(data=str(data), model_kwargs=NARROW, img_size=32, norm="syncbn")
    args = dict(dataclasses.asdict(config), lr_schedule="cosine")
    del args["ema_decay"]
    model = create_model("resnest14", num_classes=2, **NARROW)
    checkpoint = dict(
        model=model.state_dict(), args=args, classes=["a", "b"], model_name="resnest14", ema=None, **entries
    )
    path = tmp_path / "old.pt"
    atomic_save(checkpoint, path)
    return path


def test_a_checkpoint_of_an_older_version_still_evaluates(tmp_path: Path, capsys) -> None:
    from splitattn.tasks.classification.checkpoint import load_trained_model

    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=2)
    path = _classifier_checkpoint(tmp_path, data, task="classification", command="classify train")
    with pytest.warns(UserWarning, match="options this version does not have, ignored: lr_schedule"):
        model, classes, config = load_trained_model(path)
    assert isinstance(config, ClassifyConfig) and config.ema_decay == ClassifyConfig.ema_decay
    assert config.norm == "batchnorm" and classes == ["a", "b"]  # SyncBatchNorm evaluates as BatchNorm
    with pytest.warns(UserWarning, match="lr_schedule"):
        assert main(["evaluate", "--weights", str(path), "--workers", "0"]) == 0
    assert "top-1" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval-val" / "metrics.json").read_text())["images"] == 4


def test_a_run_checkpoint_without_a_task_entry_says_what_it_is_and_how_to_use_it(tmp_path: Path, capsys) -> None:
    from splitattn.tasks.segmentation.checkpoint import load_segmentation_model

    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=2)
    path = _classifier_checkpoint(tmp_path, data)  # no task entry: written before checkpoints named their task
    with pytest.raises(CheckpointError, match=r"without the `task` entry.*c\['task'\] = 'segmentation'"):
        load_segmentation_model(path)
    assert main(["evaluate", "--weights", str(path), "--workers", "0"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "`splitattn classify train` run" in error and "'classification'" in error
