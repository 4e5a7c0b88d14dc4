"""Radial attention reproduces the official mask: figures from running the official code, a token-level
reference of the published rule, and the properties the paper relies on."""

from __future__ import annotations

import math

import pytest
import torch

import fastdit
from fastdit import TokenGrid
from fastdit.methods.radial import RadialOptions, frame_window
from tests.methods.published_rules import official, official_masks, radial_reference, token_agreement

# tokens per frame -> (h, w) of the grids the official code was run on
FRAME_SHAPES = {256: (16, 16), 1024: (32, 32), 120: (10, 12), 4000: (40, 100), 1560: (30, 52), 3600: (45, 80),
                3840: (48, 80)}


def _options(record: dict) -> dict:
    """fastdit options of an official run: the Wan model type has the sink; the older rule only changed Wan."""
    wan = record["model_type"] == "wan"
    return {"decay_factor": record["decay"], "sink": wan,
            "adjacent": "half" if (wan and record["rule"] == "half_adjacent") else "full"}


def _layout(record: dict):
    h, w = FRAME_SHAPES[record["grid_p"]]
    return fastdit.build_layout("radial", TokenGrid(record["grid_t"], h, w), block_size=record["block_size"],
                                **_options(record))


@pytest.mark.parametrize("record", official("radial")["records"],
                         ids=lambda r: f"{r['model_type']}-{r['grid_t']}x{r['grid_p']}-d{r['decay']}-{r['rule']}"
                                       f"-b{r['block_size']}")
def test_density_equals_the_official_code(record):
    layout = _layout(record)
    assert layout.n_q_blocks ** 2 == record["n_blocks"]
    assert layout.nnz == record["kept_blocks"]


@pytest.mark.parametrize("key,mask", sorted(official_masks("radial_masks").items()))
def test_block_mask_equals_the_official_code_and_covers_its_token_pairs(key, mask):
    model, shape, decay, rule = key.split("_", 3)
    T, P = map(int, shape.split("x"))
    record = {"model_type": model, "grid_t": T, "grid_p": P, "decay": float(decay[1:]), "rule": rule,
              "block_size": 128}
    mine = _layout(record).to_dense_block_mask()[0]
    coverage, extra = token_agreement(mine, mask, T * P, 128)
    assert coverage == 1.0 and extra == 0.0  # targets: >= 0.99 and <= 1%
    assert torch.equal(mine, mask)


@pytest.mark.parametrize("T,h,w,block", [(5, 16, 16, 128), (11, 10, 12, 128), (8, 32, 32, 64), (9, 13, 17, 32),
                                         (6, 7, 9, 16), (17, 8, 8, 32)])
@pytest.mark.parametrize("sink,adjacent", [(True, "full"), (True, "half"), (False, "full")])
@pytest.mark.parametrize("decay", [0.2, 1.0, 3.0])
def test_small_grids_equal_the_token_level_rule(T, h, w, block, sink, adjacent, decay):
    layout = fastdit.build_layout("radial", TokenGrid(T, h, w), block_size=block, decay_factor=decay, sink=sink,
                                  adjacent=adjacent)
    assert torch.equal(layout.to_dense_block_mask()[0], radial_reference(T, h * w, block, decay, sink, adjacent))


@pytest.mark.slow
def test_wan_480p_equals_the_token_level_rule_frame_pair_by_frame_pair():
    T, h, w = 21, 30, 52
    mine = fastdit.build_layout("radial", TokenGrid(T, h, w), decay_factor=0.5).to_dense_block_mask()[0]
    assert torch.equal(mine, radial_reference(T, h * w, 128, 0.5, True))


@pytest.mark.parametrize("T,h,w,sink,decay", [(21, 45, 80, True, 0.2), (33, 45, 80, False, 0.95)])
def test_720p_grids_cover_every_sampled_frame_pair_of_the_token_level_rule(T, h, w, sink, decay):
    mine = fastdit.build_layout("radial", TokenGrid(T, h, w), decay_factor=decay, sink=sink).to_dense_block_mask()[0]
    pairs = [(i, j) for i in (1, T // 2) for j in range(T)]  # the full grid is checked against upstream above
    reference = radial_reference(T, h * w, 128, decay, sink, pairs=pairs)
    assert not bool((reference & ~mine).any())


def test_decay_factor_changes_the_wan_480p_layout():
    densities = [fastdit.build_layout("radial", TokenGrid(21, 30, 52), decay_factor=d).density()
                 for d in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert all(a < b for a, b in zip(densities, densities[1:])), densities
    assert densities[0] == pytest.approx(0.3438, abs=1e-4) and densities[-1] == pytest.approx(0.4492, abs=1e-4)


def test_layout_is_in_raster_order_with_padding_only_at_the_end():
    layout = fastdit.build_layout("radial", TokenGrid(21, 30, 52))
    order = layout.order
    assert order.kind == "raster" and layout.block_q == 128
    assert torch.equal(order.destination, torch.arange(21 * 30 * 52))
    assert order.seq_len == 32768 and not bool(order.valid[:32760].logical_not().any())


def test_defaults_are_the_official_head_with_the_wan_sink():
    assert RadialOptions() == RadialOptions(decay_factor=0.2, sink=True, adjacent="full", subsample_tokens=128)


def test_frame_rule():
    P, B = 1560, 128  # Wan 480p: 30 x 52 tokens per frame, 2**11 = 2048 >= P
    opts = RadialOptions(decay_factor=0.5)
    assert frame_window(0, P, B, opts) == frame_window(1, P, B, opts) == P
    assert frame_window(1, P, B, RadialOptions(adjacent="half")) == P // 2
    assert frame_window(2, P, B, opts) == frame_window(3, P, B, opts) == 256  # 2048 / 4 * 0.5
    assert frame_window(7, P, B, RadialOptions(decay_factor=0.01)) == B  # never below one block
    # reach 2048 / 2**bit_length(d) below 128 tokens: keep only d % (128 / reach) == 0
    assert frame_window(16, P, B, opts) == B and frame_window(17, P, B, opts) is None  # reach 64: every 2nd
    assert frame_window(32, P, B, opts) == B and frame_window(34, P, B, opts) is None  # reach 32: every 4th
    # frames under 128 tokens: even neighbours are subsampled, as upstream does
    assert frame_window(1, 120, B, opts) is None and frame_window(2, 120, B, opts) is None


def test_density_falls_and_blocks_grow_n_log_n():
    frames = [8, 16, 32, 64, 128]
    densities, per_frame = [], []
    for n in frames:
        layout = fastdit.build_layout("radial", TokenGrid(n, 16, 32), block_size=64, sink=False)
        densities.append(layout.density())
        per_frame.append(layout.nnz / n)  # kept blocks per query frame
    assert all(a > b for a, b in zip(densities, densities[1:])), densities
    # O(n log n) total = O(log n) per query frame: each doubling of the frames adds about as many blocks per
    # frame as the previous one did (an O(n^2) mask would add twice as many)
    added = [b - a for a, b in zip(per_frame, per_frame[1:])]
    assert all(x > 0 for x in added)
    assert added[-1] / added[-2] < 1.3 and added[-2] / added[-3] < 1.3, added


def test_the_sink_is_key_frame_zero():
    grid = TokenGrid(12, 8, 16)  # 128 tokens per frame: one block per frame
    with_sink = fastdit.build_layout("radial", grid).to_dense_block_mask()[0]
    without = fastdit.build_layout("radial", grid, sink=False).to_dense_block_mask()[0]
    assert with_sink[:, 0].all() and not without[:, 0].all()
    assert torch.equal(with_sink[:, 1:], without[:, 1:])


@pytest.mark.parametrize("bad", [{"decay_factor": -1}, {"decay_factor": math.inf}, {"adjacent": "quarter"},
                                 {"sink": 1}, {"subsample_tokens": 0}, {"spatial": "2d"}])
def test_bad_options_are_clear_errors(bad):
    with pytest.raises(ValueError, match="radial|unknown option"):
        fastdit.build_layout("radial", TokenGrid(4, 8, 8), **bad)


def test_radial_is_defined_on_the_raster_order_only():
    with pytest.raises(ValueError, match="raster"):
        fastdit.build_layout("radial", TokenGrid(4, 8, 8), order="tiles")
