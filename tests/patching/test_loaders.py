"""diffusers loaders and user processors on a patched model: IP-adapters loaded after ``apply`` work and keep
the self-attention sparse, processors re-created without arguments adopt fastdit's state, and ``remove`` puts
back only what fastdit replaced."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.image import dummy_sd_pipeline
from fastdit.dummy.wan import dummy_wan_transformer
from fastdit.patching.families import SparseProcessorMixin

SPARSE_GRAT = dict(method="grat", preset=None, block_size=16, dense_steps=0, mode="surround", radius=0)
SD_CALL = dict(prompt="a red ball", height=128, width=128, num_inference_steps=2, output_type="pt")


def _ip_adapter(unet: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """A random IP-adapter in the checkpoint layout ``load_ip_adapter`` reads: image-branch key/value weights
    for every cross-attention (numbered 1, 3, 5, ... in processor order) and an image projection."""
    from diffusers.models.embeddings import ImageProjection

    g = torch.Generator().manual_seed(1)
    cross = unet.config.cross_attention_dim
    weights, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
        for part in ("to_k_ip", "to_v_ip"):
            weights[f"{key_id}.{part}.weight"] = torch.randn(hidden, cross, generator=g) * 0.3
        key_id += 2
    projection = ImageProjection(cross_attention_dim=cross, image_embed_dim=cross, num_image_text_embeds=4)
    image_proj = {f"{new}.{p}": projection.state_dict()[f"{old}.{p}"]
                  for old, new in (("image_embeds", "proj"), ("norm", "norm")) for p in ("weight", "bias")}
    return {"image_proj": image_proj, "ip_adapter": weights}


def _images(pipe, embeds: torch.Tensor | None) -> torch.Tensor:
    extra = {} if embeds is None else {"ip_adapter_image_embeds": [embeds]}
    return pipe(generator=torch.Generator().manual_seed(0), **SD_CALL, **extra).images


def _self_attention(unet) -> list[torch.nn.Module]:
    return [m for name, m in unet.named_modules() if name.endswith("attn1")]


def test_ip_adapter_loaded_after_apply_keeps_self_attention_sparse():
    adapter = _ip_adapter(dummy_sd_pipeline().unet)
    embeds = torch.randn(2, 1, 32, generator=torch.Generator().manual_seed(2))  # (negative, positive) x 1 image
    reference = dummy_sd_pipeline()
    reference.set_progress_bar_config(disable=True)
    reference.load_ip_adapter(adapter, subfolder="", weight_name="", image_encoder_folder=None)
    with_image = _images(reference, embeds)

    pipe = dummy_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    fastdit.apply(pipe, method="dense")
    pipe.load_ip_adapter(adapter, subfolder="", weight_name="", image_encoder_folder=None)
    assert all(isinstance(m.processor, SparseProcessorMixin) for m in _self_attention(pipe.unet))
    torch.testing.assert_close(_images(pipe, embeds), with_image, atol=1e-6, rtol=0)  # the image branch works

    fastdit.apply(pipe, **SPARSE_GRAT)  # re-configuring a model that carries an IP-adapter
    sparse = _images(pipe, embeds)
    records = fastdit.stats(pipe).records
    assert any(not r.dense for r in records) and not any(r.cached for r in records)
    assert not torch.equal(sparse, with_image)
    fastdit.remove(pipe)
    ip_processors = {type(m.processor).__name__ for n, m in pipe.unet.named_modules() if n.endswith("attn2")}
    assert ip_processors == {"IPAdapterAttnProcessor2_0"}  # the adapter stays after remove
    assert torch.equal(_images(pipe, embeds), with_image)


def _wan_inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(1, 16, 4, 16, 16, generator=g), timestep=torch.tensor([500]),
                encoder_hidden_states=torch.randn(1, 7, 32, generator=g), return_dict=False)


def test_a_processor_recreated_without_arguments_adopts_the_patch():
    """What diffusers' loaders do to every attention they don't adapt: ``type(processor)()``."""
    model = dummy_wan_transformer(num_layers=2)
    fastdit.apply(model, **SPARSE_GRAT)
    with torch.no_grad():
        installed = model(**_wan_inputs())[0]
        for block in model.blocks:
            block.attn1.set_processor(type(block.attn1.processor)())
        recreated = model(**_wan_inputs())[0]
    records = fastdit.stats(model).records
    fastdit.remove(model)
    assert torch.equal(recreated, installed)
    assert [r.calls for r in records] == [2, 2] and not any(r.dense for r in records)
    assert {type(b.attn1.processor).__name__ for b in model.blocks} == {"WanAttnProcessor"}


def test_a_processor_recreated_on_an_unpatched_module_says_so():
    """A fastdit processor (of a family whose stock processor calls SDPA itself) created with no arguments on a
    module fastdit doesn't patch can't run: it says so instead of attending with no engine."""
    from fastdit.dummy.video import dummy_cogvideox_transformer

    model = dummy_cogvideox_transformer()
    fastdit.apply(model, method="dense")
    module = model.transformer_blocks[0].attn1
    processor_class = type(module.processor)
    fastdit.remove(model)
    with pytest.raises(RuntimeError, match="doesn't patch"), torch.no_grad():
        width = module.to_q.in_features
        processor_class()(module, torch.randn(1, 8, width), torch.randn(1, 3, width))


def test_remove_keeps_a_processor_the_user_set_after_apply():
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    class UserProcessor(WanAttnProcessor):
        pass

    model = dummy_wan_transformer(num_layers=2)
    original = model.blocks[1].attn1.processor
    fastdit.apply(model, **SPARSE_GRAT)
    mine = UserProcessor()
    model.blocks[0].attn1.set_processor(mine)
    fastdit.remove(model)
    assert model.blocks[0].attn1.processor is mine
    assert model.blocks[1].attn1.processor is original


def test_stats_leave_out_a_layer_whose_processor_was_replaced():
    """A layer an adapter took over runs the adapter's attention: neither computed by fastdit nor cached."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    class AdapterProcessor(WanAttnProcessor):  # an adapter's processor (a re-created stock one stays fastdit's)
        pass

    model = dummy_wan_transformer(num_layers=2)
    fastdit.apply(model, **SPARSE_GRAT)
    model.blocks[0].attn1.set_processor(AdapterProcessor())
    with torch.no_grad():
        model(**_wan_inputs())
    records = fastdit.stats(model).records
    fastdit.remove(model)
    assert [(r.layer, r.cached) for r in records] == [(1, 0)]
