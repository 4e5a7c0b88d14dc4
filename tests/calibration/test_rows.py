"""Sampled-row measurement: the error it reports is the error the kernel makes on those rows."""

from __future__ import annotations

import torch

import fastdit
from fastdit.calibration.rows import exact_rows, head_density, layout_rows, ordered_keys, sample_rows
from fastdit.methods import get_method, layout_order, make_layout, parse_options


def _qkv(grid, heads=2, dim=16):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, heads, grid.num_tokens, dim, generator=g) for _ in range(3))


def _kernel_error(q, k, v, rows, spec, options, grid, block=16):
    """Squared output error of ``rows`` from the reference kernel's full sparse output, per head."""
    order = layout_order(spec, grid, block, options)
    data = {"q": order.to_order(q), "k": order.to_order(k)} if spec.dynamic else {}
    layout = make_layout(spec, order, options, **data)
    out = order.from_order(fastdit.attention(order.to_order(q), order.to_order(k), order.to_order(v), layout,
                                             backend="torch"))
    exact = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, -1) @ v
    return ((out - exact)[:, :, rows] ** 2).sum((0, 2, 3)), layout, order


def test_row_errors_match_the_kernel_for_static_and_pooled_layouts():
    grid = fastdit.TokenGrid(4, 8, 8)
    q, k, v = _qkv(grid)
    rows = sample_rows(range(grid.num_tokens), 24, torch.Generator().manual_seed(1))
    exact = exact_rows(q, k, v, rows, None)
    for method, options in (("radial", {"decay_factor": 0.05}), ("pyramid", {"thresholds": (0.3, 0.5, 0.7, 0.9)}),
                            ("grat", {"mode": "surround", "radius": 0})):
        spec = get_method(method)
        opts = parse_options(spec, options)
        expected, layout, order = _kernel_error(q, k, v, rows, spec, opts, grid)
        if method == "pyramid":
            assert layout.max_level > 0  # the pooled levels are exercised
        keys = ordered_keys(exact, order.to_order(k), order.to_order(v), layout, order, levels=layout.max_level)
        (got,) = layout_rows(exact, keys, [layout])
        torch.testing.assert_close(got.sq_error.float(), expected, rtol=1e-4, atol=1e-6)
        assert 0 < float(got.sq_error.sum()) and bool((got.recall / got.rows < 1).all())


def test_row_errors_match_the_kernel_with_sols_pooled_tail():
    grid = fastdit.TokenGrid(4, 8, 8)
    q, k, v = _qkv(grid)
    rows = sample_rows(range(grid.num_tokens), 24, torch.Generator().manual_seed(1))
    exact = exact_rows(q, k, v, rows, None)
    spec = get_method("sol")
    layouts, expected = [], []
    for tau in (0.0, 1.0):  # two candidates in one call, as calibration evaluates a ladder
        error, layout, order = _kernel_error(q, k, v, rows, spec, parse_options(spec, {"tau": tau}), grid)
        layouts.append(layout)
        expected.append(error)
    assert all(layout.tail and layout.density() < 1 for layout in layouts)
    keys = ordered_keys(exact, order.to_order(k), order.to_order(v), layouts[0], order)
    got = layout_rows(exact, keys, layouts, tuple(order.to_order(x) for x in (q, k, v)))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.sq_error.float(), e, rtol=1e-4, atol=1e-6)


def test_full_layout_has_no_error_and_full_recall():
    grid = fastdit.TokenGrid(2, 8, 8)
    q, k, v = _qkv(grid)
    rows = sample_rows(range(grid.num_tokens), 16, torch.Generator().manual_seed(0))
    order = layout_order(get_method("dense"), grid, 16, None)
    layout = make_layout(get_method("dense"), order, parse_options(get_method("dense"), {}))
    exact = exact_rows(q, k, v, rows, None)
    (got,) = layout_rows(exact, ordered_keys(exact, order.to_order(k), order.to_order(v), layout, order), [layout])
    assert float(got.sq_error.max()) < 1e-9
    torch.testing.assert_close(got.recall / got.rows, torch.ones(2))


def test_recall_is_the_share_of_mass_on_kept_blocks():
    grid = fastdit.TokenGrid(4, 8, 8)
    q, k, v = _qkv(grid)
    rows = torch.arange(grid.num_tokens)  # every row: recall is then the layout's total mass
    spec = get_method("grat")
    options = parse_options(spec, {"mode": "surround", "radius": 0})
    order = layout_order(spec, grid, 16, options)
    layout = make_layout(spec, order, options)
    exact = exact_rows(q, k, v, rows, None)
    (got,) = layout_rows(exact, ordered_keys(exact, order.to_order(k), order.to_order(v), layout, order), [layout])
    mask = layout.to_dense_block_mask()[0]
    block = order.destination // 16
    keep = mask[block][:, block]  # [S, S] token pairs kept, model order (small grid: fine in a test)
    expected = (exact.p[0] * keep).sum(-1).sum(-1)
    torch.testing.assert_close(got.recall.float(), expected, rtol=1e-5, atol=1e-5)


def test_head_density_averages_to_the_layout_density():
    grid = fastdit.TokenGrid(4, 8, 8)
    q, k, _ = _qkv(grid, heads=3)
    spec = get_method("pyramid")
    options = parse_options(spec, {})
    order = layout_order(spec, grid, 16, options)
    layout = make_layout(spec, order, options, q=order.to_order(q), k=order.to_order(k))
    per_head = head_density(layout, 3)
    assert per_head.shape == (3,)
    assert abs(float(per_head.mean()) - layout.density()) < 1e-6
    shared = make_layout(get_method("radial"), layout_order(get_method("radial"), grid, 16, None),
                         parse_options(get_method("radial"), {"decay_factor": 0.05}))
    assert torch.allclose(head_density(shared, 3), torch.full((3,), shared.density(), dtype=torch.float64))


def test_candidates_evaluated_together_match_one_at_a_time(monkeypatch):
    grid = fastdit.TokenGrid(4, 8, 8)
    q, k, v = _qkv(grid)
    rows = sample_rows(range(grid.num_tokens), 16, torch.Generator().manual_seed(2))
    exact = exact_rows(q, k, v, rows, None)
    spec = get_method("pyramid")
    settings = [parse_options(spec, {"thresholds": t}) for t in ((0.2, 0.3, 0.4, 0.5), (0.6, 0.7, 0.8, 0.9))]
    order = layout_order(spec, grid, 16, settings[0])
    qo, ko, vo = (order.to_order(x) for x in (q, k, v))
    layouts = [make_layout(spec, order, s, q=qo, k=ko) for s in settings]
    layouts.append(make_layout(get_method("dense"), order, parse_options(get_method("dense"), {})))  # shared
    keys = ordered_keys(exact, ko, vo, layouts[0], order, levels=3)
    together = layout_rows(exact, keys, layouts)
    monkeypatch.setattr("fastdit.calibration.rows.CHUNK_BYTES", 1)  # one candidate per group
    for joint, alone in zip(together, layout_rows(exact, keys, layouts)):
        torch.testing.assert_close(joint.sq_error, alone.sq_error)
        torch.testing.assert_close(joint.recall, alone.recall)
    assert float(together[2].sq_error.max()) < 1e-9 and float(together[0].sq_error.sum()) > 0


def test_row_errors_and_recall_on_per_head_orders_match_the_kernel():
    """SVG2's layouts live in per-head query and key orders: the sampled rows read the keys their head's
    permuted blocks hold (errors equal the kernel's on those rows), and recall is the mass on those keys."""
    grid = fastdit.TokenGrid(4, 8, 8)
    q, k, v = _qkv(grid)
    rows = sample_rows(range(grid.num_tokens), 24, torch.Generator().manual_seed(1))
    exact = exact_rows(q, k, v, rows, None)
    spec = get_method("svg2")
    order = layout_order(spec, grid, 16, None)
    layouts = [make_layout(spec, order, parse_options(spec, {"q_clusters": 4, "k_clusters": 12, "top_p": p}),
                           q=order.to_order(q), k=order.to_order(k)) for p in (0.5, 0.8)]
    heads = layouts[0].head_order
    keys = ordered_keys(exact, heads.keys(order.to_order(k)), heads.keys(order.to_order(v)), layouts[0], order)
    exact_p = torch.softmax(q @ k.transpose(-1, -2) * 16**-0.5, -1)
    for layout, got in zip(layouts, layout_rows(exact, keys, layouts)):
        assert torch.equal(layout.head_order.key_source, heads.key_source)  # top-p keeps the orders
        out = layout.from_layout_order(fastdit.attention(layout.to_layout_order(q), layout.to_layout_order(k, True),
                                                         layout.to_layout_order(v, True), layout, backend="torch"))
        expected = ((out - exact_p @ v)[:, :, rows] ** 2).sum((0, 2, 3))
        torch.testing.assert_close(got.sq_error.float(), expected, rtol=1e-4, atol=1e-6)
        slot_q = torch.empty_like(heads.query_source[0]).scatter_(1, heads.query_source[0],
                                                                   torch.arange(grid.num_tokens).expand(2, -1))
        slot_k = torch.empty_like(heads.key_source[0]).scatter_(1, heads.key_source[0],
                                                                 torch.arange(grid.num_tokens).expand(2, -1))
        kept = layout.to_dense_block_mask()[torch.arange(2)[:, None, None], slot_q[:, rows, None] // 16,
                                            slot_k[:, None, :] // 16]
        torch.testing.assert_close(got.recall.float(), (exact_p[0][:, rows] * kept).sum((1, 2)), rtol=1e-5, atol=1e-6)
        assert 0 < float(got.sq_error.sum())


def test_vmoba_rows_are_scored_on_the_pairs_each_query_keeps():
    """A per-query selection: the rows' error is the kernel's, recall the mass on each row's own chunks (not
    on the blocks around them), and the density the kept pairs'."""
    grid = fastdit.TokenGrid(4, 8, 12)
    q, k, v = _qkv(grid)
    rows = sample_rows(range(grid.num_tokens), 24, torch.Generator().manual_seed(1))
    exact = exact_rows(q, k, v, rows, None)
    spec = get_method("vmoba")
    options = parse_options(spec, {"threshold": 0.25, "chunk_3d": (2, 4, 4)})
    expected, layout, order = _kernel_error(q, k, v, rows, spec, options, grid)
    assert layout.selection is not None and layout.density() < layout.to_dense_block_mask().float().mean()
    keys = ordered_keys(exact, order.to_order(k), order.to_order(v), layout, order)
    (got,) = layout_rows(exact, keys, [layout])
    torch.testing.assert_close(got.sq_error.float(), expected, rtol=1e-4, atol=1e-6)
    sel, dest = layout.selection, order.destination
    keep = sel.select[0][:, dest][:, :, sel.key_group[dest]]  # [H, S, S] token pairs, model order
    torch.testing.assert_close(got.recall.float(), (exact.p[0] * keep[:, rows]).sum((-1, -2)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head_density(layout, 2).mean(), torch.tensor(layout.density(), dtype=torch.float64))
