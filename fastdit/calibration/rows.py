"""Exact attention on a sample of query rows, and what a block layout changes about it.

Attention of a few query rows against every key costs ``rows / S`` of the whole attention, so calibration can
afford it at every layer of the steps it measures (Sparse VideoGen profiles 32-64 rows the same way). For each
candidate layout the rows are recomputed with only the keys the layout lets their query block read (pooled
pyramid levels included, with the reference kernel's pooled keys and ``ln(m)`` bias), which gives per head:

* the squared error of the output rows against exact attention, summed (its ratio to the exact rows' squared
  norm is the relative L2 error), and
* the recall: the share of the exact softmax mass that falls on the key blocks the layout reads.

A layout with a per-query selection (VMoBA) is scored on the token pairs it keeps (each row its own key
groups), not on the blocks around them, as the kernels run it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from fastdit.kernels.common import merge_partial, pyramid_level
from fastdit.kernels.tail import pooled_tail
from fastdit.layout.block import BlockLayout
from fastdit.layout.order import TokenOrder

CHUNK_BYTES = 128 * 2**20  # probabilities of the candidates evaluated together
__all__ = ["ExactRows", "RowError", "OrderedKeys", "sample_rows", "exact_rows", "ordered_keys", "layout_rows",
           "head_density"]


@dataclass
class ExactRows:
    """Dense attention of the sampled rows: ``rows`` (model order), their probabilities ``p [B, H, R, S]`` and
    outputs ``out [B, H, R, D]``; ``q`` the rows' queries and ``keys`` the key validity (``None``: all)."""

    rows: torch.Tensor
    q: torch.Tensor
    p: torch.Tensor
    out: torch.Tensor
    scale: float
    keys: torch.Tensor | None


@dataclass
class RowError:
    """Per head: summed squared output error, summed squared exact norm, summed recall over the rows."""

    sq_error: torch.Tensor
    sq_norm: torch.Tensor
    recall: torch.Tensor
    rows: int


def sample_rows(video: range, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct positions of the video tokens ``video`` (model order), sorted; all when fewer."""
    n = len(video)
    pick = torch.randperm(n, generator=generator)[:count].sort().values
    return pick + video.start


def exact_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, scale: float | None,
               keys: torch.Tensor | None = None) -> ExactRows:
    """Dense attention of query ``rows`` of ``q, k, v [B, H, S, D]`` (model order), in fp32; ``keys [B|1, S]``
    bool hides padded keys as the model's own mask does."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qr = q[:, :, rows].float()
    logits = torch.matmul(qr, k.float().transpose(-1, -2)) * scale
    if keys is not None:
        logits = logits.masked_fill(~keys.view(keys.shape[0], 1, 1, -1), -math.inf)
    p = torch.softmax(logits, dim=-1)
    return ExactRows(rows, qr, p, torch.matmul(p, v.float()), scale, keys)


@dataclass
class OrderedKeys:
    """The sampled rows' logits against every key of a token order and its pooled levels, computed once and
    shared by every candidate layout on that order (a layout only decides which of them a row reads).

    ``logits [B, H, R, T]`` and ``values [B, H, T, D]`` concatenate levels ``0..L`` along ``T``; ``block`` and
    ``level`` ``[T]`` say which key block and level each key belongs to; ``query_position [R]`` is each row's
    position in the order and ``key_position [S]`` each model-order key's (``[H, R]`` and ``[H, S]`` on per-head
    orders); the block size is ``block_size``.
    """

    logits: torch.Tensor
    values: torch.Tensor
    block: torch.Tensor
    level: torch.Tensor
    query_position: torch.Tensor
    key_position: torch.Tensor
    block_size: int


def ordered_keys(exact: ExactRows, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, order: TokenOrder,
                 levels: int = 0) -> OrderedKeys:
    """:class:`OrderedKeys` of ``k, v`` (in ``order``, and in the layout's per-head key order when it has one)
    up to pyramid level ``levels``; ``layout`` is any layout over ``order`` (pooling reads its block size and
    padding; a per-head order, batch 1, places the rows and keys)."""
    block, device = order.block_size, k.device
    if exact.keys is not None:  # padded text keys stay hidden, as the engine's kernel call keeps them
        valid = torch.zeros(exact.keys.shape[0], order.seq_len, dtype=torch.bool, device=device)
        valid[:, order.destination.to(device)] = exact.keys
    else:
        valid = order.valid.to(device).unsqueeze(0)
    pooling = dataclasses.replace(layout, kv_valid=valid[0])
    logits, values, blocks, level_of = [], [], [], []
    for level in range(levels + 1):
        kl, vl, log_count = pyramid_level(k.float(), v.float(), pooling, level)
        s = torch.matmul(exact.q, kl.transpose(-1, -2)) * exact.scale + log_count.to(device)
        if level == 0 and exact.keys is not None:
            s = s.masked_fill(~valid.view(valid.shape[0], 1, 1, -1), -math.inf)
        logits.append(s)
        values.append(vl)
        blocks.append((torch.arange(kl.shape[2], device=device) << level) // block)
        level_of.append(torch.full((kl.shape[2],), level, device=device))
    destination = order.destination.to(device)
    query_dest, key_dest = destination, destination
    if layout.head_order is not None:  # where each base position sits in the head's permuted sequences
        query_dest, key_dest = (_slots(source.to(device), order.seq_len)[:, destination]
                                for source in (layout.head_order.query_source[0], layout.head_order.key_source[0]))
    return OrderedKeys(torch.cat(logits, -1), torch.cat(values, 2), torch.cat(blocks), torch.cat(level_of),
                       query_dest[..., exact.rows], key_dest, block)


def _slots(source: torch.Tensor, length: int) -> torch.Tensor:
    """``[H, length]``: the position in a per-head order of each base-order position (``source [H, n]``: the base
    position at each of the first ``n`` slots; the rest stay in place)."""
    slots = torch.arange(length, device=source.device).repeat(source.shape[0], 1)
    slots[:, :source.shape[1]] = torch.empty_like(source).scatter_(
        1, source, torch.arange(source.shape[1], device=source.device).expand_as(source))
    return slots


def _reads(layout: BlockLayout, keys: OrderedKeys, batch: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the sampled rows read under ``layout``: ``[batch, heads, R, T]`` bool over ``keys``' keys (all
    levels) and ``[batch, heads, R, S]`` bool over the model-order keys at any level."""
    device = keys.logits.device
    if layout.selection is not None:  # each row its own groups (level 0 only: a selection has no pooling)
        selection = layout.selection.to(device)
        chosen = selection.select[:, :, keys.query_position]  # [b, h, R, G]
        group = selection.key_group
        model_group = group[keys.key_position]
        allowed = chosen[..., group.clamp(min=0)] & (group >= 0)
        covered = chosen[..., model_group.clamp(min=0)] & (model_group >= 0)
        return allowed.expand(batch, heads, -1, -1), covered.expand(batch, heads, -1, -1)
    rows = (keys.query_position // keys.block_size).cpu().expand(heads, -1)  # [H, R] (per head on per-head orders)
    read = layout.to_level_map().expand(heads, -1, -1)[torch.arange(heads)[:, None], rows]
    read = read.to(device).long()  # [H, R, nk]: the level each row reads a block at
    allowed = read[..., keys.block] == keys.level  # [H, R, T]
    key_block = (keys.key_position // keys.block_size).expand(heads, -1)  # [H, S]
    covered = torch.gather(read >= 0, 2, key_block[:, None, :].expand(-1, read.shape[1], -1))  # model order
    return allowed.expand(batch, -1, -1, -1), covered.expand(batch, -1, -1, -1)


def layout_rows(exact: ExactRows, keys: OrderedKeys, layouts: list[BlockLayout],
                qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> list[RowError]:
    """The sampled rows under each of ``layouts`` against ``exact`` (``keys``: the rows' logits on the
    layouts' order, to at least their deepest pyramid level). Candidates are evaluated together, in groups
    whose probabilities stay under ``CHUNK_BYTES``. ``qkv``: ``q, k, v [B, H, S, D]`` in the layouts' order,
    needed for layouts with Sol-Attn's pooled tail (merged into each row as the kernels merge it)."""
    B, H, R, T = keys.logits.shape
    group = max(1, CHUNK_BYTES // (B * H * R * T * 4))
    errors = []
    for start in range(0, len(layouts), group):
        chunk = layouts[start:start + group]
        allowed, covered = (torch.stack(x) for x in zip(*(_reads(layout, keys, B, H) for layout in chunk)))
        logits = keys.logits.masked_fill(~allowed, -math.inf)  # [C, B, H, R, T]
        p = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        out = torch.matmul(p, keys.values)  # [C, B, H, R, D]
        if any(layout.tail for layout in chunk):
            out = _with_tails(out, torch.logsumexp(logits, -1), exact, keys, chunk, qkv)
        recall = (exact.p * covered).sum(-1).sum((1, 3))  # [C, H]
        sq_error = ((out - exact.out) ** 2).sum((1, 3, 4))
        sq_norm = (exact.out ** 2).sum((0, 2, 3))
        errors += [RowError(sq_error[c], sq_norm, recall[c], B * R) for c in range(len(chunk))]
    return errors


def _with_tails(out: torch.Tensor, lse: torch.Tensor, exact: ExactRows, keys: OrderedKeys,
                layouts: list[BlockLayout], qkv) -> torch.Tensor:
    """``out [C, B, H, R, D]`` with each tail layout's pooled terms merged into its rows (``lse [C, B, H, R]``:
    the rows' log-sum-exp over the keys they read)."""
    if qkv is None:
        raise ValueError("layouts with Sol-Attn's pooled tail need q, k, v (qkv=) to measure their rows")
    out = out.clone()
    positions = keys.query_position.to(out.device)  # the rows in the layouts' order (no per-head order here)
    rows = positions // keys.block_size
    for c, layout in enumerate(layouts):
        if not layout.tail:
            continue
        tail_lse, tail_out, shift = pooled_tail(*qkv, layout, exact.scale)
        out[c] = merge_partial(out[c], lse[c], tail_out[..., rows, :], tail_lse[..., rows] + shift[..., positions])[0]
    return out


def head_density(layout: BlockLayout, heads: int) -> torch.Tensor:
    """``[heads]``: each head's share of the dense attention work (a pooled pyramid entry counts ``2**-l``; a
    per-query selection counts the token pairs it keeps)."""
    if layout.selection is not None:
        selection = layout.selection
        kept = selection.kept_pairs().double().sum((0, 2)).cpu()
        per_head = kept / (selection.select.shape[0] * selection.seq_len_q * selection.seq_len_kv)
        return per_head.expand(heads).clone() if per_head.numel() == 1 else per_head
    weight = torch.ones(layout.nnz, dtype=torch.float64) if layout.level is None \
        else torch.exp2(-layout.level.double())
    cumulative = torch.zeros(layout.nnz + 1, dtype=torch.float64)
    torch.cumsum(weight, 0, out=cumulative[1:])
    per_head = (cumulative[layout.row_ptr[:, -1]] - cumulative[layout.row_ptr[:, 0]])
    per_head = per_head / (layout.n_q_blocks * layout.n_kv_blocks)
    return per_head.expand(heads).clone() if layout.num_heads == 1 else per_head
