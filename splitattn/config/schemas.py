"""The training configurations: one typed dataclass per task, from which everything else derives.

``ClassifyConfig``, ``DetectConfig`` and ``SegmentConfig`` list every training option once, with its
type, default, choices and help: each option's default lives in its field and nowhere else (the
command line, a YAML/JSON ``--config`` file, the Python API ``splitattn.tasks.<task>.train(config)``,
the checkpoint loaders and the model factories of the tasks all read it from here). Checks that need no
data run in ``validate`` (a ``ConfigError`` naming the flag and the fix), before any data is read.

The choice lists below are checked against the modules that implement them in ``tests/test_train_cli.py``.
The module is longer than most (about 640 lines) because it is the one table of every option of the three
training commands, read as a reference: two thirds of it are the field declarations.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional, Tuple, Union

from ..errors import ConfigError
from ..layers.norm import BATCH_STATISTICS_NORMS
from ..models.eval_config import EvalConfig

if TYPE_CHECKING:
    from ..engine.loop import TrainSettings


NORMS = ("batchnorm", "syncbn", "frozenbn", "groupnorm")  # splitattn.layers.norm.NORM_LAYERS
AMP = ("none", "bf16", "fp16")  # splitattn.engine.runtime.AMP_DTYPES
DETECTION_ARCHS = ("faster_rcnn", "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn")  # tasks.detection.model.ARCHS
DETECTION_DATASETS = ("coco", "voc", "voc-folder", "yolo")  # splitattn.data.detection.DATASET_KINDS
SEGMENTATION_DATASETS = ("ade20k", "cityscapes", "voc", "folder")  # splitattn.data.segmentation.DATASET_KINDS
SEGMENTATION_HEADS = ("deeplabv3", "fcn")  # splitattn.tasks.segmentation.model.HEADS
BOX_HEADS = ("2fc", "4conv1fc")
SEGMENTATION_MULTI_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # tasks.segmentation.inference.MULTI_SCALES
FAST_BACKENDS = ("auto", "compile", "aot", "torchscript", "openvino", "eager")  # splitattn.optimize.inference.BACKENDS
OPTIMIZERS = ("sgd", "adamw")  # splitattn.engine.optim.OPTIMIZERS
MAX_FROZEN_STAGES = 4  # splitattn.optimize.training.MAX_FROZEN_STAGES: the stem and up to the 4 stages
DETECTION_SCORE_THRESHOLD = 0.5  # what `detect predict` draws by default (and exported detectors store)
# The classification options whose default depends on --data: (with an image folder, without: the digits demo, a
# narrow resnest14 for 2 epochs without flips, as digits are not mirror images).
DATA_DEPENDENT_DEFAULTS: Dict[str, Tuple[Any, Any]] = {
    "epochs": (10, 2),
    "hflip": (0.5, 0.0),
    "model_kwargs": ({}, {"bottleneck_width": 16, "stem_width": 16}),
}


def option(default: Any, help: str = "", flags: Tuple[str, ...] = (), **argparse_keywords: Any) -> Any:
    """A config field: its default, its help text, more command-line ``flags`` for it (shown first) and extra
    ``argparse`` keywords (choices, nargs, metavar)."""
    factory = (lambda: type(default)(default)) if isinstance(default, (list, dict)) else None
    metadata = {"help": help, "argparse": argparse_keywords, "flags": flags}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def field_default(cls: type, name: str) -> Any:
    """The default of the field ``name`` of the config class ``cls`` (a fresh copy for lists and dicts)."""
    item = {f.name: f for f in dataclasses.fields(cls)}[name]
    return item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default


def _data_dependent(name: str, help: str) -> str:
    """``help`` followed by the two defaults of ``name`` in ``DATA_DEPENDENT_DEFAULTS``."""

    def shown(value: Any) -> str:
        return (" ".join(f"{k}={v}" for k, v in value.items()) or "none") if isinstance(value, dict) else str(value)

    folder, digits = DATA_DEPENDENT_DEFAULTS[name]
    return f"{help} (default: {shown(folder)}; the digits demo without --data: {shown(digits)})".strip()


# The defaults that follow --optimizer, per task: SGD as each paper's recipe; AdamW as the recipes that train
# ConvNets and detectors with it: classification DeiT's/ConvNeXt's rule (5e-4 per 512 images, decay 0.05),
# detection Swin's Mask R-CNN (1e-4 at 16 images, decay 0.05), segmentation SegFormer's (6e-5, decay 0.01).
CLASSIFY_OPTIMIZER_DEFAULTS = {
    "sgd": {"base_lr": 0.1, "weight_decay": 1e-4},
    "adamw": {"base_lr": 2.5e-4, "weight_decay": 0.05},
}
DETECT_OPTIMIZER_DEFAULTS = {"sgd": {"lr": 0.02, "weight_decay": 1e-4}, "adamw": {"lr": 1e-4, "weight_decay": 0.05}}
SEGMENT_OPTIMIZER_DEFAULTS = {"sgd": {"lr": 0.01, "weight_decay": 1e-4}, "adamw": {"lr": 6e-5, "weight_decay": 0.01}}


def _optimizer_dependent(defaults: Dict[str, Dict[str, float]], name: str, help: str) -> str:
    """``help`` followed by the default of ``name`` for each optimizer in ``defaults``."""
    return f"{help} (default: " + ", ".join(f"{values[name]:g} with {key}" for key, values in defaults.items()) + ")"


def _freeze_stages_option(default: str) -> Any:
    """The ``freeze_stages`` field, its default (None) described by ``default``."""
    return option(
        None,
        "fine-tuning: freeze the stem and the first K stages of the pretrained backbone (0: the stem only), their "
        f"BatchNorm statistics too (default: {default})",
        choices=range(MAX_FROZEN_STAGES + 1),
        metavar="K",
    )


def _processes() -> int:
    """Training processes of the job (torchrun's or srun's, see ``engine.distributed.launch_environment``; 1
    without a launcher)."""
    from ..engine.distributed import launch_environment  # torch loads with validate(), not with --help

    return launch_environment().world_size


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
    dist_bn: str = option(
        "broadcast",
        "under torchrun, before each checkpoint and evaluation: give every process rank 0's BatchNorm statistics "
        "(broadcast) or their mean (reduce), so the metric logged is the saved weights'",
        choices=("broadcast", "reduce"),  # splitattn.engine.tally.DIST_BN
    )
    batch_size: int = option(64, "images per process per step (classification: per micro-batch)")
    lr: Optional[float] = option(None, "peak learning rate")
    optimizer: str = option(
        "sgd",
        "sgd (the papers' recipes) or adamw (decoupled weight decay); each has its own --lr and "
        "--weight-decay defaults",
        choices=OPTIMIZERS,
    )
    momentum: float = option(0.9, "sgd momentum")
    opt_betas: List[float] = option(
        [0.9, 0.999], "adamw: the moments' decay rates (torch's and timm's defaults)", nargs=2, metavar=("B1", "B2")
    )
    opt_eps: float = option(1e-8, "adamw: added to the denominator (torch's and timm's default)")
    weight_decay: Optional[float] = option(None, "on conv/linear weights; none on biases and norm parameters")
    freeze_stages: Optional[int] = _freeze_stages_option("nothing frozen")
    layer_decay: Optional[float] = option(
        None,
        "fine-tuning: layer-wise lr decay in (0, 1]: each backbone block learns at this times the rate of the one "
        "above it, the stem lowest, the heads at the full rate (BEiT, timm)",
        metavar="FACTOR",
    )
    hflip: float = option(0.5, "horizontal flip probability")
    device: Optional[str] = option(None, "default: cuda when available", choices=("cpu", "cuda"))
    amp: str = option("none", "mixed precision", choices=AMP)
    workers: int = option(2, "data-loading processes per training process")
    threads: Optional[int] = option(None, "torch CPU threads (default: cores / processes)")
    seed: int = option(0)
    deterministic: bool = option(False, "deterministic kernels: resumed runs match uninterrupted ones bit for bit")
    dist_timeout: float = option(
        1800.0,
        "seconds a process waits for the others in a collective (torchrun, srun) before the job fails: "
        "a lost process ends the job instead of hanging it",
        metavar="SECONDS",
    )
    progress: bool = option(True, "progress bar")
    tensorboard: bool = option(True, "TensorBoard event files")
    checkpoint_every: int = option(
        0, "also write last.pt every N optimizer steps (0: at the end of each epoch only)", metavar="N"
    )
    diagnostics: bool = option(
        True, "after the final evaluation, per-class scores (CSV, table) and pictures in RUN/diagnostics/"
    )

    data_required: ClassVar[bool] = True  # classification trains on the built-in digits without --data
    # The optimizer-dependent defaults of the options left unset (None): {optimizer: {option: default}}.
    optimizer_defaults: ClassVar[Dict[str, Dict[str, float]]] = {}

    def __post_init__(self) -> None:
        for name, value in self.optimizer_defaults.get(self.optimizer, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    @property
    def model_name(self) -> str:
        """The registered model of the run (classification's ``model``, the other tasks' ``backbone``)."""
        raise NotImplementedError

    @property
    def run_name(self) -> str:
        """The run folder's name without ``--output``: ``runs/<run_name>`` (then ``-2``, ``-3`` ...)."""
        raise NotImplementedError

    @property
    def in_chans(self) -> int:
        """Image channels the run's model takes: ``in_chans`` of ``model_kwargs``, else ResNeSt's 3 (RGB)."""
        return int(self.model_kwargs.get("in_chans", 3))

    def on_cpu(self) -> bool:
        """Whether the run computes on CPUs (``device`` None means a GPU when one is visible)."""
        if self.device is not None:
            return self.device == "cpu"
        import torch

        return not torch.cuda.is_available()

    def validate(self) -> None:
        """Checks that need no data, before any is read; raises ``ConfigError`` naming the flag and the fix."""
        if self.data_required and not self.data:
            raise ConfigError("--data is required (on the command line or in the --config file).")
        from ..models.registry import get_model_spec  # torch only: the model library is loaded anyway

        try:
            get_model_spec(self.model_name)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        for name, low in (("batch_size", 1), ("workers", 0), ("checkpoint_every", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}.")
        self._check_norm()
        self._check_run_folder()
        self._check_fine_tuning()

    def _check_fine_tuning(self) -> None:
        sgd_only, adamw_only = (
            self.momentum != field_default(RunConfig, "momentum"),
            (
                self.opt_betas != field_default(RunConfig, "opt_betas")
                or self.opt_eps != field_default(RunConfig, "opt_eps")
            ),
        )
        if (self.optimizer == "adamw" and sgd_only) or (self.optimizer == "sgd" and adamw_only):
            raise ConfigError(
                f"--optimizer {self.optimizer} has no "
                + ("--momentum (adamw's is --opt-betas)" if sgd_only else "--opt-betas/--opt-eps (adamw only)")
                + ": drop it or pick the other --optimizer."
            )
        if not 0.0 <= self.opt_betas[0] < 1.0 or not 0.0 <= self.opt_betas[1] < 1.0 or self.opt_eps <= 0:
            raise ConfigError(
                f"--opt-betas must be in [0, 1) and --opt-eps positive, got {self.opt_betas}, {self.opt_eps}."
            )
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"--layer-decay is a factor per layer in (0, 1] (e.g. 0.7), got {self.layer_decay}.")
        for name in ("freeze_stages", "layer_decay"):
            if getattr(self, name) is not None and not self.pretrained:
                raise ConfigError(
                    f"--{name.replace('_', '-')} fine-tunes pretrained weights, but this run starts from scratch: add "
                    f"--pretrained (ImageNet weights, a weights file or a run), or drop it."
                )

    def _check_norm(self) -> None:
        if self.norm == "frozenbn" and not self.pretrained:
            raise ConfigError(
                "--norm frozenbn freezes the statistics of pretrained weights, but this run starts "
                "from scratch: add --pretrained, or use --norm groupnorm (any batch size) or "
                "--norm syncbn (GPUs under torchrun)."
            )
        if self.pretrained is True and self.norm not in BATCH_STATISTICS_NORMS:
            raise ConfigError(
                f"--pretrained loads the ImageNet weights, trained with BatchNorm, whose statistics a --norm "
                f"{self.norm} backbone cannot take: use --norm frozenbn (the statistics frozen) or --norm batchnorm "
                "(--norm syncbn on GPUs under torchrun), or drop --pretrained to train from scratch."
            )
        if self.norm == "syncbn" and self.on_cpu():
            raise ConfigError(
                "--norm syncbn needs GPUs (SyncBatchNorm synchronises CUDA tensors); on CPUs use "
                "--norm frozenbn or --norm groupnorm (or --norm batchnorm in one process)."
            )
        if self.sync_bn and _processes() > 1 and self.on_cpu():
            raise ConfigError(
                "--sync-bn needs GPUs (SyncBatchNorm has no CPU kernel); on CPUs drop --sync-bn and use "
                "--norm groupnorm (no batch statistics to synchronise)."
            )

    def _check_run_folder(self) -> None:
        if self.resume not in (None, "auto") and not Path(self.resume).is_file():
            raise ConfigError(f"--resume {self.resume!r}: no such checkpoint; pass a checkpoint path or 'auto'.")
        if self.output and not self.resume and not self.exist_ok and (Path(self.output) / "last.pt").exists():
            raise ConfigError(
                f"{self.output!r} already holds a run (last.pt); continue it with --resume auto, "
                "replace it with --exist-ok, or pass another --output."
            )

    def _check_global_batch(self, global_batch: Optional[int]) -> None:
        per_step = self.batch_size * _processes()
        if global_batch is not None and global_batch % per_step:
            raise ConfigError(
                f"--global-batch {global_batch} is not a multiple of --batch-size x processes = {per_step}; "
                "gradient accumulation needs a whole number of micro-batches."
            )

    def train_settings(self) -> TrainSettings:
        """What the engine reads of this config (``engine.loop.TrainSettings``); the options go in as plain values
        (``args``: ``options.json`` and each checkpoint)."""
        from ..engine.loop import TrainSettings  # the engine and torch load with the run, not with --help

        return TrainSettings(
            args=dataclasses.asdict(self),
            name=self.run_name,
            output=self.output,
            resume=self.resume,
            exist_ok=self.exist_ok,
            device=self.device,
            seed=self.seed,
            threads=self.threads,
            deterministic=self.deterministic,
            dist_timeout=self.dist_timeout,
            amp=self.amp,
            optimizer=self.optimizer,
            momentum=self.momentum,
            betas=(self.opt_betas[0], self.opt_betas[1]),
            eps=self.opt_eps,
            sync_bn=self.sync_bn,
            dist_bn=self.dist_bn,
            progress=self.progress,
            tensorboard=self.tensorboard,
            channels_last=False,
            compile_memory_budget=None,
            ema_decay=None,
            ema_warmup=False,
            ema_adjust=False,
        )


@dataclass
class ClassifyConfig(RunConfig):
    """``splitattn classify train``: the ResNeSt ImageNet recipe (Zhang et al. 2020, section 5.1).

    ``epochs``, ``hflip`` and ``model_kwargs`` left unset (None) take their default for ``data`` in
    ``DATA_DEPENDENT_DEFAULTS``: an image folder's, or without ``data`` the digits demo's.
    """

    data_required: ClassVar[bool] = False
    optimizer_defaults: ClassVar[Dict[str, Dict[str, float]]] = CLASSIFY_OPTIMIZER_DEFAULTS

    data: Optional[str] = option(
        None,
        "folder with train/ and val/ (or test/) as ImageFolder trees or .csv lists "
        "of path,label; omitted: scikit-learn's digits (a one-minute demo)",
        metavar="DIR",
    )
    model_kwargs: Optional[Dict[str, Any]] = option(
        None,
        _data_dependent("model_kwargs", "more create_model overrides, e.g. stem_width=16"),
        nargs="*",
        metavar="KEY=VALUE",
    )
    hflip: Optional[float] = option(None, _data_dependent("hflip", "horizontal flip probability"))
    model: str = option("resnest14", "registered model name (`splitattn models`)")
    epochs: Optional[int] = option(None, _data_dependent("epochs", "training epochs"))
    global_batch: Optional[int] = option(
        None, "images per optimizer step, reached by gradient accumulation (default: batch size x processes)"
    )
    lr: Optional[float] = option(None, "peak learning rate (default: base-lr x global batch / 256)")
    base_lr: Optional[float] = option(
        None, _optimizer_dependent(CLASSIFY_OPTIMIZER_DEFAULTS, "base_lr", "learning rate per 256 images")
    )
    weight_decay: Optional[float] = option(
        None,
        _optimizer_dependent(
            CLASSIFY_OPTIMIZER_DEFAULTS, "weight_decay", "on conv/linear weights; none on biases and norm parameters"
        ),
    )
    balanced_sampler: bool = option(
        False, "imbalanced data: draw each class equally often (each image with weight 1 / images of its class)"
    )
    class_weights: Optional[str] = option(
        None,
        "imbalanced data: auto weights the loss of each class by images / (classes x images of the class) "
        "(inverse frequency, scikit-learn's 'balanced'); use it or --balanced-sampler, not both",
        choices=("auto",),
    )
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
    img_size: Optional[int] = option(None, "training crop (default: the model's evaluation size; the digits: 32)")
    eval_img_size: Optional[int] = option(None, "evaluation crop (default: --img-size)")
    crop_pct: float = option(EvalConfig.crop_pct, "evaluation resizes the short side to crop / crop-pct")
    channels_last: bool = option(False)
    compile: bool = option(False, "torch.compile the model")
    memory_budget: float = option(
        1.0, "with --compile: activation memory budget in (0, 1]; lower recomputes cheap ops in backward to save memory"
    )
    grad_checkpointing: bool = option(False, "recompute activations in backward to save memory")
    ema: bool = option(False, "keep and evaluate an exponential moving average (EMA) of the weights, in float32")
    ema_decay: float = option(
        0.9998,
        "EMA decay per optimizer step (the average's horizon is about 1 / (1 - decay) steps); with --ema-adjust "
        "the decay per image and epoch instead, e.g. torchvision's 0.99998",
    )
    ema_warmup: bool = option(
        True,
        "ramp the EMA decay up as min(decay, 1 - step ** -0.75) (timm's ModelEmaV3 warm-up: 0.968 at step 100, "
        "0.9944 at 1,000), so the average follows the fast early changes and suits short runs",
    )
    ema_adjust: bool = option(
        False,
        "fit the EMA to the run: per-step decay 1 - min(1, (1 - ema-decay) x global batch / epochs) "
        "(torchvision's references/classification), the same horizon whatever the batch, processes and epochs",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, (folder, digits) in DATA_DEPENDENT_DEFAULTS.items():
            if getattr(self, name) is None:
                value = folder if self.data else digits
                setattr(self, name, type(value)(value))

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def run_name(self) -> str:
        return self.model

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.drop_block < 1.0:
            raise ConfigError(f"--drop-block is a drop probability in [0, 1), got {self.drop_block}.")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ConfigError(f"--ema-decay is a decay in [0, 1], got {self.ema_decay}.")
        if not 0.0 < self.memory_budget <= 1.0:
            raise ConfigError(f"--memory-budget must be in (0, 1], got {self.memory_budget}.")
        if self.memory_budget != field_default(ClassifyConfig, "memory_budget") and not self.compile:
            raise ConfigError("--memory-budget applies to compiled training; add --compile (or drop --memory-budget).")
        if self.balanced_sampler and self.class_weights:
            raise ConfigError(
                "--balanced-sampler and --class-weights both correct for imbalance, together twice over: use one."
            )
        self._check_global_batch(self.global_batch)

    def train_settings(self) -> TrainSettings:
        return dataclasses.replace(
            super().train_settings(),
            channels_last=self.channels_last,
            compile_memory_budget=self.memory_budget if self.compile else None,
            ema_decay=self.ema_decay if self.ema else None,
            ema_warmup=self.ema_warmup,
            ema_adjust=self.ema_adjust,
        )


@dataclass
class DetectConfig(RunConfig):
    """``splitattn detect train``: (Cascade) Faster/Mask R-CNN on a ResNeSt-FPN, iteration-based (detectron2)."""

    optimizer_defaults: ClassVar[Dict[str, Dict[str, float]]] = DETECT_OPTIMIZER_DEFAULTS

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
        "groupnorm",
        "backbone normalisation (the paper: syncbn on GPUs; frozenbn or batchnorm with --pretrained)",
        choices=NORMS,
    )
    freeze_stages: Optional[int] = _freeze_stages_option(
        "1 with frozenbn, as torchvision and detectron2; else nothing frozen"
    )
    balanced_sampler: bool = option(
        False,
        "imbalanced data: repeat-factor sampling (LVIS, detectron2): images holding a class that is in fewer than "
        "--repeat-threshold of the images are drawn sqrt(threshold / frequency) times as often",
    )
    repeat_threshold: float = option(
        0.001, "with --balanced-sampler: the class frequency below which images repeat (LVIS's)"
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
    lr: Optional[float] = option(None, _optimizer_dependent(DETECT_OPTIMIZER_DEFAULTS, "lr", "peak learning rate"))
    weight_decay: Optional[float] = option(
        None,
        _optimizer_dependent(
            DETECT_OPTIMIZER_DEFAULTS, "weight_decay", "on conv/linear weights; none on biases and norm parameters"
        ),
    )
    max_iter: int = option(90000, "training iterations (optimizer steps)")
    steps: List[int] = option([60000, 80000], "iterations where the lr is multiplied by --gamma", nargs="*")
    gamma: float = option(0.1)
    warmup_iters: int = option(1000, "linear warm-up length")
    warmup_factor: float = option(0.001, "lr factor at iteration 0 of the warm-up")
    log_every: int = option(20, "log the mean losses every N iterations")
    eval_every: int = option(5000, "COCO evaluation (and best.pt) every N iterations, and after the last")
    checkpoint_every: int = option(1000, "write last.pt every N iterations (and after the last)")

    @property
    def model_name(self) -> str:
        return self.backbone

    @property
    def run_name(self) -> str:
        return f"detect-{self.arch}-{self.backbone}"

    def validate(self) -> None:
        super().validate()
        for name in ("max_iter", "log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}.")
        norm = self.norm
        if norm in ("batchnorm", "syncbn") and self.batch_size < 2 and not (norm == "syncbn" and _processes() > 1):
            raise ConfigError(
                f"--norm {norm} with --batch-size 1 cannot normalise the split-attention maps (one value "
                "per channel); use --norm frozenbn or groupnorm, or --batch-size >= 2."
            )
        if self.amp == "fp16" and self.on_cpu():
            raise ConfigError("--amp fp16 is for GPUs; on CPUs use --amp bf16 or none.")
        if not 0.0 < self.repeat_threshold <= 1.0:
            raise ConfigError(f"--repeat-threshold is a fraction of the images in (0, 1], got {self.repeat_threshold}.")
        self._warn_about_a_shortened_schedule()

    def _warn_about_a_shortened_schedule(self) -> None:
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
                stacklevel=3,
            )


@dataclass
class SegmentConfig(RunConfig):
    """``splitattn segment train``: DeepLabV3/FCN on a dilated ResNeSt (PyTorch-Encoding's recipe)."""

    optimizer_defaults: ClassVar[Dict[str, Dict[str, float]]] = SEGMENT_OPTIMIZER_DEFAULTS

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
    lr: Optional[float] = option(
        None,
        _optimizer_dependent(SEGMENT_OPTIMIZER_DEFAULTS, "lr", "backbone learning rate, poly-decayed per iteration"),
    )
    weight_decay: Optional[float] = option(
        None,
        _optimizer_dependent(
            SEGMENT_OPTIMIZER_DEFAULTS, "weight_decay", "on conv/linear weights; none on biases and norm parameters"
        ),
    )
    head_lr_mult: float = option(10.0, "heads learn at lr x this (x --layer-decay's factor 1)")
    class_weights: Optional[str] = option(
        None,
        "imbalanced data: auto weights the pixel loss of each class by median frequency balancing (SegNet's: the "
        "median class frequency / the class's, over the images holding it)",
        choices=("auto",),
    )
    poly_power: float = option(0.9)
    eval_every: int = option(1, "validate every N epochs (and after the last)")
    eval_crop_size: Optional[int] = option(None, "validate in sliding windows of this size (default: whole image)")

    @property
    def model_name(self) -> str:
        return self.backbone

    @property
    def run_name(self) -> str:
        return f"segment-{self.backbone}"

    def validate(self) -> None:
        super().validate()
        if self.batch_size < 2 and not (self.sync_bn and _processes() > 1):
            raise ConfigError(
                "the heads' BatchNorm (ASPP's pooled branch sees one value per image) needs --batch-size "
                ">= 2 per process; raise it, or use --sync-bn under torchrun."
            )
        self._check_global_batch(self.global_batch)
