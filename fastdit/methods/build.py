"""From a method's mask to a :class:`~fastdit.BlockLayout`: options checked, the token order picked, text blocks
added, static layouts cached per (order, options).

A method (:mod:`fastdit.methods.base`) only returns a block mask over its order's video blocks; this module
picks the order (the one it was published with unless the caller names another), turns the mask into a CSR
layout, adds the text rows and columns every method keeps, and caches static layouts.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from fastdit.layout.block import BlockLayout
from fastdit.layout.grid import TokenGrid
from fastdit.layout.order import TokenOrder, make_order
from fastdit.methods.base import HeadSlice, Method
from fastdit.methods.registry import get_method

__all__ = ["build_layout", "parse_options", "check_order", "make_layout", "make_head_layout", "layout_order",
           "clear_layout_cache"]


def parse_options(method: Method, options: dict[str, Any]):
    """Validate ``options`` against the method's options dataclass (unknown keys name the allowed ones)."""
    allowed = {f.name for f in dataclasses.fields(method.options)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for method {method.name!r}; "
                         f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return method.options(**frozen)


def check_order(spec: Method, order: str | None) -> str:
    """``order`` (or the method's published one when ``None``) if the method is defined on it."""
    if order is None:
        return spec.orders[0]
    if order not in spec.orders:
        raise ValueError(f"method {spec.name!r} is defined on the token order(s) {', '.join(spec.orders)}, "
                         f"not {order!r}")
    return order


def layout_order(spec: Method, grid: TokenGrid, block_size: int, options: Any, *, order: str | None = None,
                 tile: tuple[int, int, int] | None = None, layer: int = 0) -> TokenOrder:
    """The token order ``spec`` runs on for ``grid`` at ``layer``: ``order`` if given, else the published one;
    ``tile`` overrides the tile of the ``"tiles"`` order."""
    kind = check_order(spec, order)
    shape = tile if kind == "tiles" else None
    if shape is None and kind == spec.orders[0] and spec.shape is not None:  # the method's own tile or chunk
        shape = spec.shape(grid, block_size, options, layer)
    return make_order(kind, grid, block_size, shape)


def build_layout(
    method: str,
    grid: TokenGrid,
    *,
    block_size: int | None = None,
    order: str | None = None,
    tile: tuple[int, int, int] | None = None,
    q: torch.Tensor | None = None,
    k: torch.Tensor | None = None,
    layer: int = 0,
    **options: Any,
) -> BlockLayout:
    """The block layout of ``method`` on ``grid``; with no options, the method's published defaults.

    Args:
        method: a registered method (``fastdit.available_methods()``).
        grid: the latent token grid (with its text tokens, for joint-attention models).
        block_size: the kernel block in tokens (``None``: the method's published one, 64 for sol, else
            ``DEFAULT_BLOCK_SIZE``).
        order: the token order the layout is defined in (default: the one the method was published with;
            see :mod:`fastdit.layout.order`).
        tile: the ``(t, h, w)`` tile of the ``"tiles"`` order.
        q, k: ``[B, H, S, D]`` in the model's token order (``S = grid.num_tokens + grid.text_tokens``);
            dynamic methods (pyramid, vmoba) choose blocks from them, static ones ignore them.
        layer: the transformer block (vmoba's chunk shape cycles with it).
        **options: the method's knobs.

    Returns:
        The :class:`~fastdit.BlockLayout` in its own token order (``layout.order``): move ``[B, H, S, D]``
        tensors in with ``layout.to_layout_order(x)`` and back with ``layout.from_layout_order(x)``.
    """
    spec = get_method(method)
    if not isinstance(grid, TokenGrid):
        raise TypeError(f"grid must be a fastdit.TokenGrid, got {type(grid).__name__}")
    opts = parse_options(spec, options)
    block_size = spec.published_block_size if block_size is None else block_size
    ordered = layout_order(spec, grid, block_size, opts, order=order, tile=tile, layer=layer)
    if spec.dynamic and q is not None and k is not None:
        q, k = ordered.to_order(q), ordered.to_order(k)
    return make_layout(spec, ordered, opts, q=q, k=k, layer=layer)


def make_layout(spec: Method, order: TokenOrder, options: Any, *, q: torch.Tensor | None = None,
                k: torch.Tensor | None = None, layer: int = 0, heads: HeadSlice | None = None) -> BlockLayout:
    """Layout of a validated method and options on ``order``; ``q, k`` already in that order (dynamic
    methods only); static layouts come from a cache. ``heads``: which of the model's heads ``q, k`` hold
    (``None``: all)."""
    if not spec.dynamic:
        return _static_layout(spec.name, order, options)
    if q is None or k is None:
        raise ValueError(f"method {spec.name!r} chooses blocks from the data: pass q= and k= "
                         "([B, H, S, D], the model's token order)")
    with torch.no_grad():  # a layout is a choice, not a function to differentiate (training stays lean)
        return _assemble(order, *_as_pair(spec.video_mask(order, options, q=q, k=k, layer=layer,
                                                          **_head_slice(heads))), **_routing(spec, (options,)))


def make_head_layout(spec: Method, order: TokenOrder, heads: tuple[Any, ...], *, q: torch.Tensor | None = None,
                     k: torch.Tensor | None = None, layer: int = 0, shard: HeadSlice | None = None) -> BlockLayout:
    """One layout whose heads follow options of their own (``heads``: validated options per head, ``None`` for
    a head that attends every block), so a layer with per-head settings is still one kernel call.

    Each distinct setting is evaluated on all heads (a dynamic method decides from all of them exactly as it
    does for a uniform layer, so a head gets the blocks it would get alone) and each head keeps its own
    setting's rows. Static layouts come from a cache, like :func:`make_layout`'s. ``shard``: which of the
    model's heads ``q, k`` and ``heads`` are (``None``: all).
    """
    if len(set(heads)) == 1 and heads[0] is not None:
        return make_layout(spec, order, heads[0], q=q, k=k, layer=layer, heads=shard)
    if not spec.dynamic:
        return _static_head_layout(spec.name, order, tuple(heads))
    if q is None or k is None:
        raise ValueError(f"method {spec.name!r} chooses blocks from the data: pass q= and k=")
    if q.shape[1] != len(heads):
        raise ValueError(f"{len(heads)} per-head settings for a call with {q.shape[1]} heads")
    with torch.no_grad():
        return _head_layout(spec, order, heads, q=q, k=k, layer=layer, **_head_slice(shard))


def _head_slice(heads: HeadSlice | None) -> dict[str, Any]:
    """The ``heads=`` argument of a dynamic method's ``video_mask``, passed only for a slice of the heads (so a
    method registered without that argument keeps working in a single process)."""
    return {} if heads is None else {"heads": heads}


@functools.lru_cache(maxsize=128)
def _static_layout(name: str, order: TokenOrder, opts: Any) -> BlockLayout:
    return _assemble(order, *_as_pair(_static_video_mask(name, order, opts)))


@functools.lru_cache(maxsize=128)
def _static_video_mask(name: str, order: TokenOrder, opts: Any):
    return get_method(name).video_mask(order, opts)


@functools.lru_cache(maxsize=128)
def _static_head_layout(name: str, order: TokenOrder, heads: tuple[Any, ...]) -> BlockLayout:
    return _head_layout(get_method(name), order, heads)


def _head_layout(spec: Method, order: TokenOrder, settings: tuple[Any, ...], **data: Any) -> BlockLayout:
    """Stack each head's rows from the video mask of its own setting (dense heads keep every block); ``data``
    is a dynamic method's ``q``, ``k``, ``layer`` and, on a slice of the heads, ``heads``."""
    nv = order.video_blocks
    masks = torch.ones(len(settings), nv, nv, dtype=torch.bool)
    levels = torch.zeros(len(settings), nv, nv, dtype=torch.int8)
    pooled = False
    for options in dict.fromkeys(h for h in settings if h is not None):
        if spec.dynamic:
            mask, level = _as_pair(spec.video_mask(order, options, **data))
        else:
            mask, level = _as_pair(_static_video_mask(spec.name, order, options))
        mask = mask.reshape(-1, nv, nv)
        for h, head_options in enumerate(settings):
            if head_options == options:
                masks[h] = mask[h % mask.shape[0]]
                if level is not None:
                    levels[h] = level.reshape(-1, nv, nv)[h % level.shape[0]]
                    pooled = True
    return _assemble(order, masks, levels if pooled else None, **_routing(spec, settings))


def _routing(spec: Method, settings: tuple[Any, ...]) -> dict[str, Any]:
    """The ``tail`` and ``routed_by`` of a layout whose heads follow ``settings`` (``None``: a dense head, whose
    full rows leave the tail nothing to add)."""
    if spec.tail is None:
        return {}
    tails = {spec.tail(s) for s in settings if s is not None}
    if len(tails) > 1:
        raise ValueError(f"method {spec.name!r}: heads of one layer must all have the pooled tail or none")
    given = [s for s in settings if s is not None]
    routed_by = None
    if len(set(given)) == 1 and len(given) == len(settings):  # one rule for every head: a router can redo it
        routed_by = (spec.name, tuple((f.name, getattr(given[0], f.name)) for f in dataclasses.fields(given[0])))
    return {"tail": tails == {True}, "routed_by": routed_by}


def clear_layout_cache() -> None:
    """Forget every cached static layout (a benchmark timing how long a layout takes to build needs this)."""
    for cached in (_static_layout, _static_video_mask, _static_head_layout):
        cached.cache_clear()


def _as_pair(result) -> tuple[torch.Tensor, torch.Tensor | None]:
    return result if isinstance(result, tuple) else (result, None)


def _assemble(order: TokenOrder, video: torch.Tensor, level: torch.Tensor | None, **routing: Any) -> BlockLayout:
    """Embed the video-video block mask in the full mask, where text rows and columns are always kept;
    ``routing``: the layout's ``tail`` and ``routed_by``."""
    if video.ndim == 2:
        video = video.unsqueeze(0)
    nv = order.video_blocks
    if order.text_blocks == 0:
        return BlockLayout.from_block_mask(video, order, level, **routing)
    heads, nb = video.shape[0], order.num_blocks
    mask = torch.ones(heads, nb, nb, dtype=torch.bool)
    mask[:, :nv, :nv] = video
    full_level = None
    if level is not None:
        full_level = torch.zeros(heads, nb, nb, dtype=level.dtype)
        full_level[:, :nv, :nv] = level
    return BlockLayout.from_block_mask(mask, order, full_level, **routing)


