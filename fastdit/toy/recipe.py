"""The bundled model's architecture and training recipe: a text-to-video ``WanPipeline`` sized for a CPU.

Every part is a stock diffusers/transformers class, so the trained folder loads with
``WanPipeline.from_pretrained`` and sparse attention patches it exactly as it patches Wan2.1:

- **VAE**: ``AutoencoderKLWan`` with Wan2.2's pixel patchify (2x2) and residual (parameter-free shortcut)
  down/up blocks before two down-sampling stages, so the latent is 4x smaller in time and 8x in space, as
  Wan2.1's, at a fraction of the convolution cost on full-size frames: 17 frames of 128x128 become 5 x 16 x 16
  latents. The shortcuts make it learn several times faster on a CPU than Wan2.1's plain blocks.
- **Transformer**: ``WanTransformer3DModel`` with patch 1x1x1 (Wan: 1x2x2), so the token grid is the latent
  grid, 1 280 tokens, big enough for 32-token blocks to leave sparse attention something to drop.
- **Text**: a frozen random 2-layer ``UMT5EncoderModel`` over a tokenizer whose words are exactly the toy
  world's, one token each; the transformer learns to read it.
- **Scheduler**: ``FlowMatchEulerDiscreteScheduler``; the transformer is trained on its shifted sigmas.

A :class:`ToyRecipe` holds all of it plus the training schedule; :data:`RECIPES` has the real one and a
minuscule one that runs every phase in seconds (tests, smoke runs).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastdit.dummy.text_encoders import dummy_t5_encoder, dummy_tokenizer
from fastdit.runtime.files import usual_permissions
from fastdit.toy.world import vocabulary

INFERENCE_STEPS, GUIDANCE, FPS = 16, 5.0, 8  # generation defaults of a trained model (its fastdit.json)

__all__ = ["ToyRecipe", "RECIPES", "build_toy_tokenizer", "build_components", "assemble_pipeline", "save_pipeline"]


@dataclass(frozen=True)
class ToyRecipe:
    """Architecture, clip size and training schedule of a toy model; everything the weights depend on."""

    frames: int = 17
    side: int = 128
    max_text_tokens: int = 32
    shift: float = 3.0
    vae: dict[str, Any] = field(default_factory=lambda: {
        "base_dim": 16, "z_dim": 16, "dim_mult": [1, 2, 2], "num_res_blocks": 1, "temperal_downsample": [True, True],
        "patch_size": 2, "in_channels": 12, "out_channels": 12, "is_residual": True, "scale_factor_spatial": 8,
        "scale_factor_temporal": 4})
    transformer: dict[str, Any] = field(default_factory=lambda: {
        "patch_size": (1, 1, 1), "num_attention_heads": 3, "attention_head_dim": 64, "ffn_dim": 512,
        "num_layers": 6, "freq_dim": 256, "rope_max_seq_len": 1024})
    text_dim: int = 32
    # VAE phase: vae_crop-pixel crops around objects of vae_frames-frame clips (convolutions don't care about the
    # frame size; crops buy 4x the clips per step), L1 + MSE reconstruction plus a small KL term
    vae_steps: int = 4000
    vae_batch: int = 8
    vae_frames: int = 9
    vae_crop: int = 64
    vae_lr: float = 5e-4
    vae_kl: float = 1e-4
    stats_clips: int = 128
    # latent cache and transformer phase; "bfloat16" runs the transformer's forward and backward under CPU
    # autocast (weights, optimizer and moving average stay float32): 1.5-1.8x faster per step where the CPU has
    # bf16 matrix units (AMX), slower where it has none. Objects' latents weigh 1 + transformer_boost (0: plain
    # mean): they cover a few percent of a frame but carry everything a prompt says.
    cache_clips: int = 2048
    steps: int = 5000
    batch: int = 8
    lr: float = 6e-4
    warmup: int = 200
    text_dropout: float = 0.1
    ema: float = 0.999
    precision: str = "bfloat16"
    transformer_boost: float = 4.0
    # the two motion levers, without which the model learned colour and shape but moved objects in a random
    # direction: the share of clips whose latent frames are noised to independent levels (the rest: one level
    # per clip, as at generation; see ``toytrain.draw_batch``), and the weight of the loss on the error's
    # frame-to-frame differences (0: none; see ``toytrain.flow_loss``)
    frame_noise: float = 0.5
    temporal_loss: float = 1.0
    # refine phase: the same objective with the latents of objects weighted 1 + foreground_boost, continuing the
    # optimizer and the moving average at a lower rate
    refine_steps: int = 500
    refine_lr: float = 2e-4
    foreground_boost: float = 4.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def settings(self) -> dict[str, Any]:
        """The model folder's ``fastdit.json``: call defaults that fit it (see ``fastdit.models.loading``).

        Steps, guidance and frame rate are not part of the recipe: they change no weight, so a run can be
        resumed after they are retuned."""
        return {"call": {"num_frames": self.frames, "height": self.side, "width": self.side,
                         "num_inference_steps": INFERENCE_STEPS, "guidance_scale": GUIDANCE,
                         "max_sequence_length": self.max_text_tokens}, "fps": FPS}

    def latent_shape(self, frames: int | None = None) -> tuple[int, int, int, int]:
        """``[C, F, H, W]`` of the latents of a clip (``frames`` defaults to the training length)."""
        frames = self.frames if frames is None else frames
        down_t, down_s = self.vae["scale_factor_temporal"], self.vae["scale_factor_spatial"]
        return self.vae["z_dim"], (frames - 1) // down_t + 1, self.side // down_s, self.side // down_s


RECIPES: dict[str, ToyRecipe] = {
    "full": ToyRecipe(),
    "mini": ToyRecipe(
        frames=5, side=32, max_text_tokens=24,
        vae={"base_dim": 4, "z_dim": 4, "dim_mult": [1, 2, 2], "num_res_blocks": 1, "temperal_downsample": [True, True],
             "patch_size": 2, "in_channels": 12, "out_channels": 12, "is_residual": True, "scale_factor_spatial": 8,
             "scale_factor_temporal": 4},
        transformer={"patch_size": (1, 1, 1), "num_attention_heads": 2, "attention_head_dim": 8, "ffn_dim": 32,
                     "num_layers": 1, "freq_dim": 32, "rope_max_seq_len": 64},
        text_dim=16, vae_steps=4, vae_batch=2, vae_frames=5, vae_crop=32, stats_clips=4, cache_clips=8, steps=6,
        batch=4, warmup=2, ema=0.9, refine_steps=3, transformer_boost=1.0),
}


def build_toy_tokenizer(max_text_tokens: int):
    """The world's words, one token each (BPE trained on the vocabulary itself)."""
    return dummy_tokenizer(model_max_length=max_text_tokens, corpus=vocabulary())


def build_components(recipe: ToyRecipe, seed: int) -> dict[str, Any]:
    """Freshly initialised components of a ``WanPipeline`` for ``recipe`` (seeded: same seed, same weights)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    tokenizer = build_toy_tokenizer(recipe.max_text_tokens)
    text_encoder = dummy_t5_encoder(tokenizer, d_model=recipe.text_dim, seed=seed, umt5=True)
    text_encoder.requires_grad_(False)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**recipe.vae)
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        in_channels=recipe.vae["z_dim"], out_channels=recipe.vae["z_dim"], text_dim=recipe.text_dim,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", **recipe.transformer)
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae, "transformer": transformer,
            "scheduler": FlowMatchEulerDiscreteScheduler(shift=recipe.shift)}


def assemble_pipeline(components: dict[str, Any]):
    """A ``WanPipeline`` of ``components`` (the dict :func:`build_components` returns)."""
    from diffusers import WanPipeline

    return WanPipeline(**components)


def save_pipeline(pipe: Any, folder: str | Path, settings: dict[str, Any]) -> None:
    """``save_pretrained`` as safetensors, loadable by transformers 4.x and 5, with ``settings`` as the folder's
    ``fastdit.json``.

    transformers 5 saves the tokenizer as ``TokenizersBackend``, a class transformers 4.x lacks; the
    ``PreTrainedTokenizerFast`` it wraps loads under both, so the folder names that one.
    """
    from fastdit.models.loading import SETTINGS_FILE

    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    usual_permissions(*folder.rglob("*.safetensors"))
    index_path, config_path = folder / "model_index.json", folder / "tokenizer" / "tokenizer_config.json"
    index = json.loads(index_path.read_text())
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
