"""Every ``apply`` argument is refused up front, before anything is patched, with what was given and what is
allowed; and a warm-up given as a share of the steps adapts to each call's number of steps."""

from __future__ import annotations

import pytest
import torch

import fastdit
import fastdit.kernels
from fastdit.dummy.wan import dummy_wan_pipeline, dummy_wan_transformer
from fastdit.runtime.config import LayerPlan, SparseConfig


@pytest.fixture(scope="module")
def transformer():
    return dummy_wan_transformer(num_layers=2)


def _unpatched(model) -> bool:
    return not fastdit.is_patched(model) and type(model.blocks[0].attn1.processor).__name__ == "WanAttnProcessor"


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="grat", tile=(2, 8)), r"three positive ints .* got \(2, 8\)"),
    (dict(method="grat", tile=(-1, 8, 8)), "three positive ints"),
    (dict(method="grat", tile=(1, 4, 4), block_size=32), "not a multiple of the 32-token block_size"),
    (dict(method="radial", tile=(1, 8, 8), block_size=16), "'radial' runs on the 'raster' order here"),
    (dict(method="radial", block_size=8), "power of two from 16 to 1024, got 8"),
    (dict(method="radial", block_size=1), "from 16 to 1024, got 1"),
    (dict(method="radial", block_size=2**40), "from 16 to 1024"),
    (dict(method="pyramid", block_size=16, backend="flex"), "'flex' can't run this model's pyramid attention: pyramid"),
    (dict(method="radial", dense_steps=1.5), r"a float in \[0, 1\]"),
    (dict(method="radial", dense_steps=True), "dense_steps must be"),
])
def test_bad_arguments_are_refused_at_apply_and_leave_the_model_unpatched(transformer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastdit.apply(transformer, preset=None, **kwargs)
    assert _unpatched(transformer)


def test_triton_on_a_cpu_only_machine_is_refused_at_apply(transformer, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(fastdit.kernels.dispatch, "_interpreter_requested", lambda: False)  # no TRITON_INTERPRET=1
    with pytest.raises(ValueError, match="backend 'triton' can't run this model's radial attention: inputs are on cpu"):
        fastdit.apply(transformer, method="radial", preset=None, block_size=16, backend="triton")
    assert _unpatched(transformer)


def test_a_dtype_no_kernel_runs_is_refused_at_apply():
    model = dummy_wan_transformer(num_layers=1).double()
    with pytest.raises(ValueError, match="dtype torch.float64 is not supported"):
        fastdit.apply(model, method="radial", preset=None, block_size=16)
    assert _unpatched(model)


def test_a_warmup_share_rounds_to_each_calls_steps():
    share = SparseConfig.create("radial", {}, dense_steps=12 / 50)
    assert [share.warmup_steps(n) for n in (50, 25, 8, 4, 1)] == [12, 6, 2, 1, 0]
    assert share.warmup_steps(None) == 12  # schedule unknown: the 50 steps warm-ups are published for
    assert SparseConfig.create("radial", {}, dense_steps=12).warmup_steps(4) == 12  # a count is a count


@pytest.mark.parametrize("steps,dense", [(8, 2), (4, 1)])
def test_the_preset_warmup_adapts_to_a_few_step_call(steps, dense):
    pipe = dummy_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.register_to_config(_name_or_path="Wan-AI/Wan2.1-T2V-1.3B-Diffusers")  # 12 of 50 steps dense
    fastdit.apply(pipe, block_size=16)
    try:
        pipe(prompt="a red ball", height=128, width=128, num_frames=17, num_inference_steps=steps,
             max_sequence_length=16, output_type="latent", generator=torch.Generator().manual_seed(0))
        records = fastdit.stats(pipe).records
    finally:
        fastdit.remove(pipe)
    warm = sorted({r.step for r in records if r.reason == "dense_steps"})
    assert warm == list(range(dense))
    assert any(r.ran_sparse for r in records if r.step >= dense)


@pytest.mark.parametrize("config", [
    SparseConfig(),
    SparseConfig.create("vmoba", {"chunk_2d": (2, 2)}, dense_steps=0.24, dense_layers=1, block_size=32),
    SparseConfig.create("grat", {"radius": (1, 2, 2)}, tile=(1, 4, 4), block_size=16, entropy_scaling=True,
                        n_train=4096, dense_steps=3),
    SparseConfig.create("radial", {}, grid=(2, 4, 4), reuse_grid=True, layers={
        ("transformer", 0): LayerPlan.create("dense", []),
        ("transformer_2", 1): LayerPlan.create("pyramid", [{"levels": 1, "thresholds": [0.3, 0.5]}, None])}),
], ids=["default", "vmoba", "grat", "layers"])
def test_a_config_reads_back_from_json(config):
    """What an exported model carries to run in another process: every field, tuples and per-head plans too
    (a share of the steps stays a share, a count a count)."""
    text = config.to_json()
    assert SparseConfig.from_json(text) == config.checked()
    assert type(SparseConfig.from_json(text).dense_steps) is type(config.dense_steps)


def test_force_must_be_a_bool(transformer):
    with pytest.raises(TypeError, match="force must be True or False, got 'yes'"):
        fastdit.apply(transformer, "radial", preset=None, block_size=16, force="yes")
    assert _unpatched(transformer)
