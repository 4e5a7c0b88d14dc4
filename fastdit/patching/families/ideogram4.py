"""Ideogram 4 (``Ideogram4Transformer2DModel``): single-stream attention over one packed sequence, in
``layers.N.attention``.

The pipeline packs ``[left padding ; prompt ; image]`` per sample and tags each token in ``indicator`` (the
image is ``OUTPUT_IMAGE_INDICATOR``, 2); everything before the image is dense text to fastdit. Its mask comes
from ``segment_ids``: prompt and image attend each other, padding tokens only each other. The engine reads that
as key padding (the image's row): prompt and image queries are exact, padding queries attend the prompt and
image instead, which no other token reads and the pipeline drops (it keeps the image positions only).
``Ideogram4AttnProcessor`` calls ``dispatch_attention_fn``: fastdit takes the call there (the generic path).
The grid is the image's rows and columns in ``position_ids`` (``(0, row, col)`` plus an offset, row-major).

The pipeline passes ``timestep = 1 - t / num_train_timesteps`` (0 at pure noise), which rises during a run
(``timestep_rises``). Its unconditional transformer runs the image alone.
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input

_self_attention = attention_in_blocks("attention", "layers")
_IMAGE = 2  # OUTPUT_IMAGE_INDICATOR in diffusers' transformer_ideogram4.py


def _grid(model, args, kwargs) -> TokenGrid | None:
    indicator, positions = (forward_input(model, args, kwargs, name) for name in ("indicator", "position_ids"))
    if not isinstance(indicator, torch.Tensor) or not isinstance(positions, torch.Tensor) or positions.ndim != 3:
        return None
    tokens = indicator.shape[1]
    image = int((indicator[0] == _IMAGE).sum())
    before = tokens - image
    if image == 0 or not bool((indicator[:, before:] == _IMAGE).all()) or bool((indicator[:, :before] == _IMAGE).any()):
        return None  # image tokens not all at the end, or at different places in the batch
    frame, row, col = positions[:, before:].unbind(-1)
    top, left = int(row.min()), int(col.min())
    rows, cols = int(row.max()) - top + 1, int(col.max()) - left + 1
    if rows * cols != image:
        return None
    r, c = torch.meshgrid(torch.arange(rows, device=row.device), torch.arange(cols, device=row.device), indexing="ij")
    if not (bool((frame == frame[:, :1]).all()) and torch.equal(row, (r.flatten() + top).expand_as(row))
            and torch.equal(col, (c.flatten() + left).expand_as(col))):
        return None  # not one row-major image
    return TokenGrid(1, rows, cols, text_tokens=before, text_position="before")


IDEOGRAM4 = Family(
    name="ideogram4",
    model_classes=("Ideogram4Transformer2DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # Ideogram4AttnProcessor dispatches: the generic path
    stock_processors=("Ideogram4AttnProcessor",),
    timestep_rises=True,
    grid_inputs=("indicator", "position_ids"),
    text_position="before",
    models="Ideogram 4",
    sparsified="`layers.N.attention` (joint, prompt first; its left padding kept apart by the segment mask)",
    grid_rule="image rows and columns of `position_ids` (where `indicator` is the image); text: the tokens before",
)
