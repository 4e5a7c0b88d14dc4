"""SVG2's ``zero_step_kmeans_init`` (HunyuanVideo's published setting) against the official code: k-means on
the calls of the dense warm-up steps, whose centroids warm-start the first sparse call (fixtures from
svg-project/Sparse-VideoGen's SAP processor, see ``tests/fixtures/official/make_svg2.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastdit
from fastdit import TokenGrid
from fastdit.dummy.video import dummy_hunyuan_video_transformer
from fastdit.layout.order import make_order
from fastdit.methods import get_method, make_layout, parse_options
from fastdit.methods.svg2 import centroid_mass, cluster, cluster_pairs
from fastdit.patching.patch import patch_config
from fastdit.patching.presets import PRESETS
from fastdit.runtime.config import SparseConfig
from fastdit.runtime.context import RunContext
from fastdit.runtime.engine import SparseAttention
from tests.methods.published_rules import FIXTURES, structured_qk
from tests.methods.test_svg2 import _computed_pairs

META = json.loads((FIXTURES / "svg2.json").read_text())["cases"]
WARMUP = json.loads((FIXTURES / "svg2_warmup.json").read_text())["warmup_steps"]
TEXT = 7  # HunyuanVideo's prompt tokens follow the video in the self-attention


def _steps(meta: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The layer's q, k at each step, as the fixture script makes them (``warmup_steps_qk``)."""
    grid, noise, seed = tuple(meta["grid"]), tuple(meta["noise"]), meta["seed"]
    steps = [structured_qk(grid, noise, seed)]
    for step in range(1, WARMUP + 1):
        q, k = structured_qk(grid, noise, seed + 100 + step)
        steps.append((0.8 * steps[-1][0] + 0.2 * q, 0.8 * steps[-1][1] + 0.2 * k))
    return steps


def _official(name: str, variant: str) -> dict[str, torch.Tensor]:
    with np.load(FIXTURES / "svg2_warmup.npz") as z:
        prefix = f"{name}/{variant}/"
        return {key[len(prefix):]: torch.from_numpy(z[key]) for key in z.files if key.startswith(prefix)}


def _options(name: str, variant: str, **extra) -> dict:
    meta, official = META[name], _official(name, variant)
    return dict(q_clusters=meta["q_clusters"], k_clusters=meta["k_clusters"], top_p=meta["top_p"],
                min_kc_ratio=meta["min_kc_ratio"], kmeans_iters=meta["kmeans_iter_init"],
                kmeans_iters_step=meta["kmeans_iter_step"], q_init_centroids=official["q_init"],
                k_init_centroids=official["k_init"], zero_step_kmeans_init=variant == "warm", **extra)


def _official_token_pairs(official: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[H, S, S]`` bool, raster order: the official first sparse call's kept token pairs."""
    ql, kl, pairs = official["q_labels"], official["k_labels"], official["pairs"]
    return pairs[torch.arange(ql.shape[0])[:, None, None], ql[:, :, None], kl[:, None, :]]


@pytest.mark.parametrize("variant", ["warm", "cold"])
@pytest.mark.parametrize("name", sorted(META))
def test_first_sparse_call_after_the_warmup_matches_the_official_code(name, variant):
    """Through the dense warm-up calls (``warm_up``) and the first sparse call: with ``zero_step_kmeans_init``
    the first sparse call warm-starts from the warm-up's k-means, without it it starts cold from the draw;
    either way its query and key labels and kept cluster pairs equal upstream's, and its fixed blocks cover
    every official token pair."""
    spec, official = get_method("svg2"), _official(name, variant)
    opts = parse_options(spec, _options(name, variant))
    order = make_order("raster", TokenGrid(*META[name]["grid"]), 64)
    state: dict = {}
    steps = _steps(META[name])
    for q, k in steps[:WARMUP]:  # as the engine runs the warm-up: where the options ask for it
        if spec.warms_up(opts):
            spec.warm_up(order, opts, q=q, k=k, state=state)
    assert bool(state) == (variant == "warm")
    q, k = steps[WARMUP]
    found = cluster(q, k, opts, dict(state))
    H, S = q.shape[1:3]
    assert torch.equal(found.q_labels.view(H, S), official["q_labels"]), "query labels"
    assert torch.equal(found.k_labels.view(H, S), official["k_labels"]), "key labels"
    pairs = cluster_pairs(centroid_mass(found.q_centroids, found.k_centroids, found.k_sizes), opts.top_p,
                          opts.min_kc_ratio)
    assert torch.equal(pairs, official["pairs"]), "cluster pairs"
    layout = make_layout(spec, order, opts, q=q, k=k, state=state)
    assert not bool((_official_token_pairs(official) & ~_computed_pairs(layout, S)).any())


@pytest.mark.parametrize("name", sorted(META))
def test_the_warmup_changes_the_first_sparse_call(name):
    """The two official variants differ on every fixture, so each of the tests above fails when fastdit runs
    the other one (a warm-up that does nothing, or k-means on dense calls without the flag)."""
    warm, cold = _official(name, "warm"), _official(name, "cold")
    assert not torch.equal(warm["q_labels"], cold["q_labels"]) and not torch.equal(warm["pairs"], cold["pairs"])


def _run_layer(name: str, variant: str, **config) -> tuple[SparseAttention, list[tuple[torch.Tensor, ...]]]:
    """One layer of a HunyuanVideo-like model (video, then ``TEXT`` prompt tokens) through the fixture's steps
    in the engine, ``WARMUP`` of them dense; returns the engine and each step's ``(q, k, v, out)``."""
    meta = META[name]
    context = RunContext()
    context.grid = TokenGrid(*meta["grid"])
    engine = SparseAttention(SparseConfig.create("svg2", _options(name, variant), dense_steps=WARMUP, block_size=64,
                                                 **config), context)
    g = torch.Generator().manual_seed(0)
    calls = []
    for step, (q, k) in enumerate(_steps(meta)):
        q, k = (torch.cat([x, torch.randn(*x.shape[:2], TEXT, x.shape[3], generator=g)], 2) for x in (q, k))
        v = torch.randn(q.shape, generator=g)
        context.observe_forward("m", 1000.0 - step)
        calls.append((q, k, v, engine(q, k, v, layer=1, model="m", text_tokens=TEXT)))
    return engine, calls


@pytest.mark.parametrize("variant", ["warm", "cold"])
def test_engine_runs_the_warmup_kmeans_and_keeps_dense_steps_exact(variant):
    """In the engine, the dense warm-up steps stay exactly stock attention (bit-identical to SDPA) with
    ``zero_step_kmeans_init``, which only fills the layer's centroids there; the first sparse step's centroids
    are then upstream's of its variant."""
    name = "hunyuan_6x16x16"
    engine, calls = _run_layer(name, variant)
    records = engine.context.stats.records
    assert [r.reason for r in records] == ["dense_steps"] * WARMUP + ["svg2"]
    # without the option a warm-up call does no extra work: q and k aren't even moved into the order
    assert all((sum(t.layout + t.permute for t in r.times) > 0) == (variant == "warm") for r in records[:WARMUP])
    for q, k, v, out in calls[:WARMUP]:
        assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    official, state = _official(name, variant), engine.context.method_state[("m", 1)]
    torch.testing.assert_close(state["q"], official["q_centroids"], atol=1e-5, rtol=0)
    torch.testing.assert_close(state["k"], official["k_centroids"], atol=1e-5, rtol=0)
    S = engine.context.grid.video_tokens
    computed = _computed_pairs(engine.context.stats.last_layout, S)
    assert not bool((_official_token_pairs(official) & ~computed).any())


def test_engine_skips_the_warmup_kmeans_on_layers_that_never_run_sparse():
    """A layer the published warm-up keeps dense on every step (``dense_layers``) gets no k-means: upstream
    runs it there too, but no call of the layer ever uses its centroids."""
    engine, _ = _run_layer("hunyuan_6x16x16", "warm", dense_layers=2)
    assert engine.context.method_state.get(("m", 1), {}) == {}


def test_presets_run_it_where_the_published_scripts_do():
    """HunyuanVideo's SAP scripts pass ``--zero_step_kmeans_init``, Wan's T2V script doesn't (the presets' Wan
    models are T2V; of Wan's scripts only the 480p I2V one sets it), and ``apply`` carries it to the engine."""
    hunyuan = "hunyuanvideo-community/HunyuanVideo"
    assert PRESETS[hunyuan].methods["svg2"].options["zero_step_kmeans_init"] is True
    for wan in ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "fastdit/tiny-wan"):
        assert not PRESETS[wan].methods["svg2"].options.get("zero_step_kmeans_init", False)
    model = fastdit.apply(dummy_hunyuan_video_transformer(), "svg2", preset=hunyuan)
    assert patch_config(model).options.zero_step_kmeans_init is True


def test_the_option_is_a_bool():
    with pytest.raises(ValueError, match="zero_step_kmeans_init"):
        parse_options(get_method("svg2"), {"zero_step_kmeans_init": "yes"})
