"""Per-family acceptance: dense is the stock processor, sparse methods run, remove restores, grids are right."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.layout.grid import TokenGrid
from fastdit.layout.order import make_order
from fastdit.patching.families import SparseProcessorMixin, detect_family

# criss-cross planes keep every group of these tiny grids; one-group surround leaves something to drop
SPARSE_GRAT = {"mode": "surround", "radius": 0}


def _self_attention(model):
    return [module for _, module in detect_family(model).self_attention(model)]


def _fastdits(module) -> bool:
    """fastdit runs ``module``'s self-attention: its own processor, or (the generic path) the stock processor
    dispatching to fastdit's backend, or, where the processor keeps its own backend (AnyFlow-FAR), fastdit's
    handler hooked on the module and calling it installed there."""
    from fastdit.patching.dispatch import DispatchedAttention

    handlers = [getattr(hook, "__self__", None) for hook in module._forward_pre_hooks.values()]
    return isinstance(module.processor, SparseProcessorMixin) or \
        getattr(module.processor, "_attention_backend", None) == "fastdit" or \
        any(isinstance(h, DispatchedAttention) and h.keeps_backend and h.installed_on(module) for h in handlers)


def test_dense_is_the_stock_processor_and_remove_restores_it(case, model, forward):
    inputs = case.inputs(case.grids[1], 2)
    before = forward(model, inputs)
    originals = [module.processor for module in _self_attention(model)]
    cross = {name: model.get_submodule(name).processor for name in case.cross_attention}
    fastdit.apply(model, method="dense")
    try:
        assert all(_fastdits(m) for m in _self_attention(model))
        assert all(model.get_submodule(name).processor is proc for name, proc in cross.items())
        dense = forward(model, inputs)
    finally:
        fastdit.remove(model)
    torch.testing.assert_close(dense, before, atol=1e-6, rtol=0)
    assert [m.processor for m in _self_attention(model)] == originals
    assert torch.equal(forward(model, inputs), before)


@pytest.mark.parametrize("method", ["radial", "grat"])
def test_sparse_methods_run_and_differ_from_dense(case, model, forward, method):
    inputs = case.inputs(case.grids[0], 2)
    dense = forward(model, inputs)
    fastdit.apply(model, method=method, preset=None, block_size=16, dense_steps=0, dense_layers=0,
                  **(SPARSE_GRAT if method == "grat" else {}))
    try:
        out = forward(model, inputs)
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    assert torch.isfinite(out).all() and out.shape == dense.shape
    if case.one_frame and method == "radial":
        # radial decays along time; a single image (or one frame of a video attended per frame) is one frame,
        # which it keeps whole: dense, and said so
        assert records and all(r.dense and r.reason in ("full layout", "grid too small") for r in records)
        torch.testing.assert_close(out, dense, atol=1e-6, rtol=0)
        return
    sparse = [r for r in records if not r.dense]
    assert sparse and all(0 < r.density < 1 for r in sparse)
    assert all(r.reason == "grid too small" for r in records if r.dense)  # only a UNet's 1-block mid level
    rel = ((out - dense).norm() / dense.norm()).item()
    assert 1e-4 < rel < 0.5, rel


@pytest.mark.parametrize("which", [0, 1])
def test_detected_grid_is_the_latent_grid(case, model, forward, which):
    grid = case.grids[which]
    if which == 1:  # the second grid leaves padded tiles, whatever 16-token tile is chosen
        assert make_order("tiles", TokenGrid(*grid), 16).padding_fraction > 0
    fastdit.apply(model, method="grat", preset=None, block_size=16, **SPARSE_GRAT)
    try:
        forward(model, case.inputs(grid, 1))
        detected = model._fastdit_state.context.grid  # what the pre-hook recorded for the forward call
        reasons = {r.reason for r in fastdit.stats(model).records}
    finally:
        fastdit.remove(model)
    assert (detected.t, detected.h, detected.w) == grid
    assert not reasons & {"grid mismatch", "no grid"}, reasons


def test_a_users_custom_processor_is_kept_unless_forced(case, model):
    module = _self_attention(model)[0]
    stock = module.processor

    class CustomProcessor:
        def __call__(self, *args, **kwargs):
            return stock(*args, **kwargs)

    def set_processor(processor):
        if hasattr(module, "set_processor"):
            module.set_processor(processor)
        else:
            module.processor = processor

    custom = CustomProcessor()
    set_processor(custom)
    try:
        with pytest.raises(ValueError, match="custom attention processor CustomProcessor.*force=True"):
            fastdit.apply(model, method="radial")
        assert not fastdit.is_patched(model) and module.processor is custom
        fastdit.apply(model, method="radial", force=True)
        assert _fastdits(module)
        fastdit.remove(model)
        assert module.processor is custom
    finally:
        set_processor(stock)


def test_a_model_fastdit_cannot_sparsify_gets_one_line_that_says_why():
    """Sana-Video's self-attention is linear: ``apply`` names the class and the reason, not the family list."""
    from diffusers import SanaVideoTransformer3DModel

    model = SanaVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                        num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                        cross_attention_dim=16, caption_channels=8)
    with pytest.raises(TypeError, match=r"^fastdit can't sparsify SanaVideoTransformer3DModel: its self-attention "
                                        r"is linear"):
        fastdit.apply(model)
    assert not fastdit.is_patched(model)


def test_kandinsky5_set_to_nabla_gets_no_raster_grid(cases):
    """A Kandinsky 5 checkpoint set to its own NABLA attention puts its tokens in 8×8 fractal tiles, which the
    raster grid would misplace: fastdit reads no grid for it (the default checkpoint's is the latent grid)."""
    case = cases["kandinsky5"]
    model = case.build()
    inputs = case.inputs(case.grids[0], 1)
    family = detect_family(model)
    assert family.grid(model, (), inputs) == TokenGrid(*case.grids[0])
    model.register_to_config(attention_type="nabla")
    assert family.grid(model, (), inputs) is None


def test_sana_wm_is_refused_with_its_reason():
    """Sana-WM attends linearly in most blocks, and its few softmax blocks have no processor to replace."""
    from diffusers import SanaWMTransformer3DModel

    model = SanaWMTransformer3DModel(in_channels=4, num_layers=1, hidden_size=32, num_attention_heads=2,
                                     linear_head_dim=16, caption_channels=8)
    with pytest.raises(TypeError, match=r"^fastdit can't sparsify SanaWMTransformer3DModel: its self-attention is "
                                        r"linear \(a gated delta net"):
        fastdit.apply(model)
    assert not fastdit.is_patched(model)


def test_a_discrete_input_transformer_2d_runs_on_its_sample_size_grid(forward):
    """VQ-Diffusion's ``Transformer2DModel`` takes ``[B, H·W]`` codebook indices: fastdit reads the grid from
    ``sample_size`` and runs it sparse."""
    from diffusers import Transformer2DModel

    torch.manual_seed(0)
    model = Transformer2DModel(num_attention_heads=2, attention_head_dim=8, num_vector_embeds=17, sample_size=16,
                               num_layers=1, cross_attention_dim=16, norm_type="ada_norm", num_embeds_ada_norm=100,
                               activation_fn="geglu-approximate").eval()
    inputs = dict(hidden_states=torch.randint(0, 17, (2, 16 * 16)), encoder_hidden_states=torch.randn(2, 7, 16),
                  timestep=torch.tensor(50))
    dense = forward(model, inputs)
    fastdit.apply(model, method="grat", preset=None, block_size=16, **SPARSE_GRAT)
    try:
        out = forward(model, inputs)
        grid = model._fastdit_state.context.grid
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    assert (grid.t, grid.h, grid.w) == (1, 16, 16)
    assert records and all(not r.dense for r in records)
    assert 1e-4 < ((out - dense).norm() / dense.norm()).item() < 0.5


@pytest.mark.parametrize("family", ["z_image", "ideogram4"])
def test_a_timestep_that_rises_during_a_run_counts_steps(cases, forward, family):
    """Z-Image and Ideogram 4 take the share of the way to the clean image (0 at pure noise): each larger value
    is the next step (the first one warm-up, dense), and a return to 0 starts a new run."""
    case = cases[family]
    model = case.build()
    name = detect_family(model).timestep_arg
    inputs = case.inputs(case.grids[0], 1)
    fastdit.apply(model, method="grat", preset=None, block_size=16, dense_steps=1, dense_layers=0, **SPARSE_GRAT)
    try:
        for t in (0.0, 0.3, 0.3, 0.7):  # the repeated value: a second forward of one step (guidance)
            forward(model, dict(inputs, **{name: torch.full((1,), t)}))
        steps = {(r.step, r.dense, r.calls) for r in fastdit.stats(model).records}
        forward(model, dict(inputs, **{name: torch.zeros(1)}))
        again = {(r.step, r.dense) for r in fastdit.stats(model).records}
    finally:
        fastdit.remove(model)
    assert steps == {(0, True, 1), (1, False, 2), (2, False, 1)}
    assert again == {(0, True)}
