"""Kandinsky 5 (``Kandinsky5Transformer3DModel``) and Kandinsky 6 (``Kandinsky6Transformer3DModel``): video DiTs
whose text goes through text blocks of its own and enters the video by cross-attention; video self-attention in
``visual_transformer_blocks.N.self_attention`` (Kandinsky 6: ``...N.video_dec_block.self_attention``).

The latent arrives channels last, ``[B, F, H, W, C]``, and is patchified by ``config.patch_size`` and flattened
frame-major, so the video self-attention holds the video's tokens only (no text) in raster order. Both stock
processors (``Kandinsky5AttnProcessor``, ``Kandinsky6AttnProcessor``) call ``dispatch_attention_fn`` with the
module's backend, so fastdit takes the call there (the generic path). Left untouched: the text blocks'
self-attention (text only), the text cross-attention and, in Kandinsky 6, the audio stream's self-attention and
the video↔audio cross-attention.

Kandinsky 5's default (``attention_type="regular"``) keeps that raster order. A checkpoint configured for its
own NABLA sparse attention (``attention_type="nabla"``: its pipeline then passes ``sparse_params`` with
``to_fractal``) orders the video in 8×8-token spatial tiles ("fractal" flattening) and hands each
self-attention call a flex ``BlockMask``: fastdit's grid describes raster tokens, so ``grid`` returns ``None``
for such a checkpoint, and its ``BlockMask`` calls go on to the user's backend: those checkpoints run as
stock (not sparsified by fastdit). The Kandinsky 6 super-resolution model (``Kandinsky6SRTransformer3DModel``) always
flattens that way and pins the flex backend: not covered either.
"""

from __future__ import annotations

from typing import Iterator

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input


def _raster_grid(model: torch.nn.Module, args: tuple, kwargs: dict) -> TokenGrid | None:
    """The token grid of a channels-last latent ``hidden_states [B, F, H, W, C]`` after ``config.patch_size``."""
    x = forward_input(model, args, kwargs, "hidden_states")
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        return None
    return TokenGrid(*(max(n // p, 1) for n, p in zip(x.shape[1:4], model.config.patch_size)))


def _kandinsky5_grid(model: torch.nn.Module, args: tuple, kwargs: dict) -> TokenGrid | None:
    if model.config.attention_type == "nabla":
        return None  # its tokens are in 8x8 fractal tiles, not the raster order this grid describes
    return _raster_grid(model, args, kwargs)


def _kandinsky6_self_attention(model: torch.nn.Module) -> Iterator[tuple[int, torch.nn.Module]]:
    """The video stream's self-attention of every fused video/audio block."""
    for i, block in enumerate(model.visual_transformer_blocks):
        yield i, block.video_dec_block.self_attention


KANDINSKY5 = Family(
    name="kandinsky5",
    model_classes=("Kandinsky5Transformer3DModel",),
    self_attention=attention_in_blocks("self_attention", "visual_transformer_blocks"),
    grid=_kandinsky5_grid,
    processor=None,  # Kandinsky5AttnProcessor dispatches: the generic path
    stock_processors=("Kandinsky5AttnProcessor",),
    models="Kandinsky 5.0 video and image; checkpoints set to its own NABLA attention run as stock",
    sparsified="`visual_transformer_blocks.N.self_attention`",
    untouched="`cross_attention`, text blocks",
    grid_rule="`hidden_states [B,F,H,W,C]` ÷ `config.patch_size`",
)
KANDINSKY6 = Family(
    name="kandinsky6",
    model_classes=("Kandinsky6Transformer3DModel",),
    self_attention=_kandinsky6_self_attention,
    grid=_raster_grid,
    processor=None,  # Kandinsky6AttnProcessor dispatches: the generic path
    stock_processors=("Kandinsky6AttnProcessor",),
    models="Kandinsky 6, video and audio; not its SR model",
    sparsified="`visual_transformer_blocks.N.video_dec_block.self_attention`",
    untouched="text cross-attention, text blocks, audio self-attention, video↔audio cross-attention",
    grid_rule="`hidden_states [B,F,H,W,C]` ÷ `config.patch_size`",
)
