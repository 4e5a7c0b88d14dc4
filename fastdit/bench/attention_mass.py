"""Exact dense attention and where its softmax mass goes, computed in query chunks (never an S×S tensor).

Recall of a block layout is the share of the dense softmax mass on the key blocks it reads, so the dense
mass has to be known per (query block, key block) — for every tile shape a benchmark compares. It is
accumulated once at the granularity of a small cell that divides every tile in play, then summed up to any
tiling's blocks. The same pass measures how the mass falls off with temporal and spatial distance, which is
what the static methods assume and what a reader of the fidelity report needs to see.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..grid import Tiling, TokenGrid

__all__ = ["DenseReference", "dense_reference", "block_mass"]

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
    cell: tuple[int, int, int]  # the (t, y, x) cell the fine mass is aggregated at
    cell_mass: torch.Tensor  # [H, n_cells, n_cells] float64: dense softmax mass from query cell to key cell
    temporal: dict[str, Any]  # mass vs frame distance
    spatial: dict[str, Any]  # mass vs Chebyshev distance within the frame plane
    seconds: float


def _cell_index(grid: TokenGrid, cell: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Cell of every raster token, and the number of cells per axis."""
    counts = tuple(-(-n // c) for n, c in zip((grid.t, grid.h, grid.w), cell))
    t = torch.arange(grid.t).view(-1, 1, 1) // cell[0]
    y = torch.arange(grid.h).view(1, -1, 1) // cell[1]
    x = torch.arange(grid.w).view(1, 1, -1) // cell[2]
    return ((t * counts[1] + y) * counts[2] + x).flatten(), counts


def dense_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: TokenGrid,
                    cell: tuple[int, int, int]) -> DenseReference:
    """Dense attention of raster ``q, k, v [1, H, S, D]`` in query chunks, with its mass statistics."""
    start = time.perf_counter()
    _, H, S, D = q.shape
    T, P = grid.t, grid.tokens_per_frame
    cells, counts = _cell_index(grid, cell)
    n_cells = math.prod(counts)
    pad = [c * n - s for c, n, s in zip(counts, cell, (grid.t, grid.h, grid.w))]
    frame = torch.arange(S) // P
    ys, xs = (torch.arange(P) // grid.w), (torch.arange(P) % grid.w)
    t_bins, s_bins = _distance_bins(T - 1), _distance_bins(max(grid.h, grid.w) - 1)
    spatial_bin = _bin_index(torch.maximum((ys.view(-1, 1) - ys).abs(), (xs.view(-1, 1) - xs).abs()), s_bins)
    temporal_bin = _bin_index((torch.arange(T).view(-1, 1) - torch.arange(T)).abs(), t_bins)
    cell_mass = torch.zeros(H, n_cells, n_cells, dtype=torch.float64)
    t_mass, s_mass = torch.zeros(H, len(t_bins), dtype=torch.float64), torch.zeros(H, len(s_bins), dtype=torch.float64)
    out = torch.empty_like(q)
    rows = max(1, CHUNK_BYTES // (H * S * 4))
    for lo in range(0, S, rows):
        hi = min(S, lo + rows)
        n = hi - lo
        p = torch.softmax(torch.matmul(q[0, :, lo:hi], k[0].transpose(-1, -2)) * D**-0.5, dim=-1)  # [H, n, S]
        out[0, :, lo:hi] = torch.matmul(p, v[0])
        to_cells = F.pad(p.view(H, n, T, grid.h, grid.w), (0, pad[2], 0, pad[1], 0, pad[0]))
        to_cells = to_cells.view(H, n, counts[0], cell[0], counts[1], cell[1], counts[2], cell[2]).sum(dim=(3, 5, 7))
        cell_mass.index_add_(1, cells[lo:hi], to_cells.reshape(H, n, n_cells).double())
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
    return DenseReference(out, cell, cell_mass, _profile(t_mass / S, t_pairs, t_bins),
                          _profile(s_mass / S, s_pairs, s_bins), time.perf_counter() - start)


def _profile(share: torch.Tensor, pairs: torch.Tensor, bins: list[tuple[int, int]]) -> dict[str, Any]:
    """Mass share per distance bin (mean over heads) and per head relative to uniform attention."""
    relative = share / pairs
    return {"bins": [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in bins],
            "mass_share": share.mean(0).tolist(), "pair_share": pairs.tolist(),
            "relative_to_uniform": relative.mean(0).tolist(),
            "relative_to_uniform_per_head": relative.tolist()}


def block_mass(ref: DenseReference, tiling: Tiling) -> torch.Tensor:
    """Dense mass between the tiling's blocks ``[H, nb, nb]``, summed from the fine cells (each inside a tile)."""
    grid, cell = tiling.grid, ref.cell
    if any(t % c for t, c in zip(tiling.tile, cell)):
        raise ValueError(f"tile {tiling.tile} is not a multiple of the mass cell {cell}")
    counts = [-(-n // c) for n, c in zip((grid.t, grid.h, grid.w), cell)]
    coords = torch.stack(torch.meshgrid(*[torch.arange(n) for n in counts], indexing="ij"), -1).view(-1, 3)
    tile_coords = coords * torch.tensor(cell) // torch.tensor(tiling.tile)
    nt, nh, nw = tiling.tiles
    block = (tile_coords[:, 0] * nh + tile_coords[:, 1]) * nw + tile_coords[:, 2]
    H, nb = ref.cell_mass.shape[0], tiling.num_blocks
    rows = torch.zeros(H, nb, ref.cell_mass.shape[2], dtype=torch.float64).index_add_(1, block, ref.cell_mass)
    return torch.zeros(H, nb, nb, dtype=torch.float64).index_add_(2, block, rows)
