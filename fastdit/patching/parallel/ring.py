"""Ring: each rank's query blocks attend the key/value chunks in turn, merged through the log-sum-exp.

Ring attention keeps the heads whole and splits the sequence. A layout's blocks live in its own token order
(raster, tiles, a Gilbert curve), so fastdit first moves the tokens from diffusers' shards of the model's
sequence to shards of *whole blocks of the layout's order* (one all-to-all; for a raster order on a model
without text only the tokens of the blocks that straddle a shard boundary move). Rank ``r`` then holds the
queries, keys and values of its block range ``R_r`` and computes, for each rank's chunk ``R_j`` in turn, its
rows against that chunk with the matching column slice of the layout, merging the partial outputs by their
log-sum-exp. Both sides know the global layout, so a chunk whose slice keeps no block is neither sent nor
computed: that is where sparse ring attention saves communication as well as compute. Block-aligned chunks
also keep pooled pyramid keys whole, so every method gives exactly the single-process result. A last
all-to-all returns each token's output to the rank diffusers gave it.

Dynamic methods (pyramid, vmoba) choose blocks from q and k: those two are all-gathered first so that every
rank builds the same global layout. Dense calls attend this rank's own queries to the all-gathered keys and
values with the user's diffusers backend, which is what diffusers' ring attention computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from fastdit.kernels import attention
from fastdit.kernels.common import merge_partial
from fastdit.patching.parallel.shards import gathered_order, split_sizes
from fastdit.runtime.engine import Decision

__all__ = ["ring_attention"]


def ring_attention(processor: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   attn_mask: torch.Tensor | None, text_tokens: int | None, text_position: str,
                   config: Any) -> torch.Tensor:
    """``processor``'s self-attention of this rank's sequence shard ``q, k, v [B, H, S_local, D]`` under a
    ring ``config`` (a diffusers ``ParallelConfig``); returns ``[B, H, S_local, D]``."""
    name = f"{type(processor).__name__} ({processor.model_name} layer {processor.layer})"
    if attn_mask is not None:
        raise ValueError(f"fastdit: {name} gets an attention mask (a padded prompt) under ring attention, which "
                         "fastdit does not support; use Ulysses (ulysses_degree) or unpadded prompts")
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise ValueError(f"fastdit: {name}: training under ring attention is not supported; use Ulysses "
                         "(ulysses_degree) to train")
    engine = processor.engine
    cp = config.context_parallel_config
    ring = _Ring(cp._ring_mesh.get_group(), cp.ring_degree, cp._ring_local_rank)
    sizes, text, positions = gathered_order(processor, text_tokens, q.shape[2], text_position, ring.group,
                                            ring.ranks, ring.rank)
    total = sum(sizes)
    model_pos = torch.arange(total) if positions is None else positions  # of each token, ranks end to end

    def ordered_qk(order):
        full = [_gather_model_order(x, sizes, model_pos, ring.group) for x in (q, k)]
        return order.to_order(full[0]), order.to_order(full[1])

    decision = engine.decide(total, q.shape[-1], layer=processor.layer, model=processor.model_name,
                             text_tokens=text, text_position=text_position, grid=processor.call_grid(total),
                             ordered_qk=ordered_qk)
    engine.record(decision)
    if not decision.dense and decision.layout.head_order is not None:
        raise ValueError(f"fastdit: {name}: {decision.method}'s per-head token orders (computed from q and k) are "
                         "not supported under ring attention; use Ulysses (ulysses_degree)")
    if decision.dense:
        return _dense_rows(processor, q, k, v, sizes, model_pos, ring, decision.scale)
    return _SparseRing(ring, decision, model_pos, sizes).run(q, k, v, engine.config.backend)


@dataclass(frozen=True)
class _Ring:
    group: Any
    ranks: int
    rank: int


def _dense_rows(processor: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sizes: list[int],
                model_pos: torch.Tensor, ring: _Ring, scale: float | None) -> torch.Tensor:
    """Dense attention of this rank's queries over all keys, with the processor's diffusers backend."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    keys, values = (_gather_model_order(x, sizes, model_pos, ring.group) for x in (k, v))
    return dispatch_attention_fn(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), scale=scale,
                                 backend=processor.user_backend()).transpose(1, 2)


class _SparseRing:
    """One sparse call: which rank owns which block range of the layout's order, who sends which tokens to
    whom (the same arithmetic on every rank, so no sizes need to be exchanged), and the ring itself."""

    def __init__(self, ring: _Ring, decision: Decision, model_pos: torch.Tensor, sizes: list[int]) -> None:
        self.ring, self.order, self.layout = ring, decision.order, decision.layout
        self.scale = decision.scale
        block = self.layout.block_q
        bounds = torch.tensor([0, *split_sizes(self.layout.n_q_blocks, ring.ranks)]).cumsum(0)
        self.blocks = [range(int(bounds[r]), int(bounds[r + 1])) for r in range(ring.ranks)]
        destination = self.order.destination[model_pos]  # layout position of each token, ranks end to end
        owner = torch.bucketize(destination // block, bounds[1:], right=True)  # rank whose blocks hold it
        source = torch.repeat_interleave(torch.arange(ring.ranks), torch.tensor(sizes))
        length = self.order.seq_len
        start = sum(sizes[:ring.rank])
        mine = slice(start, start + sizes[ring.rank])
        # sending: this rank's tokens grouped by owner, each group in layout order
        self.send = torch.argsort(owner[mine] * length + destination[mine])
        self.send_counts = torch.bincount(owner[mine], minlength=ring.ranks).tolist()
        # receiving: the tokens of this rank's blocks, grouped by source rank, each group in layout order
        held = (owner == ring.rank).nonzero().flatten()
        held = held[torch.argsort(source[held] * length + destination[held])]
        self.slots = destination[held] - self.blocks[ring.rank].start * block  # where each lands in the shard
        self.recv_counts = torch.bincount(source[held], minlength=ring.ranks).tolist()
        # which rank needs which chunk: (rank of the query block, rank of the key block) of every kept entry
        rows, cols = self.layout.kept_pairs()
        pairs = (torch.bucketize(rows, bounds[1:], right=True) * ring.ranks
                 + torch.bucketize(cols, bounds[1:], right=True))
        self.needs = torch.bincount(pairs, minlength=ring.ranks**2).view(ring.ranks, ring.ranks) > 0

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
        B, H, _, D = q.shape
        rank, ranks = self.ring.rank, self.ring.ranks
        rows = self.blocks[rank]
        qkv = self._to_shards(torch.cat([q, k, v], dim=-1))  # [B, H, |R_r| tokens, 3D]
        q_r, kv_r = qkv[..., :D].contiguous(), qkv[..., D:].contiguous()
        mine = self.layout.block_slice(rows, range(0, self.layout.n_kv_blocks))  # this rank's rows, on the CPU
        chunks = {rank: kv_r}
        pending, sends = self._exchange(kv_r, chunks, B, H, 2 * D)
        partial = None
        for step in range(ranks):
            j = (rank + step) % ranks
            if not bool(self.needs[rank, j]) or not len(rows):
                continue  # nothing kept: not received, not computed
            if j in pending:
                pending.pop(j).wait()
            cols = self.blocks[j]
            piece = mine.block_slice(range(0, len(rows)), cols).to(q.device)
            k_j, v_j = (x.contiguous() for x in chunks[j].split(D, dim=-1))
            out_j, lse_j = attention(q_r, k_j, v_j, piece, scale=self.scale, backend=backend, return_lse=True)
            result = (out_j.float(), lse_j)  # merged in fp32, rounded to the model's dtype once at the end
            partial = result if partial is None else merge_partial(*partial, *result)
        for work in [*pending.values(), *sends]:
            work.wait()
        out = torch.zeros_like(q_r) if partial is None else partial[0].to(q.dtype)
        return self._from_shards(out, q.shape[2])

    def _exchange(self, kv_r: torch.Tensor, chunks: dict[int, torch.Tensor], B: int, H: int,
                  width: int) -> tuple[dict[int, Any], list[Any]]:
        """Post the sends of this rank's K/V to the ranks whose rows keep a block of it and the receives (into
        ``chunks``) of the chunks this rank's rows keep, in ring order; returns the pending receive per source
        rank and the pending sends. The group has run a collective before (the all-to-all), so a rank with
        nothing to exchange may stay out of the batch (NCCL needs every rank in a group's first one)."""
        rank, ranks = self.ring.rank, self.ring.ranks
        ops, peers = [], []  # peers: the source rank of each receive, None for a send
        for step in range(1, ranks):
            target, source = (rank + step) % ranks, (rank - step) % ranks
            if bool(self.needs[target, rank]) and len(self.blocks[target]):
                ops.append(dist.P2POp(dist.isend, kv_r, group=self.ring.group, group_peer=target))
                peers.append(None)
            if bool(self.needs[rank, source]) and len(self.blocks[rank]):
                length = len(self.blocks[source]) * self.layout.block_kv
                chunks[source] = kv_r.new_empty(B, H, length, width)
                ops.append(dist.P2POp(dist.irecv, chunks[source], group=self.ring.group, group_peer=source))
                peers.append(source)
        works = dist.batch_isend_irecv(ops) if ops else []
        receives = {peer: work for peer, work in zip(peers, works) if peer is not None}
        return receives, [work for peer, work in zip(peers, works) if peer is None]

    def _to_shards(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, H, S_local, C]`` in diffusers' shard → this rank's block range of the layout's order
        (padding zero)."""
        B, H, _, C = x.shape
        rows = x.permute(2, 0, 1, 3).reshape(x.shape[2], -1)[self.send.to(x.device)]
        received = rows.new_empty(sum(self.recv_counts), rows.shape[1])
        dist.all_to_all_single(received, rows.contiguous(), self.recv_counts, self.send_counts,
                               group=self.ring.group)
        shard = rows.new_zeros(len(self.blocks[self.ring.rank]) * self.layout.block_q, rows.shape[1])
        shard[self.slots.to(x.device)] = received
        return shard.view(-1, B, H, C).permute(1, 2, 0, 3)

    def _from_shards(self, out: torch.Tensor, local_tokens: int) -> torch.Tensor:
        """Inverse of :meth:`_to_shards` for the output ``[B, H, |R_r| tokens, D]``."""
        B, H, _, D = out.shape
        rows = out.permute(2, 0, 1, 3).reshape(out.shape[2], -1)[self.slots.to(out.device)]
        back = rows.new_empty(local_tokens, rows.shape[1])
        dist.all_to_all_single(back, rows.contiguous(), self.send_counts, self.recv_counts, group=self.ring.group)
        local = torch.empty_like(back)
        local[self.send.to(out.device)] = back
        return local.view(local_tokens, B, H, D).permute(1, 2, 0, 3)


def _gather_model_order(x: torch.Tensor, sizes: list[int], model_pos: torch.Tensor, group: Any) -> torch.Tensor:
    """The whole sequence of ``x [B, H, S_r, D]`` in the model's order: the ranks' shards all-gathered (padded
    to the longest for the collective, trimmed after) and their tokens put where the model has them."""
    longest = max(sizes)
    padded = torch.nn.functional.pad(x, (0, 0, 0, longest - x.shape[2])).contiguous()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    joined = torch.cat([part[:, :, :n] for part, n in zip(parts, sizes)], dim=2)
    return torch.empty_like(joined).index_copy_(2, model_pos.to(x.device), joined)
