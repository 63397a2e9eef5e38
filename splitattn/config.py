"""The training configurations: one typed dataclass per task, from which everything else derives.

``ClassifyConfig``, ``DetectConfig`` and ``SegmentConfig`` list every training option once, with its
type, default, choices and help. From them come the command-line flags (``add_arguments``), the
keys a YAML/JSON ``--config`` file may hold, the ``args`` stored in each checkpoint
(``dataclasses.asdict``) and the Python API (``splitattn.tasks.<task>.train(config)``). Values are
resolved defaults < config file < command line (``resolve``); an unknown key or a wrong type is one
``ConfigError`` naming the source, the key, the value and the fix. Checks that need no data run
here too (``validate``), before any data is read.

This module imports neither torch nor the models, so ``splitattn --help`` stays fast; the choice
lists below are checked against the modules that implement them in ``tests/test_train_cli.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

from .errors import ConfigError

NORMS = ("batchnorm", "syncbn", "frozenbn", "groupnorm")  # splitattn.layers.norm.NORM_LAYERS
AMP = ("none", "bf16", "fp16")  # splitattn.engine.runtime.AMP_DTYPES
DETECTION_ARCHS = ("faster_rcnn", "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn")  # tasks.detection.model.ARCHS
DETECTION_DATASETS = ("coco", "voc", "voc-folder", "yolo")  # splitattn.data.detection.DATASET_KINDS
SEGMENTATION_DATASETS = ("ade20k", "cityscapes", "voc", "folder")  # splitattn.data.segmentation.DATASET_KINDS
SEGMENTATION_HEADS = ("deeplabv3", "fcn")  # splitattn.tasks.segmentation.model.HEADS
BOX_HEADS = ("2fc", "4conv1fc")
SEGMENTATION_MULTI_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # tasks.segmentation.inference.MULTI_SCALES
FAST_BACKENDS = ("compile", "torchscript", "eager")  # splitattn.optimize.inference.BACKENDS

C = TypeVar("C", bound="RunConfig")


def option(default: Any, help: str = "", flags: Tuple[str, ...] = (), **argparse_keywords: Any) -> Any:
    """A config field: its default, its help text, more command-line ``flags`` for it (shown first) and extra
    ``argparse`` keywords (choices, nargs, metavar)."""
    factory = (lambda: type(default)(default)) if isinstance(default, (list, dict)) else None
    metadata = {"help": help, "argparse": argparse_keywords, "flags": flags}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunConfig:
    """Options every training command shares."""

    config: Optional[str] = option(None, "YAML or JSON file of options; flags override it", metavar="FILE")
    data: Optional[str] = option(None, "data root", metavar="DIR")
    output: Optional[str] = option(None, "run folder (default: a new runs/<name>[-N])", metavar="DIR")
    exist_ok: bool = option(False, "write into an --output that already holds a run (its files are replaced)")
    resume: Optional[str] = option(None, "continue from a checkpoint; auto: OUTPUT/last.pt if any", metavar="PATH|auto")
    pretrained: Union[bool, str, None] = option(
        None,
        "start from ImageNet weights, a weights file or any classification run's checkpoint",
        nargs="?",
        const=True,
        metavar="PATH",
    )
    model_kwargs: Dict[str, Any] = option(
        {}, "more create_model overrides, e.g. stem_width=16 bottleneck_width=16", nargs="*", metavar="KEY=VALUE"
    )
    norm: str = option("batchnorm", "normalisation layer of the backbone", choices=NORMS)
    sync_bn: bool = option(False, "SyncBatchNorm under torchrun (GPUs)")
    batch_size: int = option(64, "images per process per step (classification: per micro-batch)")
    lr: Optional[float] = option(None, "peak learning rate")
    momentum: float = option(0.9)
    weight_decay: float = option(1e-4, "on conv/linear weights; none on biases and norm parameters")
    hflip: float = option(0.5, "horizontal flip probability")
    device: Optional[str] = option(None, "default: cuda when available", choices=("cpu", "cuda"))
    amp: str = option("none", "mixed precision", choices=AMP)
    workers: int = option(2, "data-loading processes per training process")
    threads: Optional[int] = option(None, "torch CPU threads (default: cores / processes)")
    seed: int = option(0)
    deterministic: bool = option(False, "deterministic kernels: resumed runs match uninterrupted ones bit for bit")
    progress: bool = option(True, "progress bar")
    tensorboard: bool = option(True, "TensorBoard event files")

    data_required: ClassVar[bool] = True  # classification trains on the built-in digits without --data

    def validate(self) -> None:
        """Checks that need no data; raises ``ConfigError``."""
        if self.data_required and not self.data:
            raise ConfigError("--data is required (on the command line or in the --config file).")
        from .models.registry import get_model_spec  # torch only: the model library is loaded anyway

        try:
            get_model_spec(getattr(self, "model", None) or self.backbone)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.norm == "frozenbn" and not self.pretrained:
            raise ConfigError(
                "--norm frozenbn freezes the statistics of pretrained weights, but this run starts "
                "from scratch: add --pretrained, or use --norm groupnorm (any batch size) or "
                "--norm syncbn (GPUs under torchrun)."
            )
        for name in ("batch_size", "workers"):
            if getattr(self, name) < (1 if name == "batch_size" else 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}.")

    def to_dict(self) -> Dict[str, Any]:
        """The options as plain values (the checkpoint's ``args``, ``options.json``)."""
        return dataclasses.asdict(self)


@dataclass
class ClassifyConfig(RunConfig):
    """``splitattn classify train``: the ResNeSt ImageNet recipe (Zhang et al. 2020, section 5.1)."""

    data_required: ClassVar[bool] = False

    data: Optional[str] = option(
        None,
        "folder with train/ and val/ (or test/) as ImageFolder trees or .csv lists "
        "of path,label; omitted: scikit-learn's digits (a one-minute demo)",
        metavar="DIR",
    )
    model: str = option("resnest14", "registered model name (`splitattn models`)")
    epochs: int = option(10)
    global_batch: Optional[int] = option(
        None, "images per optimizer step, reached by gradient accumulation (default: batch size x processes)"
    )
    lr: Optional[float] = option(None, "peak learning rate (default: base-lr x global batch / 256)")
    base_lr: float = option(0.1, "learning rate per 256 images")
    warmup_epochs: float = option(0.0, "linear warm-up before the cosine decay")
    label_smoothing: float = option(0.0)
    mixup: float = option(0.0, "mixup Beta(alpha, alpha); 0 disables", metavar="ALPHA")
    augment: bool = option(True, "random augmentation; --no-augment trains on the evaluation transform")
    rrc_scale: List[float] = option(
        [0.08, 1.0], "area range of the random-resized crop", nargs=2, metavar=("MIN", "MAX")
    )
    auto_augment: bool = option(False, "AutoAugment, ImageNet policy")
    color_jitter: float = option(0.0, "brightness/contrast/saturation jitter")
    pca_lighting: float = option(0.0, "AlexNet PCA lighting noise std")
    drop_block: float = option(0.0, "DropBlock probability in stages 3-4, ramped from 0; in [0, 1)")
    dropout: float = option(0.0, "dropout before the classifier")
    zero_init_last: bool = option(True, "zero the last BN gamma of blocks")
    img_size: Optional[int] = option(None, "training crop (default: the model's evaluation size)")
    eval_img_size: Optional[int] = option(None, "evaluation crop (default: --img-size)")
    crop_pct: float = option(0.875, "evaluation resizes the short side to crop / crop-pct")
    channels_last: bool = option(False)
    compile: bool = option(False, "torch.compile the model")
    memory_budget: float = option(
        1.0, "with --compile: activation memory budget in (0, 1]; lower recomputes cheap ops in backward to save memory"
    )
    grad_checkpointing: bool = option(False, "recompute activations in backward to save memory")
    ema: bool = option(False, "keep and evaluate an EMA of the weights")
    ema_decay: float = option(0.9998)

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.drop_block < 1.0:
            raise ConfigError(f"--drop-block is a drop probability in [0, 1), got {self.drop_block}.")
        if not 0.0 < self.memory_budget <= 1.0:
            raise ConfigError(f"--memory-budget must be in (0, 1], got {self.memory_budget}.")


@dataclass
class DetectConfig(RunConfig):
    """``splitattn detect train``: (Cascade) Faster/Mask R-CNN on a ResNeSt-FPN, iteration-based (detectron2)."""

    data: Optional[str] = option(
        None,
        "data root: COCO (annotations/instances_<split>[2017].json and "
        "<split>[2017]/ or images/), VOC (VOCdevkit or VOC2007/VOC2012), a folder "
        "of VOC XML files (<split>/ or <split>.txt) or YOLO (data.yaml, images/, "
        "labels/)",
        metavar="DIR",
    )
    dataset: Optional[str] = option(
        None, "layout of --data (default: found from its files)", choices=DETECTION_DATASETS
    )
    annotations: Optional[str] = option(None, "COCO: the instances json (default: found under --data)", metavar="JSON")
    images: Optional[str] = option(
        None,
        "COCO: the image folder (default: found under --data); VOC folder: one more folder to look for the images in",
        metavar="DIR",
    )
    classes: Optional[List[str]] = option(
        None,
        "class names (default: VOC's 20, a VOC folder's names sorted, YOLO's data.yaml, COCO's categories)",
        nargs="+",
    )
    train_split: str = option("train")
    val_split: str = option("val")
    max_images: Optional[int] = option(None, "use only the first N images of each split (quick runs)")
    skip_bad: bool = option(True, "skip (and count) missing or unreadable images instead of stopping")
    arch: str = option("faster_rcnn", choices=DETECTION_ARCHS)
    backbone: str = option(
        "resnest50",
        "registered model name (`splitattn models`), as --model in every command",
        flags=("--model",),
        metavar="NAME",
    )
    norm: str = option(
        "groupnorm", "backbone normalisation (the paper: syncbn on GPUs; frozenbn needs --pretrained)", choices=NORMS
    )
    trainable_layers: Optional[int] = option(
        None,
        "backbone stages trained, from the last (default: 3 with frozenbn, else 5)",
        choices=range(6),
        metavar="0-5",
    )
    fpn_norm: Optional[str] = option(
        None, "normalisation inside the FPN (default: no normalisation)", choices=("groupnorm", "syncbn", "batchnorm")
    )
    box_head: str = option("2fc", "box head: 2fc (torchvision) or 4conv1fc (the paper's)", choices=BOX_HEADS)
    head_norm: Optional[str] = option(
        None,
        "normalisation of the 4conv1fc box head and the mask head (default: no normalisation)",
        choices=("groupnorm", "syncbn", "batchnorm"),
    )
    min_size: List[int] = option(
        list(range(640, 801, 32)), "training short side(s), one sampled per image; evaluation uses the last", nargs="+"
    )
    max_size: int = option(1333, "longest side cap")
    detections_per_img: int = option(100)
    detector_kwargs: Dict[str, Any] = option(
        {}, "more FasterRCNN/MaskRCNN arguments, e.g. box_batch_size_per_image=128", nargs="*", metavar="KEY=VALUE"
    )
    batch_size: int = option(2, "images per process")
    lr: float = option(0.02)
    max_iter: int = option(90000, "training iterations (optimizer steps)")
    steps: List[int] = option([60000, 80000], "iterations where the lr is multiplied by --gamma", nargs="*")
    gamma: float = option(0.1)
    warmup_iters: int = option(1000, "linear warm-up length")
    warmup_factor: float = option(0.001, "lr factor at iteration 0 of the warm-up")
    log_every: int = option(20, "log the mean losses every N iterations")
    eval_every: int = option(5000, "COCO evaluation (and best.pt) every N iterations, and after the last")
    checkpoint_every: int = option(1000, "write last.pt every N iterations (and after the last)")

    def validate(self) -> None:
        super().validate()
        for name in ("max_iter", "log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}.")
        late = [step for step in self.steps if step >= self.max_iter]
        if late or self.warmup_iters >= self.max_iter:  # a shortened run that kept a long run's schedule
            warnings.warn(
                f"--max-iter {self.max_iter} ends before "
                + " and ".join(
                    (
                        [f"the warm-up (--warmup-iters {self.warmup_iters})"]
                        if self.warmup_iters >= self.max_iter
                        else []
                    )
                    + ([f"the lr steps {late} (--steps)"] if late else [])
                )
                + ": the learning rate never reaches its "
                "schedule; scale --warmup-iters and --steps with --max-iter.",
                stacklevel=2,
            )


@dataclass
class SegmentConfig(RunConfig):
    """``splitattn segment train``: DeepLabV3/FCN on a dilated ResNeSt (PyTorch-Encoding's recipe)."""

    data: Optional[str] = option(
        None, "data root (ADE20K, Cityscapes, VOC, or a folder with <split>/images and <split>/labels)", metavar="DIR"
    )
    dataset: str = option("folder", "layout of --data", choices=SEGMENTATION_DATASETS)
    classes: Union[List[str], str, None] = option(
        None, "folder data sets: class names in id order, comma-separated or a text file"
    )
    ignore_value: Optional[int] = option(None, "folder data sets: the stored label value of void pixels")
    palette: Optional[str] = option(
        None,
        "folder data sets with colour-coded (RGB) label maps: a CSV of name,r,g,b (the classes come from it)",
        metavar="CSV",
    )
    skip_bad: bool = option(True, "skip (and count) unmatched files and size mismatches instead of stopping")
    train_split: str = option("train")
    val_split: str = option("val")
    backbone: str = option(
        "resnest50",
        "registered model name (`splitattn models`), as --model in every command",
        flags=("--model",),
        metavar="NAME",
    )
    head: str = option("deeplabv3", choices=SEGMENTATION_HEADS)
    output_stride: int = option(8, "8: ASPP rates 12/24/36; 16: 6/12/18", choices=(8, 16))
    aux: bool = option(True, "auxiliary FCN head on stage 3")
    aux_weight: float = option(0.2)
    base_size: int = option(520, "long side at scale 1 (training jitter and evaluation)")
    crop_size: int = option(480, "training crop")
    scale_range: List[float] = option(
        [0.5, 2.0], "random long-side scale, relative to --base-size", nargs=2, metavar=("MIN", "MAX")
    )
    epochs: int = option(120)
    batch_size: int = option(16, "images per process")
    global_batch: Optional[int] = option(
        None, "images per optimizer step, reached by gradient accumulation (default: batch size x processes)"
    )
    lr: float = option(0.01, "backbone learning rate, poly-decayed per iteration")
    head_lr_mult: float = option(10.0, "heads learn at lr x this")
    poly_power: float = option(0.9)
    eval_every: int = option(1, "validate every N epochs (and after the last)")
    eval_crop_size: Optional[int] = option(None, "validate in sliding windows of this size (default: whole image)")


CONFIGS: Dict[str, Type[RunConfig]] = {"classify": ClassifyConfig, "detect": DetectConfig, "segment": SegmentConfig}


def read_config_file(path: str) -> Dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml`` or ``.json`` file; dashes in keys become underscores."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {path!r} does not exist.")
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of option: value, got {type(data).__name__}.")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _hints(cls: Type[RunConfig]) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def input_channels(options: Mapping[str, Any]) -> int:
    """The image channels a run's model takes: ``in_chans`` of its ``--model-kwargs`` (3 by default)."""
    return int((options.get("model_kwargs") or {}).get("in_chans", 3))


def parse_key_values(items: Any, name: str = "model_kwargs") -> Dict[str, Any]:
    """``["a=1", "b=x"]`` (command line) or a mapping (config file) -> dict with YAML-typed values."""
    if isinstance(items, Mapping):
        return dict(items)
    import yaml

    parsed: Dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise ConfigError(f"{_flag(name)} takes KEY=VALUE pairs, got {item!r}.")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check(name: str, value: Any, hint: Any, source: str) -> Any:
    """``value`` converted to ``hint`` (ints are floats too; KEY=VALUE lists are dicts) or a ``ConfigError``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _check(name, value, arm, source)
            except ConfigError:
                continue
    elif origin in (list, List):
        if isinstance(value, (list, tuple)):
            return [_check(name, item, args[0], source) for item in value]
    elif origin in (dict, Dict):
        if isinstance(value, (Mapping, list, tuple)):
            return parse_key_values(value, name)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{source}: {name} must be {_type_name(hint)}, got {value!r} ({type(value).__name__}).")


def _checked(cls: Type[RunConfig], values: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """``values`` converted to the field types of ``cls``; unknown keys, wrong types and choices outside
    the list are one ``ConfigError`` naming ``source``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"{source} has unknown key(s): {', '.join(hints)}. Valid keys are the long options of "
            f"this command with underscores: {', '.join(sorted(fields))}."
        )
    types, checked = _hints(cls), {}
    for key, value in values.items():
        checked[key] = _check(key, value, types[key], source)
        choices = fields[key].metadata["argparse"].get("choices")
        if choices is not None and checked[key] is not None and checked[key] not in choices:
            raise ConfigError(f"{source}: {key} must be one of {list(choices)}, got {value!r}.")
    return checked


def from_dict(cls: Type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """A validated ``cls`` from ``values`` (defaults for missing keys); see ``_checked`` and ``validate``."""
    config = cls(**_checked(cls, values, source))
    config.validate()
    return config


def as_options(cls: Type[C], config: Union[C, Mapping[str, Any]]) -> Dict[str, Any]:
    """The plain options of ``config``: a ``cls`` instance, or a mapping of its fields (checked by ``from_dict``)."""
    return (config if isinstance(config, cls) else from_dict(cls, config)).to_dict()


def add_arguments(parser: argparse.ArgumentParser, cls: Type[RunConfig]) -> None:
    """One flag per field of ``cls``, each default shown once in the help. Build ``parser`` with
    ``argument_default=argparse.SUPPRESS`` so that only flags typed on the command line reach ``resolve``."""
    types = _hints(cls)
    for item in dataclasses.fields(cls):
        hint, keywords = types[item.name], dict(item.metadata["argparse"])
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        help_text = item.metadata["help"]
        if default not in (None, {}, []) and "default" not in help_text:
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            help_text = f"{help_text} (default: {shown})".strip()
        keywords["help"] = help_text or None
        base = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is Union else [hint]
        if hint is bool:
            keywords["action"] = argparse.BooleanOptionalAction
        elif "nargs" in keywords and keywords.get("const") is None:
            element = typing.get_args(base[0])[0] if typing.get_args(base[0]) else str
            keywords.setdefault("type", str if typing.get_origin(base[0]) in (dict, Dict) else element)
        elif keywords.get("const") is None:
            keywords.setdefault("type", base[0] if base[0] in (int, float, str) else str)
        parser.add_argument(*item.metadata["flags"], _flag(item.name), dest=item.name, **keywords)


def add_weights_arguments(parser: argparse.ArgumentParser, weights_help: str, weights_required: bool = True) -> None:
    """The flags every command that runs a trained model shares: ``--weights``, ``--device`` and ``--debug``."""
    parser.add_argument("--weights", required=weights_required, help=weights_help)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_task_commands(subparsers: argparse._SubParsersAction, task: str, help: str) -> argparse._SubParsersAction:
    """The ``splitattn <task> ACTION`` group (``dest`` ``<task>_command``) for a task's commands."""
    group = subparsers.add_parser(task, help=help).add_subparsers(dest=f"{task}_command", metavar="ACTION")
    group.required = True
    return group


def add_train_command(
    commands: argparse._SubParsersAction, cls: Type[RunConfig], run: Any, help: str, description: str
) -> argparse.ArgumentParser:
    """The ``train`` command of a task: a flag per field of ``cls``, ``--debug``, and ``run(args)`` to call."""
    train = commands.add_parser("train", argument_default=argparse.SUPPRESS, help=help, description=description)
    add_arguments(train, cls)
    train.add_argument("--debug", action="store_true", help="show tracebacks")
    train.set_defaults(func=run)
    return train


def resolve(cls: Type[C], args: argparse.Namespace) -> Tuple[C, Dict[str, Any]]:
    """``(config, the values given explicitly)``: defaults < the ``--config`` file < the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = _checked(cls, {key: value for key, value in vars(args).items() if key in names}, "the command line")
    values: Dict[str, Any] = {}
    if given.get("config"):
        values = _checked(cls, read_config_file(given["config"]), f"config {given['config']!r}")
    values.update(given)
    config = cls(**values)
    config.validate()
    return config, values
