"""``python -m adacal``: the same as the ``adacal`` command."""

from __future__ import annotations

import sys

from adacal.cli import main

if __name__ == "__main__":
    sys.exit(main())
