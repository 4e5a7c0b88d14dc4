"""Training under sparse attention: a LoRA fine-tuned on the tiny Wan model with radial attention lowers its
loss, saves in diffusers' LoRA format and changes the pipeline's output once loaded back; on generic-path
families (Qwen-Image, Kandinsky 5) a LoRA trains through the sparse kernel too."""

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


def _train_lora(target, transformer, inputs: dict, velocity: torch.Tensor) -> None:
    """Eight Adam steps of flow matching on one fixed batch under fastdit (applied to ``target``): the loss must
    drop, and the attention must have run sparse."""
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=5e-2)
    losses = []
    try:
        for _ in range(8):  # the LoRA should fit the one batch
            out = transformer(**inputs)
            out = out[0] if isinstance(out, tuple) else out  # Kandinsky 5 returns its bare sample
            loss = torch.nn.functional.mse_loss(out, velocity)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        records = fastdit.stats(target).records
    finally:
        fastdit.remove(target)
    assert any(not r.dense and r.density < 1 for r in records)  # trained through the sparse kernel
    assert losses[-1] < 0.95 * losses[0], losses


@pytest.mark.parametrize("family, projections", [
    ("qwen_image", ["attn.to_q", "attn.to_k", "attn.to_v"]),
    ("kandinsky5", ["self_attention.to_query", "self_attention.to_key", "self_attention.to_value"]),
])
def test_a_lora_trains_under_sparse_attention_on_generic_path_families(cases, family, projections):
    pytest.importorskip("peft")
    from peft import LoraConfig

    case = cases[family]
    transformer = case.build().train()
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=projections))
    fastdit.apply(transformer, method="grat", preset=None, block_size=16, dense_steps=0, mode="surround", radius=0)
    inputs = dict(case.inputs(case.grids[0], 1), return_dict=False)
    with torch.no_grad():
        out = transformer(**inputs)
    out = out[0] if isinstance(out, tuple) else out
    _train_lora(transformer, transformer, inputs, torch.randn(out.shape, generator=torch.Generator().manual_seed(0)))


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
    _train_lora(pipe, transformer, inputs, noise - latents)

    WanPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(transformer))
    fresh = dummy_wan_pipeline()
    before = _frames(fresh)
    fresh.load_lora_weights(tmp_path)
    assert not torch.equal(_frames(fresh), before)
