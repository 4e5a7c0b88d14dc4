"""One picture function for every layout: a block-level heat map with the text blocks marked.

Used by the docs, the web demo and test artifacts. It draws at block granularity (one pixel per block pair,
upscaled), so it is cheap for any sequence length.
"""

from __future__ import annotations

import numpy as np

from fastdit.layout.block import BlockLayout
from fastdit.runs.media import write_image

# colours: kept level 0 .. 3+, skipped, text-block tint
_LEVEL_COLOURS = np.array([[31, 119, 180], [92, 158, 205], [152, 196, 228], [205, 226, 242]], dtype=np.uint8)
_SKIPPED = np.array([245, 245, 245], dtype=np.uint8)
_TEXT = np.array([255, 127, 14], dtype=np.uint8)

# what each colour of layout_image means, for a legend beside the picture
LEGEND: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("computed block", tuple(_LEVEL_COLOURS[0].tolist())),
    ("computed at a coarser pyramid level (lighter: coarser)", tuple(_LEVEL_COLOURS[2].tolist())),
    ("skipped block", tuple(_SKIPPED.tolist())),
    ("text rows and columns (tinted orange)", tuple(_TEXT.tolist())),
)
AXES = "rows: query blocks; columns: key blocks"


def layout_image(layout: BlockLayout, head: int = 0, max_size: int = 512) -> np.ndarray:
    """``[H, W, 3]`` uint8 picture of one head's layout: rows are query blocks, columns key blocks.

    Kept blocks are blue (lighter for coarser pyramid levels), skipped ones near-white, and text
    rows/columns carry an orange tint along the edges so they are easy to tell from video blocks.
    """
    levels = layout.to_level_map()[min(head, layout.num_heads - 1)].numpy().astype(np.int16)
    img = np.where(levels[..., None] >= 0, _LEVEL_COLOURS[np.clip(levels, 0, 3)], _SKIPPED).astype(np.uint8)
    order = layout.order
    if order is not None and order.text_blocks:
        nv = order.video_blocks
        img[nv:, :] = (0.5 * img[nv:, :] + 0.5 * _TEXT).astype(np.uint8)
        img[:, nv:] = (0.5 * img[:, nv:] + 0.5 * _TEXT).astype(np.uint8)
    scale = max(1, max_size // max(img.shape[:2]))
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def save_layout_image(layout: BlockLayout, path: str, head: int = 0, max_size: int = 512) -> str:
    """Write :func:`layout_image` as a PNG, atomically: a failed write leaves the previous file, not half a picture.

    Returns:
        ``path``.

    Raises:
        WriteError: the picture could not be written (a full disk, for one).
    """
    write_image(layout_image(layout, head, max_size), path)
    return path
