"""Presets per real model id: found by name, path or config; published knobs, warm-up and n_train applied."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.image import dummy_flux_transformer, dummy_sd3_transformer, dummy_unet
from fastdit.dummy.video import dummy_hunyuan_video_transformer
from fastdit.patching.families import families
from fastdit.patching.presets import FAMILY_DEFAULTS, PRESETS, find_preset, resolve_preset

MODEL_IDS = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": "wan",
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": "wan",
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": "wan",
    "hunyuanvideo-community/HunyuanVideo": "hunyuan_video",
    "THUDM/CogVideoX-5b": "cogvideox",
    "Lightricks/LTX-Video": "ltx",
    "genmo/mochi-1-preview": "mochi",
    "black-forest-labs/FLUX.1-dev": "flux",
    "stabilityai/stable-diffusion-3-medium-diffusers": "sd3",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "unet",
    "stabilityai/stable-diffusion-xl-base-1.0": "unet",
}


def test_every_model_has_a_sourced_preset_with_a_training_token_count():
    assert set(MODEL_IDS) <= set(PRESETS)
    for model_id, family in MODEL_IDS.items():
        preset = PRESETS[model_id]
        assert preset.family == family and family in families()
        assert preset.n_train and preset.n_train > 1000 and "n_train" in preset.source
        assert preset.method in preset.methods and all(m.source for m in preset.methods.values())
    assert set(FAMILY_DEFAULTS) == set(families())
    # the official scripts' numbers: radial on Wan2.1, Wan2.2 (64-token blocks), HunyuanVideo (no sink)
    assert (PRESETS["Wan-AI/Wan2.1-T2V-14B-Diffusers"].dense_steps,
            PRESETS["Wan-AI/Wan2.1-T2V-14B-Diffusers"].dense_layers) == (12, 1)
    wan22 = PRESETS["Wan-AI/Wan2.2-T2V-A14B-Diffusers"].methods["radial"]
    assert (wan22.options["decay_factor"], wan22.block_size) == (0.8, 64)
    assert PRESETS["hunyuanvideo-community/HunyuanVideo"].methods["radial"].options == {"decay_factor": 0.95,
                                                                                      "sink": False}
    assert PRESETS["hunyuanvideo-community/HunyuanVideo"].n_train == 33 * 45 * 80  # 129 frames at 720p


@pytest.mark.parametrize("name", [
    "black-forest-labs/FLUX.1-dev",
    "/models/FLUX.1-dev/",
    "/root/.cache/huggingface/hub/models--black-forest-labs--FLUX.1-dev",
])
def test_found_by_hub_id_local_folder_or_hub_cache_path(name):
    assert find_preset(name) is PRESETS["black-forest-labs/FLUX.1-dev"]


def test_found_by_config_fingerprint_when_the_name_is_unknown():
    wan_14b = {"num_layers": 40, "num_attention_heads": 40, "attention_head_dim": 128}
    assert resolve_preset("auto", "wan", "/data/my-wan", wan_14b) is PRESETS["Wan-AI/Wan2.1-T2V-14B-Diffusers"]
    assert resolve_preset("auto", "wan", None, wan_14b, denoisers=2) is PRESETS["Wan-AI/Wan2.2-T2V-A14B-Diffusers"]
    sdxl = {"cross_attention_dim": 2048, "sample_size": 128}
    assert resolve_preset("auto", "unet", None, sdxl) is PRESETS["stabilityai/stable-diffusion-xl-base-1.0"]
    assert resolve_preset("auto", "unet", None, {"cross_attention_dim": 1024, "sample_size": 96}) is \
        FAMILY_DEFAULTS["unet"]
    with pytest.raises(ValueError, match="for the flux family"):
        resolve_preset("black-forest-labs/FLUX.1-dev", "wan", None)
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_preset("Wan-AI/nope", "wan", None)


def _config(model):
    return fastdit.patching.patch_config(model)


def test_auto_preset_applies_the_models_method_knobs_and_n_train():
    model = dummy_flux_transformer()
    model.register_to_config(_name_or_path="black-forest-labs/FLUX.1-dev")
    fastdit.apply(model)
    try:
        config = _config(model)
        assert (config.method, config.n_train, config.dense_steps, config.options.mode) == ("grat", 4096, 0,
                                                                                            "crisscross")
    finally:
        fastdit.remove(model)


def test_a_method_with_a_published_group_shape_gets_its_tile():
    model = dummy_hunyuan_video_transformer()
    model.register_to_config(_name_or_path="hunyuanvideo-community/HunyuanVideo")
    try:
        fastdit.apply(model)
        config = _config(model)
        assert (config.method, config.warmup_steps(50), config.dense_layers) == ("radial", 12, 0)
        assert (config.options.decay_factor, config.options.sink, config.options.adjacent) == (0.95, False, "full")
        fastdit.apply(model, method="grat")
        config = _config(model)
        assert (config.tile, config.block_size, config.dense_steps) == ((4, 8, 8), 128, 0)
        fastdit.apply(model, method="grat", block_size=64)  # the published group is four 64-token blocks
        assert (_config(model).tile, _config(model).block_size) == ((4, 8, 8), 64)
        fastdit.apply(model, method="grat", block_size=512)  # it can't hold whole 512-token blocks: dropped
        assert (_config(model).tile, _config(model).block_size) == (None, 512)
        fastdit.apply(model, method="dense")  # no setting of its own on HunyuanVideo: the model's warm-up
        assert (_config(model).warmup_steps(50), _config(model).dense_layers) == (12, 0)
    finally:
        fastdit.remove(model)


@pytest.mark.parametrize("build,attention", [
    (dummy_unet, lambda m: m.down_blocks[0].attentions[0].transformer_blocks[0].attn1),
    (dummy_sd3_transformer, lambda m: m.transformer_blocks[0].attn),
])
def test_family_default_reads_the_training_size_from_the_config(build, attention):
    model = build()  # UNet: sample_size 16 -> 16 x 16 tokens; SD3: sample_size 32 / patch 2 -> 16 x 16
    fastdit.apply(model, entropy_scaling=True)
    try:
        assert fastdit.patching.patch_config(model).n_train == 256
    finally:
        fastdit.remove(model)


def test_unsupported_model_error_names_every_family():
    with pytest.raises(TypeError) as error:
        fastdit.apply(torch.nn.Linear(2, 2))
    for name, family in families().items():
        assert name in str(error.value) and family.model_classes[0] in str(error.value)


def test_a_symlinked_folder_finds_the_preset_of_the_folder_it_points_to(tmp_path):
    from fastdit.models.loading import sample_dir

    (tmp_path / "link").symlink_to(sample_dir())
    assert find_preset(str(tmp_path / "link")) is find_preset(str(sample_dir())) is not None
