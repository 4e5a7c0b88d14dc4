"""Latte (``LatteTransformer3DModel``): spatial attention within each frame, temporal attention across frames.

Each layer is a spatial ``BasicTransformerBlock`` (``transformer_blocks.N``: self-attention ``attn1`` over
the ``h × w`` tokens of one frame, the frames folded into the batch, then cross-attention ``attn2`` to the
prompt) and a temporal one (``temporal_transformer_blocks.N``: ``attn1`` over the frames of one token
position). fastdit sparsifies the spatial ``attn1`` only, each call on the one-frame grid ``(1, h, w)``;
``attn2`` and the temporal blocks (a few frames per sequence, nothing worth skipping) keep the stock
processor. The grid the pre-hook records is the whole latent ``hidden_states [B, C, F, H, W]`` ÷ ``(1, p, p)``;
there is no text in the self-attention and no RoPE. Time-decaying methods (radial) keep a frame whole: they
have only frame distance 0 to work with.
"""

from __future__ import annotations

from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.attn_processor import AttnSparseProcessor
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid


class LatteSparseProcessor(AttnSparseProcessor):
    """Replaces ``AttnProcessor2_0`` on the spatial ``transformer_blocks.N.attn1``: one frame per sequence."""

    def call_grid(self, tokens: int) -> TokenGrid | None:
        """One frame of the recorded grid (``None`` when ``tokens`` is not its ``h × w``: then the engine
        says the grid mismatches and runs dense)."""
        grid = self.grid
        return None if grid is None or grid.h * grid.w != tokens else TokenGrid(1, grid.h, grid.w)


def _grid(model: Module, args: tuple, kwargs: dict) -> TokenGrid | None:
    p = model.config.patch_size
    return latent_grid(forward_input(model, args, kwargs, "hidden_states"), (1, p, p))


LATTE = Family(
    name="latte",
    model_classes=("LatteTransformer3DModel",),
    self_attention=attention_in_blocks("attn1", "transformer_blocks"),
    grid=_grid,
    processor=LatteSparseProcessor,
    stock_processors=("AttnProcessor2_0",),
    models="Latte",
    sparsified="spatial `transformer_blocks.N.attn1`, per frame on a `(1, h, w)` grid",
    untouched="`attn2`; temporal `temporal_transformer_blocks.N.attn1`",
    grid_rule="`hidden_states [B,C,F,H,W]` ÷ patch; each frame `1 × H/p × W/p`",
)
