"""The layout picture: written atomically, like every other file fastdit writes."""

from __future__ import annotations

import subprocess
import sys

SAVE_PICTURE = """
import sys
import fastdit
from fastdit.runs.pictures import save_layout_image
layout = fastdit.build_layout("radial", fastdit.TokenGrid(4, 8, 8, text_tokens=16), block_size=16)
try:
    save_layout_image(layout, sys.argv[1])
except OSError as err:
    print(type(err).__name__, err)
"""


def test_a_failed_write_keeps_the_previous_picture_and_leaves_no_file(tmp_path, file_size_limit):
    picture = tmp_path / "layout.png"
    picture.write_bytes(b"the previous picture")
    result = subprocess.run([sys.executable, "-c", SAVE_PICTURE, str(picture)], preexec_fn=file_size_limit(100),
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("WriteError can't write") and "layout.png" in result.stdout, result.stderr
    assert list(tmp_path.iterdir()) == [picture] and picture.read_bytes() == b"the previous picture"
