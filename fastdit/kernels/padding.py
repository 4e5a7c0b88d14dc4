"""Padding: how much of the kernel's work is spent on tokens that are not there, and density on real tokens.

A token order pads the grid to whole blocks: raster, Gilbert and chunk orders only at the end of the
sequence, tile orders per axis inside the edge tiles (a 2×16×4 tile over 21 frames pads a 22nd). Dense SDPA
runs the real sequence, so a sparse kernel's time is compared with ``density × dense`` only fairly when the
density counts real query-key pairs (:func:`real_density`) and the padding it still computes shows up as its
own cost (:func:`kernel_padding`: the Triton kernel skips kv tiles and query tiles of padding only).

:func:`preset_padding` tabulates this for the presets' model shapes (``fastdit info``): padding of the raster
order, of the tile order a tile-based method gets by default (:func:`~fastdit.order.choose_tile`), what the
kernel computes of it, and the tile of the same volume that pads least.
"""

from __future__ import annotations

import math

import torch

from ..grid import TokenGrid
from ..layout import BlockLayout
from ..order import TokenOrder, choose_tile, make_order

__all__ = ["real_density", "kernel_padding", "order_padding", "preset_padding", "PRESET_GRIDS", "least_padded_tile"]

# Model shapes of the presets (video tokens after VAE and patchify; text tokens of joint-attention models left
# out), from the sizes each preset names as its source: frames x height x width, temporal and spatial factors.
_SIZES = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": (81, 480, 832, 4, 16),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": (81, 720, 1280, 4, 16),
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": (81, 720, 1280, 4, 16),
    "hunyuanvideo-community/HunyuanVideo": (129, 720, 1280, 4, 16),
    "THUDM/CogVideoX-5b": (49, 480, 720, 4, 16),
    "Lightricks/LTX-Video": (161, 512, 704, 8, 32),
    "genmo/mochi-1-preview": (163, 480, 848, 6, 16),
    "black-forest-labs/FLUX.1-dev": (1, 1024, 1024, 1, 16),
    "stabilityai/stable-diffusion-3-medium-diffusers": (1, 1024, 1024, 1, 16),
    "fastdit/tiny-wan": (17, 128, 128, 4, 8),
}
PRESET_GRIDS: dict[str, TokenGrid] = {
    model: TokenGrid((f - 1) // tc + 1, h // sc, w // sc) for model, (f, h, w, tc, sc) in _SIZES.items()}


def _block_valid(valid: torch.Tensor, block: int) -> torch.Tensor:
    """Real tokens per block of ``valid`` (padded with False to whole blocks)."""
    padded = torch.zeros(-(-valid.numel() // block) * block, dtype=torch.float64)
    padded[:valid.numel()] = valid.double()
    return padded.view(-1, block).sum(1)


def _validity(layout: BlockLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """``(query validity, key validity)``: the order's where the layout has one, else the key's and all-true."""
    kv = torch.ones(layout.seq_len_kv, dtype=torch.bool) if layout.kv_valid is None else layout.kv_valid.cpu()
    if layout.order is not None:
        q = layout.order.valid
    else:
        q = torch.ones(layout.seq_len_q, dtype=torch.bool)
    return q.bool(), kv.bool()


def real_density(layout: BlockLayout) -> float:
    """Share of the real query-key pairs (padding left out on both sides) that the layout computes; a pyramid
    entry of level ``l`` counts ``2**-l`` of its block, as in :meth:`BlockLayout.density`."""
    q_valid, kv_valid = _validity(layout)
    vq, vk = _block_valid(q_valid, layout.block_q), _block_valid(kv_valid, layout.block_kv)
    counts = layout.row_counts().flatten().cpu()
    rows = torch.repeat_interleave(torch.arange(counts.numel()), counts) % layout.n_q_blocks
    weight = torch.ones(layout.nnz, dtype=torch.float64) if layout.level is None else \
        torch.exp2(-layout.level.cpu().double())
    pairs = float((vq[rows] * vk[layout.col_idx.cpu().long()] * weight).sum())
    return pairs / (layout.num_heads * float(q_valid.sum()) * float(kv_valid.sum()))


def kernel_padding(layout: BlockLayout, block_m: int = 128, kv_tile: int = 128) -> float:
    """Extra work of the Triton kernel on this layout from padding: query-key pairs it computes over the real
    pairs the layout attends, minus 1. Query tiles of ``block_m`` and level-0 kv tiles of ``kv_tile`` tokens
    that are padding only are skipped; pooled levels count their blocks' real share."""
    q_valid, kv_valid = _validity(layout)
    block_m, kv_tile = min(block_m, layout.block_q), min(kv_tile, layout.block_kv)
    q_live = _block_valid(q_valid, block_m) > 0
    k_live = _block_valid(kv_valid, kv_tile) > 0
    q_rows = (q_live.view(layout.n_q_blocks, -1).double().sum(1) * block_m)  # computed queries per block
    k_keys = (k_live.view(layout.n_kv_blocks, -1).double().sum(1) * kv_tile)  # computed keys per level-0 block
    vq, vk = _block_valid(q_valid, layout.block_q), _block_valid(kv_valid, layout.block_kv)
    counts = layout.row_counts().flatten().cpu()
    rows = torch.repeat_interleave(torch.arange(counts.numel()), counts) % layout.n_q_blocks
    cols = layout.col_idx.cpu().long()
    if layout.level is None:
        computed_keys = k_keys[cols]
        weight = torch.ones(layout.nnz, dtype=torch.float64)
    else:
        level = layout.level.cpu().long()
        weight = torch.exp2(-level.double())
        computed_keys = torch.where(level == 0, k_keys[cols], layout.block_kv * weight)
    computed = float((q_rows[rows] * computed_keys).sum())
    real = float((vq[rows] * vk[cols] * weight).sum())
    return computed / real - 1.0 if real else 0.0


def order_padding(order: TokenOrder, block_m: int = 128, kv_tile: int = 128) -> dict:
    """Padding of ``order``: its share of the sequence, and the kernel's extra work on a dense layout over it
    with the given query and kv tiles (tiles of padding only skipped)."""
    n_real = order.grid.num_tokens
    q_live = int((_block_valid(order.valid, min(block_m, order.block_size)) > 0).sum()) * min(block_m, order.block_size)
    k_live = int((_block_valid(order.valid, min(kv_tile, order.block_size)) > 0).sum()) * min(kv_tile, order.block_size)
    return {"order": order.describe(), "tokens": n_real, "padded": order.seq_len,
            "padding": order.seq_len / n_real - 1.0, "kernel_padding": q_live * k_live / n_real ** 2 - 1.0}


def least_padded_tile(grid: TokenGrid, volume: int) -> tuple[int, int, int]:
    """The ``(tt, th, tw)`` tile of ``volume`` tokens that pads ``grid`` least, whatever its aspect (ties: fewer
    frames, then squarer); :func:`~fastdit.order.choose_tile` caps the aspect at 4 for locality."""
    best_key, best = None, None
    for tt in (1, 2, 4, 8):
        if tt > volume or (grid.t == 1 and tt > 1):
            continue
        th = 1
        while tt * th <= volume:
            tw = volume // (tt * th)
            if tt * th * tw == volume:
                padded = math.prod(-(-n // s) * s for n, s in zip((grid.t, grid.h, grid.w), (tt, th, tw)))
                key = (padded, tt, max(th, tw) / min(th, tw))
                if best_key is None or key < best_key:
                    best_key, best = key, (tt, th, tw)
            th *= 2
    return best


def preset_padding(block_m: int = 128, kv_tile: int = 128) -> list[dict]:
    """Per preset model shape: the padding of the raster order and of the default tile order (the kernel's
    extra work on it with ``block_m x kv_tile`` tiles and with 64 x 64 tiles, tiles of padding only skipped),
    and the least-padding tile of the same volume."""
    from ..presets import PRESETS

    rows = []
    for model, grid in PRESET_GRIDS.items():
        block = PRESETS[model].block_size if model in PRESETS else 128
        raster = order_padding(make_order("raster", grid, block), block_m, kv_tile)
        chosen = choose_tile(grid, block)
        tiles = order_padding(make_order("tiles", grid, block, chosen), block_m, kv_tile)
        best = least_padded_tile(grid, block)
        best_pad = order_padding(make_order("tiles", grid, block, best), block_m, kv_tile)
        tiles64 = order_padding(make_order("tiles", grid, block, chosen), 64, 64)
        rows.append({"model": model, "grid": f"{grid.t}x{grid.h}x{grid.w}", "tokens": grid.num_tokens,
                     "block": block, "raster_padding": raster["padding"], "tile": "x".join(map(str, chosen)),
                     "tile_padding": tiles["padding"], "tile_kernel_padding": tiles["kernel_padding"],
                     "tile_kernel_padding_64": tiles64["kernel_padding"],
                     "least_padded_tile": "x".join(map(str, best)), "least_padding": best_pad["padding"],
                     "least_kernel_padding": best_pad["kernel_padding"]})
    return rows
