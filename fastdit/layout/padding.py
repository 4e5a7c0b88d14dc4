"""Padding: how much of the kernel's work is spent on tokens that are not there, and density on real tokens.

A token order pads the grid to whole blocks: raster, Gilbert and chunk orders only at the end of the
sequence, tile orders per axis inside the edge tiles (a 2×16×4 tile over 21 frames pads a 22nd). Dense SDPA
runs the real sequence, so a sparse kernel's time is compared with ``density × dense`` only fairly when the
density counts real query-key pairs (:func:`real_density`) and the padding it still computes shows up as its
own cost (:func:`kernel_padding`: the Triton kernel skips kv tiles and query tiles of padding only).

``fastdit.patching.presets.preset_padding`` tabulates this for the presets' model shapes (``fastdit info``).
"""

from __future__ import annotations

import math

import torch

from fastdit.layout.block import BlockLayout
from fastdit.layout.grid import TokenGrid
from fastdit.layout.order import TokenOrder

__all__ = ["real_density", "kernel_padding", "order_padding", "least_padded_tile"]


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
    frames, then squarer); :func:`~fastdit.layout.order.choose_tile` caps the aspect at 4 for locality."""
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
