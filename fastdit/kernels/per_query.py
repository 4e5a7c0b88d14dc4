"""Torch reference for layouts with a per-query selection: exactly the token pairs it keeps, on any device.

As the official MoBA code does, each key group is attended by the queries that chose it, except that the
groups are taken in runs of ``MERGE`` consecutive ones (VMoBA's chunks are numbered in raster order, so a run
is neighbouring chunks, which the same queries often choose): a query's choices within a run form one
*merged group*, their keys end to end, attended as one flash row. That leaves fewer partial results per query
to gather and merge and gives each flash call longer key sets, where the CPU kernel runs nearer its dense
rate per pair (one thread, fp32, D=64: about 4.6 ns per pair at 96 keys, 3.8 at 192, 3.1 from 288 keys on,
dense 3.1). On VMoBA's published setting over an 18 816-token grid (3D cubes of 96 keys, 195 chunks) a query
has 30.7 chosen chunks but 22 merged groups (runs of 2 or 8 do worse: fewer merges, or many small segments),
and the 3D case takes 412 instead of 437 ms of CPU time (one thread, fp32, D=64, median of 6 alternating
runs). Groups of ``SHORT_KEYS`` keys and more on average are not merged: 2D's 144-key chunks took 317 ms
merged against 306 ms alone, since the key sets are long enough already and merging splits the segments.

The kept (query, merged group) pairs of every batch element and head are sorted into *segments* (one per head
and merged group). A segment's queries are padded to a bucketed count (a multiple of ``QUANTUM`` rows,
rounded up to eight steps per octave: under 1/8 padding, 6-7% on that grid); segments with equally many keys
and padded queries run as one batched flash call that returns each partial output with its log-sum-exp. A
query's partial results are merged by log-sum-exp with ``index_add``, the weights computed from the
log-sum-exps alone first. Keys are gathered once per segment and queries once per kept pair, so the work is
the kept pairs plus the padding (never the envelope's blocks) and no tensor is ``S × S``. Rows are processed
in slices whose partial outputs stay under ``CHUNK_BYTES``; Python loops over slices and buckets only, never
over groups or heads.
"""

from __future__ import annotations

import torch

from fastdit.layout.block import BlockLayout

__all__ = ["torch_selected_attention"]

QUANTUM = 32
MERGE = 4
SHORT_KEYS = 128
CHUNK_BYTES = 512 * 2**20


def _attend_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``q [N, M, D]`` on ``k, v [N, L, D]``: output ``[N, M, D]`` and fp32 log-sum-exp ``[N, M]``. Without
    autograd on the CPU, the fused flash kernel SDPA itself runs (it returns the log-sum-exp); otherwise an
    explicit fp32 softmax, which autograd differentiates through the log-sum-exp as well."""
    if not differentiable and q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), 0.0, False, scale=scale)[:2]
        return out.squeeze(1), lse.squeeze(1)
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    lse = torch.logsumexp(s, dim=-1)
    return torch.matmul(torch.exp(s - lse.unsqueeze(-1)), v.float()), lse


def _group_keys(layout: BlockLayout, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The valid key positions sorted by group, each group's first index into them, and its size."""
    selection = layout.selection
    group = selection.key_group.to(device)
    valid = group >= 0
    if layout.kv_valid is not None:
        valid &= layout.kv_valid.to(device)
    positions = valid.nonzero().flatten()
    positions = positions[torch.argsort(group[positions], stable=True)]
    sizes = torch.bincount(group[positions], minlength=selection.n_groups)
    return positions, torch.cumsum(sizes, 0) - sizes, sizes


def _merged_keys(keys: tuple[torch.Tensor, torch.Tensor, torch.Tensor], merge: int) -> tuple[torch.Tensor, ...]:
    """The keys of every *merged group*: run ``r`` of ``merge`` consecutive groups and a non-empty subset
    ``code`` of it (bit ``i``: group ``r · merge + i``) is merged group ``r · 2**merge + code``, its keys the
    members' keys end to end. Returns positions, first index and size per merged group, as ``_group_keys``."""
    positions, starts, sizes = keys
    runs = -(-sizes.numel() // merge)
    member_sizes = torch.cat([sizes, sizes.new_zeros(runs * merge - sizes.numel())]).view(runs, 1, merge)
    member_starts = torch.cat([starts, starts.new_zeros(runs * merge - starts.numel())]).view(runs, 1, merge)
    bits = (torch.arange(2 ** merge, device=sizes.device).view(-1, 1) >> torch.arange(merge, device=sizes.device)) & 1
    lengths = (member_sizes * bits).flatten()  # [runs · 2**merge · merge]: each member's keys, 0 if left out
    firsts = member_starts.expand(-1, 2 ** merge, -1).flatten()
    # the members' key ranges end to end: one arange shifted per range
    ends = torch.cumsum(lengths, 0)
    shift = torch.repeat_interleave(firsts - (ends - lengths), lengths)
    merged = positions[torch.arange(int(ends[-1]) if ends.numel() else 0, device=sizes.device) + shift]
    merged_sizes = lengths.view(-1, merge).sum(1)
    return merged, torch.cumsum(merged_sizes, 0) - merged_sizes, merged_sizes


def _bucketed(count: torch.Tensor) -> torch.Tensor:
    """The query rows a segment of ``count`` queries is padded to: its ``QUANTUM``-row tiles, 1 to 16 exactly,
    then rounded up to eight steps per octave (18, 20, ..., 32, 36, 40, ...), so that few distinct sizes
    (batched calls) remain."""
    tiles = -(-count // QUANTUM)
    step = torch.exp2((torch.log2(tiles.float()).floor() - 3).clamp(min=0)).long()
    return -(-tiles // step) * step * QUANTUM


def _attend_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chosen: torch.Tensor, first: int, last: int,
                 keys: tuple[torch.Tensor, torch.Tensor, torch.Tensor], merge: int, scale: float,
                 differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``[last - first, D]`` (fp32) and log-sum-exp ``[last - first]`` of the flattened (batch · head ·
    query) rows ``first .. last``; ``chosen [B·H, S, G]`` the groups each row attends, ``q [B·H·S, D]``,
    ``k, v [B·H·S_kv, D]``, ``keys`` the merged groups' keys for runs of ``merge`` groups (the groups' own at
    ``merge`` 1)."""
    positions, starts, sizes = keys
    n_heads, seq_len, n_groups = chosen.shape
    device, seq_kv, n_rows = q.device, k.shape[0] // n_heads, last - first
    head0 = first // seq_len
    picked = chosen[head0:(last - 1) // seq_len + 1]
    if merge == 1:  # each group alone (``keys`` are the groups'): the transposed mask lists pairs by segment
        heads, groups, queries = picked.transpose(1, 2).nonzero(as_tuple=True)
        key, rows = heads * n_groups + groups, (heads + head0) * seq_len + queries
    else:
        runs = -(-n_groups // merge)
        if runs * merge > n_groups:
            picked = torch.cat([picked, picked.new_zeros(*picked.shape[:2], runs * merge - n_groups)], -1)
        # each query's subset of each run of merge groups (bit i: group run · merge + i): the merged group it
        # attends there, in (head, run, query) order
        bits = (1 << torch.arange(merge, device=device)).to(torch.uint8)
        code = (picked.view(torch.uint8).view(*picked.shape[:2], runs, merge) * bits).sum(-1, dtype=torch.uint8)
        code = code.transpose(1, 2).flatten()
        flat = code.nonzero().flatten()
        n_groups = runs << merge
        key = (flat // seq_len) * (1 << merge) + code[flat]  # head · n_groups + merged group
        # stable: (head, merged group, query) order; int32 sorts twice as fast where the keys fit
        key, by_segment = torch.sort(key.int() if n_groups * picked.shape[0] < 2**31 else key, stable=True)
        flat = flat[by_segment]
        rows = (flat // (runs * seq_len) + head0) * seq_len + flat % seq_len
    if first % seq_len or last % seq_len:  # the slice cuts a head: keep its own rows
        inside = (rows >= first) & (rows < last)
        key, rows = key[inside], rows[inside]
    segment, segment_of_pair, counts = torch.unique_consecutive(key.long(), return_inverse=True, return_counts=True)
    head, group = segment // n_groups + head0, segment % n_groups
    length, padded = sizes[group], _bucketed(counts)
    bucket = length * (int(padded.max()) + 1) + padded
    by_bucket = torch.argsort(bucket, stable=True)  # over segments (a few per head and group), not pairs
    place = torch.empty_like(by_bucket)
    place[by_bucket] = torch.arange(by_bucket.numel(), device=device)
    offset = torch.cumsum(padded[by_bucket], 0) - padded[by_bucket]  # each segment's first slot, bucket order
    rank = torch.arange(rows.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[segment_of_pair]
    slot_row = torch.full((int(padded.sum()),), -1, dtype=torch.int64, device=device)
    slot_row[offset[place[segment_of_pair]] + rank] = rows - first
    local = slot_row.clamp(min=0)
    outs, lses = [], []
    _, per_bucket = torch.unique_consecutive(bucket[by_bucket], return_counts=True)
    # without autograd, every bucket's queries are gathered into one reused buffer (a fresh one per bucket
    # costs the page faults of a new allocation, as much as the gather itself)
    widest = int((per_bucket * padded[by_bucket][torch.cumsum(per_bucket, 0) - per_bucket]).max())
    gathered = None if differentiable else q.new_empty(widest, q.shape[-1])
    done = 0
    for n in per_bucket.tolist():
        segments = by_bucket[done:done + n]
        count, size = int(padded[segments[0]]), int(length[segments[0]])
        start = int(offset[done])
        query_idx = local[start:start + n * count] + first
        key_idx = (head[segments].unsqueeze(1) * seq_kv
                   + positions[starts[group[segments]].unsqueeze(1) + torch.arange(size, device=device)]).flatten()
        # index_select: a row gather several times faster than indexing
        queries = q.index_select(0, query_idx) if differentiable else \
            torch.index_select(q, 0, query_idx, out=gathered[:n * count])
        o, lse = _attend_lse(queries.view(n, count, -1),
                             k.index_select(0, key_idx).view(n, size, -1),
                             v.index_select(0, key_idx).view(n, size, -1), scale, differentiable)
        outs.append(o.reshape(n * count, -1))
        lses.append(lse.reshape(-1))
        done += n
    # merge by log-sum-exp, from the log-sum-exps alone first (no partial output is copied to do so); the
    # running maximum only keeps exp() in range (the result does not depend on it)
    lse = torch.cat(lses).masked_fill(slot_row < 0, float("-inf"))
    top = torch.full((n_rows,), float("-inf"), device=device).scatter_reduce(0, local, lse.detach(), "amax")
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weight = torch.exp(lse - top[local])  # 0 on padding slots
    total = torch.zeros(n_rows, device=device).index_add(0, local, weight)
    weight = weight / torch.where(total > 0, total, torch.ones_like(total))[local]
    merged = torch.zeros(n_rows, q.shape[-1], device=device)
    done = 0
    for o in outs:
        w = weight[done:done + o.shape[0], None]
        # in place where nothing is differentiated and the output is fp32 already; o * w is fp32 in one pass
        part = o.mul_(w) if not differentiable and o.dtype == w.dtype else o * w
        merged.index_add_(0, local[done:done + o.shape[0]], part)
        done += o.shape[0]
    return merged, top + torch.log(total)


def torch_selected_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, scale: float,
                             return_lse: bool = False):
    """Attention of ``q [B, H, S, D]`` on ``k, v [B, H, S_kv, D]`` on exactly the pairs ``layout.selection``
    keeps (keys outside ``layout.kv_valid`` dropped too). Returns ``out [B, H, S, D]`` in ``q``'s dtype (zero
    for a query that keeps no key) and, with ``return_lse``, the fp32 ``lse [B, H, S]`` (``-inf`` there)."""
    differentiable = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    B, H, S, D = q.shape
    select = layout.selection.select.to(q.device)
    group_keys = _group_keys(layout, q.device)
    sizes = group_keys[2]
    chosen = (select & (sizes > 0)).expand(B, H, S, -1).reshape(B * H * S, -1)
    # merging pays where groups are short: from about 144 keys on, the flash rate is near dense already and
    # merging only splits segments into smaller ones
    merge = MERGE if bool((sizes > 0).any()) and float(sizes[sizes > 0].float().mean()) < SHORT_KEYS else 1
    keys = _merged_keys(group_keys, merge) if merge > 1 else group_keys
    flat = [x.reshape(-1, D) for x in (q, k, v)]
    ends = torch.cumsum(chosen.sum(1), 0)
    budget = max(1, CHUNK_BYTES // (4 * D))  # kept pairs whose fp32 partial outputs fit the budget
    marks = torch.arange(1, (int(ends[-1]) if ends.numel() else 0) // budget + 1, device=q.device) * budget
    cuts = torch.searchsorted(ends, marks, right=True).tolist()
    bounds = sorted({0, *cuts, B * H * S})
    outs, lses = [], []
    for first, last in zip(bounds[:-1], bounds[1:]):
        if bool(chosen[first:last].any()):
            o, lse = _attend_rows(*flat, chosen.view(B * H, S, -1), first, last, keys, merge, scale,
                                   differentiable)
        else:
            o = q.new_zeros(last - first, D, dtype=torch.float32)
            lse = torch.full((last - first,), float("-inf"), device=q.device)
        outs.append(o)
        lses.append(lse)
    out = torch.cat(outs).view(q.shape).to(q.dtype)
    return (out, torch.cat(lses).view(B, H, S)) if return_lse else out
