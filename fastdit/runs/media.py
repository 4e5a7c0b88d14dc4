"""Writing what the CLI and the app produce: mp4 videos, png images, labelled side-by-side panels, reports.

Every file is written atomically (a temporary file in the target folder, then a rename), so a failed or
interrupted run never leaves a partial output behind, and output paths are checked before any model is
loaded, so a typo costs nothing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from fastdit.runtime.files import WriteError, atomic_path

__all__ = ["to_uint8", "check_writable", "write_video", "write_image",
           "label_strip", "side_by_side", "film_strip", "VIDEO_SUFFIXES", "IMAGE_SUFFIXES", "LABEL_HEIGHT"]

VIDEO_SUFFIXES = (".mp4",)
IMAGE_SUFFIXES = (".png",)
LABEL_HEIGHT = 32  # a multiple of 16, so ffmpeg never rescales a panel of valid Wan sizes


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Pipeline output in [0, 1] (``output_type="np"``) as rounded uint8, the pixels a viewer sees."""
    return (np.clip(np.asarray(frames, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def check_writable(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """Fail early, with a sentence, when ``path`` can't be written (file, or folder with ``directory``).

    Permissions are probed by creating (and removing) a temporary file in the nearest existing folder, since
    ``os.access`` says yes to root even on read-only mounts. Missing folders are created only when the
    output is written.
    """
    path = Path(path).expanduser()
    if path.exists() and path.is_dir() != directory:
        kind = "a folder" if path.is_dir() else "a file"
        raise ValueError(f"output path {str(path)!r} is {kind}; expected {'a folder' if directory else 'a file'}")
    base = path if directory and path.is_dir() else _existing_ancestor(path)
    if not base.is_dir():
        raise ValueError(f"can't write {str(path)!r}: {str(base)!r} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=base, prefix=".fastdit-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"can't write {str(path)!r}: folder {str(base)!r} is not writable ({err.strerror})") \
            from None
    return path


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int) -> Path:
    """``frames [F, H, W, 3]`` uint8 as an H.264 mp4, encoded as diffusers' ``export_to_video`` encodes it.

    ffmpeg (imageio-ffmpeg's) runs here rather than through imageio, whose writer ignores ffmpeg's exit status:
    a full disk there gives a truncated mp4 and no error. An interrupt stops ffmpeg before the temporary file
    is removed, so it can't write on.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        WriteError: ffmpeg could not write the video (nothing is left under ``path``).
    """
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    with atomic_path(path) as tmp:
        command = _ffmpeg_command(frames.shape, fps, tmp)
        process = None
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, start_new_session=True)  # a Ctrl-C is ours to handle
            _, errors = process.communicate(memoryview(frames.reshape(-1)))
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        if process.returncode != 0:
            raise WriteError(path, f"ffmpeg: {_reason(process.returncode, errors)}")
    return Path(path)


def _ffmpeg_command(shape: tuple[int, ...], fps: int, path: Path) -> list[str]:
    """imageio-ffmpeg's command for diffusers' settings (quality 5: CRF 25; sizes padded up to the 16-pixel
    macroblock by scaling), so videos are the same as ``export_to_video``'s."""
    import imageio_ffmpeg

    _, height, width, _ = shape
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s",
               f"{width}x{height}", "-pix_fmt", "rgb24", "-r", str(Fraction(fps).limit_denominator()), "-i", "-",
               "-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", "25"]
    padded = (-(-width // 16) * 16, -(-height // 16) * 16)
    if padded != (width, height):
        command += ["-vf", "scale={}:{}".format(*padded)]
    return command + ["-v", "error", str(path)]


def _reason(status: int, stderr: bytes) -> str:
    """Why ffmpeg failed: its last message without the ``[muxer @ 0x...]`` prefix, or the signal that stopped
    it (a file-size limit, ``ulimit -f``, stops it with SIGXFSZ before it says anything)."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    if lines:
        return re.sub(r"^\[[^\]]*\]\s*", "", lines[-1])
    if status < 0:
        return f"stopped by {signal.Signals(-status).name} ({signal.strsignal(-status)})"
    return f"exit status {status}"


def write_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """``image [H, W, 3]`` uint8 as a png."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(path)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()  # older Pillow: the built-in bitmap font


def label_strip(width: int, lines: Sequence[str], height: int = LABEL_HEIGHT) -> np.ndarray:
    """A black ``[height, width, 3]`` strip with up to two lines of white text (clipped to the width)."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(strip)
    font = _font(height // 2 - 4)
    for i, line in enumerate(lines[:2]):
        draw.text((3, 2 + i * (height // 2)), line, fill=(255, 255, 255), font=font)
    return np.asarray(strip)


def side_by_side(panels: Sequence[tuple[Sequence[str], np.ndarray]]) -> np.ndarray:
    """Videos ``[F, H, W, 3]`` uint8 next to each other, each under its label strip: ``[F, H + 32, ΣW, 3]``."""
    if not panels:
        raise ValueError("side_by_side needs at least one video")
    shapes = {video.shape[:2] for _, video in panels}
    if len(shapes) != 1:
        raise ValueError(f"videos must share frame count and height, got {sorted(shapes)}")
    columns = []
    for lines, video in panels:
        strip = label_strip(video.shape[2], lines)
        columns.append(np.concatenate([np.broadcast_to(strip, (video.shape[0], *strip.shape)), video], axis=1))
    return np.concatenate(columns, axis=2)


def film_strip(panels: Sequence[tuple[Sequence[str], np.ndarray]], count: int = 6) -> np.ndarray:
    """One row per video: its label strip over ``count`` evenly spaced frames side by side, rows stacked.

    A still of a few videos that a README or an issue can show (an mp4 does not render there)."""
    if not panels:
        raise ValueError("film_strip needs at least one video")
    rows = []
    for lines, video in panels:
        picks = np.linspace(0, video.shape[0] - 1, min(count, video.shape[0])).round().astype(int)
        frames = np.concatenate(list(video[picks]), axis=1)
        rows.append(np.concatenate([label_strip(frames.shape[1], lines), frames], axis=0))
    widths = {row.shape[1] for row in rows}
    if len(widths) != 1:
        raise ValueError(f"videos must share their frame size, got widths {sorted(widths)}")
    return np.concatenate(rows, axis=0)
