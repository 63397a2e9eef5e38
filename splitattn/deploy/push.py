"""``splitattn push RUN``: share a trained run as a Hugging Face hub repository in timm's layout.

At the artifact level (``deploy/``): it rebuilds a run's model with its task's checkpoint loader and writes
it through ``weights.timm_config``, ``weights.model_card`` (the facts from ``run_card``) and ``weights.hub``.
The repository holds ``model.safetensors``, ``config.json`` and a model card ``README.md``:

- classification: timm's ``config.json`` (``weights.timm_config.classification_config``), so ``timm.create_model`` and
  transformers' image-classification pipeline (its ``TimmWrapper``) load it where timm has the architecture,
  and ``splitattn.create_model("hf-hub:OWNER/NAME")`` always;
- detection and segmentation: a ``config.json`` of their own (task, architecture, backbone, classes,
  thresholds, preprocessing, and the run's options, ``train_options``, that rebuild the model with
  ``splitattn.tasks.<task>.checkpoint.model_from_config`` once read with ``config.values.from_checkpoint_args``).
  No other library builds these models (a ResNeSt backbone in torchvision's detectors, our cascade heads), and
  the card says so.

``--local-dir DIR`` writes the files only; ``--repo OWNER/NAME`` uploads them (``HfApi.create_repo`` and
``upload_folder``; ``HF_TOKEN`` or ``hf auth login`` for the credentials, ``HF_ENDPOINT`` for another hub).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..config.schemas import RunConfig
from ..errors import CheckpointError, UsageError
from ..weights.model_card import DEFAULT_LICENSE, RunFacts, render_card
from .run_card import LOCAL_OPTIONS, POSITION_KEYS, RunSource, run_facts

CHECKPOINT_NAMES = ("last.pt", "best.pt")
PLACEHOLDER_REPO = "OWNER/NAME"  # in the card of a run written to --local-dir only


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="share a run on the Hugging Face hub in timm's layout (or write it to a folder)",
        description="Write a run as model.safetensors + config.json (timm's format for classifiers) + a model "
        "card README.md, into --local-dir and/or uploaded to --repo.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="run folder (its last.pt) or a checkpoint file")
    parser.add_argument("--repo", help="hub repository OWNER/NAME to upload to (created if missing)")
    parser.add_argument("--local-dir", type=Path, help="write the repository's files here (with --repo: and upload)")
    parser.add_argument("--exist-ok", action="store_true", help="replace the files of a --local-dir holding some")
    parser.add_argument(
        "--no-ema", dest="ema", action="store_false", help="push the raw weights of a run that has EMA weights"
    )
    parser.add_argument("--license", default=DEFAULT_LICENSE, help=f"the card's license (default: {DEFAULT_LICENSE})")
    parser.add_argument("--private", action="store_true", help="create the hub repository private")
    parser.add_argument("--revision", help="branch to commit to (created from main if missing)")
    parser.add_argument("--commit-message", help="(default: Upload <run> with splitattn)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(func=run_push)


@dataclass
class Export:
    """What a run becomes: the weights, ``config.json``, the card's facts and the hub's library name."""

    state_dict: Dict[str, Any]
    config: Dict[str, Any]
    facts: RunFacts
    library_name: str


def _checkpoint_path(run: Path) -> Path:
    if run.is_file():
        return run
    found = next((run / name for name in CHECKPOINT_NAMES if (run / name).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{run} is neither a checkpoint file nor a run folder holding last.pt or best.pt.")
    return found


def read_run(run: Path, tasks: Sequence[str]) -> RunSource:
    """The checkpoint of ``run`` (a run folder's ``last.pt``, else ``best.pt``, or a checkpoint file) with the
    entries the card needs; the model is rebuilt by its task's loader.

    Raises:
        FileNotFoundError: no checkpoint at ``run``.
        UsageError: the file holds bare weights, not a run.
        CheckpointError: a run's checkpoint without a ``task`` entry, or of a task not in ``tasks``.
    """
    from ..engine.checkpoint import holds_bare_weights, load_checkpoint_file

    path = _checkpoint_path(run)
    checkpoint = load_checkpoint_file(path)
    if holds_bare_weights(checkpoint):
        raise UsageError(f"{path} holds bare weights, not a run; push the last.pt of a `splitattn ... train` run.")
    if "task" not in checkpoint:
        raise CheckpointError(
            f"{path} is a run's checkpoint without the `task` entry naming the task that trained it (written before "
            f"checkpoints had one); add it (checkpoint['task'] = one of {list(tasks)}) and push again."
        )
    if checkpoint["task"] not in tasks:
        raise CheckpointError(f"{path} is a {checkpoint['task']!r} run; push shares runs of {list(tasks)}.")
    return RunSource(
        path=path,
        task=checkpoint["task"],
        position={key: checkpoint[key] for key in POSITION_KEYS if key in checkpoint},
        has_ema=bool(checkpoint.get("ema")),
        trained_norm=checkpoint["args"].get("norm"),
    )


def _classification(source: RunSource, args: argparse.Namespace) -> Export:
    from ..models.registry import get_model_spec
    from ..tasks.classification.checkpoint import COMMAND, load_trained_model, model_overrides, run_eval_config
    from ..weights.model_card import classifier_loaders
    from ..weights.timm_config import classification_config, groupnorm_fits_timm

    ema = args.ema and source.has_ema
    model, classes, config = load_trained_model(source.path, use_ema=ema, action="push")
    assert classes is not None and config is not None  # a run's checkpoint: read_run refused bare weights
    spec = get_model_spec(model.model_name)
    eval_config = run_eval_config(config)
    timm_config = classification_config(
        spec.name, model_overrides(config), len(classes), model.num_features, eval_config, classes, args.license
    )
    in_timm = bool(spec.timm_name) and (config.norm != "groupnorm" or groupnorm_fits_timm(model))
    not_timm = None if in_timm else ("no timm architecture" if not spec.timm_name else "GroupNorm with < 32 groups")
    loaders, usage = classifier_loaders(
        args.repo or PLACEHOLDER_REPO, spec.name, spec.timm_name, config.in_chans, not_timm
    )
    facts = run_facts(
        source,
        config,
        COMMAND,
        classes,
        ema,
        None,
        title=f"{spec.name}" + (f" (timm: {spec.timm_name})" if spec.timm_name else "") + f", {len(classes)} classes",
        weights=f"EMA weights (decay {config.ema_decay})" if ema else "model weights",
        loaders=loaders,
        usage=usage,
        preprocessing=f"{eval_config.describe()}, mean {list(eval_config.mean)}, std {list(eval_config.std)} "
        f"(timm: `crop_pct` {eval_config.crop_pct}, `crop_mode` center, {eval_config.interpolation}).",
    )
    return Export(model.state_dict(), timm_config, facts, "timm" if in_timm else "splitattn")


@dataclass
class TaskRepo:
    """What a detection or segmentation run's repository says beyond its weights and run options.

    Attributes:
        task: the hub's pipeline name (``object-detection``, ``image-segmentation``).
        architecture: the run's ``arch`` or ``head``.
        entries: the task's own ``config.json`` entries (thresholds, preprocessing ...).
        kind: torchvision's word for such models, for the card.
        labels: how many classes the title names (a detector's background left out).
        preprocessing: the evaluation preprocessing in words.
        rebuild: the task's ``model_from_config``; ``command``: its command group.
        data_format: the run's ``dataset`` layout, if it names one.
    """

    task: str
    architecture: str
    entries: Dict[str, Any]
    kind: str
    labels: int
    preprocessing: str
    rebuild: Callable[..., Any]
    command: str
    data_format: Optional[str]


def _task_export(
    source: RunSource, args: argparse.Namespace, model: Any, config: RunConfig, classes: List[str], repo: TaskRepo
) -> Export:
    """The export of a detection or segmentation run: a ``config.json`` of its own, loadable by splitattn only
    (the run's options without the machine's and its paths, ``train_options``, rebuild it with ``repo.rebuild``)."""
    from ..models.registry import get_model_spec
    from ..version import __version__
    from ..weights.model_card import task_loaders

    spec = get_model_spec(config.model_name)
    options = dataclasses.asdict(config)
    repo_config = {
        "library_name": "splitattn",
        "splitattn_version": __version__,
        "task": repo.task,
        "architecture": repo.architecture,
        "backbone": spec.name,
        "backbone_timm_name": spec.timm_name,
        "num_classes": len(classes),
        "label_names": list(classes),
        **repo.entries,
        "train_options": {k: v for k, v in options.items() if k not in LOCAL_OPTIONS + ("data", "pretrained")},
    }
    rebuild = f"{repo.rebuild.__module__}.{repo.rebuild.__qualname__}"
    loaders, usage = task_loaders(args.repo or PLACEHOLDER_REPO, repo.kind, type(config).__name__, rebuild)
    facts = run_facts(
        source,
        config,
        repo.command,
        classes,
        False,
        repo.data_format,
        title=f"{repo.architecture} on {spec.name}, {repo.labels} classes",
        weights="the whole model's weights",
        loaders=loaders,
        usage=usage,
        preprocessing=repo.preprocessing,
    )
    return Export(model.state_dict(), repo_config, facts, "splitattn")


def _detection(source: RunSource, args: argparse.Namespace) -> Export:
    from ..tasks.detection.checkpoint import COMMAND, load_detection_model, model_from_config

    model, classes, config, mapping = load_detection_model(source.path, "push")
    heads, transform = model.roi_heads, model.transform
    entries = {
        "background_index": 0,
        "contiguous_to_coco": {str(k): v for k, v in mapping.items()},
        "masks": "mask" in config.arch,
        "thresholds": {
            "score_thresh": heads.score_thresh,
            "nms_thresh": heads.nms_thresh,
            "detections_per_img": heads.detections_per_img,
        },
        "preprocessing": {
            "min_size": list(transform.min_size),
            "max_size": transform.max_size,
            "mean": list(transform.image_mean),
            "std": list(transform.image_std),
        },
    }
    preprocessing = (
        f"shorter side to {list(transform.min_size)} (longer side at most {transform.max_size}), "
        f"mean {list(transform.image_mean)}, std {list(transform.image_std)}; detections kept above score "
        f"{heads.score_thresh}, NMS IoU {heads.nms_thresh}, at most {heads.detections_per_img} per image."
    )
    repo = TaskRepo(
        "object-detection",
        config.arch,
        entries,
        "detectors",
        len(classes) - 1,  # classes[0] is the background
        preprocessing,
        model_from_config,
        COMMAND,
        config.dataset,
    )
    return _task_export(source, args, model, config, classes, repo)


def _segmentation(source: RunSource, args: argparse.Namespace) -> Export:
    from ..data.io import channel_stats
    from ..tasks.segmentation.checkpoint import COMMAND, load_segmentation_model, model_from_config

    model, classes, config = load_segmentation_model(source.path, "push")
    mean, std = channel_stats(config.in_chans)
    entries = {
        "output_stride": config.output_stride,
        "aux": config.aux,
        "preprocessing": {
            "base_size": config.base_size,
            "eval_crop_size": config.eval_crop_size,
            "mean": list(mean),
            "std": list(std),
        },
    }
    preprocessing = (
        f"long side to {config.base_size}, mean {list(mean)}, std {list(std)}"
        + (f", sliding windows of {config.eval_crop_size}" if config.eval_crop_size else "")
        + "; the class of each pixel is the arg-max."
    )
    repo = TaskRepo(
        "image-segmentation",
        config.head,
        entries,
        "segmentation models",
        len(classes),
        preprocessing,
        model_from_config,
        COMMAND,
        config.dataset,
    )
    return _task_export(source, args, model, config, classes, repo)


Builder = Callable[[RunSource, argparse.Namespace], Export]


def _builders() -> Dict[str, Builder]:
    """Task (a checkpoint's ``task`` entry) -> its export; the tasks are imported when a run is pushed."""
    from ..tasks.classification.checkpoint import TASK as CLASSIFICATION
    from ..tasks.detection.checkpoint import TASK as DETECTION
    from ..tasks.segmentation.checkpoint import TASK as SEGMENTATION

    return {CLASSIFICATION: _classification, DETECTION: _detection, SEGMENTATION: _segmentation}


def write_repo(export: Export, folder: Path, license: str) -> List[Path]:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` into ``folder``; return their paths."""
    from ..weights.files import sha256_file, write_json
    from ..weights.hub import CONFIG_NAME, WEIGHTS_NAMES
    from ..weights.loading import save_state_dict

    weights = save_state_dict({k: v.clone() for k, v in export.state_dict.items()}, folder / WEIGHTS_NAMES[0])
    config = write_json(folder / CONFIG_NAME, export.config)
    export.facts.weights_sha256 = sha256_file(weights)
    card = folder / "README.md"
    card.write_text(render_card(export.facts, license, export.library_name), encoding="utf-8")
    return [weights, config, card]


def run_push(args: argparse.Namespace) -> int:
    if not args.repo and not args.local_dir:
        raise UsageError("give --repo OWNER/NAME (upload), --local-dir DIR (write the files), or both.")
    if args.repo and args.repo.count("/") != 1:
        raise UsageError(f"--repo {args.repo!r}: write it OWNER/NAME (your user or organisation name first).")
    if args.local_dir and args.local_dir.exists() and any(args.local_dir.iterdir()) and not args.exist_ok:
        raise UsageError(f"--local-dir {args.local_dir} is not empty; add --exist-ok to replace its files.")
    builders = _builders()
    source = read_run(args.run, tuple(builders))
    export = builders[source.task](source, args)
    with tempfile.TemporaryDirectory(prefix="splitattn-push-") as tmp:
        folder = args.local_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        written = write_repo(export, folder, args.license)
        print(f"{source.task} run {source.path} -> {folder}: {', '.join(p.name for p in written)}")
        print(f"  {export.facts.weights}, sha256 {export.facts.weights_sha256} model.safetensors; loads in:")
        for line in export.facts.loaders:
            print(f"  - {line}")
        if args.repo:
            from ..weights.hub import upload_folder

            url = upload_folder(folder, args.repo, args.private, args.revision, args.commit_message)
            print(f"uploaded to {args.repo}" + (f" ({args.revision})" if args.revision else "") + f": {url}")
    return 0
