"""One-call patching of Wan (issue 3 acceptance): exactness, restore, re-configure, step counting, errors."""

import warnings

import pytest
import torch

import fastdit
import fastdit.runtime.engine
from fastdit.dummy.wan import dummy_wan_pipeline, dummy_wan_transformer

# criss-cross planes keep every group of these tiny grids; one-group surround leaves something to drop
SPARSE_GRAT = {"mode": "surround", "radius": 0}


@pytest.fixture(scope="module")
def transformer():
    return dummy_wan_transformer(num_layers=2)


@pytest.fixture(scope="module")
def pipe():
    p = dummy_wan_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def _inputs(batch=2, frames=5, height=14, width=18):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 16, frames, height, width, generator=g)
    ctx = torch.randn(batch, 7, 32, generator=g)
    return x, torch.full((batch,), 500), ctx


def _forward(model, inputs):
    with torch.no_grad():
        return model(*inputs, return_dict=False)[0]


def test_dense_equals_unpatched_and_remove_is_bit_identical(transformer):
    inputs = _inputs()
    before = _forward(transformer, inputs)
    fastdit.apply(transformer, method="dense")
    processor = transformer.blocks[0].attn1.processor  # the stock processor stays: its dispatch is fastdit's
    assert type(processor).__name__ == "WanAttnProcessor" and processor._attention_backend.value.startswith("fastdit")
    torch.testing.assert_close(_forward(transformer, inputs), before, atol=1e-5, rtol=0)
    fastdit.remove(transformer)
    assert torch.equal(_forward(transformer, inputs), before)
    assert type(transformer.blocks[0].attn1.processor).__name__ == "WanAttnProcessor"


def test_sparse_differs_from_dense_and_cross_attention_is_untouched(transformer):
    inputs = _inputs(frames=8, height=16, width=24)
    before = _forward(transformer, inputs)
    fastdit.apply(transformer, method="grat", preset=None, block_size=16, mode="surround", radius=(1, 1, 1))
    try:
        out = _forward(transformer, inputs)
        assert type(transformer.blocks[0].attn2.processor).__name__ == "WanAttnProcessor"
        stats = fastdit.stats(transformer)
        assert all(not r.dense for r in stats.records) and 0 < stats.mean_density() < 1
    finally:
        fastdit.remove(transformer)
    rel = ((out - before).norm() / before.norm()).item()
    assert 1e-4 < rel < 1.0, rel


def test_apply_twice_reconfigures_without_double_wrapping(transformer):
    inputs = _inputs()
    before = _forward(transformer, inputs)
    fastdit.apply(transformer, method="radial", preset=None, block_size=16)
    fastdit.apply(transformer, method="grat", preset=None, block_size=16, **SPARSE_GRAT)
    assert type(transformer.blocks[1].attn1.processor).__name__ == "WanAttnProcessor"
    assert fastdit.patching.patch_config(transformer).method == "grat"
    fastdit.remove(transformer)
    fastdit.remove(transformer)  # a second remove is a no-op
    assert torch.equal(_forward(transformer, inputs), before)


@pytest.mark.parametrize("batch,frames,height,width", [(1, 5, 14, 18), (3, 7, 10, 22), (2, 1, 30, 12)])
def test_any_resolution_frame_count_and_batch_size(transformer, batch, frames, height, width):
    inputs = _inputs(batch, frames, height, width)
    dense = _forward(transformer, inputs)
    fastdit.apply(transformer, method="radial", preset=None, block_size=16, decay_factor=0.5)
    try:
        out = _forward(transformer, inputs)
        grid = transformer._fastdit_state.context.grid
    finally:
        fastdit.remove(transformer)
    assert out.shape == dense.shape and torch.isfinite(out).all()
    assert (grid.t, grid.h, grid.w) == (frames, height // 2, width // 2)


def test_too_small_grid_runs_dense_with_one_warning(transformer, monkeypatch):
    monkeypatch.setattr(fastdit.runtime.engine, "_WARNED", set())  # warnings show once per process
    inputs = _inputs(frames=1, height=4, width=4)  # 4 tokens: one block
    fastdit.apply(transformer, method="radial", preset=None, block_size=16)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = _forward(transformer, inputs)
            _forward(transformer, inputs)
        fastdit.remove(transformer)
        ref = _forward(transformer, inputs)
    finally:
        fastdit.remove(transformer)
    messages = [str(w.message) for w in caught if "too small" in str(w.message)]
    assert len(messages) == 1 and "running dense" in messages[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def _run(pipe, guidance=5.0, steps=4, frames=17, seed=0, output_type="latent"):
    # latent grid (5, 8, 8): big enough for 16-token blocks to leave blocks out
    return pipe(prompt="a red ball", negative_prompt="blurry", height=128, width=128, num_frames=frames,
                num_inference_steps=steps, guidance_scale=guidance, max_sequence_length=16,
                generator=torch.Generator().manual_seed(seed), output_type=output_type).frames


@pytest.mark.parametrize("method,options", [("radial", {"decay_factor": 0.5}), ("grat", SPARSE_GRAT)])
def test_pipeline_end_to_end_with_dense_warmup_steps(pipe, method, options):
    dense = _run(pipe, output_type="np")
    fastdit.apply(pipe, method=method, preset=None, dense_steps=2, dense_layers=1, block_size=16, **options)
    try:
        frames = _run(pipe, output_type="np")
        stats = fastdit.stats(pipe)
    finally:
        fastdit.remove(pipe)
    assert frames.shape == dense.shape == (1, 17, 128, 128, 3)
    by_step = {}
    for r in stats.records:
        by_step.setdefault(r.step, []).append(r)
    assert sorted(by_step) == [0, 1, 2, 3]
    for step in (0, 1):
        assert all(r.dense and r.reason == "dense_steps" for r in by_step[step])
    for step in (2, 3):
        layer0, layer1 = sorted(by_step[step], key=lambda r: r.layer)
        assert layer0.dense and layer0.reason == "dense_layers"
        assert not layer1.dense and layer1.density < 1
    assert not torch.equal(torch.as_tensor(frames), torch.as_tensor(dense))


def test_classifier_free_guidance_counts_steps_the_same(pipe):
    fastdit.apply(pipe, method="radial", preset=None, dense_steps=1, block_size=16)
    try:
        _run(pipe, guidance=5.0, steps=3)  # two transformer calls per step
        with_cfg = [(r.step, r.layer, r.dense) for r in fastdit.stats(pipe).records]
        _run(pipe, guidance=1.0, steps=3)  # one call per step
        without_cfg = [(r.step, r.layer, r.dense) for r in fastdit.stats(pipe).records]
    finally:
        fastdit.remove(pipe)
    assert with_cfg == without_cfg
    assert {s for s, _, _ in with_cfg} == {0, 1, 2}


def test_stats_reset_per_pipeline_call_and_remove_restores_the_pipeline(pipe):
    before = _run(pipe, steps=2)
    fastdit.apply(pipe, method="radial", preset=None, block_size=16)
    try:
        _run(pipe, steps=3)
        assert fastdit.stats(pipe).steps == 3
        _run(pipe, steps=2)
        assert fastdit.stats(pipe).steps == 2
    finally:
        fastdit.remove(pipe)
    assert "set_timesteps" not in vars(pipe.scheduler)
    assert torch.equal(_run(pipe, steps=2), before)


def test_entropy_scaling_multiplies_the_softmax_scale(transformer):
    inputs = _inputs(frames=5, height=14, width=18)  # 5 * 7 * 9 = 315 tokens
    fastdit.apply(transformer, method="dense", entropy_scaling=True, n_train=315)
    try:
        engine = transformer._fastdit_state.engine
        assert engine.scale(315, 12) == 12**-0.5
        assert engine.scale(4 * 315, 12) == pytest.approx(12**-0.5 * (torch.log(torch.tensor(1260.0)) /
                                                                      torch.log(torch.tensor(315.0))).sqrt().item())
        same = _forward(transformer, inputs)
    finally:
        fastdit.remove(transformer)
    torch.testing.assert_close(same, _forward(transformer, inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(method="nope"), ValueError, "unknown method 'nope'"),
    (dict(method="radial", decay=0.1), ValueError, "unknown option"),
    (dict(method="radial", backend="cuda"), ValueError, "unknown backend"),
    (dict(method="radial", dense_steps=-1), ValueError, "dense_steps"),
    (dict(method="radial", entropy_scaling=True, preset=None), ValueError, "n_train"),
    (dict(method="radial", block_size=24), ValueError, "power of two"),
])
def test_bad_arguments_leave_the_model_unpatched(transformer, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastdit.apply(transformer, **kwargs)
    assert not fastdit.is_patched(transformer)
    assert type(transformer.blocks[0].attn1.processor).__name__ == "WanAttnProcessor"


def test_unsupported_models_get_a_clear_error():
    with pytest.raises(TypeError, match="supported families: .*wan"):
        fastdit.apply(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="diffusers pipeline"):
        fastdit.apply(object())


def test_a_users_custom_processor_is_not_silently_replaced(transformer):
    class MyProcessor:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            return stock(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

    stock = transformer.blocks[0].attn1.processor
    transformer.blocks[0].attn1.set_processor(MyProcessor())
    try:
        with pytest.raises(ValueError, match="custom attention processor MyProcessor.*force=True"):
            fastdit.apply(transformer, method="radial")
        fastdit.apply(transformer, method="radial", force=True)
        fastdit.remove(transformer)
        assert isinstance(transformer.blocks[0].attn1.processor, MyProcessor)
    finally:
        transformer.blocks[0].attn1.set_processor(stock)


def test_a_sparse_config_applies_as_its_arguments_do(transformer):
    """``fastdit.apply(model, config)``: a public ``SparseConfig`` is the same patch as its arguments, is checked
    like them, and holds every setting (nothing else may be passed with it)."""
    inputs = _inputs(frames=8, height=16, width=24)
    options = dict(mode="surround", radius=(1, 1, 1))
    fastdit.apply(transformer, method="grat", preset=None, block_size=16, **options)
    try:
        by_arguments = _forward(transformer, inputs)
        config = fastdit.SparseConfig.create("grat", options, block_size=16)
        fastdit.apply(transformer, config)
        assert fastdit.patching.patch_config(transformer) == config
        assert torch.equal(_forward(transformer, inputs), by_arguments)
        fastdit.apply(transformer, fastdit.SparseConfig(method="grat", options=options, block_size=16))
        assert torch.equal(_forward(transformer, inputs), by_arguments)  # a config built directly is checked
        with pytest.raises(ValueError, match="holds every setting; don't pass dense_steps, radius"):
            fastdit.apply(transformer, config, dense_steps=2, radius=0)
        with pytest.raises(ValueError, match="block_size must be a power of two"):
            fastdit.apply(transformer, fastdit.SparseConfig(method="grat", block_size=24))
    finally:
        fastdit.remove(transformer)
