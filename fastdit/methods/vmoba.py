"""VMoBA (Mixture of Block Attention for video): key chunks that change shape by layer, chosen per query.

Pretrained video DiTs attend along time in some layers, within the frame in others and to local cubes in
yet others, and some queries (and heads) concentrate far more than others. VMoBA (KwaiVGI/VMoBA
``src/vmoba.py``, run in Wan through FastVideo's vmoba backend) follows that:

* **Layer-wise recurrent partition.** Tokens are grouped into chunks whose shape cycles with the layer:
  ``"1d"`` = ``chunk_1d`` whole frames, ``"2d"`` = a ``chunk_2d`` = ``(h, w)`` patch through every frame,
  ``"3d"`` = a ``chunk_3d`` = ``(t, h, w)`` cube, in tokens; layer ``l`` uses ``partitions[l % 3]``. The
  layout lives in that chunk order (chunks end to end, raster inside; see ``fastdit.layout.order.ChunkOrder``), as
  the official code permutes its tokens.
* **Gate.** A key chunk is summarised by the mean of its keys; query ``s`` scores chunk ``c`` by
  ``g[s, c] = q_s · k̄_c`` (fp32, no scale: the normalisation below removes it).
* **Threshold selection per head and query** (``query_head``, the published mode): the scores are min-max
  normalised, ``n_c = (g_c - min g) / (max g - min g)``; the query's own chunk is always attended and counts
  ``n_self / Σn`` towards the threshold; the other chunks are taken in descending order (ties: lower chunk
  first) until their cumulative share ``Σ n / Σn`` reaches the rest of ``threshold`` (the crossing chunk
  included; at least one other chunk is always taken).

Execution (``selection``): ``"query"``, the default, runs exactly VMoBA's token pairs. The layout carries each
query's chunks (:class:`~fastdit.layout.selection.QuerySelection`, one per batch element; text keys form one
more chunk that every query attends, and text queries attend everything); kernels that run it compute those
pairs only, and the block layout is their envelope. ``"block_union"`` is a fastdit variant for block-sparse
kernels: a query block attends the union of its queries' chunks (over the batch too), and a key block is read
when it holds any token of a chosen chunk. That only adds keys, but most of them: on the official code's
8x12x16 structured fixture at the published chunks and threshold it keeps 76% (2D) and 83% (3D) of the token
pairs where VMoBA keeps 13% (``tests/fixtures/official/vmoba_masks.npz``).
Padded positions (the tail of a sequence that is no multiple of the block) neither select nor are selected,
as upstream, which never pads; unmasked, they selected every chunk and the union spread that to their block:
3.1% of all token pairs extra on a 9×11×15 grid (128-token blocks, structured q/k, published options).

Published setting (FastVideo ``wan_1.3B_77_480_832.json``, Wan2.1-1.3B): 1D chunk 2 frames, 2D chunk 3×4
tokens, 3D chunk 4×6×4 tokens, threshold 0.25. The official code requires the 2D/3D chunks to divide the
grid; here edge chunks are simply smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.layout.order import ORDERS, ChunkOrder, TokenOrder
from fastdit.layout.selection import QuerySelection
from fastdit.methods.base import HeadSlice, Method

PARTITIONS = ("1d", "2d", "3d")
SELECTIONS = ("query", "block_union")


def _positive_ints(name: str, value, n: int) -> tuple[int, ...]:
    """``value`` as ``n`` positive ints, or a ValueError naming the option."""
    values = (value,) if n == 1 and not isinstance(value, (tuple, list)) else value
    if (not isinstance(values, (tuple, list)) or len(values) != n
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)):
        what = "a positive int" if n == 1 else f"{n} positive ints"
        raise ValueError(f"vmoba {name} must be {what}, got {value!r}")
    return tuple(values)


@dataclass(frozen=True)
class VmobaOptions:
    """``threshold``: share of the normalised gate mass, in ``(0, 1]``, each query's chunks must reach;
    ``chunk_1d`` (frames), ``chunk_2d`` ``(h, w)`` and ``chunk_3d`` ``(t, h, w)`` (tokens): the chunk shapes;
    ``partitions``: the partition of layers ``0, 1, 2, ...`` (cycled); ``selection``: ``"query"`` (each query's
    own chunks, exactly) or ``"block_union"`` (each query block the union of its queries' chunks)."""

    threshold: float = 0.25
    chunk_1d: int = 2
    chunk_2d: tuple[int, int] = (3, 4)
    chunk_3d: tuple[int, int, int] = (4, 6, 4)
    partitions: tuple[str, ...] = PARTITIONS
    selection: str = "query"

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0 < self.threshold <= 1:
            raise ValueError(f"vmoba threshold must be a number in (0, 1], got {self.threshold!r}")
        object.__setattr__(self, "chunk_1d", _positive_ints("chunk_1d", self.chunk_1d, 1)[0])
        object.__setattr__(self, "chunk_2d", _positive_ints("chunk_2d", self.chunk_2d, 2))
        object.__setattr__(self, "chunk_3d", _positive_ints("chunk_3d", self.chunk_3d, 3))
        partitions = (self.partitions,) if isinstance(self.partitions, str) else self.partitions
        if not isinstance(partitions, (tuple, list)) or not partitions or any(p not in PARTITIONS for p in partitions):
            raise ValueError(f"vmoba partitions must be a non-empty sequence of {PARTITIONS}, got {self.partitions!r}")
        object.__setattr__(self, "partitions", tuple(partitions))
        if self.selection not in SELECTIONS:
            raise ValueError(f"vmoba selection must be one of {SELECTIONS}, got {self.selection!r}")

    def partition(self, layer: int) -> str:
        """The partition type transformer block ``layer`` uses."""
        return self.partitions[layer % len(self.partitions)]


def chunk_shape(grid: TokenGrid, block_size: int, options: VmobaOptions, layer: int = 0) -> tuple[int, int, int]:
    """The ``(t, h, w)`` chunk of ``layer``'s partition on ``grid`` (capped at the grid)."""
    shape = {"1d": (options.chunk_1d, grid.h, grid.w), "2d": (grid.t, *options.chunk_2d),
             "3d": options.chunk_3d}[options.partition(layer)]
    return tuple(min(s, n) for s, n in zip(shape, (grid.t, grid.h, grid.w)))


def select_chunks(q: torch.Tensor, k: torch.Tensor, chunk: torch.Tensor, n_chunks: int,
                  threshold: float) -> torch.Tensor:
    """``[B, H, S, C]`` bool: the chunks each query attends under VMoBA's ``query_head`` threshold rule.

    ``q, k [B, H, S, D]`` in any token order and ``chunk [S]`` the chunk of each position (``-1`` = padding,
    never a key, never a query: it selects nothing). Heads are processed one at a time so memory stays at
    ``B · S · C`` per head.
    """
    B, H, S, D = q.shape
    chunk = chunk.to(q.device)
    valid = chunk >= 0
    real, ids = valid.nonzero().flatten(), chunk[valid]
    counts = torch.bincount(ids, minlength=n_chunks).clamp(min=1).view(1, -1, 1)
    # Padding is left out before scoring: a padded query's gate is all equal, so its normalised mass is 0
    # and the threshold is never reached, which would select every chunk (and spread it to its whole block).
    own = ids.view(1, -1, 1).expand(B, -1, 1)  # [B, S_real, 1]: the query's own chunk
    out = torch.zeros(B, H, S, n_chunks, dtype=torch.bool, device=q.device)
    for h in range(H):
        valid_keys = k[:, h].index_select(1, real).float()
        means = valid_keys.new_zeros(B, n_chunks, D).index_add_(1, ids, valid_keys) / counts  # [B, C, D]
        gate = torch.matmul(q[:, h].index_select(1, real).float(), means.transpose(-1, -2))  # [B, S_real, C]
        low, high = gate.amin(-1, keepdim=True), gate.amax(-1, keepdim=True)
        span = high - low
        norm = (gate - low) / torch.where(span <= 1e-6, torch.ones_like(span), span)
        total = norm.sum(-1, keepdim=True) + 1e-6
        remain = (threshold - norm.gather(-1, own) / total).clamp(min=0)
        out[:, h, real] = _take_until(norm.scatter_(-1, own, 0.0), remain, total).scatter_(-1, own, True)
    return out


def _take_until(others: torch.Tensor, remain: torch.Tensor, total: torch.Tensor, sample: int = 64) -> torch.Tensor:
    """``[..., C]`` bool: the entries a stable descending sort of ``others`` lists up to and including the
    first position whose cumulative share ``cumsum / total`` reaches ``remain`` (all of them if none does).

    Equal to sorting every row, without doing so: the cut-off only needs the sorted *values* up to it, which
    the top ``k`` values give (the same numbers in the same order, so the same cumulative sums). ``k`` is the
    most any of ``sample`` evenly spaced rows needs; rows that need more are redone with twice the ``k`` until
    every row is settled (a partial sort costs about as much as ``k`` grows, a full one 2-4x a top 32 at
    VMoBA's 195-390 chunks). Which of several equal values a stable sort lists first is then decided by index,
    lower first.
    """
    n = others.shape[-1]
    flat, remain, total = others.reshape(-1, n), remain.reshape(-1, 1), total.reshape(-1, 1)
    probe = torch.linspace(0, flat.shape[0] - 1, min(sample, flat.shape[0]), device=flat.device).long()
    ranked = flat[probe].sort(-1, descending=True).values
    reached = ranked.cumsum(-1) / total[probe] >= remain[probe]
    k = int(torch.where(reached.any(-1), reached.float().argmax(-1), n - 1).max()) + 1 if probe.numel() else n
    cutoff = torch.full((flat.shape[0],), n - 1, dtype=torch.int64, device=flat.device)
    value = flat.new_zeros(flat.shape[0])
    rows = torch.arange(flat.shape[0], device=flat.device)
    while rows.numel():
        ranked = (flat if rows.numel() == flat.shape[0] else flat[rows]).topk(k, dim=-1).values
        reached = ranked.cumsum(-1) / total[rows] >= remain[rows]
        settled = reached.any(-1) | (k == n)  # at k == n, a row that never reaches takes everything
        at = torch.where(reached.any(-1), reached.float().argmax(-1), n - 1)[settled]
        cutoff[rows[settled]] = at
        value[rows[settled]] = ranked[settled].gather(-1, at.unsqueeze(-1)).squeeze(-1)
        rows, k = rows[~settled], min(n, 2 * k)
    above, tied = flat > value.unsqueeze(-1), flat == value.unsqueeze(-1)
    wanted = cutoff + 1 - above.sum(-1)  # equal values to take, lowest index first
    taken = above | tied
    crowded = (tied.sum(-1) > wanted).nonzero().flatten()  # rows with more equal values than places
    if crowded.numel():
        taken[crowded] = above[crowded] | (tied[crowded] & (tied[crowded].cumsum(-1) <= wanted[crowded, None]))
    return taken.view(others.shape)


def vmoba_mask(order: TokenOrder, options: VmobaOptions, *, q: torch.Tensor, k: torch.Tensor,
               layer: int = 0, heads: HeadSlice | None = None) -> QuerySelection | torch.Tensor:
    """Over ``order``'s video positions: each query's chunks (``selection="query"``), or the
    ``[H, n_video_blocks, n_video_blocks]`` bool union of a block's queries' chunks (``"block_union"``).
    ``heads``, a slice of the model's heads under context parallelism, changes nothing: each head decides from
    its own q and k."""
    grid = order.grid
    shape = chunk_shape(grid, order.block_size, options, layer)
    chunks = ChunkOrder(grid, order.block_size, shape)
    n_chunks = chunks.chunks[0] * chunks.chunks[1] * chunks.chunks[2]
    length = order.video_len
    position_chunk = torch.full((length,), -1, dtype=torch.int64)
    position_chunk[order.video_destination] = chunks.chunk_of_token
    picked = select_chunks(q[:, :, :length], k[:, :, :length], position_chunk, n_chunks, options.threshold)
    selection = QuerySelection(picked, position_chunk)
    if options.selection == "query":
        return selection
    return selection.block_mask(order.block_size, order.block_size)


VMOBA = Method("vmoba", VmobaOptions, vmoba_mask, dynamic=True, orders=tuple(dict.fromkeys(("chunks", *ORDERS))),
               shape=chunk_shape, layer_orders=True,
               summary="dynamic; layer-wise 1D/2D/3D key chunks, threshold selection per query, run per query (VMoBA)")
