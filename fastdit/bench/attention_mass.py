"""Exact dense attention and where its softmax mass goes, computed in query chunks (never an S×S tensor).

Recall of a block layout is the share of the dense softmax mass on the key blocks it reads, so the dense
mass has to be known per (query block, key block) of every token order a benchmark compares (raster blocks,
tiles, Gilbert blocks). It is accumulated in the same pass for each order. The pass also measures how the
mass falls off with temporal and spatial distance, which is what the static methods assume and what a reader
of the fidelity report needs to see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.layout.head_order import HeadOrder
from fastdit.layout.order import TokenOrder

__all__ = ["DenseReference", "dense_reference"]

CHUNK_BYTES = 64 * 2**20


def _distance_bins(max_distance: int) -> list[tuple[int, int]]:
    """``[0], [1], [2, 3], [4, 7], ...`` up to ``max_distance``: decay is multiplicative, so bins are too."""
    bins, lo = [(0, 0)], 1
    while lo <= max_distance:
        bins.append((lo, min(2 * lo - 1, max_distance)))
        lo *= 2
    return bins


def _bin_index(distance: torch.Tensor, bins: list[tuple[int, int]]) -> torch.Tensor:
    return torch.bucketize(distance, torch.tensor([hi for _, hi in bins[:-1]]), right=False)


@dataclass
class DenseReference:
    """Exact dense attention and its mass statistics, computed once and shared by every setting."""

    out: torch.Tensor  # [1, H, S, D], raster order
    lse: torch.Tensor  # [1, H, S] fp32, raster order: each query's log-sum-exp over every key
    # per order, [H, nb, nb] float64: mass from query to key block (a per-head order: over its permuted blocks)
    block_mass: dict[TokenOrder | HeadOrder, torch.Tensor]
    temporal: dict[str, Any]  # mass vs frame distance
    spatial: dict[str, Any]  # mass vs Chebyshev distance within the frame plane
    seconds: float


def dense_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: TokenGrid,
                    orders: list[TokenOrder | HeadOrder]) -> DenseReference:
    """Dense attention of raster ``q, k, v [1, H, S, D]`` in query chunks, with its mass statistics and the
    block-to-block mass of each of ``orders`` (video-only orders of ``grid``, or per-head orders over one)."""
    start = time.perf_counter()
    _, H, S, D = q.shape
    T, P = grid.t, grid.tokens_per_frame
    blocks = {o: _token_blocks(o, H) for o in orders}  # ([H|1, S] query, [H|1, S] key) block of each raster token
    masses = {o: torch.zeros(H, _base(o).num_blocks, _base(o).num_blocks, dtype=torch.float64) for o in orders}
    frame = torch.arange(S) // P
    ys, xs = (torch.arange(P) // grid.w), (torch.arange(P) % grid.w)
    t_bins, s_bins = _distance_bins(T - 1), _distance_bins(max(grid.h, grid.w) - 1)
    spatial_bin = _bin_index(torch.maximum((ys.view(-1, 1) - ys).abs(), (xs.view(-1, 1) - xs).abs()), s_bins)
    temporal_bin = _bin_index((torch.arange(T).view(-1, 1) - torch.arange(T)).abs(), t_bins)
    t_mass, s_mass = torch.zeros(H, len(t_bins), dtype=torch.float64), torch.zeros(H, len(s_bins), dtype=torch.float64)
    out = torch.empty_like(q)
    lse = q.new_empty(q.shape[:-1])
    rows = max(1, CHUNK_BYTES // (H * S * 4))
    for lo in range(0, S, rows):
        hi = min(S, lo + rows)
        n = hi - lo
        scores = torch.matmul(q[0, :, lo:hi], k[0].transpose(-1, -2)) * D**-0.5  # [H, n, S]
        lse[0, :, lo:hi] = torch.logsumexp(scores, dim=-1)
        p = torch.softmax(scores, dim=-1)
        del scores
        out[0, :, lo:hi] = torch.matmul(p, v[0])
        for o, (q_block, k_block) in blocks.items():
            to_blocks = p.new_zeros(H, n, _base(o).num_blocks).scatter_add_(2, k_block.unsqueeze(1).expand(H, n, S), p)
            for h in range(H):
                masses[o][h].index_add_(0, q_block[h % q_block.shape[0], lo:hi], to_blocks[h].double())
        per_frame = p.view(H, n, T, P)
        t_idx = temporal_bin[frame[lo:hi]].view(1, -1).expand(H, -1)  # [H, n*T]
        t_mass.scatter_add_(1, t_idx, per_frame.sum(-1).reshape(H, -1).double())
        s_idx = spatial_bin[torch.arange(lo, hi) % P].view(1, -1).expand(H, -1)  # [H, n*P]
        s_mass.scatter_add_(1, s_idx, per_frame.sum(2).reshape(H, -1).double())
    # share of all (query, key) pairs at each distance: the mass a uniform attention would put there
    t_pairs = torch.zeros(len(t_bins), dtype=torch.float64).index_add_(0, temporal_bin.flatten(),
                                                                       torch.ones(T * T, dtype=torch.float64)) / T**2
    s_pairs = torch.zeros(len(s_bins), dtype=torch.float64).index_add_(0, spatial_bin.flatten(),
                                                                       torch.ones(P * P, dtype=torch.float64)) / P**2
    return DenseReference(out, lse, masses, _profile(t_mass / S, t_pairs, t_bins),
                          _profile(s_mass / S, s_pairs, s_bins), time.perf_counter() - start)


def _base(order: TokenOrder | HeadOrder) -> TokenOrder:
    return order.base if isinstance(order, HeadOrder) else order


def _token_blocks(order: TokenOrder | HeadOrder, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The block of every raster token as a query (``[1, S]`` for a grid order) and as a key (``[H, S]``); a
    per-head order (its first batch element; video-only grids) gives ``[H, S]`` for both."""
    if not isinstance(order, HeadOrder):
        block = (order.destination // order.block_size).unsqueeze(0)
        return block, block.expand(heads, -1)
    out = []
    for source in (order.query_source[0], order.key_source[0]):
        slot = torch.empty_like(source).scatter_(1, source, torch.arange(source.shape[1]).expand_as(source))
        out.append(slot // order.base.block_size)  # a per-head order reorders the base order's leading positions
    return out[0], out[1]


def _profile(share: torch.Tensor, pairs: torch.Tensor, bins: list[tuple[int, int]]) -> dict[str, Any]:
    """Mass share per distance bin (mean over heads) and per head relative to uniform attention."""
    relative = share / pairs
    return {"bins": [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in bins],
            "mass_share": share.mean(0).tolist(), "pair_share": pairs.tolist(),
            "relative_to_uniform": relative.mean(0).tolist(),
            "relative_to_uniform_per_head": relative.tolist()}
