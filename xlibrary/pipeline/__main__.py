"""``python -m xlibrary.pipeline``: the same as the ``xlibrary-pipeline`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
