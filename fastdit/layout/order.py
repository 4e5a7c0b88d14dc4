"""Token orders: where each token of a model's sequence sits in a layout, and how that order is cut into blocks.

Every published sparse-attention method is defined on its own token order, and the order is part of the
method: radial attention cuts the raster (frame-major) sequence into 128-token blocks that may straddle
frames; GRAT groups tokens into spatio-temporal tiles; PSA walks a 3D Gilbert curve, Sol-Attn a 3D Morton
curve. A :class:`TokenOrder` is one such order on one grid: a permutation of the model's tokens plus a
partition into ``block_size``-token kernel blocks, with validity for padding. VMoBA's chunks are one more such
order. Video tokens come first
(padded to whole blocks), then the text tokens of joint-attention models (padded to whole blocks of their
own), whatever side the model puts them on. An order is built once per (grid, kind, block size, tile) and
cached; nothing in it is S×S.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from fastdit.layout.grid import TokenGrid

__all__ = ["TokenOrder", "RasterOrder", "TileOrder", "GilbertOrder", "MortonOrder", "ChunkOrder", "ORDERS",
           "make_order", "MIN_BLOCK_SIZE", "MAX_BLOCK_SIZE", "MAX_BLOCK_PAIRS", "check_block_size",
           "choose_tile", "check_tile"]


# Kernel blocks: the Triton and Flex kernels need at least 16 tokens, and a smaller block makes a layout nearly
# token-level (a 9x32x32 grid at 4-token blocks is 37 M block pairs); past 1024 tokens a block is a frame or more.
MIN_BLOCK_SIZE = 16
MAX_BLOCK_SIZE = 1024
# Methods build a layout as a [heads, blocks, blocks] mask: 2**31 pairs are 2 GiB per head as bool (more in
# their float intermediates), 46 thousand blocks, far past any video a model generates in one call.
MAX_BLOCK_PAIRS = 2**31


def check_block_size(block: object) -> int:
    """``block`` if it is a power of two in [MIN_BLOCK_SIZE, MAX_BLOCK_SIZE], else a ``ValueError``."""
    if (isinstance(block, bool) or not isinstance(block, int) or block & (block - 1)
            or not MIN_BLOCK_SIZE <= block <= MAX_BLOCK_SIZE):
        raise ValueError(f"block_size must be a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}, "
                         f"got {block!r}")
    return block


@dataclass(frozen=True)
class TokenOrder:
    """A permutation of a grid's tokens into ``block_size``-token kernel blocks (see the module docstring).

    Subclasses say where each video token goes (:meth:`_video_positions`) and how long the padded video part
    is (:attr:`video_len`); everything else (text placement, validity, moving tensors) is shared.

    Args:
        grid: the token grid (text tokens included) the order permutes.
        block_size: tokens per kernel block; the ordered sequence is padded to whole blocks.
    """

    grid: TokenGrid
    block_size: int
    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        self._check_shape()
        if self.num_blocks ** 2 > MAX_BLOCK_PAIRS:  # before any tensor of the order or its layouts is built
            g = self.grid
            raise ValueError(f"a {g.t}x{g.h}x{g.w} token grid is {self.num_blocks} blocks of {self.block_size} tokens "
                             f"in the {self.kind} order, more than the {math.isqrt(MAX_BLOCK_PAIRS)} a layout "
                             "holds (its block mask is blocks x blocks); use larger blocks or a smaller grid")

    def _check_shape(self) -> None:
        """Subclasses check their tile or chunk here, before the block count that depends on it is read."""

    # ------------------------------------------------------------------ to define per order
    @property
    def video_len(self) -> int:
        """Length of the video part in this order, padding included (a multiple of ``block_size``)."""
        return _ceil_to(self.grid.video_tokens, self.block_size)

    def _video_positions(self) -> torch.Tensor:
        """``[video_tokens]`` int64: the position of each video token (model raster index) in this order."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @property
    def video_blocks(self) -> int:
        return self.video_len // self.block_size

    @property
    def text_blocks(self) -> int:
        return -(-self.grid.text_tokens // self.block_size)

    @property
    def num_blocks(self) -> int:
        return self.video_blocks + self.text_blocks

    @property
    def seq_len(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def padding_fraction(self) -> float:
        """Share of the ordered sequence that is padding (compute a kernel spends on nothing)."""
        return 1.0 - self.grid.num_tokens / self.seq_len

    @functools.cached_property
    def video_destination(self) -> torch.Tensor:
        """``[video_tokens]`` int64: where each video token (in raster order) lands in this order."""
        return self._video_positions()

    @functools.cached_property
    def destination(self) -> torch.Tensor:
        """``[grid.num_tokens]`` int64: where each token of the model's order lands in this order."""
        g = self.grid
        video = self.video_destination
        text = self.video_len + torch.arange(g.text_tokens)
        lead = g.leading_text_tokens
        return torch.cat((text[:lead], video, text[lead:]))

    @functools.cached_property
    def valid(self) -> torch.Tensor:
        """``[seq_len]`` bool: which positions hold a real token (the rest is padding)."""
        valid = torch.zeros(self.seq_len, dtype=torch.bool)
        valid[self.destination] = True
        return valid

    @functools.cached_property
    def token_coords(self) -> torch.Tensor:
        """``[video_len, 3]`` int64: the ``(t, y, x)`` grid coordinates of each video position, ``-1`` on padding."""
        g = self.grid
        raster = torch.arange(g.video_tokens)
        coords = torch.stack([raster // g.tokens_per_frame, raster // g.w % g.h, raster % g.w], dim=1)
        out = torch.full((self.video_len, 3), -1, dtype=torch.int64)
        out[self.video_destination] = coords
        return out

    def to_order(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """Move ``x`` into this order, zero-filling the padding.

        Args:
            x: ``[..., S, ...]`` with ``S = grid.num_tokens`` along ``dim``, in the model's token order.
            dim: the token dimension.

        Returns:
            ``x`` with ``seq_len`` (padded) tokens along ``dim``, in this order.
        """
        dim = dim % x.ndim
        if x.shape[dim] != self.grid.num_tokens:
            raise ValueError(f"expected {self.grid.num_tokens} tokens along dim {dim} for {self.grid}, "
                             f"got {x.shape[dim]}")
        shape = list(x.shape)
        shape[dim] = self.seq_len
        return x.new_zeros(shape).index_copy_(dim, self.destination.to(x.device), x)

    def from_order(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """Inverse of :meth:`to_order`: drop the padding and restore the model's token order.

        Args:
            x: ``[..., seq_len, ...]`` along ``dim``, in this order.
            dim: the token dimension.

        Returns:
            ``x`` with ``grid.num_tokens`` tokens along ``dim``, in the model's order.
        """
        dim = dim % x.ndim
        if x.shape[dim] != self.seq_len:
            raise ValueError(f"expected {self.seq_len} tokens in {self.kind} order along dim {dim}, "
                             f"got {x.shape[dim]}")
        return x.index_select(dim, self.destination.to(x.device))

    def describe(self) -> str:
        """Short human description, e.g. ``raster, 128-token blocks``."""
        return f"{self.kind}, {self.block_size}-token blocks"


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclass(frozen=True)
class RasterOrder(TokenOrder):
    """The model's own frame-major order, cut into blocks that may straddle frames; padding only at the end.

    This is the order radial attention and VMoBA's temporal chunks are published on, and the cheapest one:
    no token moves (for video-only models the permutation is the identity).
    """

    kind: ClassVar[str] = "raster"

    def _video_positions(self) -> torch.Tensor:
        return torch.arange(self.grid.video_tokens)


def check_tile(tile, block_size: int) -> None:
    """A ``ValueError`` unless ``tile`` is three positive ints holding a whole number of ``block_size`` blocks."""
    if (not isinstance(tile, (tuple, list)) or len(tile) != 3
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in tile)):
        raise ValueError(f"tile must be three positive ints (t, h, w), got {tile!r}")
    if math.prod(tile) % block_size:
        raise ValueError(f"tile {tuple(tile)} holds {math.prod(tile)} tokens, not a multiple of the "
                         f"{block_size}-token block_size")


@dataclass(frozen=True)
class TileOrder(TokenOrder):
    """Tokens grouped into ``tt × th × tw`` spatio-temporal tiles, each tile raster-ordered inside.

    A tile holds a whole number of kernel blocks (a 4×8×8 GRAT group is two 128-token blocks, its first and
    last two frames), so a group-level pattern is exact at block level. Grids the tile does not divide are
    padded per axis: the padding sits inside the edge tiles.
    """

    tile: tuple[int, int, int] = (1, 1, 1)
    kind: ClassVar[str] = "tiles"

    def _check_shape(self) -> None:
        check_tile(self.tile, self.block_size)

    @property
    def tile_volume(self) -> int:
        return math.prod(self.tile)

    @property
    def tiles(self) -> tuple[int, int, int]:
        """Number of tiles along (t, h, w)."""
        return tuple(-(-n // s) for n, s in zip((self.grid.t, self.grid.h, self.grid.w), self.tile))

    @property
    def video_len(self) -> int:
        return math.prod(self.tiles) * self.tile_volume

    def _video_positions(self) -> torch.Tensor:
        g, (tt, th, tw) = self.grid, self.tile
        _, nh, nw = self.tiles
        f = torch.arange(g.t).view(-1, 1, 1)
        y = torch.arange(g.h).view(1, -1, 1)
        x = torch.arange(g.w).view(1, 1, -1)
        tile = ((f // tt) * nh + y // th) * nw + x // tw
        within = ((f % tt) * th + y % th) * tw + x % tw
        return (tile * self.tile_volume + within).flatten()

    def tile_coords(self) -> torch.Tensor:
        """``[n_tiles, 3]`` tile coordinates (t, y, x) of each tile, in order."""
        nt, nh, nw = self.tiles
        t, y, x = torch.meshgrid(torch.arange(nt), torch.arange(nh), torch.arange(nw), indexing="ij")
        return torch.stack([t.flatten(), y.flatten(), x.flatten()], dim=1)

    def describe(self) -> str:
        return f"tiles {'x'.join(map(str, self.tile))}, {self.block_size}-token blocks"


@dataclass(frozen=True)
class GilbertOrder(TokenOrder):
    """Tokens along a generalized 3D Gilbert curve over (x, y, t), cut into blocks; padding only at the end.

    The curve visits every cell of any box (not just powers of two) with unit steps, so consecutive tokens
    are grid neighbours and a block is a compact blob of the video. PSA publishes its pyramid on this order.
    """

    kind: ClassVar[str] = "gilbert"

    def _video_positions(self) -> torch.Tensor:
        g = self.grid
        curve = gilbert3d(g.w, g.h, g.t)  # [video_tokens, 3] (x, y, t) in visiting order
        raster = (curve[:, 2] * g.h + curve[:, 1]) * g.w + curve[:, 0]
        positions = torch.empty(g.video_tokens, dtype=torch.int64)
        positions[raster] = torch.arange(g.video_tokens)
        return positions


@dataclass(frozen=True)
class MortonOrder(TokenOrder):
    """Tokens along a 3D Morton (Z-order) curve over (t, y, x), cut into blocks; padding only at the end.

    Sol-Attn's official backend (NVlabs/Sana ``sol-engine``, ``_morton3d_perm``) runs on this order: the code
    interleaves the bits of ``t``, ``y``, ``x`` (``t`` lowest) with as many bits per axis as the largest side
    needs, and tokens are sorted by it (codes are unique, so the sort is exact). On a grid that is not a power
    of two the curve skips the missing cells, so a block is compact but not always a cube.
    """

    kind: ClassVar[str] = "morton"

    def _video_positions(self) -> torch.Tensor:
        g = self.grid
        t, y, x = (c.reshape(-1) for c in torch.meshgrid(torch.arange(g.t), torch.arange(g.h), torch.arange(g.w),
                                                          indexing="ij"))
        bits = max(g.t, g.h, g.w).bit_length()
        spread = lambda a: sum(((a >> i) & 1) << (3 * i) for i in range(bits))  # noqa: E731
        code = spread(t) | (spread(y) << 1) | (spread(x) << 2)
        positions = torch.empty(g.video_tokens, dtype=torch.int64)
        positions[torch.argsort(code)] = torch.arange(g.video_tokens)
        return positions


def gilbert3d(width: int, height: int, depth: int) -> torch.Tensor:
    """``[width * height * depth, 3]`` int64 ``(x, y, z)`` cells in the order of the generalized Gilbert curve.

    The box is walked along its longest axis first. Each step splits the current cuboid (given by its corner
    and three edge vectors: the major axis ``a`` and the two others ``b`` and ``c``) into two to five
    sub-cuboids whose curves join end to start, halving an axis only where that keeps the pieces from getting
    too elongated, and preferring even halves so the curve can end next to where it must continue.
    """
    if width >= height and width >= depth:
        axes = ((width, 0, 0), (0, height, 0), (0, 0, depth))
    elif height >= width and height >= depth:
        axes = ((0, height, 0), (width, 0, 0), (0, 0, depth))
    else:
        axes = ((0, 0, depth), (width, 0, 0), (0, height, 0))
    out: list[tuple[int, int, int]] = []
    stack = [((0, 0, 0), *axes)]
    while stack:  # depth-first, pieces pushed in reverse so they are visited in curve order
        corner, a, b, c = stack.pop()
        pieces = _gilbert_split(corner, a, b, c, out)
        stack.extend(reversed(pieces))
    return torch.tensor(out, dtype=torch.int64).view(-1, 3)


_Vec = tuple[int, int, int]


def _add(*vs: _Vec) -> _Vec:
    return tuple(sum(c) for c in zip(*vs))  # type: ignore[return-value]


def _neg(v: _Vec) -> _Vec:
    return (-v[0], -v[1], -v[2])


def _sign(v: _Vec) -> _Vec:
    return tuple((c > 0) - (c < 0) for c in v)  # type: ignore[return-value]


def _half(v: _Vec) -> _Vec:
    return tuple(c // 2 for c in v)  # type: ignore[return-value]


def _gilbert_split(p: _Vec, a: _Vec, b: _Vec, c: _Vec, out: list) -> list:
    """Emit the cells of a line-shaped cuboid into ``out``, or return the sub-cuboids to walk, in order."""
    w, h, d = (abs(sum(v)) for v in (a, b, c))
    da, db, dc = _sign(a), _sign(b), _sign(c)
    for length, step, flat in ((w, da, h == 1 and d == 1), (h, db, w == 1 and d == 1), (d, dc, w == 1 and h == 1)):
        if flat:  # a single row: walk it
            for i in range(length):
                out.append(_add(p, tuple(i * s for s in step)))
            return []
    a2, b2, c2 = _half(a), _half(b), _half(c)
    # odd halves would strand the curve's end on the wrong side: round them up to even where possible
    if abs(sum(a2)) % 2 and w > 2:
        a2 = _add(a2, da)
    if abs(sum(b2)) % 2 and h > 2:
        b2 = _add(b2, db)
    if abs(sum(c2)) % 2 and d > 2:
        c2 = _add(c2, dc)
    a_rest, b_rest, c_rest = _add(a, _neg(a2)), _add(b, _neg(b2)), _add(c, _neg(c2))
    a_end, c_end = _add(a, _neg(da)), _add(c, _neg(dc))  # edge vectors minus one step
    if 2 * w > 3 * h and 2 * w > 3 * d:  # long along a: two halves side by side
        return [(p, a2, b, c), (_add(p, a2), a_rest, b, c)]
    if 3 * h > 4 * d:  # flat in c: split a and b only
        return [(p, b2, c, a2),
                (_add(p, b2), a, b_rest, c),
                (_add(p, a_end, b2, _neg(db)), _neg(b2), c, _neg(a_rest))]
    if 3 * d > 4 * h:  # flat in b: split a and c only
        return [(p, c2, a2, b),
                (_add(p, c2), a, b, c_rest),
                (_add(p, a_end, c2, _neg(dc)), _neg(c2), _neg(a_rest), b)]
    return [(p, b2, c2, a2),  # the general case: split all three
            (_add(p, b2), c, a2, b_rest),
            (_add(p, b2, _neg(db), c_end), a, _neg(b2), _neg(c_rest)),
            (_add(p, a_end, b2, c_end), _neg(c), _neg(a_rest), b_rest),
            (_add(p, a_end, b2, _neg(db)), _neg(b2), c2, _neg(a_rest))]


@dataclass(frozen=True)
class ChunkOrder(TokenOrder):
    """Tokens grouped into ``ct × ch × cw`` chunks laid end to end, each raster-ordered inside, with no padding
    between chunks (edge chunks are just shorter); padding only at the end.

    VMoBA's partitions are this order: 1D chunks of whole frames ``(c, H, W)`` (the raster order itself), 2D
    chunks through all frames ``(T, ch, cw)`` and 3D cubes. Chunks need not be whole kernel blocks, so a block
    may straddle two chunks.
    """

    chunk: tuple[int, int, int] = (1, 1, 1)
    kind: ClassVar[str] = "chunks"

    def _check_shape(self) -> None:
        if len(self.chunk) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in self.chunk):
            raise ValueError(f"chunk must be three positive ints (t, h, w), got {self.chunk!r}")

    @property
    def chunks(self) -> tuple[int, int, int]:
        """Number of chunks along (t, h, w)."""
        return tuple(-(-n // s) for n, s in zip((self.grid.t, self.grid.h, self.grid.w), self.chunk))

    @functools.cached_property
    def chunk_of_token(self) -> torch.Tensor:
        """``[video_tokens]`` int64: the chunk of each video token (model raster order), chunks numbered in
        (t, h, w) raster order."""
        g, (ct, ch, cw) = self.grid, self.chunk
        _, nh, nw = self.chunks
        f = torch.arange(g.t).view(-1, 1, 1) // ct
        y = torch.arange(g.h).view(1, -1, 1) // ch
        x = torch.arange(g.w).view(1, 1, -1) // cw
        return ((f * nh + y) * nw + x).flatten()

    def _video_positions(self) -> torch.Tensor:
        ranked = torch.argsort(self.chunk_of_token, stable=True)  # chunk by chunk, raster inside each
        positions = torch.empty_like(ranked)
        positions[ranked] = torch.arange(ranked.numel())
        return positions

    def describe(self) -> str:
        return f"chunks {'x'.join(map(str, self.chunk))}, {self.block_size}-token blocks"


ORDERS: dict[str, type[TokenOrder]] = {cls.kind: cls for cls in (RasterOrder, TileOrder, GilbertOrder, MortonOrder,
                                                                  ChunkOrder)}
_SHAPED = {"tiles": "tile", "chunks": "chunk"}


def _powers_of_two(limit: int) -> list[int]:
    return [1 << i for i in range(limit.bit_length()) if (1 << i) <= limit]


def choose_tile(grid: TokenGrid, volume: int, max_aspect: int = 4) -> tuple[int, int, int]:
    """The ``(tt, th, tw)`` tile of ``volume`` tokens (a power of two) that wastes the fewest padded tokens.

    Ties go to squarer tiles and then to fewer frames per tile, because compact tiles keep the tokens a block
    holds close together, which is what a tile-based method's locality assumption needs.
    """
    if volume < 1 or volume & (volume - 1):
        raise ValueError(f"a tile's volume must be a power of two, got {volume}")
    best_key, best = None, None
    for tt in _powers_of_two(min(volume, 4 if grid.t > 1 else 1)):
        for th in _powers_of_two(volume // tt):
            tw = volume // (tt * th)
            aspect = max(th, tw) // min(th, tw)
            if aspect > max_aspect and not (th == 1 and tw >= grid.w) and not (tw == 1 and th >= grid.h):
                continue
            padded = _ceil_to(grid.t, tt) * _ceil_to(grid.h, th) * _ceil_to(grid.w, tw)
            key = (padded, aspect, tt)
            if best_key is None or key < best_key:
                best_key, best = key, (tt, th, tw)
    if best is None:  # only very elongated tiles were possible; accept the least padded one
        return choose_tile(grid, volume, max_aspect=volume)
    return best


def make_order(kind: str, grid: TokenGrid, block_size: int, shape: tuple[int, int, int] | None = None) -> TokenOrder:
    """The ``kind`` order of ``grid`` with ``block_size``-token blocks (cached: permutations are built once).

    Args:
        kind: ``"raster"``, ``"tiles"``, ``"gilbert"``, ``"morton"`` or ``"chunks"``.
        grid: the token grid.
        block_size: tokens per kernel block.
        shape: the tile of the ``"tiles"`` order (default: one block per tile, shaped to minimise padding) or
            the chunk of the ``"chunks"`` order (required); the other orders take none.

    Returns:
        The :class:`TokenOrder`.
    """
    if kind not in ORDERS:
        raise ValueError(f"unknown token order {kind!r}; available: {', '.join(ORDERS)}")
    if kind == "tiles" and shape is None:
        shape = choose_tile(grid, block_size)
    if kind in _SHAPED:
        if shape is None:
            raise ValueError(f"the {kind} order needs a {_SHAPED[kind]} shape (t, h, w)")
        return _cached(ORDERS[kind], grid, block_size, tuple(shape))
    if shape is not None:
        raise ValueError(f"the {kind} order takes no tile or chunk shape (got {shape!r})")
    return _cached(ORDERS[kind], grid, block_size)


@functools.lru_cache(maxsize=128)
def _cached(cls: type[TokenOrder], *args) -> TokenOrder:
    return cls(*args)
