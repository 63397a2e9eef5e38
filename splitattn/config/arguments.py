"""The command-line and config-file layer of the training configs.

``add_arguments`` turns each field of a config dataclass into one ``argparse`` flag (its default shown
once, in the help); ``read_config_file`` reads a YAML/JSON ``--config`` file; ``resolve`` merges the
field defaults < the file < the flags typed on the command line into a validated config. The other
helpers add the command groups and the flags shared by the commands that run a trained model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Dict, Tuple, Type, TypeVar, Union

from ..errors import ConfigError
from .schemas import RunConfig, field_default
from .values import checked, flag

C = TypeVar("C", bound=RunConfig)


def read_config_file(path: str) -> Dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml`` or ``.json`` file; dashes in keys become underscores.

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: the file holds something other than a mapping.
    """
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


def add_arguments(parser: argparse.ArgumentParser, cls: Type[RunConfig]) -> None:
    """One flag per field of ``cls``, each default shown once in the help. Build ``parser`` with
    ``argument_default=argparse.SUPPRESS`` so that only flags typed on the command line reach ``resolve``."""
    types = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint, keywords = types[item.name], dict(item.metadata["argparse"])
        default = field_default(cls, item.name)
        help_text = item.metadata["help"]
        if default not in (None, {}, []) and "default" not in help_text:
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            help_text = f"{help_text} (default: {shown})".strip()
        keywords["help"] = help_text or None
        is_union = typing.get_origin(hint) is Union
        base = [a for a in typing.get_args(hint) if a is not type(None)] if is_union else [hint]
        if hint is bool:
            keywords["action"] = argparse.BooleanOptionalAction
        elif "nargs" in keywords and keywords.get("const") is None:
            element = typing.get_args(base[0])[0] if typing.get_args(base[0]) else str
            keywords.setdefault("type", str if typing.get_origin(base[0]) in (dict, typing.Dict) else element)
        elif keywords.get("const") is None:
            keywords.setdefault("type", base[0] if base[0] in (int, float, str) else str)
        parser.add_argument(*item.metadata["flags"], flag(item.name), dest=item.name, **keywords)


def add_weights_arguments(
    parser: argparse.ArgumentParser, weights_help: str, weights_required: bool = True, exported: bool = False
) -> None:
    """The flags every command that runs a trained model shares: ``--weights``, ``--device`` and ``--debug``; with
    ``exported``, ``--exported FILE`` (aliases ``--onnx``, ``--openvino``, ``--torchscript``) as the other source
    of the model (``model_source`` checks that exactly one is given)."""
    parser.add_argument("--weights", required=weights_required and not exported, help=weights_help)
    if exported:
        parser.add_argument(
            "--exported",
            "--onnx",
            "--openvino",
            "--torchscript",
            dest="exported",
            metavar="FILE",
            help="run a file of `splitattn export` instead of --weights (ONNX, OpenVINO .xml or TorchScript, told "
            "by its content), on the CPU, with the class names, preprocessing and run options stored in it",
        )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def model_source(args: argparse.Namespace, eager_only: Tuple[str, ...] = ()) -> str:
    """``"exported"`` or ``"weights"``: which of ``--exported`` and ``--weights`` names the model.

    Raises:
        ConfigError: both or neither given; with ``--exported``, ``--device cuda`` or one of the flags
            ``eager_only`` names (attribute names: ``("model", "ema")``) that only apply to a checkpoint.
    """
    if bool(args.exported) == bool(args.weights):
        raise ConfigError(
            "give --weights (a checkpoint) or --exported FILE (a file of `splitattn export`)"
            + (", not both." if args.weights else ".")
        )
    if not args.exported:
        return "weights"
    given = [flag(name) for name in eager_only if getattr(args, name, None)]
    if given or args.device == "cuda":
        raise ConfigError(
            "--exported runs the exported file on the CPU with its stored model and preprocessing; drop "
            + ", ".join(given + (["--device cuda"] if args.device == "cuda" else []))
            + "."
        )
    return "exported"


def evaluation_folder(args: argparse.Namespace, name: str) -> Path:
    """Where ``evaluate`` writes: ``--output``, else ``name`` (``eval-val`` ...) beside the checkpoint, or
    ``<file stem>-<name>`` beside an exported file (so the evaluations of two files side by side, such as a model
    and its int8 copy, never overwrite each other)."""
    if args.output:
        return Path(args.output)
    if args.exported:
        exported = Path(args.exported).resolve()
        return exported.parent / f"{exported.stem}-{name}"
    return Path(args.weights).resolve().parent / name


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
    """``(validated config, the values given explicitly)``: defaults < the ``--config`` file < the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = checked(cls, {key: value for key, value in vars(args).items() if key in names}, "the command line")
    values: Dict[str, Any] = {}
    if given.get("config"):
        values = checked(cls, read_config_file(given["config"]), f"config {given['config']!r}")
    values.update(given)
    config = cls(**values)
    config.validate()
    return config, values
