"""Exact attention on a sample of query rows, and what a block layout changes about it.

Attention of a few query rows against every key costs ``rows / S`` of the whole attention, so calibration can
afford it at every layer of the steps it measures (Sparse VideoGen profiles 32-64 rows the same way). For each
candidate layout the rows are recomputed with only the keys the layout lets their query block read (pooled
pyramid levels included, with the reference kernel's pooled keys and ``ln(m)`` bias), which gives per head:

* the squared error of the output rows against exact attention, summed (its ratio to the exact rows' squared
  norm is the relative L2 error), and
* the recall: the share of the exact softmax mass that falls on the key blocks the layout reads.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from fastdit.kernels.common import pyramid_level
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
    ``level`` ``[T]`` say which key block and level each key belongs to; ``query_block [R]`` is each row's
    block and ``key_block [S]`` each model-order key's block.
    """

    logits: torch.Tensor
    values: torch.Tensor
    block: torch.Tensor
    level: torch.Tensor
    query_block: torch.Tensor
    key_block: torch.Tensor


def ordered_keys(exact: ExactRows, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, order: TokenOrder,
                 levels: int = 0) -> OrderedKeys:
    """:class:`OrderedKeys` of ``k, v`` (in ``order``) up to pyramid level ``levels``; ``layout`` is any layout
    over ``order`` (pooling reads its block size and padding)."""
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
    return OrderedKeys(torch.cat(logits, -1), torch.cat(values, 2), torch.cat(blocks), torch.cat(level_of),
                       destination[exact.rows] // block, destination // block)


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
        rows = keys.query_block.cpu()
        read = torch.stack([layout.to_level_map()[:, rows].expand(H, -1, -1) for layout in chunk])
        read = read.to(keys.logits.device).long()  # [C, H, R, nk]: the level each row reads a block at
        allowed = read[..., keys.block] == keys.level  # [C, H, R, T]
        logits = keys.logits.masked_fill(~allowed.unsqueeze(1), -math.inf)
        p = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        out = torch.matmul(p, keys.values)  # [C, B, H, R, D]
        if any(layout.tail for layout in chunk):
            out = _with_tails(out, torch.logsumexp(logits, -1), exact, keys, chunk, qkv)
        covered = (read >= 0)[..., keys.key_block]  # [C, H, R, S] in model order
        recall = (exact.p * covered.unsqueeze(1)).sum(-1).sum((1, 3))  # [C, H]
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
    rows = keys.query_block.to(out.device)
    for c, layout in enumerate(layouts):
        if not layout.tail:
            continue
        tail_lse, tail_out, shift = pooled_tail(*qkv, layout, exact.scale)
        positions = layout.order.destination[exact.rows.cpu()].to(out.device)  # the rows in the layout's order
        row_lse = tail_lse[..., rows] + shift[..., positions]
        top = torch.maximum(lse[c], row_lse)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        a, b = torch.exp(lse[c] - top).unsqueeze(-1), torch.exp(row_lse - top).unsqueeze(-1)
        out[c] = (a * out[c] + b * tail_out[..., rows, :]) / (a + b).clamp_min(1e-30)
    return out


def head_density(layout: BlockLayout, heads: int) -> torch.Tensor:
    """``[heads]``: each head's share of the dense attention work (a pooled pyramid entry counts ``2**-l``)."""
    weight = torch.ones(layout.nnz, dtype=torch.float64) if layout.level is None \
        else torch.exp2(-layout.level.double())
    cumulative = torch.zeros(layout.nnz + 1, dtype=torch.float64)
    torch.cumsum(weight, 0, out=cumulative[1:])
    per_head = (cumulative[layout.row_ptr[:, -1]] - cumulative[layout.row_ptr[:, 0]])
    per_head = per_head / (layout.n_q_blocks * layout.n_kv_blocks)
    return per_head.expand(heads).clone() if layout.num_heads == 1 else per_head
