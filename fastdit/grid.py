"""Token grids and their tiling into spatio-temporal kernel blocks.

A kernel block is one ``tt × th × tw`` tile of the latent grid, so the 128 tokens a GPU tile loads are
neighbours in space and time rather than a slice of one raster row. Grids that the tile does not divide are
padded per axis; padded keys are masked and padded queries are dropped, so any resolution, frame count and
batch size works.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

__all__ = ["TokenGrid", "Tiling", "choose_tile"]

_TEXT_POSITIONS = ("after", "before")


@dataclass(frozen=True)
class TokenGrid:
    """The latent video after patchify: ``t`` frames of ``h × w`` tokens (an image is ``t = 1``).

    ``text_tokens`` counts the text tokens that joint-attention models (Flux, SD3, HunyuanVideo, ...) put in
    the same self-attention, and ``text_position`` says whether the model places them before or after the
    video tokens in its own token order.
    """

    t: int
    h: int
    w: int
    text_tokens: int = 0
    text_position: str = "after"

    def __post_init__(self) -> None:
        for name in ("t", "h", "w"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TokenGrid.{name} must be a positive int, got {value!r}")
        if not isinstance(self.text_tokens, int) or self.text_tokens < 0:
            raise ValueError(f"TokenGrid.text_tokens must be an int >= 0, got {self.text_tokens!r}")
        if self.text_position not in _TEXT_POSITIONS:
            raise ValueError(f"TokenGrid.text_position must be one of {_TEXT_POSITIONS}, got {self.text_position!r}")

    @property
    def video_tokens(self) -> int:
        return self.t * self.h * self.w

    @property
    def tokens_per_frame(self) -> int:
        return self.h * self.w

    @property
    def num_tokens(self) -> int:
        """Sequence length in the model's own order (video plus text)."""
        return self.video_tokens + self.text_tokens


def _powers_of_two(limit: int) -> list[int]:
    return [1 << i for i in range(limit.bit_length()) if (1 << i) <= limit]


def choose_tile(grid: TokenGrid, block_size: int, max_aspect: int = 4) -> tuple[int, int, int]:
    """Pick the ``(tt, th, tw)`` tile of ``block_size`` tokens that wastes the fewest padded tokens on ``grid``.

    Ties go to squarer tiles and then to fewer frames per tile, because compact tiles keep the tokens a block
    holds close together, which is what every method's locality assumption needs.
    """
    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    best_key, best = None, None
    for tt in _powers_of_two(min(block_size, 4 if grid.t > 1 else 1)):
        for th in _powers_of_two(block_size // tt):
            tw = block_size // (tt * th)
            aspect = max(th, tw) // min(th, tw)
            if aspect > max_aspect and not (th == 1 and tw >= grid.w) and not (tw == 1 and th >= grid.h):
                continue
            padded = _ceil_to(grid.t, tt) * _ceil_to(grid.h, th) * _ceil_to(grid.w, tw)
            key = (padded, aspect, tt)
            if best_key is None or key < best_key:
                best_key, best = key, (tt, th, tw)
    if best is None:  # only very elongated tiles were possible; accept the least padded one
        return choose_tile(grid, block_size, max_aspect=block_size)
    return best


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclass(frozen=True)
class Tiling:
    """A grid cut into tiles of ``block_size`` tokens, plus the permutation between model and tile order.

    In tile order the video tokens come first, one tile after another (each tile is one kernel block, padded
    to full size), then the text tokens, padded to whole blocks. ``seq_len`` is that padded length.
    """

    grid: TokenGrid
    tile: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.tile) != 3 or any((not isinstance(x, int)) or x < 1 for x in self.tile):
            raise ValueError(f"tile must be three positive ints (t, h, w), got {self.tile!r}")

    @classmethod
    def create(cls, grid: TokenGrid, block_size: int = 128, tile: tuple[int, int, int] | None = None) -> "Tiling":
        """Tile ``grid`` with ``tile`` (chosen automatically when ``None``) of ``block_size`` tokens."""
        if tile is None:
            tile = choose_tile(grid, block_size)
        tile = tuple(int(x) for x in tile)
        if math.prod(tile) != block_size:
            raise ValueError(f"tile {tile} holds {math.prod(tile)} tokens but block_size is {block_size}")
        return _tiling(grid, tile)

    @property
    def block_size(self) -> int:
        return math.prod(self.tile)

    @property
    def tiles(self) -> tuple[int, int, int]:
        """Number of tiles along (t, h, w)."""
        return tuple(-(-n // s) for n, s in zip((self.grid.t, self.grid.h, self.grid.w), self.tile))

    @property
    def video_blocks(self) -> int:
        return math.prod(self.tiles)

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
        """Share of the tile-order sequence that is padding (compute a kernel spends on nothing)."""
        return 1.0 - self.grid.num_tokens / self.seq_len

    def block_coords(self) -> torch.Tensor:
        """``[video_blocks, 3]`` tile coordinates (t, y, x) of each video block, in block order."""
        nt, nh, nw = self.tiles
        t, y, x = torch.meshgrid(torch.arange(nt), torch.arange(nh), torch.arange(nw), indexing="ij")
        return torch.stack([t.flatten(), y.flatten(), x.flatten()], dim=1)

    @functools.cached_property
    def destination(self) -> torch.Tensor:
        """``[grid.num_tokens]`` int64: where each token of the model's order lands in tile order."""
        g, (tt, th, tw) = self.grid, self.tile
        nt, nh, nw = self.tiles
        f = torch.arange(g.t).view(-1, 1, 1)
        y = torch.arange(g.h).view(1, -1, 1)
        x = torch.arange(g.w).view(1, 1, -1)
        block = ((f // tt) * nh + y // th) * nw + x // tw
        within = ((f % tt) * th + y % th) * tw + x % tw
        video = (block * self.block_size + within).flatten()
        text = self.video_blocks * self.block_size + torch.arange(g.text_tokens)
        parts = (video, text) if g.text_position == "after" else (text, video)
        return torch.cat(parts)

    @functools.cached_property
    def valid(self) -> torch.Tensor:
        """``[seq_len]`` bool: which tile-order positions hold a real token (the rest is padding)."""
        valid = torch.zeros(self.seq_len, dtype=torch.bool)
        valid[self.destination] = True
        return valid

    def to_tile_order(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """Move ``x`` (model token order along ``dim``) to tile order, zero-filling the padding."""
        dim = dim % x.ndim
        if x.shape[dim] != self.grid.num_tokens:
            raise ValueError(f"expected {self.grid.num_tokens} tokens along dim {dim} for {self.grid}, got {x.shape[dim]}")
        shape = list(x.shape)
        shape[dim] = self.seq_len
        out = x.new_zeros(shape)
        return out.index_copy_(dim, self.destination.to(x.device), x)

    def from_tile_order(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """Inverse of :meth:`to_tile_order`: drop the padding and restore the model's token order."""
        dim = dim % x.ndim
        if x.shape[dim] != self.seq_len:
            raise ValueError(f"expected {self.seq_len} tile-order tokens along dim {dim}, got {x.shape[dim]}")
        return x.index_select(dim, self.destination.to(x.device))


@functools.lru_cache(maxsize=64)
def _tiling(grid: TokenGrid, tile: tuple[int, int, int]) -> Tiling:
    return Tiling(grid, tile)
