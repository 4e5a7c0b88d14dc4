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
from fastdit.layout.head_order import HeadOrder
from fastdit.layout.order import TokenOrder, make_order
from fastdit.layout.selection import QuerySelection
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
                k: torch.Tensor | None = None, layer: int = 0, heads: HeadSlice | None = None,
                state: dict | None = None) -> BlockLayout:
    """Layout of a validated method and options on ``order``; ``q, k`` already in that order (dynamic
    methods only); static layouts come from a cache. ``heads``: which of the model's heads ``q, k`` hold
    (``None``: all); ``state``: a stateful method's state for this layer (``None``: none kept)."""
    if not spec.dynamic:
        return _static_layout(spec.name, order, options)
    if q is None or k is None:
        raise ValueError(f"method {spec.name!r} chooses blocks from the data: pass q= and k= "
                         "([B, H, S, D], the model's token order)")
    with torch.no_grad():  # a layout is a choice, not a function to differentiate (training stays lean)
        return _assemble(order, *_as_parts(spec.video_mask(order, options, q=q, k=k, layer=layer,
                                                           **_head_slice(heads), **_state(spec, state))),
                         **_routing(spec, (options,)))


def make_head_layout(spec: Method, order: TokenOrder, heads: tuple[Any, ...], *, q: torch.Tensor | None = None,
                     k: torch.Tensor | None = None, layer: int = 0, shard: HeadSlice | None = None,
                     state: dict | None = None) -> BlockLayout:
    """One layout whose heads follow options of their own (``heads``: validated options per head, ``None`` for
    a head that attends every block), so a layer with per-head settings is still one kernel call.

    Each distinct setting is evaluated on all heads (a dynamic method decides from all of them exactly as it
    does for a uniform layer, so a head gets the blocks it would get alone) and each head keeps its own
    setting's rows. Static layouts come from a cache, like :func:`make_layout`'s. ``shard``: which of the
    model's heads ``q, k`` and ``heads`` are (``None``: all); ``state``: as :func:`make_layout`'s.
    """
    if len(set(heads)) == 1 and heads[0] is not None:
        return make_layout(spec, order, heads[0], q=q, k=k, layer=layer, heads=shard, state=state)
    if not spec.dynamic:
        return _static_head_layout(spec.name, order, tuple(heads))
    if q is None or k is None:
        raise ValueError(f"method {spec.name!r} chooses blocks from the data: pass q= and k=")
    if q.shape[1] != len(heads):
        raise ValueError(f"{len(heads)} per-head settings for a call with {q.shape[1]} heads")
    with torch.no_grad():
        return _head_layout(spec, order, heads, q=q, k=k, layer=layer, **_head_slice(shard), **_state(spec, state))


def _head_slice(heads: HeadSlice | None) -> dict[str, Any]:
    """The ``heads=`` argument of a dynamic method's ``video_mask``, passed only for a slice of the heads (so a
    method registered without that argument keeps working in a single process)."""
    return {} if heads is None else {"heads": heads}


def _state(spec: Method, state: dict | None) -> dict[str, Any]:
    """The ``state=`` argument of a stateful method's ``video_mask`` (none for the others)."""
    return {"state": state} if spec.stateful else {}


@functools.lru_cache(maxsize=128)
def _static_layout(name: str, order: TokenOrder, opts: Any) -> BlockLayout:
    return _assemble(order, *_as_parts(_static_video_mask(name, order, opts)))


@functools.lru_cache(maxsize=128)
def _static_video_mask(name: str, order: TokenOrder, opts: Any):
    return get_method(name).video_mask(order, opts)


@functools.lru_cache(maxsize=128)
def _static_head_layout(name: str, order: TokenOrder, heads: tuple[Any, ...]) -> BlockLayout:
    return _head_layout(get_method(name), order, heads)


def _head_layout(spec: Method, order: TokenOrder, settings: tuple[Any, ...], **data: Any) -> BlockLayout:
    """Stack each head's rows from the video mask of its own setting (dense heads keep every block); ``data``
    is a dynamic method's ``q``, ``k``, ``layer`` and, on a slice of the heads, ``heads`` (and a stateful
    method's ``state``: every setting starts from the state the call found, so a per-head order, which must not
    depend on the setting, comes out the same for each). A per-head order's layout has a head per batch element
    and head: setting ``h`` applies to heads ``h, h + H, ...``. Per-query selections (VMoBA) are stacked by
    :func:`_head_selection`."""
    nv, H = order.video_blocks, len(settings)
    head_order = None
    masks = levels = None
    state = data.pop("state", None)
    before = None if state is None else dict(state)  # each setting starts from the state the call found
    results = {}
    for options in dict.fromkeys(h for h in settings if h is not None):
        if spec.dynamic:
            if state is not None:
                state.clear()
                state.update(before)
                data["state"] = state
            results[options] = spec.video_mask(order, options, **data)
        else:
            results[options] = _static_video_mask(spec.name, order, options)
    if any(isinstance(r, QuerySelection) for r in results.values()):
        return _assemble(order, _head_selection(settings, results), None)
    for options, result in results.items():
        mask, level, head_order = _as_parts(result)
        mask = mask.reshape(-1, nv, nv)
        if masks is None:
            rows = H * (1 if head_order is None else head_order.batch)
            masks = torch.ones(rows, nv, nv, dtype=torch.bool)
        for h in range(masks.shape[0]):
            if settings[h % H] == options:
                masks[h] = mask[h % mask.shape[0]]
                if level is not None:
                    if levels is None:
                        levels = torch.zeros(masks.shape[0], nv, nv, dtype=torch.int8)
                    levels[h] = level.reshape(-1, nv, nv)[h % level.shape[0]]
    return _assemble(order, masks, levels, head_order, **_routing(spec, settings))


def _head_selection(settings: tuple[Any, ...], results: dict[Any, Any]) -> QuerySelection:
    """Each head's rows of its own setting's per-query selection; a dense head (``None``) selects every group
    from each real query. The settings must share their key groups (VMoBA: the same chunk shapes)."""
    chosen = list(results.values())
    first = chosen[0]
    if not all(isinstance(r, QuerySelection) and torch.equal(r.key_group, first.key_group) for r in chosen):
        raise ValueError("per-head settings of a layer that selects per query must share their key groups "
                         "(for vmoba: the same chunk shapes and selection)")
    batch = max(r.select.shape[0] for r in chosen)
    real = (first.key_group >= 0).to(first.select.device)
    select = real.view(1, 1, -1, 1).expand(batch, len(settings), -1, first.n_groups).clone()
    for h, options in enumerate(settings):
        if options is not None:
            mine = results[options].select
            select[:, h] = mine[:, h % mine.shape[1]]
    return QuerySelection(select, first.key_group)


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


def _as_parts(result) -> tuple[torch.Tensor, torch.Tensor | None, HeadOrder | None]:
    """A method's ``mask``, ``(mask, level)`` or ``(mask, level, head_order)`` as the triple."""
    if not isinstance(result, tuple):
        return result, None, None
    return (*result, None) if len(result) == 2 else result


def _assemble(order: TokenOrder, video: torch.Tensor | QuerySelection, level: torch.Tensor | None,
              head_order: HeadOrder | None = None, **routing: Any) -> BlockLayout:
    """Embed the video-video block mask in the full mask, where text rows and columns are always kept (a
    per-query selection over the video positions: see :func:`_full_selection`); ``routing``: the layout's
    ``tail`` and ``routed_by``."""
    if isinstance(video, QuerySelection):
        selection = _full_selection(order, video)
        return BlockLayout.from_block_mask(selection.block_mask(order.block_size, order.block_size), order,
                                           selection=selection)
    if video.ndim == 2:
        video = video.unsqueeze(0)
    nv = order.video_blocks
    if order.text_blocks == 0:
        return BlockLayout.from_block_mask(video, order, level, head_order, **routing)
    heads, nb = video.shape[0], order.num_blocks
    mask = torch.ones(heads, nb, nb, dtype=torch.bool)
    mask[:, :nv, :nv] = video
    full_level = None
    if level is not None:
        full_level = torch.zeros(heads, nb, nb, dtype=level.dtype)
        full_level[:, :nv, :nv] = level
    return BlockLayout.from_block_mask(mask, order, full_level, head_order, **routing)


def _full_selection(order: TokenOrder, video: QuerySelection) -> QuerySelection:
    """A selection over the video positions extended to the whole sequence: the text keys are one more group,
    which every video query that selects anything attends, and each text query attends every group."""
    text = order.grid.text_tokens
    if not text:
        return video
    batch, heads, nv, groups = video.select.shape
    select = video.select.new_zeros(batch, heads, order.seq_len, groups + 1)
    select[:, :, :nv, :groups] = video.select
    select[:, :, :nv, groups] = video.select.any(-1)  # padding positions stay without keys
    select[:, :, nv:nv + text] = True
    key_group = torch.full((order.seq_len,), -1, dtype=torch.int64, device=video.key_group.device)
    key_group[:nv] = video.key_group
    key_group[nv:nv + text] = groups
    return QuerySelection(select, key_group)
