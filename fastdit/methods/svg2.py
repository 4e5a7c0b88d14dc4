"""Sparse VideoGen 2 (SVG2): per head, k-means clusters of queries and of keys, made contiguous, and the
cluster pairs that hold the top-p of the attention mass estimated from their centroids.

The rule of the official code (svg-project/Sparse-VideoGen, commit 5ce7b01, ``svg/kmeans_utils.py`` and the
``*_SAPAttn_Processor`` of ``svg/models/{wan,hyvideo}/attention.py``):

1. **k-means per head** (``batch_kmeans_Euclid``), separately on the video's queries (``q_clusters``
   centroids) and keys (``k_clusters``): Euclidean assignment to the nearest centroid (first on ties), centroid
   = mean of its points (an empty cluster keeps its old centroid), stop when no centroid moved by ``1e-4`` (the
   largest shift over all heads) or after the iteration budget. The first call of a layer starts from
   centroids drawn uniformly from its points and runs ``kmeans_iters`` (``kmeans_iter_init``) iterations;
   every later call warm-starts from that layer's previous centroids and runs ``kmeans_iters_step``
   (``kmeans_iter_step``). The labels are those of the last assignment; the centroids returned are the means
   of that assignment unless the loop stopped on convergence (then the centroids it assigned with). With
   ``zero_step_kmeans_init`` (HunyuanVideo's published scripts pass it; Wan's T2V script doesn't) the same
   k-means (``kmeans_clustering``) also runs on every call of the dense warm-up steps, whose attention stays
   dense: a layer's first k-means is at step 0, each later warm-up step warm-starts, and the first sparse call
   is already a warm-started one (``*_SAPAttn_Processor2_0.attention_core_logic``; :func:`warm_up`).
2. **Mass estimate and top-p** (``identify_dynamic_map``): per query cluster, the centroid logits
   ``c_q · c_k / sqrt(D)`` are soft-maxed with each key cluster weighted by its size; key clusters are taken in
   descending order until the cumulative mass passes ``top_p`` (the crossing cluster included), and at least
   the ``int(min_kc_ratio · k_clusters)`` largest are always kept.
3. **Permutation**: queries sorted by query cluster, keys and values by key cluster, per head; the kernel runs
   one variable-size block per cluster and the output is permuted back.

Text: Wan's self-attention has none; HunyuanVideo's prompt forms one block attended by every query and
attending every key (its padding only itself), which is fastdit's text rule (the text keeps its place after the
permuted video). Dense warm-up: the first ``floor(first_times_fp · steps)`` steps and
``floor(first_layers_fp · layers)`` layers (presets).

**Fixed blocks over variable clusters (a departure, measured).** fastdit's kernels run fixed blocks, so the
permuted sequence is cut into ``block_size``-token blocks and a block pair is kept when any (query cluster,
key cluster) pair it holds is kept: every official token pair is computed (coverage 1.0 by construction) plus
the pairs of neighbouring clusters that share a boundary block. To keep those few, clusters follow one another
in the order of their estimated mass profiles (``cluster_order="similar"``, fastdit's; upstream's order is the
cluster id) and the presets use 64-token blocks. Measured on the official fixtures
(``tests/fixtures/official/svg2.npz``; ``PYTHONPATH=. python tests/methods/test_svg2.py``), extra pairs per
official pair at 64-token blocks: 0.21-0.37 on the first call and 0.15-0.21 on the warm-started one with
clusters as large as published (0.29-0.51 / 0.16-0.26 in cluster-id order), 4.5 / 3.7 with clusters of 16 and 48
tokens; the README has the table. Padding every cluster to whole blocks would compute no extra real pair, but
each head would then have its own padding positions, which one layout's shared key validity can't express.

Departures besides: k-means and the mass estimate run in fp32 (upstream: the input dtype, bf16, with fp32
accumulation); the initial draw comes from a generator of its own (``seed``), so a seed reproduces a video;
within a cluster tokens keep their raster order (upstream's sort is not stable; the kept pairs are the same);
the warm-start centroids live for one pipeline call (upstream's live in the processor for the process); each
batch element is clustered on its own (upstream runs batch 1); with ``zero_step_kmeans_init``, upstream also
clusters at every step on the layers its warm-up keeps dense throughout (``first_layers_fp``), whose centroids
no call reads: fastdit skips those (the same token pairs, less work).

**What ``zero_step_kmeans_init`` changes (measured).** Not the first sparse step's coverage: on the bundled
sample (16 held-out prompts, its svg2 preset: 3 of 16 steps dense, 5 / 17 clusters; ``OMP_NUM_THREADS=1
PYTHONPATH=. python tools/svg2_warmup_effect.py --prompts 16``) the first sparse step's 192 layouts keep density
0.577 with it vs 0.572 without, recall of the dense softmax mass 0.897 vs 0.899, output error 0.124 vs 0.123;
videos 22.5 vs 23.1 dB PSNR vs dense (per prompt -9.2 to +5.1 dB, 10 higher, 6 lower). It moves cost: the first
sparse call's layout (its k-means included) 13.3 vs 49.2 ms (mean), a whole video's layout time 2.69 vs 2.14 s
(median). At HunyuanVideo's 400 / 1000 clusters (``fastdit bench order-cost --threads 1 --q-clusters 400
--k-clusters 1000 --name order_cost_hunyuan``, 2-core CPU, torch 2.13.0+cpu) the first sparse call costs a
warm-started call, 50.8% of dense attention at 8 192 tokens and 10.6% at 32 768, instead of a first call's 583%
/ 225%; the 50-iteration call moves to step 0, and the other 4 warm-up steps and the first sparse one each run a
warm-started call (5 more per layer), so over 50 steps (5 dense) a layer's k-means grows by 9.0% / 7.7% (from
those figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fastdit.layout.head_order import HeadOrder
from fastdit.layout.order import TokenOrder
from fastdit.methods.base import HeadSlice, Method

TOL = 1e-4  # upstream's convergence threshold on the largest centroid shift
CHUNK = 1 << 26  # distance entries (points x centroids) computed at a time, to bound memory
CLUSTER_ORDERS = ("similar", "ids")
POWER_STEPS = 30  # power iterations for the leading principal component that orders clusters ("similar")


@dataclass(frozen=True)
class Svg2Options:
    """``q_clusters``, ``k_clusters``: k-means centroids per head for queries and keys (``num_q_centroids``,
    ``num_k_centroids``); ``top_p``: attention mass each query cluster's key clusters must reach
    (``top_p_kmeans``); ``min_kc_ratio``: share of key clusters always kept; ``kmeans_iters``: iterations of a
    layer's first k-means (``kmeans_iter_init``); ``kmeans_iters_step``: of every later, warm-started one
    (``kmeans_iter_step``); ``q_init_centroids``, ``k_init_centroids``: ``[B, H, C, D]`` starting centroids
    of the first call instead of a random draw; ``seed``: of that draw; ``cluster_order``: the order clusters
    follow one another in the sorted sequences, ``"ids"`` (upstream's: by cluster id) or ``"similar"`` (fastdit's:
    clusters with similar estimated mass profiles next to each other, so fixed blocks straddling two add fewer
    pairs); ``zero_step_kmeans_init``: run the k-means (and keep its centroids) on the calls of the dense
    warm-up steps too, so the first sparse call warm-starts instead of starting from a draw (upstream's flag of
    that name; see :func:`warm_up`)."""

    q_clusters: int = 300
    k_clusters: int = 1000
    top_p: float = 0.9
    min_kc_ratio: float = 0.10
    kmeans_iters: int = 50
    kmeans_iters_step: int = 2
    q_init_centroids: torch.Tensor | None = None
    k_init_centroids: torch.Tensor | None = None
    seed: int = 0
    cluster_order: str = "similar"
    zero_step_kmeans_init: bool = False

    def __post_init__(self) -> None:
        if self.cluster_order not in CLUSTER_ORDERS:
            raise ValueError(f"svg2 cluster_order must be one of {', '.join(CLUSTER_ORDERS)}, "
                             f"got {self.cluster_order!r}")
        for name in ("q_clusters", "k_clusters", "kmeans_iters", "kmeans_iters_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"svg2 {name} must be a positive int, got {value!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"svg2 top_p must be a number in (0, 1], got {self.top_p!r}")
        if (isinstance(self.min_kc_ratio, bool) or not isinstance(self.min_kc_ratio, (int, float))
                or not 0 <= self.min_kc_ratio <= 1):
            raise ValueError(f"svg2 min_kc_ratio must be a number in [0, 1], got {self.min_kc_ratio!r}")
        if not isinstance(self.zero_step_kmeans_init, bool):
            raise ValueError(f"svg2 zero_step_kmeans_init must be True or False, got {self.zero_step_kmeans_init!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"svg2 seed must be an int, got {self.seed!r}")
        for name, count in (("q_init_centroids", self.q_clusters), ("k_init_centroids", self.k_clusters)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, torch.Tensor) or value.ndim != 4
                                      or value.shape[2] != count):
                raise ValueError(f"svg2 {name} must be a [B, H, {count}, D] tensor or None, got "
                                 f"{getattr(value, 'shape', value)!r}")


def kmeans(x: torch.Tensor, centroids: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upstream's ``batch_kmeans_Euclid`` from given centroids.

    Args:
        x: ``[G, n, D]`` points (fp32), one k-means per group ``G``.
        centroids: ``[G, C, D]`` starting centroids (fp32).
        iters: the iteration budget (>= 1).

    Returns:
        ``(labels [G, n] int64, centroids [G, C, D], sizes [G, C] int64)``.
    """
    x_sq = (x * x).sum(-1)
    for _ in range(iters):
        labels = _assign(x, x_sq, centroids)
        sizes = torch.zeros(centroids.shape[:2], dtype=torch.int64, device=x.device)
        sizes.scatter_add_(1, labels, torch.ones_like(labels))
        sums = torch.zeros_like(centroids).scatter_add_(1, labels.unsqueeze(-1).expand_as(x), x)
        new = torch.where((sizes == 0).unsqueeze(-1), centroids, sums / sizes.clamp(min=1).unsqueeze(-1))
        if (new - centroids).norm(dim=-1).max() < TOL:
            break
        centroids = new
    return labels, centroids, sizes


def _assign(x: torch.Tensor, x_sq: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``[G, n]`` nearest centroid of each point, ``|x|² + |c|² - 2 x·c`` clamped at 0 as upstream computes it."""
    c_sq = (centroids * centroids).sum(-1)
    step = max(1, CHUNK // max(1, x.shape[1] * centroids.shape[1]))
    out = []
    for g in range(0, x.shape[0], step):
        cross = torch.matmul(x[g:g + step], centroids[g:g + step].transpose(-1, -2))
        dist = (x_sq[g:g + step, :, None] + c_sq[g:g + step, None, :] - 2.0 * cross).clamp_(min=0.0)
        out.append(dist.argmin(-1))
    return torch.cat(out)


def centroid_mass(q_centroids: torch.Tensor, k_centroids: torch.Tensor, k_sizes: torch.Tensor) -> torch.Tensor:
    """``[G, Cq, Ck]``: the attention mass each query cluster gives each key cluster, estimated from centroids
    (upstream's ``weighted_softmax`` of ``c_q · c_k / sqrt(D)`` with key clusters weighted by size).

    Args:
        q_centroids: ``[G, Cq, D]``; k_centroids: ``[G, Ck, D]``; k_sizes: ``[G, Ck]`` points per key cluster.

    Returns:
        Rows summing to 1.
    """
    scores = torch.matmul(q_centroids, k_centroids.transpose(-1, -2)) / q_centroids.shape[-1] ** 0.5
    weighted = k_sizes.unsqueeze(-2).float() * torch.exp(scores - scores.amax(-1, keepdim=True))
    return weighted / weighted.sum(-1, keepdim=True).clamp(min=1e-12)


def cluster_pairs(mass: torch.Tensor, top_p: float, min_kc_ratio: float) -> torch.Tensor:
    """Upstream's ``identify_dynamic_map``: ``[G, Cq, Ck]`` bool, the key clusters each query cluster keeps.

    Args:
        mass: ``[G, Cq, Ck]`` from :func:`centroid_mass`.
        top_p: the mass to reach; min_kc_ratio: share of key clusters always kept.

    Returns:
        The cluster-pair mask.
    """
    ranked, rank_order = mass.sort(dim=-1, descending=True, stable=True)
    drop = ranked.cumsum(-1) > top_p
    drop = torch.cat([torch.zeros_like(drop[..., :1]), drop[..., :-1]], -1)  # the crossing cluster stays
    drop[..., :int(min_kc_ratio * mass.shape[-1])] = False
    return torch.zeros_like(drop).scatter_(-1, rank_order, ~drop)


@dataclass(frozen=True)
class Clustering:
    """One call's k-means result: ``[G, n]`` labels and ``[G, C, D]`` centroids and ``[G, C]`` sizes of queries
    and keys (``G = B · H``)."""

    q_labels: torch.Tensor
    q_centroids: torch.Tensor
    q_sizes: torch.Tensor
    k_labels: torch.Tensor
    k_centroids: torch.Tensor
    k_sizes: torch.Tensor


def cluster(q: torch.Tensor, k: torch.Tensor, options: Svg2Options, state: dict[str, Any] | None = None,
            heads: HeadSlice | None = None) -> Clustering:
    """k-means of the video queries and keys ``q, k [B, H, n, D]`` as upstream runs it for one call.

    ``state`` (one layer's, kept by the caller across a pipeline call) holds the previous call's centroids:
    present and of the same shape, they warm-start ``kmeans_iters_step`` iterations; otherwise the options'
    initial centroids, or a draw of ``seed`` (``heads``: ``q, k`` hold that slice of the model's heads, whose
    draw is the one for all heads), start ``kmeans_iters``. The new centroids go back into ``state``. Upstream
    runs one batch element per call (its convergence test spans that call's heads), so each batch element here
    is its own k-means, with the same draw.
    """
    B, H, n, D = q.shape
    results = []
    for name, x, count, given in (("q", q, options.q_clusters, options.q_init_centroids),
                                  ("k", k, options.k_clusters, options.k_init_centroids)):
        previous = None if state is None else state.get(name)
        if previous is not None and previous.shape == (B, H, count, D):
            start, iters = previous.to(x.device), options.kmeans_iters_step
        else:
            start = (_draw(x, count, options.seed + (name == "k"), heads) if given is None
                     else given.expand(B, -1, -1, -1).to(x.device, torch.float32))
            iters = options.kmeans_iters
        labels, centroids, sizes = zip(*(kmeans(x[b].float(), start[b], iters) for b in range(B)))
        centroids = torch.stack(centroids)
        if state is not None:
            state[name] = centroids
        results += [torch.cat(labels), centroids.reshape(B * H, count, D), torch.cat(sizes)]
    return Clustering(*results)


def _draw(x: torch.Tensor, count: int, seed: int, heads: HeadSlice | None) -> torch.Tensor:
    """``[B, H, count, D]`` starting centroids of ``x [B, H, n, D]``, drawn uniformly (with repetition) from
    each head's points as upstream does; every batch element draws the same positions."""
    B, H, n, D = x.shape
    gen = torch.Generator().manual_seed(seed)
    total, first = (H, 0) if heads is None else (heads.total, heads.start)
    index = torch.randint(0, n, (total, count), generator=gen)[first:first + H].to(x.device)
    return torch.gather(x.float(), 2, index.expand(B, -1, -1).unsqueeze(-1).expand(-1, -1, -1, D))


def similar_first(profile: torch.Tensor) -> torch.Tensor:
    """``[G, C]`` int64: a position for each row of ``profile [G, C, F]`` such that rows with similar profiles
    sit close: the rows sorted along their leading principal component (power iteration from a fixed start, so
    the order is deterministic)."""
    x = profile.float()
    x = x - x.mean(1, keepdim=True)
    v = torch.linspace(-1.0, 1.0, x.shape[2], device=x.device).expand(x.shape[0], -1).unsqueeze(-1)
    for _ in range(POWER_STEPS):
        v = x.transpose(1, 2) @ (x @ v)
        v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-30)
    rank = torch.argsort((x @ v).squeeze(-1), dim=-1, stable=True)
    return torch.empty_like(rank).scatter_(1, rank, torch.arange(rank.shape[1], device=x.device).expand_as(rank))


def block_mask(pairs: torch.Tensor, q_labels: torch.Tensor, k_labels: torch.Tensor, block: int, blocks: int,
               mass: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed blocks over the cluster-sorted sequences: a block pair is kept when it holds a kept cluster pair.

    Args:
        pairs: ``[G, Cq, Ck]`` kept cluster pairs.
        q_labels, k_labels: ``[G, n]`` cluster of each video query and key (model order).
        block: tokens per block; blocks: video blocks of the order (``n`` real tokens, then padding).
        mass: ``[G, Cq, Ck]`` estimated mass: clusters are then ordered so that those with similar mass
            profiles sit next to each other (``cluster_order="similar"``; independent of ``top_p``, so heads of
            different ``top_p`` share the order); ``None``: by cluster id, as upstream.

    Returns:
        ``(mask [G, blocks, blocks] bool, q_source [G, n], k_source [G, n])``: the block mask and, per slot of
        the sorted sequences, the model position of the query and key there (stable: raster within a cluster).
    """
    if mass is not None:  # renumber clusters by their place in the order
        q_pos, k_pos = similar_first(mass), similar_first(mass.transpose(1, 2))
        q_labels, k_labels = q_pos.gather(1, q_labels), k_pos.gather(1, k_labels)
        index = q_pos.unsqueeze(-1).expand_as(pairs), k_pos.unsqueeze(1).expand_as(pairs)
        groups = torch.arange(pairs.shape[0], device=pairs.device)[:, None, None]
        pairs = torch.zeros_like(pairs).index_put_((groups, *index), pairs)
    n = q_labels.shape[1]
    q_source = torch.argsort(q_labels, dim=-1, stable=True)
    k_source = torch.argsort(k_labels, dim=-1, stable=True)
    starts = torch.arange(blocks, device=pairs.device) * block
    first = starts.clamp(max=n - 1)
    last = (starts + block).clamp(max=n) - 1  # a block past the real tokens repeats the last one (never read)
    q_sorted, k_sorted = q_labels.gather(1, q_source), k_labels.gather(1, k_source)
    q_lo, q_hi = q_sorted[:, first], q_sorted[:, last]  # a block holds the contiguous run of clusters lo..hi
    k_lo, k_hi = k_sorted[:, first], k_sorted[:, last]
    out = torch.empty(pairs.shape[0], blocks, blocks, dtype=torch.bool, device=pairs.device)
    for g in range(pairs.shape[0]):  # one head at a time: the prefix sums are [blocks, Ck]
        rows = _range_any(pairs[g].to(torch.int32), q_lo[g], q_hi[g], dim=0)  # [blocks, Ck]
        out[g] = _range_any(rows.to(torch.int32), k_lo[g], k_hi[g], dim=1)
    return out, q_source, k_source


def _range_any(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, dim: int) -> torch.Tensor:
    """Along ``dim`` of the 2D ``x``: for each ``i``, whether any of ``x[lo[i]:hi[i] + 1]`` is nonzero."""
    prefix = torch.nn.functional.pad(x.cumsum(dim, dtype=torch.int32), (0, 0, 1, 0) if dim == 0 else (1, 0))
    if dim == 0:
        return (prefix[hi + 1] - prefix[lo]) > 0
    return ((prefix[:, hi + 1] - prefix[:, lo]) > 0)


def svg2_mask(order: TokenOrder, options: Svg2Options, *, q: torch.Tensor, k: torch.Tensor, layer: int = 0,
              heads: HeadSlice | None = None,
              state: dict[str, Any] | None = None) -> tuple[torch.Tensor, None, HeadOrder]:
    """``(mask [B·H, n_video_blocks, n_video_blocks], None, head order)``: SVG2's kept cluster pairs on fixed
    blocks of the cluster-sorted queries and keys (``layer`` is unused: SVG2 decides from q and k; ``state``:
    the layer's warm-start centroids, see :func:`cluster`).

    Args:
        order: the base (raster) order; ``q, k [B, H, S, D]`` are in it.
        options: the knobs.
        heads: ``q, k`` hold that slice of the model's heads.
        state: the layer's k-means state across calls (``None``: every call starts afresh).

    Returns:
        The block mask (one layout head per batch element and head), no pyramid levels, and the
        :class:`~fastdit.layout.head_order.HeadOrder` it is cut from.
    """
    B, H = q.shape[:2]
    n = order.grid.video_tokens
    found = cluster(q[:, :, :n], k[:, :, :n], options, state, heads)
    mass = centroid_mass(found.q_centroids, found.k_centroids, found.k_sizes)
    pairs = cluster_pairs(mass, options.top_p, options.min_kc_ratio)
    mask, q_source, k_source = block_mask(pairs, found.q_labels, found.k_labels, order.block_size,
                                          order.video_blocks, mass if options.cluster_order == "similar" else None)
    head_order = HeadOrder(order, q_source.reshape(B, H, n).cpu(), k_source.reshape(B, H, n).cpu())
    return mask.cpu(), None, head_order


def warm_up(order: TokenOrder, options: Svg2Options, *, q: torch.Tensor, k: torch.Tensor, layer: int = 0,
            heads: HeadSlice | None = None, state: dict[str, Any] | None = None) -> None:
    """A call of the dense warm-up steps, which runs dense (with ``zero_step_kmeans_init``): upstream's
    ``kmeans_clustering`` on it all the same (a layer's first call from the draw with ``kmeans_iters``, later
    ones warm-started with ``kmeans_iters_step``), only to leave its centroids in ``state`` for the layer's next
    call; nothing is selected and the attention stays dense. The arguments are :func:`svg2_mask`'s."""
    if state is not None:
        n = order.grid.video_tokens
        cluster(q[:, :, :n], k[:, :, :n], options, state, heads)


SVG2 = Method("svg2", Svg2Options, svg2_mask, dynamic=True, orders=("raster",), stateful=True, warm_up=warm_up,
              warms_up=lambda options: options.zero_step_kmeans_init,
              summary="dynamic; per-head k-means clusters of q and k made contiguous, top-p cluster pairs (SVG2)")
