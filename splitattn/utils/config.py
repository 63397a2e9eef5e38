"""Config files (YAML or JSON) whose keys are command-line options.

A config file overrides the built-in defaults and the command line overrides the file,
so every key in a config can be changed with its ``--flag``. Unknown keys are an error.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Dict, Optional


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
        raise ValueError(f"config file {path!r} must hold a mapping of option: value, got {type(data).__name__}.")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def merge_options(
    defaults: Dict[str, Any], explicit: Dict[str, Any], config_path: Optional[str], choices: Dict[str, Any]
) -> Dict[str, Any]:
    """Options in order of precedence: explicit flags, then the config file, then ``defaults``.

    ``explicit`` holds only the flags given on the command line (a parser built with
    ``argument_default=argparse.SUPPRESS``). A config key that is no option, or a value
    outside an option's ``choices``, is one clear error.
    """
    merged = dict(defaults)
    if config_path:
        values = read_config_file(config_path)
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(defaults), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"config {config_path!r} has unknown key(s): {', '.join(hints)}. "
                f"Valid keys are this command's long options with underscores: {', '.join(sorted(defaults))}."
            )
        for key, value in values.items():
            allowed = choices.get(key)
            if allowed is not None and value not in allowed:
                raise ValueError(f"config {config_path!r}: {key} must be one of {list(allowed)}, got {value!r}.")
        merged.update(values)
    merged.update(explicit)
    return merged
