"""VMoBA (Mixture of Block Attention for video): key cells that change shape by layer, chosen globally per head.

Pretrained video DiTs attend along time in some layers, within the frame in others and to local cubes in
yet others, and some queries (and heads) concentrate far more than others. VMoBA follows that:

* **Layer-wise recurrent partition.** The key tiles are grouped into cells whose shape depends on the layer:
  ``"1d"`` = groups of ``chunk_1d`` consecutive tile-frames (whole frames), ``"2d"`` = a ``chunk_2d`` patch
  of tiles through every frame, ``"3d"`` = a ``chunk_3d`` cube of tiles. Layer ``l`` uses
  ``order[l % len(order)]`` (default ``1d, 2d, 3d``, i.e. ``l mod 3``). Sizes are counted in kernel tiles, so
  every cell is a union of whole kernel blocks by construction; cells at the grid edge may be smaller.
* **Scoring.** Query block ``i`` (one kernel tile: the granularity a block-sparse kernel can select at) is
  summarised by the mean of its queries, key cell ``c`` by the mean of its keys, both over the batch too;
  ``a[i, c] = q̄_i · k̄_c / sqrt(D) + ln(n_c)`` with ``n_c`` the valid keys of the cell.
* **Global threshold selection.** Per head, all ``(i, c)`` pairs are ranked together by a weight ``p[i, c]``
  that sums to 1 over the head, and taken in descending order while the weight of the pairs taken before
  stays below ``threshold`` (the pair that crosses it is included; ``threshold = 1`` takes every pair). Each
  query block then also keeps its own diagonal block. Lowering the threshold only ever removes pairs. The
  weight (``normalize``):

  - ``"head"`` (default, VMoBA's head-global selection): ``p[i, c] = exp(a[i, c]) / Σ_{i', c'} exp(a[i', c'])``,
    one softmax over every pair of the head, so query blocks with large similarities win more cells than
    flat ones, instead of a fixed top-k per query;
  - ``"query"``: ``p[i, c] = softmax_c(a[i, ·])[c] / n_query_blocks``, each query block's estimated attention
    distribution with every block weighted equally. Still ranked globally, but the threshold is then the
    share of the head's (estimated) attention mass kept, i.e. a target recall; the fidelity benchmark
    compares the two.

Published setting (VMoBA, Wan2.1-1.3B, 480p, 77 frames): temporal chunk 2 frames, spatial chunk 3×4 tokens,
spatio-temporal chunk 4×6×4 tokens, cumulative-similarity threshold 0.25, 12 dense steps. Mapped onto whole
tiles (for the usual ``2×8×8`` tile) as the smallest whole-tile cell that covers the published chunk:
``chunk_1d = 1`` (2 frames), ``chunk_2d = (1, 1)`` (one 8×8 tile column through all frames),
``chunk_3d = (2, 1, 1)`` (4×8×8 tokens). Differences from the official code, deliberately: selection is at
query-block rather than query-token granularity (what a block-sparse kernel can run), the similarity is
normalised by a softmax rather than min-max, and the always-kept "self" part is the diagonal kernel block
rather than the query's whole cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..grid import Tiling
from . import Method, register
from .pooled import block_means, pooled_logits

PARTITIONS = ("1d", "2d", "3d")
NORMALIZATIONS = ("head", "query")


def _tile_counts(name: str, value, n: int) -> tuple[int, ...]:
    """``value`` as ``n`` positive ints (cell extents in kernel tiles), or a ValueError naming the option."""
    values = (value,) if n == 1 and not isinstance(value, (tuple, list)) else value
    if (not isinstance(values, (tuple, list)) or len(values) != n
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)):
        what = "a positive int" if n == 1 else f"{n} positive ints"
        raise ValueError(f"vmoba {name} must be {what}, counted in kernel tiles (so every cell is a union of whole "
                         f"tiles), got {value!r}")
    return tuple(values)


@dataclass(frozen=True)
class VmobaOptions:
    """``threshold``: cumulative softmax similarity, in ``(0, 1]``, up to which (query block, key cell) pairs
    are taken per head; ``chunk_1d`` (tile-frames), ``chunk_2d`` ``(y, x)`` and ``chunk_3d`` ``(t, y, x)``:
    cell sizes in kernel tiles; ``order``: the partition of layers ``0, 1, 2, ...`` (cycled); ``normalize``:
    ``"head"`` (one softmax over all pairs of a head) or ``"query"`` (per query block, then ranked globally)."""

    threshold: float = 0.25
    chunk_1d: int = 1
    chunk_2d: tuple[int, int] = (1, 1)
    chunk_3d: tuple[int, int, int] = (2, 1, 1)
    order: tuple[str, ...] = PARTITIONS
    normalize: str = "head"

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0 < self.threshold <= 1:
            raise ValueError(f"vmoba threshold must be a number in (0, 1] (cumulative similarity), "
                             f"got {self.threshold!r}")
        object.__setattr__(self, "chunk_1d", _tile_counts("chunk_1d", self.chunk_1d, 1)[0])
        object.__setattr__(self, "chunk_2d", _tile_counts("chunk_2d", self.chunk_2d, 2))
        object.__setattr__(self, "chunk_3d", _tile_counts("chunk_3d", self.chunk_3d, 3))
        order = (self.order,) if isinstance(self.order, str) else self.order
        if not isinstance(order, (tuple, list)) or not order or any(p not in PARTITIONS for p in order):
            raise ValueError(f"vmoba order must be a non-empty sequence of {PARTITIONS}, got {self.order!r}")
        object.__setattr__(self, "order", tuple(order))
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"vmoba normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")

    def partition(self, layer: int) -> str:
        """The partition type transformer block ``layer`` uses."""
        return self.order[layer % len(self.order)]


def partition_cells(tiling: Tiling, kind: str, options: VmobaOptions) -> tuple[torch.Tensor, int]:
    """``(cell [n_video_blocks], n_cells)``: the key cell of each video tile under partition ``kind``.

    Every partition is a grid of cuboid cells of ``(t, y, x)`` tiles: ``1d`` = ``(chunk_1d, all, all)``,
    ``2d`` = ``(all, *chunk_2d)``, ``3d`` = ``chunk_3d``; cells are numbered in (t, y, x) raster order.
    """
    tiles = tiling.tiles
    extent = {"1d": (options.chunk_1d, *tiles[1:]), "2d": (tiles[0], *options.chunk_2d), "3d": options.chunk_3d}
    if kind not in extent:
        raise ValueError(f"unknown vmoba partition {kind!r}; expected one of {PARTITIONS}")
    size = torch.tensor(extent[kind])
    counts = [-(-n // s) for n, s in zip(tiles, extent[kind])]
    cell = tiling.block_coords() // size
    return (cell[:, 0] * counts[1] + cell[:, 1]) * counts[2] + cell[:, 2], counts[0] * counts[1] * counts[2]


def select_pairs(logits: torch.Tensor, threshold: float, normalize: str = "head") -> torch.Tensor:
    """``[H, nq, nc]`` bool: the pairs taken by global threshold selection on ``logits [H, nq, nc]``."""
    if threshold >= 1.0:  # every pair, without trusting a rounded cumulative sum to reach exactly 1
        return torch.ones_like(logits, dtype=torch.bool)
    if normalize == "head":
        probs = torch.softmax(logits.flatten(1), dim=-1)
    else:
        probs = torch.softmax(logits, dim=-1).flatten(1) / logits.shape[1]
    ranked, order = probs.sort(dim=-1, descending=True, stable=True)
    take = (ranked.cumsum(-1) - ranked) < threshold
    return torch.zeros_like(take).scatter_(-1, order, take).view_as(logits)


def vmoba_mask(tiling: Tiling, options: VmobaOptions, *, q: torch.Tensor, k: torch.Tensor,
               layer: int = 0) -> torch.Tensor:
    """``[H, n_video_blocks, n_video_blocks]`` bool: per head, the key blocks each query block attends."""
    cells, n_cells = partition_cells(tiling, options.partition(layer), options)
    q_means, _ = block_means(q, tiling)
    k_means, k_counts = block_means(k, tiling, cells, n_cells)
    pairs = select_pairs(pooled_logits(q_means, k_means, k_counts), options.threshold, options.normalize)
    mask = pairs[:, :, cells.to(pairs.device)]  # each chosen cell expands to its kernel tiles
    mask.diagonal(dim1=-2, dim2=-1).fill_(True)
    return mask.cpu()


register(Method("vmoba", VmobaOptions, vmoba_mask, dynamic=True,
                summary="dynamic; layer-wise 1D/2D/3D key cells, global threshold selection per head (VMoBA)"))
