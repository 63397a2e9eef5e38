"""``python -m splitattn`` runs the same command line as ``splitattn``."""

import sys

from .cli import main

sys.exit(main())
