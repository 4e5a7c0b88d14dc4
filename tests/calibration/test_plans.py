"""Per-layer, per-head plans in the engine: each head's rows follow its own setting, in one layout."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.calibration import Calibration, HeadChoice, LayerChoice
from fastdit.methods import get_method, layout_order, make_head_layout, make_layout, parse_options
from fastdit.patching.components import denoisers
from fastdit.runtime.calibration_file import fingerprint
from fastdit.runtime.config import LayerPlan

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("method, a, b, grid", [
    ("radial", {"decay_factor": 0.05, "sink": False}, {"decay_factor": 0.05}, (4, 8, 8)),
    ("grat", {"mode": "surround", "radius": 0}, {"mode": "surround", "radius": 1}, (4, 8, 8)),
    ("pyramid", {"thresholds": (0.2, 0.3, 0.4, 0.5)}, {"thresholds": (0.8, 0.85, 0.9, 0.95)}, (4, 8, 8)),
    ("vmoba", {"threshold": 0.05, "partitions": "2d"}, {"threshold": 0.6, "partitions": "2d"}, (4, 12, 16)),
])
def test_each_head_keeps_its_own_settings_rows_and_a_dense_head_keeps_all(method, a, b, grid):
    spec = get_method(method)
    grid = fastdit.TokenGrid(*grid)
    opts_a, opts_b = parse_options(spec, a), parse_options(spec, b)
    order = layout_order(spec, grid, 16, opts_a)
    g = torch.Generator().manual_seed(0)
    q, k = (order.to_order(torch.randn(1, 3, grid.num_tokens, 16, generator=g)) for _ in range(2))
    data = {"q": q, "k": k} if spec.dynamic else {}
    layout = make_head_layout(spec, order, (opts_a, None, opts_b), **data)
    mask, level = layout.to_dense_block_mask(), layout.to_level_map()
    for head, options in ((0, opts_a), (2, opts_b)):
        alone = make_layout(spec, order, options, **data)
        h = head if alone.num_heads > 1 else 0
        assert torch.equal(mask[head], alone.to_dense_block_mask()[h])
        assert torch.equal(level[head], alone.to_level_map()[h])
    assert bool(mask[1].all()) and bool((level[1] == 0).all())
    assert not torch.equal(mask[0], mask[2])


def test_layer_plans_override_the_method_per_layer_and_dense_plans_run_dense():
    from fastdit.dummy.wan import dummy_wan_transformer

    model = dummy_wan_transformer(num_layers=3, patch_size=(1, 1, 1))
    layers = (LayerChoice("transformer", 0, "dense"),
              LayerChoice("transformer", 1, "radial", (HeadChoice({"decay_factor": 0.05}), HeadChoice(None))),
              LayerChoice("transformer", 2, "grat", (HeadChoice({"mode": "surround", "radius": 0}),)))
    calibration = Calibration(model=None, fingerprint=fingerprint(denoisers(model)), grid=(4, 8, 8), block_size=16,
                              target=0.1, metric="rel_l2", schedule=50, dense_steps=0, layers=layers,
                              expected_density=0.5)
    fastdit.apply(model, calibration=calibration)
    try:
        with torch.no_grad():
            model(torch.randn(1, 16, 4, 8, 8), torch.tensor([500]), torch.randn(1, 7, 32), return_dict=False)
        records = {r.layer: r for r in fastdit.stats(model).records}
    finally:
        fastdit.remove(model)
    assert records[0].dense and records[0].reason == "dense_plan"
    assert records[1].reason == "radial" and records[2].reason == "grat"
    radial = parse_options(get_method("radial"), {"decay_factor": 0.05})
    radial_alone = make_layout(get_method("radial"), layout_order(get_method("radial"), fastdit.TokenGrid(4, 8, 8),
                                                                  16, radial), radial).density()
    assert records[1].density == pytest.approx((radial_alone + 1) / 2)  # head 1 dense


def test_plans_validate_methods_and_options():
    assert LayerPlan.create("dense", []).dense
    assert LayerPlan.create("radial", [None, None]).dense
    with pytest.raises(ValueError, match="unknown method"):
        LayerPlan.create("sparse", [{}])
    with pytest.raises(ValueError, match="unknown option"):
        LayerPlan.create("radial", [{"radius": 1}])
    with pytest.raises(ValueError, match="at least one head"):
        LayerPlan.create("radial", [])
