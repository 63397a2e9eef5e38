"""Values into typed configs: a mapping (a YAML/JSON file, the command line, a Python dict, a checkpoint's
``args``) becomes an instance of a config dataclass, each value converted to its field's type.

An unknown key, a value of the wrong type or outside the field's choices is one ``ConfigError`` naming the
source, the key, the value and the fix (``checked``). ``from_dict`` and ``as_config`` also ``validate``
(the checks of a run about to start); ``from_checkpoint_args`` does not (a run's stored options describe
a model to rebuild, maybe on another machine) and drops the keys of older versions with a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
import warnings
from typing import Any, Callable, Dict, List, Mapping, Tuple, Type, TypeVar, Union

from ..errors import CheckpointError, ConfigError
from .schemas import RunConfig

C = TypeVar("C", bound=RunConfig)
# Options renamed since checkpoints stored them: old key -> (new key, the old value as a new one). Detection's
# ``trainable_layers`` (stages trained from the last, 5 = all) became ``freeze_stages`` (stem + K stages frozen).
RENAMED_OPTIONS: Dict[str, Tuple[str, Callable[[Any], Any]]] = {
    "trainable_layers": ("freeze_stages", lambda trained: None if trained is None or trained >= 5 else 4 - trained),
}


def flag(name: str) -> str:
    """The command-line flag of the field ``name`` (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


def parse_key_values(items: Any, name: str = "model_kwargs") -> Dict[str, Any]:
    """``["a=1", "b=x"]`` (command line) or a mapping (config file) -> dict with YAML-typed values."""
    if isinstance(items, Mapping):
        return dict(items)
    import yaml

    parsed: Dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag(name)} takes KEY=VALUE pairs, got {item!r}.")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def _type_name(hint: Any) -> str:
    """``int`` for ``int`` and ``Optional[int]``, ``bool or str`` for ``Union[bool, str, None]``, ``List[int]`` ..."""
    if typing.get_origin(hint) is Union:
        return " or ".join(_type_name(arm) for arm in typing.get_args(hint) if arm is not type(None))
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


def checked(cls: Type[RunConfig], values: Mapping[str, Any], source: str) -> Dict[str, Any]:
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
    types, result = typing.get_type_hints(cls), {}
    for key, value in values.items():
        result[key] = _check(key, value, types[key], source)
        choices = fields[key].metadata["argparse"].get("choices")
        if choices is not None and result[key] is not None and result[key] not in choices:
            raise ConfigError(f"{source}: {key} must be one of {list(choices)}, got {value!r}.")
    return result


def from_dict(cls: Type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """A validated ``cls`` from ``values`` (defaults for missing keys); see ``checked`` and ``validate``."""
    config = cls(**checked(cls, values, source))
    config.validate()
    return config


def as_config(cls: Type[C], config: Union[C, Mapping[str, Any]]) -> C:
    """``config`` (a ``cls`` instance, or a mapping of its fields checked by ``from_dict``), validated."""
    if not isinstance(config, cls):
        return from_dict(cls, config)
    config.validate()
    return config


def from_checkpoint_args(cls: Type[C], args: Mapping[str, Any], source: str) -> C:
    """The config of a trained run from its checkpoint's ``args`` (``dataclasses.asdict`` of its config).

    Checkpoints of older versions are read by one rule: renamed keys (``RENAMED_OPTIONS``) are converted, keys
    ``cls`` no longer has are dropped (with a ``UserWarning`` naming them), keys it did not have yet take today's
    defaults. The run is not
    validated (it describes a model to rebuild, maybe on another machine), and a run that used
    SyncBatchNorm gets plain BatchNorm (the same parameters; evaluation needs no process group).

    Raises:
        CheckpointError: a stored value that does not fit its field (named with ``source``).
    """
    known = {f.name for f in dataclasses.fields(cls)}
    args = dict(args)
    for old, (new, convert) in RENAMED_OPTIONS.items():
        if old in args and new in known and new not in args:
            args[new] = convert(args.pop(old))
    dropped = sorted(set(args) - known)
    if dropped:
        warnings.warn(
            f"{source} was written with options this version does not have, ignored: {', '.join(dropped)}.",
            stacklevel=3,
        )
    try:
        config = cls(**checked(cls, {key: value for key, value in args.items() if key in known}, source))
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    return dataclasses.replace(config, norm="batchnorm") if config.norm == "syncbn" else config
