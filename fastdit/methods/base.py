"""What a sparse attention method is: its options, the token orders it is defined on, and its mask function.

Each method is one file of this package that defines one :class:`Method`; :mod:`fastdit.methods.registry`
lists them. A method never calls a kernel and never builds a token-level mask: it maps a token order (and, for
dynamic methods, q and k) to a mask over kernel blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fastdit.layout.grid import TokenGrid

__all__ = ["Method", "HeadSlice", "DEFAULT_BLOCK_SIZE"]

DEFAULT_BLOCK_SIZE = 128  # tokens per kernel block, as the official radial, PSA and GRAT code use


@dataclass(frozen=True)
class HeadSlice:
    """Heads ``start:stop`` of the model's ``total``: the heads a call's ``q, k`` hold when context parallelism
    (Ulysses) gave this rank a slice of them. A dynamic method that draws per-head randomness (PSA's sampled
    positions) draws for all ``total`` heads and keeps this slice, so each head gets the blocks it gets in a
    single process."""

    start: int
    stop: int
    total: int


@dataclass(frozen=True)
class Method:
    """A registered method.

    ``video_mask(order, options, q=, k=, layer=)`` returns ``[heads, n_video_blocks, n_video_blocks]`` bool
    over ``order``'s video blocks (``heads == 1`` for a pattern shared by all heads) and optionally a
    same-shaped int level map, and a dynamic method may add a third item, a
    :class:`~fastdit.layout.head_order.HeadOrder` (per-head query and key permutations computed from q and k;
    the mask is then over the permuted sequences, one head per batch element and head); text rows and columns
    are added here, so no method can forget them. ``orders`` names the token orders the mask is defined on, the
    published one first. ``shape(grid, block_size, options,
    layer)`` gives the method's tile (``"tiles"`` order; ``None``: the least padded tile of one block) or chunk
    (``"chunks"`` order) for a layer. ``layer_orders``: the method's own order changes from layer to layer
    (VMoBA's 1D/2D/3D chunks), so tokens can't be permuted into it once per forward. ``stateful``:
    ``video_mask`` takes ``state=``, a dict the caller keeps per (model, layer) for one pipeline call (SVG2
    warm-starts its k-means from the previous step's centroids). ``warm_up(order, options, q=, k=, layer=,
    heads=, state=)``: what a stateful method does on a call that its dense warm-up steps run dense (the arguments are
    ``video_mask``'s; it only updates ``state``: SVG2's ``zero_step_kmeans_init``), called where
    ``warms_up(options)`` is true (so q and k are moved into the order only then); ``None``: nothing.
    ``tail(options)``: whether the layout adds Sol-Attn's pooled term for the key blocks a row does not list
    (``None``: never). ``block_size``: the kernel
    block the method was published with, the default of :func:`~fastdit.methods.build.build_layout` and of
    ``SparseConfig`` (``None``: ``DEFAULT_BLOCK_SIZE``).
    """

    name: str
    options: type
    video_mask: Callable[..., Any]
    orders: tuple[str, ...] = ("raster",)
    dynamic: bool = False
    summary: str = ""
    shape: Callable[[TokenGrid, int, Any, int], tuple[int, int, int] | None] | None = None
    layer_orders: bool = False
    stateful: bool = False
    warm_up: Callable[..., None] | None = None
    warms_up: Callable[[Any], bool] | None = None
    tail: Callable[[Any], bool] | None = None
    block_size: int | None = None

    @property
    def published_block_size(self) -> int:
        """The method's published kernel block in tokens."""
        return self.block_size or DEFAULT_BLOCK_SIZE
