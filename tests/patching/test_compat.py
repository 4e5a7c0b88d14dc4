"""Working alongside diffusers features: model CPU offload, torch.compile, LoRA, Wan image-to-video."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.image import dummy_sd_pipeline
from fastdit.dummy.wan import dummy_wan_i2v_transformer, dummy_wan_pipeline, dummy_wan_transformer

# criss-cross planes keep every group of these tiny grids; one-group surround leaves something to drop
SPARSE_GRAT = {"mode": "surround", "radius": 0}

WAN_CALL = dict(prompt="a red ball", negative_prompt="blurry", height=128, width=128, num_frames=9,
                num_inference_steps=2, max_sequence_length=16, output_type="latent")


def _frames(pipe) -> torch.Tensor:
    return pipe(generator=torch.Generator().manual_seed(0), **WAN_CALL).frames


@pytest.mark.parametrize("order", ["offload_then_apply", "apply_then_offload"])
def test_model_cpu_offload(order):
    # On a CPU-only machine accelerate "offloads" to cpu:0: its hooks wrap each model's forward and move
    # tensors exactly as on a GPU box, which is what could break the pre-hook and the processors.
    pipe = dummy_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    call = dict(prompt="a red ball", height=128, width=128, num_inference_steps=2, output_type="pt")
    run = lambda: pipe(generator=torch.Generator().manual_seed(0), **call).images  # noqa: E731
    before = run()
    if order == "offload_then_apply":
        pipe.enable_model_cpu_offload(device="cpu")
        fastdit.apply(pipe, method="dense")
    else:
        fastdit.apply(pipe, method="dense")
        pipe.enable_model_cpu_offload(device="cpu")
    assert hasattr(pipe.unet, "_hf_hook")  # accelerate's offload hook is in place
    torch.testing.assert_close(run(), before, atol=1e-6, rtol=0)
    fastdit.apply(pipe, method="grat", preset=None, block_size=16, **SPARSE_GRAT)
    sparse = run()
    assert fastdit.stats(pipe).sparse_fraction() > 0 and not torch.equal(sparse, before)
    fastdit.remove(pipe)
    assert torch.equal(run(), before)


@pytest.mark.parametrize("order", ["compile_then_apply", "apply_then_compile"])
def test_torch_compile_of_the_transformer(order):
    model = dummy_wan_transformer(num_layers=1)
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 16, 4, 16, 16, generator=g), timestep=torch.tensor([500]),
                  encoder_hidden_states=torch.randn(1, 7, 32, generator=g), return_dict=False)
    later = dict(inputs, timestep=torch.tensor([400]))  # a second denoising step must not change the result
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            if order == "compile_then_apply":
                compiled = torch.compile(model, backend="eager")  # dynamo tracing and graph breaks, no codegen
                compiled(**inputs)
                fastdit.apply(compiled, method="radial", preset=None, block_size=16)  # patches the wrapped model
            else:
                fastdit.apply(model, method="radial", preset=None, block_size=16)
                compiled = torch.compile(model, backend="eager")
            outs = [compiled(**inputs)[0], compiled(**later)[0]]
            records = fastdit.stats(model).records
            eager = [model(**inputs)[0], model(**later)[0]]
    finally:
        fastdit.remove(model)
        torch._dynamo.reset()
    assert all(not r.dense for r in records) and {r.step for r in records} == {0, 1}
    for out, ref in zip(outs, eager):
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def _lora_weights() -> dict[str, torch.Tensor]:
    """A random LoRA on every attention projection of the tiny Wan transformer, as a pipeline state dict."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    donor = dummy_wan_transformer(seed=1)
    donor.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    return {f"transformer.{k}": v for k, v in get_peft_model_state_dict(donor).items()}


def test_lora_loaded_before_or_after_apply():
    pytest.importorskip("peft")
    pipe = dummy_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    weights = _lora_weights()
    base = _frames(pipe)
    pipe.load_lora_weights(weights, adapter_name="before")
    with_lora = _frames(pipe)
    assert (with_lora - base).abs().max() > 1e-2  # the LoRA changes the result

    fastdit.apply(pipe, method="dense")  # LoRA loaded before apply
    torch.testing.assert_close(_frames(pipe), with_lora, atol=1e-6, rtol=0)
    fastdit.apply(pipe, method="radial", preset=None, block_size=16)
    sparse_lora = _frames(pipe)
    fastdit.remove(pipe)
    assert not torch.equal(sparse_lora, with_lora)

    pipe.unload_lora_weights()
    fastdit.apply(pipe, method="dense")
    pipe.load_lora_weights(weights, adapter_name="after")  # LoRA loaded after apply
    try:
        torch.testing.assert_close(_frames(pipe), with_lora, atol=1e-6, rtol=0)
    finally:
        fastdit.remove(pipe)
    assert torch.equal(_frames(pipe), with_lora)


def test_wan_image_to_video_keeps_image_cross_attention_stock():
    model = dummy_wan_i2v_transformer()
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 36, 4, 16, 16, generator=g), timestep=torch.tensor([500]),
                  encoder_hidden_states=torch.randn(1, 7, 32, generator=g),
                  encoder_hidden_states_image=torch.randn(1, 5, 4, generator=g), return_dict=False)
    with torch.no_grad():
        before = model(**inputs)[0]
        cross = [block.attn2.processor for block in model.blocks]
        fastdit.apply(model, method="dense")
        assert [block.attn2.processor for block in model.blocks] == cross and model.blocks[0].attn2.add_k_proj
        dense = model(**inputs)[0]
        fastdit.apply(model, method="radial", preset=None, block_size=16)
        sparse = model(**inputs)[0]
        records = fastdit.stats(model).records
        fastdit.remove(model)
    torch.testing.assert_close(dense, before, atol=1e-6, rtol=0)
    assert all(not r.dense for r in records) and not torch.equal(sparse, before)


def test_dense_calls_keep_the_users_diffusers_attention_backend():
    model = dummy_wan_transformer()
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(2, 16, 4, 16, 16, generator=g), timestep=torch.tensor([500, 500]),
                  encoder_hidden_states=torch.randn(2, 7, 32, generator=g), return_dict=False)
    with torch.no_grad():
        native = model(**inputs)[0]
        for block in model.blocks:  # per module, so the process-wide default backend stays untouched
            block.attn1.set_attention_backend("_native_math")
        math = model(**inputs)[0]
        fastdit.apply(model, method="dense")
        try:
            dense = model(**inputs)[0]
        finally:
            fastdit.remove(model)
    assert not torch.equal(math, native)  # the two backends round differently, so the check below can fail
    assert torch.equal(dense, math)
