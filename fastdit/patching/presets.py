"""Per-model presets: the published settings each method starts from, and the training token count.

A preset belongs to one real model id. It names the default method, the warm-up (``dense_steps`` of the
published 50-step schedules, applied as that share of each call's steps; ``dense_layers``), per-method knobs
where a paper or its code published them, and ``n_train``, the self-attention video/image tokens at the
resolution the model was trained at (for entropy scaling; text tokens are not counted). A method without a
published setting on a model keeps that model's default warm-up and the method's own default knobs. Every
value names its source.

``preset="auto"`` finds the preset by the pipeline's ``name_or_path`` (a hub id, or a local folder / hub
cache path ending in it), then by an architecture fingerprint of the denoiser's config (for renamed local
copies), and falls back to the family default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from fastdit.layout.grid import TokenGrid

__all__ = ["VideoSize", "MethodPreset", "Preset", "PRESETS", "FAMILY_DEFAULTS", "find_preset", "resolve_preset",
           "preset_padding"]


@dataclass(frozen=True)
class VideoSize:
    """The size a model is trained and usually run at, and how its VAE and patchify turn it into tokens:
    ``t_compress`` frames and ``s_compress × s_compress`` pixels per token (VAE factor × patch). The one place
    fastdit writes a real model's size (entropy scaling's ``n_train``, ``fastdit info``'s padding table and
    the random-weight benchmark models read it from here)."""

    frames: int
    height: int
    width: int
    t_compress: int = 4
    s_compress: int = 16

    @property
    def grid(self) -> TokenGrid:
        """The latent token grid; causal video VAEs keep the first frame: ``(F - 1) / t + 1`` latent frames."""
        return TokenGrid((self.frames - 1) // self.t_compress + 1, self.height // self.s_compress,
                         self.width // self.s_compress)


@dataclass(frozen=True)
class MethodPreset:
    """One method's settings on one model: warm-up, knobs, the tile when the method fixes its group shape, and
    the kernel block when the published setting uses its own (otherwise the model preset's).

    ``dense_steps`` is the published count of warm-up steps out of a ``schedule``-step run; ``apply`` uses
    the share (:attr:`warmup_share`), so a distilled 4-step model gets 1 dense step where 50 steps get 12.
    """

    dense_steps: int = 0
    dense_layers: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    tile: tuple[int, int, int] | None = None
    source: str = ""
    block_size: int | None = None
    schedule: int = 50

    @property
    def warmup_share(self) -> float:
        """The published warm-up as a share of the steps (``SparseConfig.dense_steps`` as a float)."""
        return self.dense_steps / self.schedule


@dataclass(frozen=True)
class Preset:
    """Defaults for one model: default method, per-method settings, ``n_train`` and how to recognise it.

    ``size`` is the training size (``n_train`` counts its tokens), ``config`` holds denoiser config values that
    identify the model when its name is unknown, and ``denoisers`` how many denoisers its pipeline has (Wan 2.2
    A14B has two experts).
    """

    family: str
    method: str
    methods: dict[str, MethodPreset]
    size: VideoSize | None = None
    block_size: int = 128
    config: dict[str, Any] = field(default_factory=dict)
    denoisers: int = 1
    source: str = ""

    @property
    def n_train(self) -> int | None:
        """Self-attention video/image tokens at the training size (``None``: left to the model config)."""
        return self.size.grid.num_tokens if self.size is not None else None

    def for_method(self, method: str) -> MethodPreset:
        """Settings of ``method``; an unlisted method gets the default method's warm-up and no knobs."""
        if method in self.methods:
            return self.methods[method]
        default = self.methods[self.method]
        return MethodPreset(default.dense_steps, default.dense_layers, schedule=default.schedule,
                            source=f"warm-up of this model's {self.method} setting; {method}'s own default knobs")

    @property
    def dense_steps(self) -> int:
        return self.methods[self.method].dense_steps

    @property
    def dense_layers(self) -> int:
        return self.methods[self.method].dense_layers


# ---------------------------------------------------------------- published method settings
_RADIAL = "mit-han-lab/radial-attention @ 72788d4"
_RADIAL_WAN21 = MethodPreset(12, 1, {"decay_factor": 0.2},
                             source=f"Radial Attention Wan2.1 setting ({_RADIAL}: dense_timesteps=12, dense_layers=1, "
                                    "decay_factor=0.2, model_type wan = frame-0 sink; whole adjacent frames at HEAD)")
_RADIAL_WAN22 = MethodPreset(11, 1, {"decay_factor": 0.8}, block_size=64,
                             source=f"Radial Attention Wan2.2 setting ({_RADIAL}: dense_timesteps=11, dense_layers=1, "
                                    "decay_factor=0.8, frame-0 sink, 64-token blocks in wan2_2/attention.py)")
_RADIAL_HUNYUAN = MethodPreset(12, 0, {"decay_factor": 0.95, "sink": False},
                               source=f"Radial Attention HunyuanVideo setting ({_RADIAL}: dense_timesteps=12, "
                                      "dense_layers=0, decay_factor=0.95, model_type hunyuan = no sink)")
_RADIAL_UNPUBLISHED = MethodPreset(12, 1, {"decay_factor": 0.95},
                                   source="no published setting: the widest published radial windows (HunyuanVideo's "
                                          "decay 0.95) with the Wan sink and warm-up (12 of 50 steps, 1 layer)")
_PSA = "ziplab/Pyramid-Sparse-Attention @ be122cf configs/attention_config.yaml"
_PYRAMID_WAN14B = MethodPreset(15, 0, source=f"PSA Wan2.1-14B psa_balanced ({_PSA}): warmup 15, bands .4/.5/.6/.8 "
                                             "(the pyramid defaults)")
_PYRAMID_WAN13B = MethodPreset(15, 0, {"thresholds": (0.5, 0.6, 0.7, 0.8), "similarity": (0.7, 0.65, 0.6)},
                               source=f"PSA Wan2.1-1.3B psa_balanced ({_PSA}): warmup 15, bands .5/.6/.7/.8, "
                                      "key-similarity cap x2 .7 / x4 .65 / x8 .6")
_PYRAMID_WAN22 = MethodPreset(12, 0, {"thresholds": (0.5, 0.6, 0.6, 0.8), "query_block": 128}, block_size=32,
                              source=f"PSA Wan2.2-A14B ({_PSA}): warmup 12, bands .5/.6/.6/.8, 128-token query "
                                     "blocks over 32-token key blocks (run as 32-token blocks whose rows come in "
                                     "fours)")
_VMOBA_WAN = MethodPreset(12, 0, source="VMoBA Wan2.1-1.3B config (FastVideo wan_1.3B_77_480_832.json: threshold 0.25, "
                                        "query_head, chunks 2 frames / 3x4 / 4x6x4 tokens = the vmoba defaults; "
                                        "first_full_step 12, which FastVideo @ 2f3d407 stores but never reads)")
_GRAT_HUNYUAN = MethodPreset(0, 0, {"mode": "crisscross"}, tile=(4, 8, 8),
                             source="GRAT (OliverRensu/GRAT main.py + cross_processor.py, HunyuanVideo): 4x8x8 "
                                    "groups, criss-cross planes, text attended, mask on every step and block")
_GRAT_IMAGE = MethodPreset(0, 0, {"mode": "crisscross"},
                           source="GRAT paper (training-free on Flux): criss-cross groups on every step as in its "
                                  "released HunyuanVideo code; 1x16x16 groups, the image analogue of 4x8x8, since "
                                  "the Flux group shape is unpublished")
_SVG2 = "svg-project/Sparse-VideoGen @ 5ce7b01"
_SVG2_BLOCKS = ("64-token blocks over the variable clusters, clusters ordered by their estimated mass profiles "
                "(fastdit's fixed-block version; every official token pair kept)")
_SVG2_WAN = MethodPreset(10, 1, {"q_clusters": 300, "k_clusters": 1000, "top_p": 0.9, "min_kc_ratio": 0.1,
                                 "kmeans_iters": 50, "kmeans_iters_step": 2}, block_size=64,
                         source=f"SVG2 Wan2.1-T2V-14B 720p ({_SVG2} scripts/wan/wan_t2v_720p_sap.sh: 300 / 1000 "
                                "centroids, top_p 0.9, min_kc_ratio 0.1, k-means 50 then 2 iterations, "
                                "first_times_fp 0.2 = 10 of 50 steps, first_layers_fp 0.03 of 40 layers = 1; no "
                                "zero_step_kmeans_init: the T2V scripts don't set it, of Wan's only "
                                "wan_i2v_480p_sap.sh does); " + _SVG2_BLOCKS)
_SVG2_WAN13B = MethodPreset(10, 0, _SVG2_WAN.options, block_size=64,
                            source=f"SVG2's Wan2.1 T2V setting ({_SVG2} scripts/wan/wan_t2v_720p_sap.sh) on the 1.3B "
                                   "model: first_layers_fp 0.03 of its 30 layers = 0 dense layers (the script's own "
                                   "rule); " + _SVG2_BLOCKS)
_SVG2_HUNYUAN = MethodPreset(5, 1, {"q_clusters": 400, "k_clusters": 1000, "top_p": 0.9, "min_kc_ratio": 0.1,
                                    "kmeans_iters": 50, "kmeans_iters_step": 2, "zero_step_kmeans_init": True},
                             block_size=64,
                             source=f"SVG2 HunyuanVideo 720p ({_SVG2} scripts/hyvideo/hyvideo_t2v_720p_sap.sh: 400 / "
                                    "1000 centroids, top_p 0.9, min_kc_ratio 0.1, k-means 50 then 2 iterations, "
                                    "first_times_fp 0.1 = 5 of 50 steps, first_layers_fp 0.03 of 60 blocks = 1, "
                                    "zero_step_kmeans_init: k-means from the first dense step on, so the first sparse "
                                    "step warm-starts: 51% instead of 583% of a dense call at 8k tokens on CPU, 5 more "
                                    "warm-started k-means per layer (+9% over 50 steps), first-step density and "
                                    "recall unchanged on the sample: 0.577 / 0.897 vs 0.572 / 0.899); "
                                    + _SVG2_BLOCKS)

_SOL = "NVlabs/Sana sol-engine @ 36f3155 techniques/sparse_backends"
_SOL_WAN = MethodPreset(10, 1, {"tau": 1.7}, block_size=64,
                        source=f"Sol-Attn Wan2.1-14B 720p run ({_SOL} sol_attn_colmask/integrations/wan/scripts/"
                               "run_wan_720p_b200.sbatch: --first_times_fp 0.2 = 10 of 50 steps dense, "
                               "--first_layers_fp 0.025 = layer 0 dense, --pisa_threshold 1.7, 64-token blocks, "
                               "morton3d; the script also sets SOL_ATTN_AUTO_CALIBRATE=1 with --pisa_density 0.15, "
                               "which fastdit does not do: tau stays 1.7)")

_WAN_METHODS = {"pyramid": _PYRAMID_WAN14B, "vmoba": _VMOBA_WAN, "sol": _SOL_WAN}

# Wan2.1: 81 frames, VAE 4x8, patch 1x2x2. 1.3B is a 480p model, 14B and Wan2.2 A14B train up to 720p.
_WAN_480P = VideoSize(81, 480, 832)   # 21 x 30 x 52 = 32 760 tokens
_WAN_720P = VideoSize(81, 720, 1280)  # 21 x 45 x 80 = 75 600 tokens

PRESETS: dict[str, Preset] = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": Preset(
        "wan", "radial", {"radial": _RADIAL_WAN21, **_WAN_METHODS, "pyramid": _PYRAMID_WAN13B, "svg2": _SVG2_WAN13B},
        size=_WAN_480P,
        config={"num_layers": 30, "num_attention_heads": 12},
        source="n_train: 480x832, 81 frames (the 1.3B model is trained at 480p; Wan2.1 model card)"),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": Preset(
        "wan", "radial", {"radial": _RADIAL_WAN21, **_WAN_METHODS, "svg2": _SVG2_WAN}, size=_WAN_720P,
        config={"num_layers": 40, "num_attention_heads": 40},
        source="n_train: 720x1280, 81 frames (Wan2.1 14B model card: 480p and 720p)"),
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": Preset(
        "wan", "radial", {"radial": _RADIAL_WAN22, **_WAN_METHODS, "pyramid": _PYRAMID_WAN22}, size=_WAN_720P,
        config={"num_layers": 40, "num_attention_heads": 40}, denoisers=2,
        source="n_train: 720x1280, 81 frames (Wan2.2 A14B model card); both experts get the same settings"),
    "hunyuanvideo-community/HunyuanVideo": Preset(
        "hunyuan_video", "radial", {"radial": _RADIAL_HUNYUAN, "grat": _GRAT_HUNYUAN, "svg2": _SVG2_HUNYUAN},
        size=VideoSize(129, 720, 1280),  # 33 x 45 x 80 = 118 800
        config={"num_layers": 20, "num_single_layers": 40},
        source="n_train: 720x1280, 129 frames (HunyuanVideo model card, pipeline defaults)"),
    "THUDM/CogVideoX-5b": Preset(
        "cogvideox", "radial", {"radial": _RADIAL_UNPUBLISHED},
        size=VideoSize(49, 480, 720),  # 13 x 30 x 45 = 17 550
        config={"num_layers": 42, "num_attention_heads": 48, "patch_size_t": None},
        source="n_train: 480x720, 49 frames (CogVideoX-5b model card: its only resolution)"),
    "Lightricks/LTX-Video": Preset(
        "ltx", "radial", {"radial": _RADIAL_UNPUBLISHED},
        size=VideoSize(161, 512, 704, 8, 32),  # 21 x 16 x 22 = 7 392
        config={"num_layers": 28, "num_attention_heads": 32},
        source="n_train: 512x704, 161 frames (LTXPipeline defaults, the model card's recommended size)"),
    "genmo/mochi-1-preview": Preset(
        "mochi", "radial", {"radial": _RADIAL_UNPUBLISHED},
        size=VideoSize(163, 480, 848, 6, 16),  # 28 x 30 x 53 = 44 520
        config={"num_layers": 48, "num_attention_heads": 24},
        source="n_train: 480x848, 163 frames (Mochi 1 model card: 480p, 5.4 s at 30 fps)"),
    "black-forest-labs/FLUX.1-dev": Preset(
        "flux", "grat", {"grat": _GRAT_IMAGE}, size=VideoSize(1, 1024, 1024, 1, 16),  # 64 x 64 = 4 096
        config={"num_layers": 19, "num_single_layers": 38, "guidance_embeds": True},
        source="n_train: 1024x1024 (FLUX.1-dev model card); radial has no temporal axis to decay along on "
               "images, so the default method is grat"),
    "stabilityai/stable-diffusion-3-medium-diffusers": Preset(
        "sd3", "grat", {"grat": _GRAT_IMAGE}, size=VideoSize(1, 1024, 1024, 1, 16),
        config={"num_layers": 24, "dual_attention_layers": ()},
        source="n_train: 1024x1024 (SD3 medium model card; config sample_size=128 latent, patch 2)"),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": Preset(
        "unet", "grat", {"grat": _GRAT_IMAGE}, size=VideoSize(1, 512, 512, 1, 8),  # UNet input: 64 x 64
        config={"cross_attention_dim": 768, "sample_size": 64},
        source="n_train: 512x512 (SD 1.5 model card; config sample_size=64); every level scales it by its "
               "own token ratio"),
    "stabilityai/stable-diffusion-xl-base-1.0": Preset(
        "unet", "grat", {"grat": _GRAT_IMAGE}, size=VideoSize(1, 1024, 1024, 1, 8),  # UNet input: 128 x 128
        config={"cross_attention_dim": 2048, "sample_size": 128},
        source="n_train: 1024x1024 (SDXL model card; config sample_size=128); every level scales it by its "
               "own token ratio"),
}

# fastdit's bundled toy-world model (samples/tiny-wan, `python -m fastdit.toy.train_sample`), matched
# by its folder name. Its 16-step default gets 4 dense warm-up steps (the published 12 of 50 is about a quarter),
# and 32-token blocks, so its 5 x 16 x 16 token grid (17 frames of 128x128, patch 1x1x1) runs sparse.
PRESETS["fastdit/tiny-wan"] = Preset(
    "wan", "radial",
    {"radial": MethodPreset(4, 0, schedule=16, source="a quarter of the sample's 16 steps dense, as Wan's 12 of 50"),
     "grat": MethodPreset(4, 0, tile=(1, 8, 8), schedule=16,
                          source="1x8x8 groups (two 32-token blocks): 4x8x8 would pad the sample's 5 latent frames "
                                 "to 8"),
     "svg2": MethodPreset(3, 0, {**_SVG2_WAN.options, "q_clusters": 5, "k_clusters": 17}, schedule=16,
                          source=f"SVG2's Wan setting ({_SVG2} scripts/wan/wan_t2v_720p_sap.sh) with clusters as "
                                 "large as there (252 / 76 tokens of Wan2.1 720p's 75 600): 5 / 17 on the sample's "
                                 "1280 tokens; first_times_fp 0.2 of 16 steps = 3 dense, 0.03 of 6 layers = 0"),
     "sol": MethodPreset(4, 0, {"tau": 0.5}, schedule=16, block_size=16,
                         source="16-token blocks: at Sol-Attn's published 64, one pooled term stands for 1/20 of "
                                "the sample's 1280 tokens and motion fell 33 points behind dense (48 prompts); "
                                "tau 0.5: at comfy-kitchen's default 1 (density 0.40) motion fell 15 points behind, "
                                "at 0.5 (density 0.50) 2; radial's 4 of 16 steps dense"),
     "vmoba": MethodPreset(4, 0, {"threshold": 0.75}, schedule=16,
                           source="threshold 0.75: at VMoBA's published 0.25 (density 0.50) motion fell 25 points "
                                  "behind dense, at 0.5 (0.58) 8, at 0.75 (0.69) 6 (48 prompts); its published "
                                  "chunks; radial's 4 of 16 steps dense")},
    size=VideoSize(17, 128, 128, 4, 8), block_size=32,
    source="fastdit's own toy-world model; n_train: its default 17 frames of 128x128")

def _unpublished(family: str, model: str, borrowed: str) -> Preset:
    """The default of a family for which no sparse setting is published: the settings of the ``borrowed``
    family's default (the nearest architecture with published ones), said as such."""
    like = FAMILY_DEFAULTS[borrowed]
    return Preset(family, like.method, like.methods,
                  source=f"nothing published for {model}: the {borrowed} family's settings ({like.method}), the "
                         "nearest architecture with published ones; its training size varies by checkpoint, so "
                         "entropy scaling needs n_train=")


# Family defaults: the family's flagship preset, with n_train left to the model config where it states the
# training size (UNet, SD3: ``sample_size``), so e.g. SD 2.x (768 px) gets its own.
FAMILY_DEFAULTS: dict[str, Preset] = {
    "wan": PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"],
    "hunyuan_video": PRESETS["hunyuanvideo-community/HunyuanVideo"],
    "cogvideox": PRESETS["THUDM/CogVideoX-5b"],
    "ltx": PRESETS["Lightricks/LTX-Video"],
    "mochi": PRESETS["genmo/mochi-1-preview"],
    "flux": PRESETS["black-forest-labs/FLUX.1-dev"],
    "sd3": Preset("sd3", "grat", {"grat": _GRAT_IMAGE}, source="n_train from the config's sample_size"),
    "unet": Preset("unet", "grat", {"grat": _GRAT_IMAGE}, source="n_train from the config's sample_size"),
    "pixart": Preset("pixart", "grat", {"grat": _GRAT_IMAGE},
                     source="nothing published for PixArt: GRAT's image setting, as for SD3; n_train from the "
                            "config's sample_size"),
    "dit": Preset("dit", "grat", {"grat": _GRAT_IMAGE},
                  source="nothing published for DiT: GRAT's image setting, as for SD3; n_train from the config's "
                         "sample_size"),
}
FAMILY_DEFAULTS.update({family: _unpublished(family, model, borrowed) for family, model, borrowed in (
    ("skyreels_v2", "SkyReels-V2", "wan"),
    ("chronoedit", "ChronoEdit", "wan"),
    ("wan_vace", "Wan-VACE", "wan"),
    ("wan_animate", "Wan-Animate", "wan"),
    ("wan_animate2", "Wan-Animate 2", "wan"),
    ("anyflow", "AnyFlow", "wan"),
    ("anyflow_far", "AnyFlow-FAR", "wan"),
    ("helios", "Helios", "wan"),
    ("cosmos", "Cosmos", "wan"),
    ("kandinsky5", "Kandinsky 5.0 (its own NABLA is another method)", "wan"),
    ("kandinsky6", "Kandinsky 6 (its own NABLA is another method)", "wan"),
    ("hunyuan_video15", "HunyuanVideo-1.5 (its own SSTA is another method)", "hunyuan_video"),
    ("motif_video", "Motif-Video", "hunyuan_video"),
    ("hunyuan_video_framepack", "HunyuanVideo-Framepack", "hunyuan_video"),
    ("consisid", "ConsisID", "cogvideox"),
    ("ltx2", "LTX-2", "ltx"),
    ("sana_wm_refiner", "the Sana-WM refiner", "ltx"),
    ("minimax_h3", "MiniMax-H3", "hunyuan_video"),
    ("flux2", "FLUX.2", "flux"),
    ("flux3", "FLUX.3", "flux"),
    ("chroma", "Chroma", "flux"),
    ("longcat_image", "LongCat-Image", "flux"),
    ("ovis_image", "Ovis-Image", "flux"),
    ("bria", "Bria", "flux"),
    ("bria_fibo", "Bria FIBO", "flux"),
    ("bria_fibo2", "Bria FIBO 2", "flux"),
    ("qwen_image", "Qwen-Image", "flux"),
    ("qwen_image21", "Qwen-Image 2.1", "flux"),
    ("nucleus_moe_image", "Nucleus-MoE-Image", "flux"),
    ("prx", "PRX", "flux"),
    ("glm_image", "GLM-Image", "flux"),
    ("hunyuan_image", "HunyuanImage", "flux"),
    ("joyimage_edit", "JoyImage-Edit", "flux"),
    ("joyimage_edit_plus", "JoyImage-Edit-Plus", "flux"),
    ("ernie_image", "ERNIE-Image", "flux"),
    ("krea2", "Krea 2", "flux"),
    ("cogview3plus", "CogView3-Plus", "flux"),
    ("transformer_2d", "Transformer2DModel", "sd3"),
    ("latte", "Latte (its sparsified attention is per frame, an image's)", "sd3"),
    ("allegro", "Allegro", "wan"),
    ("easyanimate", "EasyAnimate", "cogvideox"),
    ("auraflow", "AuraFlow", "sd3"),
    ("cogview4", "CogView4", "flux"),
    ("hidream", "HiDream-I1", "flux"),
    ("lumina2", "Lumina-Image 2.0", "flux"),
    ("omnigen", "OmniGen", "flux"),
    ("dreamlite", "DreamLite", "unet"),
    ("z_image", "Z-Image", "flux"),
    ("ideogram4", "Ideogram 4", "flux"),
)})


def find_preset(name_or_path: str | None) -> Preset | None:
    """The preset of a model id, also matched as the tail of a local path or hub-cache folder name; a local
    path also matches by its real path, symlinks resolved (the same model, whatever a link calls it)."""
    if not name_or_path:
        return None
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    names = [name_or_path]
    if os.path.exists(name_or_path):
        names.append(os.path.realpath(name_or_path))
    for name in names:
        normalized = name.rstrip("/").replace("--", "/")
        for model_id, preset in PRESETS.items():
            if normalized.endswith(model_id) or normalized.endswith(model_id.split("/")[-1]):
                return preset
    return None


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def match_config(family: str, config: Any, denoisers: int) -> Preset | None:
    """The one preset of ``family`` whose fingerprint ``config`` matches (``None`` if none or several do)."""
    if config is None:
        return None
    found = [p for p in PRESETS.values()
             if p.family == family and p.config and p.denoisers == denoisers
             and all(_frozen(config.get(k, object())) == v for k, v in p.config.items())]
    return found[0] if len(found) == 1 else None


def resolve_preset(preset: str | None, family: str, name_or_path: str | None, config: Any = None,
                   denoisers: int = 1) -> Preset | None:
    """``"auto"``: by model id, then by config fingerprint, then the family default; a model id: that preset;
    ``None``: no preset."""
    if preset is None:
        return None
    if preset == "auto":
        by_name = find_preset(name_or_path)
        if by_name is not None and by_name.family == family:
            return by_name
        return match_config(family, config, denoisers) or FAMILY_DEFAULTS.get(family)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: auto, {', '.join(PRESETS)}")
    if PRESETS[preset].family != family:
        raise ValueError(f"preset {preset!r} is for the {PRESETS[preset].family} family, but the model is {family}")
    return PRESETS[preset]


def preset_padding(block_m: int = 128, kv_tile: int = 128) -> list[dict]:
    """Per preset model shape: the padding of the raster order and of the default tile order (the kernel's
    extra work on it with ``block_m x kv_tile`` tiles and with 64 x 64 tiles, tiles of padding only skipped),
    and the least-padding tile of the same volume (``fastdit info`` prints it)."""
    from fastdit.layout.order import choose_tile, make_order  # torch: not needed to read a preset
    from fastdit.layout.padding import least_padded_tile, order_padding

    rows = []
    for model, preset in PRESETS.items():
        grid, block = preset.size.grid, preset.block_size
        raster = order_padding(make_order("raster", grid, block), block_m, kv_tile)
        chosen = choose_tile(grid, block)
        tiles = order_padding(make_order("tiles", grid, block, chosen), block_m, kv_tile)
        best = least_padded_tile(grid, block)
        best_pad = order_padding(make_order("tiles", grid, block, best), block_m, kv_tile)
        tiles64 = order_padding(make_order("tiles", grid, block, chosen), 64, 64)
        rows.append({"model": model, "grid": f"{grid.t}x{grid.h}x{grid.w}", "tokens": grid.num_tokens,
                     "block": block, "raster_padding": raster["padding"], "tile": "x".join(map(str, chosen)),
                     "tile_padding": tiles["padding"], "tile_kernel_padding": tiles["kernel_padding"],
                     "tile_kernel_padding_64": tiles64["kernel_padding"],
                     "least_padded_tile": "x".join(map(str, best)), "least_padding": best_pad["padding"],
                     "least_kernel_padding": best_pad["kernel_padding"]})
    return rows
