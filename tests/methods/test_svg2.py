"""SVG2 against the official code (fixtures from svg-project/Sparse-VideoGen, see
``tests/fixtures/official/make_svg2.py``), and the per-head orders it runs on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastdit import TokenGrid
from fastdit.kernels import attention
from fastdit.layout.head_order import HeadOrder
from fastdit.layout.order import make_order
from fastdit.methods import build_layout, get_method, make_layout, parse_options
from fastdit.methods.svg2 import centroid_mass, cluster, cluster_pairs
from tests.methods.published_rules import FIXTURES, structured_qk

CASES = json.loads((FIXTURES / "svg2.json").read_text())["cases"]


def _case(name: str):
    meta = CASES[name]
    with np.load(FIXTURES / "svg2.npz") as z:
        arrays = {key.split("/", 1)[1]: torch.from_numpy(z[key]) for key in z.files if key.startswith(name + "/")}
    q1, k1 = structured_qk(tuple(meta["grid"]), tuple(meta["noise"]), meta["seed"])
    q2, k2 = structured_qk(tuple(meta["grid"]), tuple(meta["noise"]), meta["seed"] + 100)
    calls = [(q1, k1), (0.8 * q1 + 0.2 * q2, 0.8 * k1 + 0.2 * k2)]
    options = dict(q_clusters=meta["q_clusters"], k_clusters=meta["k_clusters"], top_p=meta["top_p"],
                   min_kc_ratio=meta["min_kc_ratio"], kmeans_iters=meta["kmeans_iter_init"],
                   kmeans_iters_step=meta["kmeans_iter_step"], q_init_centroids=arrays["q_init"],
                   k_init_centroids=arrays["k_init"])
    return meta, arrays, calls, options


def _official_pairs(arrays, call: int, S: int) -> torch.Tensor:
    """``[H, S, S]`` bool: the official kept token pairs (raster order)."""
    return torch.from_numpy(np.unpackbits(arrays[f"token_pairs{call}"].numpy(), axis=-1, count=S).astype(bool))


def _computed_pairs(layout, S: int) -> torch.Tensor:
    """``[H, S, S]`` bool: the token pairs the layout computes, in raster order (batch 1, video only)."""
    blocks = layout.to_dense_block_mask()  # [H, nb, nb] over the permuted sequences
    order = layout.head_order
    bq = torch.empty_like(order.query_source[0])
    bq.scatter_(1, order.query_source[0], torch.arange(S).expand_as(bq) // layout.block_q)  # raster token -> block
    bk = torch.empty_like(order.key_source[0])
    bk.scatter_(1, order.key_source[0], torch.arange(S).expand_as(bk) // layout.block_kv)
    H = blocks.shape[0]
    return blocks[torch.arange(H)[:, None, None], bq[:, :, None], bk[:, None, :]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_clustering_and_selection_match_the_official_code(name):
    """Both calls of a layer (the first from the fixture's centroids, the second warm-started from the first's):
    every query and key label and every kept cluster pair equal the official code's."""
    meta, arrays, calls, options = _case(name)
    opts = parse_options(get_method("svg2"), options)
    state: dict = {}
    for call, (q, k) in enumerate(calls, start=1):
        found = cluster(q, k, opts, state)
        H, S = q.shape[1], q.shape[2]
        assert torch.equal(found.q_labels.view(H, S), arrays[f"q_labels{call}"]), f"call {call}: query labels"
        assert torch.equal(found.k_labels.view(H, S), arrays[f"k_labels{call}"]), f"call {call}: key labels"
        pairs = cluster_pairs(centroid_mass(found.q_centroids, found.k_centroids, found.k_sizes), opts.top_p,
                              opts.min_kc_ratio)
        assert torch.equal(pairs, arrays[f"pairs{call}"]), f"call {call}: cluster pairs"


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_blocks_cover_every_official_token_pair(name):
    """The fixed-block layout computes every token pair the official variable blocks keep (coverage 1.0 by
    construction), and only a bounded share more."""
    meta, arrays, calls, options = _case(name)
    grid = TokenGrid(*meta["grid"])
    S = grid.video_tokens
    state: dict = {}
    order = make_order("raster", grid, 64)
    opts = parse_options(get_method("svg2"), options)
    for call, (q, k) in enumerate(calls, start=1):
        layout = make_layout(get_method("svg2"), order, opts, q=order.to_order(q), k=order.to_order(k), state=state)
        official, computed = _official_pairs(arrays, call, S), _computed_pairs(layout, S)
        assert torch.equal(official.sum(-1), arrays[f"keys_per_query{call}"])
        assert not bool((official & ~computed).any()), "an official token pair is not computed"
        extra = float((computed & ~official).sum() / official.sum())
        assert extra < (5.0 if name.startswith("small") else 0.4), f"call {call}: {extra:.3f} extra per official pair"


def test_similar_cluster_order_adds_fewer_pairs_than_cluster_ids():
    """Ordering clusters by their mass profiles (fastdit's default) keeps fewer extra pairs than upstream's id
    order on every fixture, with the same coverage."""
    for name in sorted(CASES):
        meta, arrays, calls, options = _case(name)
        grid = TokenGrid(*meta["grid"])
        q, k = calls[0]
        extra = {}
        for how in ("similar", "ids"):
            layout = build_layout("svg2", grid, block_size=64, q=q, k=k, cluster_order=how, **options)
            n = grid.video_tokens
            computed, official = _computed_pairs(layout, n), _official_pairs(arrays, 1, n)
            assert not bool((official & ~computed).any())
            extra[how] = int((computed & ~official).sum())
        assert extra["similar"] < extra["ids"], name


def test_head_order_round_trip_and_separate_key_order():
    grid = TokenGrid(2, 4, 5, text_tokens=7)
    order = make_order("raster", grid, 16)
    g = torch.Generator().manual_seed(0)
    n = grid.video_tokens
    qs = torch.stack([torch.randperm(n, generator=g) for _ in range(6)]).view(2, 3, n)
    ks = torch.stack([torch.randperm(n, generator=g) for _ in range(6)]).view(2, 3, n)
    heads = HeadOrder(order, qs, ks)
    x = torch.randn(2, 3, order.seq_len, 4, generator=g)
    moved = heads.queries(x)
    assert torch.equal(moved[1, 2, 5], x[1, 2, qs[1, 2, 5]])
    assert torch.equal(heads.keys(x)[0, 1, 3], x[0, 1, ks[0, 1, 3]])
    assert torch.equal(moved[:, :, n:], x[:, :, n:])  # padding and text stay in place
    assert torch.equal(heads.restore(moved), x)
    assert torch.equal(heads.restore(moved[..., 0]), x[..., 0])  # a log-sum-exp [B, H, S] too
    with pytest.raises(ValueError, match="leading video tokens"):
        HeadOrder(make_order("gilbert", grid, 16), qs, ks)


@pytest.mark.parametrize("text", [0, 20])
def test_layout_output_equals_the_token_mask_it_describes(text):
    """q, k, v moved by the layout's per-head order (queries and keys apart), the kernel run on its blocks and
    the output moved back equal masked SDPA with the layout's token pairs, text rows and columns kept."""
    grid = TokenGrid(3, 8, 10, text_tokens=text)
    q, k = structured_qk((3, 8, 10), (0.3, 0.6), 5)
    g = torch.Generator().manual_seed(1)
    if text:
        q, k = (torch.cat([x, torch.randn(1, 2, text, 64, generator=g)], 2) for x in (q, k))
    v = torch.randn_like(q)
    layout = build_layout("svg2", grid, block_size=32, q=q, k=k, q_clusters=6, k_clusters=20, top_p=0.6,
                          min_kc_ratio=0.0)
    assert layout.density() < 0.9
    out = layout.from_layout_order(attention(layout.to_layout_order(q), layout.to_layout_order(k, keys=True),
                                             layout.to_layout_order(v, keys=True), layout))
    S, n = grid.num_tokens, grid.video_tokens
    mask = torch.ones(2, S, S, dtype=torch.bool)
    mask[:, :n, :n] = _computed_pairs(layout, n)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_warm_start_runs_the_step_budget_from_the_previous_centroids():
    """A layer's second call starts from its first call's centroids (kmeans_iters_step iterations); without
    state every call starts afresh from the seeded draw."""
    q, k = structured_qk((4, 8, 8), (0.3, 0.3), 7)
    opts = parse_options(get_method("svg2"), dict(q_clusters=8, k_clusters=16, kmeans_iters=1, kmeans_iters_step=1))
    state: dict = {}
    first = cluster(q, k, opts, state)
    second = cluster(q, k, opts, state)
    fresh = cluster(q, k, opts, None)
    assert torch.equal(fresh.q_labels, first.q_labels)
    assert not torch.equal(second.q_centroids, first.q_centroids)  # one more iteration from where it stopped
    two = parse_options(get_method("svg2"), dict(q_clusters=8, k_clusters=16, kmeans_iters=2))
    torch.testing.assert_close(second.q_centroids, cluster(q, k, two, None).q_centroids)


def test_batch_elements_get_their_own_orders_and_heads():
    grid = TokenGrid(2, 8, 8)
    q1, k1 = structured_qk((2, 8, 8), (0.3, 0.6), 8)
    q2, k2 = structured_qk((2, 8, 8), (0.5, 0.2), 9)
    q, k = torch.cat([q1, q2]), torch.cat([k1, k2])
    both = build_layout("svg2", grid, block_size=16, q=q, k=k, q_clusters=4, k_clusters=8)
    alone = build_layout("svg2", grid, block_size=16, q=q2, k=k2, q_clusters=4, k_clusters=8)
    assert both.num_heads == 4 and both.head_order.batch == 2
    assert torch.equal(both.to_dense_block_mask()[2:], alone.to_dense_block_mask())
    assert torch.equal(both.head_order.query_source[1], alone.head_order.query_source[0])


def test_options_are_checked():
    with pytest.raises(ValueError, match="top_p"):
        build_layout("svg2", TokenGrid(2, 8, 8), top_p=1.5, q=torch.zeros(1, 1, 128, 8), k=torch.zeros(1, 1, 128, 8))
    with pytest.raises(ValueError, match="q_init_centroids"):
        parse_options(get_method("svg2"), dict(q_clusters=4, q_init_centroids=torch.zeros(1, 1, 3, 8)))


def coverage_table(block_sizes=(32, 64, 128)) -> list[dict]:
    """Coverage of the official kept token pairs and extra pairs (per official pair), per fixture, call, block
    size and cluster order: ``PYTHONPATH=. python tests/methods/test_svg2.py`` prints it (the README's table)."""
    out = []
    for name in sorted(CASES):
        meta, arrays, calls, options = _case(name)
        grid = TokenGrid(*meta["grid"])
        n = grid.video_tokens
        for block in block_sizes:
            for how in ("similar", "ids"):
                state: dict = {}
                order = make_order("raster", grid, block)
                opts = parse_options(get_method("svg2"), {**options, "cluster_order": how})
                for call, (q, k) in enumerate(calls, start=1):
                    layout = make_layout(get_method("svg2"), order, opts, q=order.to_order(q), k=order.to_order(k),
                                         state=state)
                    official, computed = _official_pairs(arrays, call, n), _computed_pairs(layout, n)
                    out.append({"case": name, "call": call, "block": block, "cluster_order": how,
                                "official_density": float(official.float().mean()),
                                "coverage": float((official & computed).sum() / official.sum()),
                                "extra": float((computed & ~official).sum() / official.sum())})
    return out


if __name__ == "__main__":
    for row in coverage_table():
        print(" ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                       for key, value in row.items()))


def test_per_head_settings_share_one_order_and_the_layer_state():
    """A layer plan with a top-p per head (and a dense head) is one layout on one per-head order: each head
    keeps the rows its own setting gives, and the layer's warm-start state advances once, not per setting."""
    from fastdit.methods import make_head_layout

    grid = TokenGrid(3, 8, 8)
    q, k = structured_qk((3, 8, 8), (0.3, 0.6, 0.4), 11)
    spec, order = get_method("svg2"), make_order("raster", grid, 16)
    settings = [parse_options(spec, {"q_clusters": 4, "k_clusters": 10, "top_p": p, "kmeans_iters": 3})
                for p in (0.5, 0.9)]
    state: dict = {}
    layout = make_head_layout(spec, order, (settings[0], None, settings[1]), q=q, k=k, state=state)
    alone = {p: make_layout(spec, order, s, q=q, k=k, state={}) for p, s in zip((0.5, 0.9), settings)}
    assert torch.equal(layout.head_order.query_source, alone[0.5].head_order.query_source)
    mask = layout.to_dense_block_mask()
    assert torch.equal(mask[0], alone[0.5].to_dense_block_mask()[0]) and bool(mask[1].all())
    assert torch.equal(mask[2], alone[0.9].to_dense_block_mask()[2])
    once: dict = {}
    make_layout(spec, order, settings[0], q=q, k=k, state=once)
    torch.testing.assert_close(state["q"], once["q"])
