"""How the commands that take a run's checkpoint are named in the messages of the three tasks.

The engine's checkpoint checks (``engine.checkpoint.require_task``) know no command line: the tasks hand
them these. Each task's own command group is its checkpoint module's ``COMMAND``.
"""

from __future__ import annotations

import os
from typing import Callable, Union

PathLike = Union[str, os.PathLike]


def weights_usage(action: str, weights: PathLike) -> Callable[[str], str]:
    """``command group -> the command line running ``action`` on ``weights`` with that group``."""
    return lambda group: f"`splitattn {group} {action} --weights {weights}`"


def bare_weights_hint(action: str, weights: PathLike) -> str:
    """What to do with a classifier's bare weights given to a detection or segmentation ``action``."""
    return f"for a classifier's weights use `splitattn classify {action} --model NAME --weights {weights}`."
