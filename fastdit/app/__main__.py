"""``python -m fastdit.app``: the same as ``fastdit app``."""

import sys

from ..cli import main

sys.exit(main(["app", *sys.argv[1:]]))
