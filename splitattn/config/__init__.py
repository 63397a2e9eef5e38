"""The training configurations: one typed dataclass per task, from which everything else derives.

- ``schemas``: ``ClassifyConfig``, ``DetectConfig``, ``SegmentConfig`` (their fields are the options, each
  with its one default, help and choices) and their ``validate()``;
- ``values``: mappings (a config file, a Python dict, a checkpoint's ``args``) converted to those types;
- ``arguments``: the ``argparse`` flags, the ``--config`` file and ``resolve`` (defaults < file < flags).

Inside splitattn, import the defining module (``splitattn.config.schemas`` ...); this package re-exports the
public names for users.
"""

from ..errors import ConfigError
from .arguments import (
    add_arguments,
    add_task_commands,
    add_train_command,
    add_weights_arguments,
    read_config_file,
    resolve,
)
from .schemas import (
    AMP,
    BOX_HEADS,
    DETECTION_ARCHS,
    DETECTION_DATASETS,
    FAST_BACKENDS,
    NORMS,
    SEGMENTATION_DATASETS,
    SEGMENTATION_HEADS,
    SEGMENTATION_MULTI_SCALES,
    ClassifyConfig,
    DetectConfig,
    RunConfig,
    SegmentConfig,
    option,
)
from .values import as_config, from_checkpoint_args, from_dict, parse_key_values

__all__ = [
    "AMP",
    "BOX_HEADS",
    "DETECTION_ARCHS",
    "DETECTION_DATASETS",
    "FAST_BACKENDS",
    "NORMS",
    "SEGMENTATION_DATASETS",
    "SEGMENTATION_HEADS",
    "SEGMENTATION_MULTI_SCALES",
    "ClassifyConfig",
    "ConfigError",
    "DetectConfig",
    "RunConfig",
    "SegmentConfig",
    "add_arguments",
    "add_task_commands",
    "add_train_command",
    "add_weights_arguments",
    "as_config",
    "from_checkpoint_args",
    "from_dict",
    "option",
    "parse_key_values",
    "read_config_file",
    "resolve",
]
