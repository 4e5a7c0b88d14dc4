"""Output files: checked before a run, written atomically, labelled side by side."""

from __future__ import annotations

import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from fastdit.runs.media import LABEL_HEIGHT, check_writable, side_by_side, to_uint8, write_image, write_video
from fastdit.runtime.files import WriteError, atomic_path

# a video of random frames (which hardly compress) written to the folder argv[1]; prints the error, if any
WRITE_VIDEO = """
import sys
import numpy as np
from fastdit.runs.media import write_video
try:
    write_video(np.random.default_rng(0).integers(0, 256, (30, 128, 128, 3), dtype=np.uint8), sys.argv[1] + "/v.mp4", 8)
except OSError as err:
    print(type(err).__name__, err)
"""


def test_to_uint8_rounds_and_clips():
    assert to_uint8(np.array([-0.5, 0.0, 0.5 / 255, 0.499, 1.0, 2.0])).tolist() == [0, 0, 1, 127, 255, 255]


def test_check_writable(tmp_path):
    (tmp_path / "file").write_text("x")
    assert check_writable(tmp_path / "new" / "deeper" / "out.mp4") == tmp_path / "new" / "deeper" / "out.mp4"
    assert not (tmp_path / "new").exists()  # folders are made only when writing
    with pytest.raises(ValueError, match="is not a folder"):
        check_writable(tmp_path / "file" / "out.mp4")
    with pytest.raises(ValueError, match="is a folder"):
        check_writable(tmp_path)
    with pytest.raises(ValueError, match="is a file"):
        check_writable(tmp_path / "file", directory=True)
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]  # the probe file is gone


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".mp4"
            tmp.write_bytes(b"half a video")
            raise RuntimeError("encoder crashed")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_fails_the_video_and_leaves_no_file(full_disk):
    with pytest.raises(WriteError, match="v.mp4': ffmpeg: .*No space left on device"):
        write_video(np.random.default_rng(0).integers(0, 256, (30, 128, 128, 3), dtype=np.uint8),
                    full_disk / "v.mp4", 8)
    assert list(full_disk.iterdir()) == []


def test_a_file_size_limit_fails_the_video_and_leaves_no_file(tmp_path, file_size_limit):
    result = subprocess.run([sys.executable, "-c", WRITE_VIDEO, str(tmp_path)], preexec_fn=file_size_limit(16384),
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("WriteError can't write") and "SIGXFSZ" in result.stdout, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_video_and_image_round_trip(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 32, 48, 3)).astype(np.uint8)
    back = iio.imread(write_video(frames, tmp_path / "v.mp4", fps=8))
    assert back.shape == frames.shape
    assert np.array_equal(iio.imread(write_image(frames[0], tmp_path / "i.png")), frames[0])  # png is lossless


def test_side_by_side_labels_every_panel():
    a = np.zeros((3, 32, 64, 3), np.uint8)
    b = np.full((3, 32, 48, 3), 128, np.uint8)
    out = side_by_side([(("dense", "1.0x"), a), (("radial", "2.0x"), b)])
    assert out.shape == (3, 32 + LABEL_HEIGHT, 112, 3)
    assert np.array_equal(out[:, LABEL_HEIGHT:, :64], a) and np.array_equal(out[:, LABEL_HEIGHT:, 64:], b)
    for left, right in ((0, 64), (64, 112)):  # white text in each strip
        assert out[0, :LABEL_HEIGHT, left:right].max() > 200
    with pytest.raises(ValueError, match="share frame count and height"):
        side_by_side([(("a", ""), a), (("b", ""), a[:2])])
