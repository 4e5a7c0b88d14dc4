"""Training under sparse attention: a LoRA fine-tuned on the tiny Wan model with radial attention lowers its
loss, saves in diffusers' LoRA format and changes the pipeline's output once loaded back."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.wan import dummy_wan_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

CALL = dict(prompt="a red ball", height=64, width=128, num_frames=17, num_inference_steps=2, max_sequence_length=16,
            output_type="pt")


def _frames(pipe) -> torch.Tensor:
    return pipe(generator=torch.Generator().manual_seed(0), **CALL).frames


def test_a_lora_trains_under_radial_and_loads_back(tmp_path):
    pytest.importorskip("peft")
    from diffusers import WanPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = dummy_wan_pipeline()
    transformer = pipe.transformer.train()
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["attn1.to_q", "attn1.to_k", "attn1.to_v"]))
    fastdit.apply(pipe, method="radial", preset=None, block_size=16, dense_steps=0)
    g = torch.Generator().manual_seed(0)
    latents, noise = (torch.randn(1, 16, 5, 8, 16, generator=g) for _ in range(2))  # a 5 x 4 x 8 token grid
    sigma = 0.6
    inputs = dict(hidden_states=(1 - sigma) * latents + sigma * noise, timestep=torch.tensor([1000 * sigma]),
                  encoder_hidden_states=torch.randn(1, 16, 32, generator=g), return_dict=False)
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=5e-2)
    losses = []
    try:
        for _ in range(8):  # flow matching on one fixed batch: the LoRA should fit it
            loss = torch.nn.functional.mse_loss(transformer(**inputs)[0], noise - latents)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        records = fastdit.stats(pipe).records
    finally:
        fastdit.remove(pipe)
    assert any(not r.dense and r.density < 1 for r in records)  # trained through the sparse kernel
    assert losses[-1] < 0.95 * losses[0], losses

    WanPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(transformer))
    fresh = dummy_wan_pipeline()
    before = _frames(fresh)
    fresh.load_lora_weights(tmp_path)
    assert not torch.equal(_frames(fresh), before)
