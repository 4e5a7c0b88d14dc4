"""Sol-Attn against the official code: comfy-kitchen's eager reference run on CPU (``tests/fixtures/official/sol.*``,
made by ``make_sol.py``) routes the same blocks and gives the same output; the Morton order is Sana's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastdit import TokenGrid, attention, build_layout
from fastdit.layout.order import make_order
from fastdit.methods.sol import SolOptions, block_scores, route, topk_count
from tests.methods.published_rules import FIXTURES

META = json.loads((FIXTURES / "sol.json").read_text())["cases"]


def _case(name: str):
    from tests.fixtures.official.make_sol import case_inputs

    c = META[name]
    grid = TokenGrid(*c["grid"], text_tokens=c["text_tokens"])
    q, k, v = case_inputs(tuple(c["grid"]), c["text_tokens"], tuple(c["noise"]), c["seed"])
    with np.load(FIXTURES / "sol.npz") as z:
        n = c["blocks"]
        exact = torch.from_numpy(np.unpackbits(z[f"{name}__exact"], axis=-1)[..., :n].astype(bool))
        rows, out = torch.from_numpy(z[f"{name}__rows"]).long(), torch.from_numpy(z[f"{name}__out"])
    return c, grid, (q, k, v), exact, rows, out


@pytest.mark.parametrize("name", sorted(META))
def test_routing_matches_official(name):
    c, grid, (q, k, v), exact, _, _ = _case(name)
    layout = build_layout("sol", grid, q=q, k=k, tau=c["tau"], topk_ratio=c["topk_ratio"])
    assert layout.block_q == 64 and layout.order.kind == "morton" and layout.tail
    assert torch.equal(layout.to_dense_block_mask(), exact)


@pytest.mark.parametrize("name", sorted(META))
def test_output_matches_official(name):
    c, grid, (q, k, v), _, rows, expected = _case(name)
    layout = build_layout("sol", grid, q=q, k=k, tau=c["tau"], topk_ratio=c["topk_ratio"])
    out = attention(*(layout.to_layout_order(x) for x in (q, k, v)), layout, backend="torch")[0][:, rows]
    assert float((out - expected).norm() / expected.norm()) <= 1e-4


def test_tail_is_what_makes_the_output_match():
    """Without the pooled correction the same routing is far from the official output (so the test above
    checks the correction, not just the routing)."""
    c, grid, (q, k, v), _, rows, expected = _case("6x16x16_tau1")
    layout = build_layout("sol", grid, q=q, k=k, tail=False)
    assert not layout.tail
    out = attention(*(layout.to_layout_order(x) for x in (q, k, v)), layout, backend="torch")[0][:, rows]
    assert float((out - expected).norm() / expected.norm()) > 1e-3  # 8.5e-3 measured: 85x the tolerance


@pytest.mark.parametrize("grid", [(6, 16, 16), (5, 17, 19), (4, 16, 20)])
def test_morton_order_is_sanas(grid):
    with np.load(FIXTURES / "sol.npz") as z:
        perm = torch.from_numpy(z[f"morton_{'x'.join(map(str, grid))}"]).long()
    order = make_order("morton", TokenGrid(*grid), 64)
    assert torch.equal(order.video_destination[perm], torch.arange(perm.numel()))


def test_tau_orders_density():
    c, grid, (q, k, _), *_ = _case("5x17x19_tau0.5")
    densities = [build_layout("sol", grid, q=q, k=k, tau=t).density() for t in (0.0, 0.5, 1.0, 2.0)]
    assert densities == sorted(densities, reverse=True) and densities[0] > densities[-1]


def test_topk_count_and_ties():
    assert [topk_count(n, 0.25) for n in (0, 1, 2, 8, 24)] == [0, 0, 1, 2, 6]
    score = torch.tensor([[[[3.0, 1.0, 1.0, 0.0, 0.0, 0.0]] * 6]])  # the tie at the boundary is kept
    exact = route(score, torch.zeros(1, 1, 6), SolOptions(topk_ratio=0.3), sinks=0)
    assert exact[0, 0, 5].tolist() == [True, True, True, False, True, True]  # 3 ranked + diagonal band


def test_statistics_are_centred():
    """The row mean of the centred block scores is 0, so the threshold is tau standard deviations above it."""
    q, k = torch.randn(1, 2, 256, 16), torch.randn(1, 2, 256, 16) + 3.0
    score, sigma = block_scores(q, k, torch.ones(256, dtype=torch.bool), 64)
    assert score.mean(-1).abs().max() < 1e-5 and bool((sigma > 0).all())


@pytest.mark.parametrize("bad", [{"tau": float("nan")}, {"topk_ratio": 1.0}, {"topk_ratio": -0.1}, {"tail": 1}])
def test_options_are_checked(bad):
    with pytest.raises(ValueError):
        SolOptions(**bad)


def test_calibration_ladder_runs_sparse_to_dense():
    from fastdit.calibration.candidates import candidates, knob_value

    c, grid, (q, k, _), *_ = _case("6x16x16_tau1")
    ladder = candidates("sol")
    assert [knob_value("sol", o) for o in ladder] == sorted((knob_value("sol", o) for o in ladder), reverse=True)
    densities = [build_layout("sol", grid, q=q, k=k, tau=o.tau).density() for o in ladder]
    assert densities == sorted(densities) and densities[0] < densities[-1]
