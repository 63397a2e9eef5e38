"""``splitattn push RUN``: share a trained run as a Hugging Face hub repository in timm's layout.

A command module (the top layer: it reads the checkpoints of the three tasks and writes through
``weights.hub`` and ``weights.model_card``). The repository holds ``model.safetensors``, ``config.json`` and a
model card ``README.md``:

- classification: timm's ``config.json`` (``weights.hub.classification_config``), so ``timm.create_model`` and
  transformers' image-classification pipeline (its ``TimmWrapper``) load it where timm has the architecture,
  and ``splitattn.create_model("hf-hub:OWNER/NAME")`` always;
- detection and segmentation: a ``config.json`` of their own (task, architecture, backbone, classes,
  thresholds, preprocessing, and the run's options that rebuild the model with
  ``splitattn.tasks.<task>.checkpoint.model_from_options``). No other library builds these models (a ResNeSt
  backbone in torchvision's detectors, our cascade heads), and the card says so.

``--local-dir DIR`` writes the files only; ``--repo OWNER/NAME`` uploads them (``HfApi.create_repo`` and
``upload_folder``; ``HF_TOKEN`` or ``hf auth login`` for the credentials, ``HF_ENDPOINT`` for another hub).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..errors import UsageError
from ..weights.model_card import DEFAULT_LICENSE, RunFacts, classifier_loaders, render_card, task_loaders

CHECKPOINT_NAMES = ("last.pt", "best.pt")
# options that describe the machine or the run folder, not how the model was trained
LOCAL_OPTIONS = ("config", "output", "exist_ok", "resume", "device", "workers", "threads", "progress", "tensorboard")
MAX_CARD_CLASSES = 100  # per-class rows shown in the card


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


def _log_records(run_dir: Path) -> List[Dict[str, Any]]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metrics(run_dir: Path, checkpoint: Mapping[str, Any], ema: bool) -> Tuple[Dict[str, float], str]:
    """The evaluation of the pushed weights as the run logged it: the ``val_`` (``ema_val_``) entries of the
    log record of the checkpoint's step, else ``metrics.json`` for the last checkpoint."""
    prefix = "ema_val_" if ema else "val_"
    for key in ("step", "iter", "epoch"):
        if key not in checkpoint:
            continue
        records = [
            r for r in _log_records(run_dir) if r.get(key) == checkpoint[key] and any(k.startswith(prefix) for k in r)
        ]
        if records:
            metrics = {k[len(prefix) :]: v for k, v in records[-1].items() if k.startswith(prefix)}
            where = f"log.jsonl, {key} {checkpoint[key]}, {'EMA' if ema else 'model'} weights"
            return metrics, where
    path = run_dir / "metrics.json"
    if path.is_file() and not ema:
        final = json.loads(path.read_text())
        numbers = {k: v for k, v in final.items() if isinstance(v, (int, float)) and not k.endswith(("_s", "images"))}
        return numbers, "metrics.json"
    return {}, ""


def _per_class(run_dir: Path) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """The newest per-class table the run wrote (a CSV in the run folder or one level down whose columns
    include recall, IoU or AP), at most ``MAX_CARD_CLASSES`` rows."""

    def header(path: Path) -> str:
        with path.open() as handle:
            return handle.readline().lower()

    tables = [
        p
        for p in list(run_dir.glob("*.csv")) + list(run_dir.glob("*/*.csv"))
        if any(w in header(p) for w in ("recall", "iou", "ap"))
    ]
    if not tables:
        return [], None
    newest = max(tables, key=lambda p: p.stat().st_mtime)
    with newest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows[:MAX_CARD_CLASSES], str(newest.relative_to(run_dir))


def _command_line(task: str, options: Mapping[str, Any]) -> str:
    """The ``splitattn <task> train`` command giving ``options``: the options that differ from the defaults."""
    from ..config import ClassifyConfig, DetectConfig, SegmentConfig
    from ..engine.checkpoint import TASK_COMMANDS

    cls = {"classification": ClassifyConfig, "detection": DetectConfig, "segmentation": SegmentConfig}[task]
    words = [f"splitattn {TASK_COMMANDS[task]} train"]
    for item in dataclasses.fields(cls):
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        value = options.get(item.name, default)
        if item.name in LOCAL_OPTIONS or value == default:
            continue
        flag = "--" + item.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            words.append(flag + "".join(f" {k}={v}" for k, v in value.items()))
        elif isinstance(value, (list, tuple)):
            words.append(flag + "".join(f" {v}" for v in value))
        else:
            words.append(f"{flag} {value}")
    return " \\\n  ".join(words)


def _data_summary(run_dir: Path, options: Mapping[str, Any], num_classes: int) -> Dict[str, Any]:
    final = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    data = options.get("data")
    summary: Dict[str, Any] = {"data set": Path(data).name if data else "scikit-learn digits (built in)"}
    if options.get("dataset"):
        summary["format"] = options["dataset"]
    summary["classes"] = num_classes
    for key in ("train_images", "eval_images"):
        if key in final:
            summary[key.replace("_", " ")] = final[key]
    return summary


def _common_facts(
    task: str, title: str, source: Path, checkpoint: Mapping[str, Any], options: Dict[str, Any], ema: bool, **kw: Any
) -> RunFacts:
    """The card's facts every task shares, read from the run folder of checkpoint file ``source``; ``kw``: the
    task's own (``weights``, ``loaders``, ``preprocessing``, ``usage``)."""
    from ..weights.files import sha256_file

    run_dir = source.parent
    per_class, per_class_source = _per_class(run_dir)
    metrics, metrics_source = _metrics(run_dir, checkpoint, ema)
    final = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    classes = [str(c) for c in checkpoint["classes"]]
    return RunFacts(
        task=task,
        title=title,
        label_names=classes,
        metrics=metrics,
        metrics_source=metrics_source,
        command=_command_line(task, options),
        options={k: v for k, v in options.items() if k not in LOCAL_OPTIONS},
        data=_data_summary(run_dir, options, len(classes)),
        wall_time_s=final.get("wall_time_s"),
        source_file=source.name,
        source_sha256=sha256_file(source),
        weights_sha256="",  # known once model.safetensors is written
        per_class=per_class,
        per_class_source=per_class_source,
        **kw,
    )


def _classification(checkpoint: Dict[str, Any], source: Path, args: argparse.Namespace) -> Export:
    from ..models.factory import create_model
    from ..models.registry import get_model_spec
    from ..tasks.classification.checkpoint import model_overrides, run_eval_config
    from ..weights.hub import classification_config, groupnorm_fits_timm
    from ..weights.loading import strip_wrapper_prefixes

    options, classes = dict(checkpoint["args"]), [str(c) for c in checkpoint["classes"]]
    spec = get_model_spec(checkpoint.get("model_name") or options["model"])
    overrides = model_overrides(options)
    ema = bool(args.ema and checkpoint.get("ema"))
    state = strip_wrapper_prefixes(checkpoint["ema"]) if ema else dict(checkpoint["model"])
    model = create_model(spec.name, num_classes=len(classes), **overrides)
    model.load_state_dict(state)  # strict: the weights are the network config.json describes
    eval_config = run_eval_config(options)
    config = classification_config(
        spec.name, overrides, len(classes), model.num_features, eval_config, classes, args.license
    )
    in_timm = bool(spec.timm_name) and (options.get("norm") != "groupnorm" or groupnorm_fits_timm(model))
    not_timm = None if in_timm else ("no timm architecture" if not spec.timm_name else "GroupNorm with < 32 groups")
    loaders, usage = classifier_loaders(
        args.repo or "OWNER/NAME", spec.name, spec.timm_name, config["model_args"]["in_chans"], not_timm
    )
    ema_note = f"EMA weights (decay {options.get('ema_decay')})" if ema else "model weights"
    title = f"{spec.name}" + (f" (timm: {spec.timm_name})" if spec.timm_name else "") + f", {len(classes)} classes"
    facts = _common_facts(
        "classification",
        title,
        source,
        checkpoint,
        options,
        ema,
        weights=ema_note,
        loaders=loaders,
        usage=usage,
        preprocessing=f"{eval_config.describe()}, mean {list(eval_config.mean)}, std {list(eval_config.std)} "
        f"(timm: `crop_pct` {eval_config.crop_pct}, `crop_mode` center, {eval_config.interpolation}).",
    )
    return Export(state, config, facts, "timm" if in_timm else "splitattn")


def _task_config(
    task: str, architecture: str, options: Mapping[str, Any], classes: List[str], **extra: Any
) -> Dict[str, Any]:
    from ..models.registry import get_model_spec
    from ..version import __version__

    spec = get_model_spec(options["backbone"])
    return {
        "library_name": "splitattn",
        "splitattn_version": __version__,
        "task": task,
        "architecture": architecture,
        "backbone": spec.name,
        "backbone_timm_name": spec.timm_name,
        "num_classes": len(classes),
        "label_names": classes,
        **extra,
        "train_options": {k: v for k, v in options.items() if k not in LOCAL_OPTIONS + ("data", "pretrained")},
    }


# task -> (torchvision's word for such models, the function rebuilding one from a run's options)
_REBUILT_BY = {
    "detection": ("detectors", "splitattn.tasks.detection.checkpoint.model_from_options"),
    "segmentation": ("segmentation models", "splitattn.tasks.segmentation.checkpoint.model_from_options"),
}


def _task_export(
    task: str,
    model: Any,
    config: Dict[str, Any],
    source: Path,
    checkpoint: Mapping[str, Any],
    options: Dict[str, Any],
    title: str,
    preprocessing: str,
) -> Export:
    """The export of a detection or segmentation run (a config of its own, loadable by splitattn only)."""
    loaders = task_loaders(*_REBUILT_BY[task])
    facts = _common_facts(
        task,
        title,
        source,
        checkpoint,
        options,
        False,
        weights="the whole model's weights",
        loaders=loaders,
        preprocessing=preprocessing,
    )
    return Export(model.state_dict(), config, facts, "splitattn")


def _detection(checkpoint: Dict[str, Any], source: Path, args: argparse.Namespace) -> Export:
    from ..tasks.detection.checkpoint import load_detection_model

    model, classes, options, mapping = load_detection_model(source, "push")
    heads, transform = model.roi_heads, model.transform
    config = _task_config(
        "object-detection",
        options["arch"],
        options,
        classes,
        background_index=0,
        contiguous_to_coco={str(k): v for k, v in mapping.items()},
        masks="mask" in options["arch"],
        thresholds={
            "score_thresh": heads.score_thresh,
            "nms_thresh": heads.nms_thresh,
            "detections_per_img": heads.detections_per_img,
        },
        preprocessing={
            "min_size": list(transform.min_size),
            "max_size": transform.max_size,
            "mean": list(transform.image_mean),
            "std": list(transform.image_std),
        },
    )
    preprocessing = (
        f"shorter side to {list(transform.min_size)} (longer side at most {transform.max_size}), "
        f"mean {list(transform.image_mean)}, std {list(transform.image_std)}; detections kept above score "
        f"{heads.score_thresh}, NMS IoU {heads.nms_thresh}, at most {heads.detections_per_img} per image."
    )
    title = f"{options['arch']} on {config['backbone']}, {len(classes) - 1} classes"
    return _task_export("detection", model, config, source, checkpoint, options, title, preprocessing)


def _segmentation(checkpoint: Dict[str, Any], source: Path, args: argparse.Namespace) -> Export:
    from ..config import input_channels
    from ..data.io import channel_stats
    from ..tasks.segmentation.checkpoint import load_segmentation_model

    model, classes, options = load_segmentation_model(source, "push")
    mean, std = channel_stats(input_channels(options))
    config = _task_config(
        "image-segmentation",
        options.get("head", "deeplabv3"),
        options,
        classes,
        output_stride=options.get("output_stride"),
        aux=options.get("aux"),
        preprocessing={
            "base_size": options.get("base_size"),
            "eval_crop_size": options.get("eval_crop_size"),
            "mean": list(mean),
            "std": list(std),
        },
    )
    preprocessing = (
        f"long side to {options.get('base_size')}, mean {list(mean)}, std {list(std)}"
        + (f", sliding windows of {options['eval_crop_size']}" if options.get("eval_crop_size") else "")
        + "; the class of each pixel is the arg-max."
    )
    title = f"{config['architecture']} on {config['backbone']}, {len(classes)} classes"
    return _task_export("segmentation", model, config, source, checkpoint, options, title, preprocessing)


BUILDERS: Dict[str, Callable[[Dict[str, Any], Path, argparse.Namespace], Export]] = {
    "classification": _classification,
    "detection": _detection,
    "segmentation": _segmentation,
}


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
    from ..engine.checkpoint import checkpoint_task, load_checkpoint_file

    if not args.repo and not args.local_dir:
        raise UsageError("give --repo OWNER/NAME (upload), --local-dir DIR (write the files), or both.")
    if args.repo and args.repo.count("/") != 1:
        raise UsageError(f"--repo {args.repo!r}: write it OWNER/NAME (your user or organisation name first).")
    if args.local_dir and args.local_dir.exists() and any(args.local_dir.iterdir()) and not args.exist_ok:
        raise UsageError(f"--local-dir {args.local_dir} is not empty; add --exist-ok to replace its files.")
    source = _checkpoint_path(args.run)
    checkpoint = load_checkpoint_file(source)
    task = checkpoint_task(checkpoint)
    if task is None:
        raise UsageError(f"{source} holds bare weights, not a run; push the last.pt of a `splitattn ... train` run.")
    export = BUILDERS[task](checkpoint, source, args)
    with tempfile.TemporaryDirectory(prefix="splitattn-push-") as tmp:
        folder = args.local_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        written = write_repo(export, folder, args.license)
        print(f"{task} run {source} -> {folder}: {', '.join(p.name for p in written)}; {export.facts.weights}")
        print(f"  sha256 {export.facts.weights_sha256} model.safetensors; loads in:")
        for line in export.facts.loaders:
            print(f"  - {line}")
        if args.repo:
            from ..weights.hub import upload_folder

            url = upload_folder(folder, args.repo, args.private, args.revision, args.commit_message)
            print(f"uploaded to {args.repo}" + (f" ({args.revision})" if args.revision else "") + f": {url}")
    return 0
