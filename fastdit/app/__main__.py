"""``python -m fastdit.app``: the same as ``fastdit app``."""

import sys

from fastdit.cli import main

sys.exit(main(["app", *sys.argv[1:]]))
