"""The model card (``README.md``) of a run pushed to the Hugging Face hub, written from what the run recorded.

The metadata block is ``huggingface_hub``'s ``ModelCardData`` (license, library, pipeline tag, tags); the
text gives the metrics (overall and per class where the run wrote them), how to load the model, the
evaluation preprocessing, the training command and options, the data, the training time and the sha256 of
the source checkpoint and of the pushed weights. Nothing is invented: a fact the run did not record is left
out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

DEFAULT_LICENSE = "apache-2.0"
PIPELINE_TAGS = {
    "classification": "image-classification",
    "detection": "object-detection",
    "segmentation": "image-segmentation",
}


@dataclass
class RunFacts:
    """What a run recorded, as the card shows it.

    Attributes:
        task: ``classification``, ``detection`` or ``segmentation``.
        title: one line naming the model, e.g. ``resnest14 (timm: resnest14d) fine-tuned on 3 classes``.
        label_names: class names by index.
        metrics: the evaluated metrics of the pushed weights (name -> value).
        metrics_source: where they were read, e.g. ``log.jsonl, epoch 1, EMA weights``.
        per_class: rows of a per-class table the run wrote (column -> value), with ``per_class_source``.
        command: the command line that trained the run.
        options: the run's options.
        data: a summary of the data (name -> value).
        wall_time_s: training time in seconds.
        weights: which weights were pushed (``EMA weights`` ...).
        source_file: the checkpoint file the weights come from; ``source_sha256``: its sha256.
        weights_sha256: the sha256 of ``model.safetensors``.
        preprocessing: the evaluation preprocessing in words.
        loaders: which libraries load the repository, one sentence each (markdown allowed).
        usage: ``(language, code)`` snippets.
    """

    task: str
    title: str
    label_names: List[str]
    metrics: Dict[str, float]
    metrics_source: str
    command: Optional[str]
    options: Dict[str, Any]
    data: Dict[str, Any]
    wall_time_s: Optional[float]
    weights: str
    source_file: str
    source_sha256: str
    weights_sha256: str
    preprocessing: str
    loaders: List[str]
    usage: List[Tuple[str, str]] = field(default_factory=list)
    per_class: List[Dict[str, Any]] = field(default_factory=list)
    per_class_source: Optional[str] = None


def classifier_loaders(
    repo: str, model: str, timm_name: Optional[str], in_chans: int, not_timm: Optional[str] = None
) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(which libraries load a classifier's repository, one line each; code snippets) for the card.

    Args:
        repo: ``OWNER/NAME``.
        model: our model name; ``timm_name``: timm's, if any.
        in_chans: input channels (transformers' pipeline feeds RGB only).
        not_timm: why timm cannot build the network, or ``None`` when it can.
    """
    loaders = [f'splitattn: `splitattn.create_model("hf-hub:{repo}")` (a revision: `hf-hub:{repo}@REV`).']
    usage = [
        (
            "python",
            f'import splitattn\n\nmodel = splitattn.create_model("hf-hub:{repo}").eval()\n'
            "transform = splitattn.data.create_eval_transform(model)  # the preprocessing below\n"
            "names = model.label_names",
        )
    ]
    if not_timm:
        return loaders + [f"timm and transformers: not usable ({model}: {not_timm})."], usage
    loaders.append(f'timm: `timm.create_model("hf-hub:{repo}", pretrained=True)` (architecture {timm_name}).')
    loaders.append(
        f'transformers (4.53 or later): `pipeline("image-classification", model="{repo}")` (its timm wrapper).'
        if in_chans == 3
        else f"transformers: not usable: its image-classification pipeline feeds RGB, the model takes {in_chans} "
        "channels."
    )
    usage.append(
        (
            "python",
            f'import timm\n\nmodel = timm.create_model("hf-hub:{repo}", pretrained=True).eval()\n'
            "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
        )
    )
    return loaders, usage


def task_loaders(repo: str, kind: str, config_class: str, rebuild: str) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(which libraries load a detection or segmentation repository, one line each; a code snippet) for the card.

    Args:
        repo: ``OWNER/NAME``.
        kind: torchvision's word for such models (``detectors`` ...).
        config_class: the run's config class, as ``splitattn.config`` exports it (``DetectConfig`` ...).
        rebuild: the dotted name of the function building the model from that config and a class count.
    """
    module, _, function = rebuild.rpartition(".")
    loaders = [
        f"splitattn only: `{function}` ({module}) of the run's options (`train_options`, read with "
        f"`from_checkpoint_args({config_class}, ...)`) and `num_classes`, then `model.safetensors` loaded strictly.",
        f"No other library builds it: torchvision's {kind} have no ResNeSt backbone, and timm and transformers "
        "load classifiers only.",
    ]
    code = (
        "import json\n\nimport safetensors.torch\nfrom huggingface_hub import hf_hub_download\n\n"
        f"from splitattn.config import {config_class}, from_checkpoint_args\nfrom {module} import {function}\n\n"
        f'config = json.loads(open(hf_hub_download("{repo}", "config.json"), encoding="utf-8").read())\n'
        f'options = from_checkpoint_args({config_class}, config["train_options"], "config.json")\n'
        f'model = {function}(options, config["num_classes"]).eval()\n'
        f'model.load_state_dict(safetensors.torch.load_file(hf_hub_download("{repo}", "model.safetensors")))'
    )
    return loaders, [("python", code)]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """A markdown table of ``rows`` (dicts), with ``columns`` (default: the first row's keys)."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def render_card(facts: RunFacts, license: str = DEFAULT_LICENSE, library_name: str = "timm") -> str:
    """The ``README.md`` text for ``facts``.

    Args:
        facts: the run's facts.
        license: the hub's license identifier (``apache-2.0``, ``mit``, ``cc-by-nc-4.0``, ``other`` ...).
        library_name: the library the hub offers for loading (``timm`` where timm rebuilds the network).

    Returns:
        The card: a YAML metadata block then markdown.
    """
    from huggingface_hub import ModelCard, ModelCardData

    meta = ModelCardData(
        license=license,
        library_name=library_name,
        pipeline_tag=PIPELINE_TAGS[facts.task],
        tags=[PIPELINE_TAGS[facts.task], "resnest", "splitattn"] + (["timm"] if library_name == "timm" else []),
    )
    parts = [
        f"# {facts.title}",
        "A ResNeSt (Split-Attention Networks, Zhang et al. 2020, arXiv:2004.08955) trained with splitattn.",
    ]
    if facts.metrics:
        rows = [{"metric": k, "value": v} for k, v in facts.metrics.items()]
        parts += ["## Metrics", f"Measured by the run ({facts.metrics_source}).", markdown_table(rows)]
    if facts.per_class:
        parts += ["### Per class", f"From `{facts.per_class_source}`.", markdown_table(facts.per_class)]
    parts += ["## Use it"] + [f"```{language}\n{code.strip()}\n```" for language, code in facts.usage]
    parts += ["Loads in:\n" + "\n".join(f"- {line}" for line in facts.loaders)]
    parts += ["## Evaluation preprocessing", facts.preprocessing]
    classes = ", ".join(f"`{name}`" for name in facts.label_names)
    parts += ["## Data", markdown_table([{"": k, "value": v} for k, v in facts.data.items()]), f"Classes: {classes}"]
    parts += ["## Training"]
    if facts.wall_time_s is not None:
        parts += [f"Training time: {_duration(facts.wall_time_s)} ({facts.wall_time_s:.0f} s)."]
    if facts.command:
        parts += ["Command:", f"```bash\n{facts.command}\n```"]
    options = [{"option": k, "value": json.dumps(v)} for k, v in sorted(facts.options.items())]
    parts += ["<details><summary>All options</summary>\n", markdown_table(options), "\n</details>"]
    weights = [
        {"file": facts.source_file, "sha256": facts.source_sha256, "what": "the run's checkpoint"},
        {"file": "model.safetensors", "sha256": facts.weights_sha256, "what": facts.weights},
    ]
    parts += ["## Weights", markdown_table(weights)]
    return str(ModelCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n\n".join(p for p in parts if p) + "\n"))
