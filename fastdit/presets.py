"""Per-model presets: the published settings each method starts from, and the training token count.

``dense_steps`` counts denoising steps of the published 50-step schedules. Every value names its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Preset", "PRESETS", "FAMILY_DEFAULTS", "find_preset", "resolve_preset"]


@dataclass(frozen=True)
class Preset:
    """Defaults for one model: method, dense warm-up, per-method options, and ``n_train``."""

    family: str
    method: str = "radial"
    dense_steps: int = 0
    dense_layers: int = 0
    n_train: int | None = None
    block_size: int = 128
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""


# Wan2.1 latent grid: 81 frames -> 21, 480x832 -> 30x52 (32 760 tokens), 720x1280 -> 45x80 (75 600 tokens)
_WAN_480P, _WAN_720P = 21 * 30 * 52, 21 * 45 * 80

PRESETS: dict[str, Preset] = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": Preset(
        "wan", dense_steps=12, dense_layers=1, n_train=_WAN_480P, options={"radial": {"decay_factor": 0.2}},
        source="Radial Attention Wan2.1 setting (dense_timesteps=12, dense_layers=1, decay 0.2); 480p training"),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": Preset(
        "wan", dense_steps=12, dense_layers=1, n_train=_WAN_720P, options={"radial": {"decay_factor": 0.2}},
        source="Radial Attention Wan2.1-14B setting (12, 1, 0.2); 720p training"),
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": Preset(
        "wan", dense_steps=11, dense_layers=1, n_train=_WAN_720P, options={"radial": {"decay_factor": 0.8}},
        source="Radial Attention Wan2.2 setting (11, 1, 0.8); 720p training"),
}

FAMILY_DEFAULTS: dict[str, Preset] = {
    "wan": Preset("wan", dense_steps=12, dense_layers=1, n_train=_WAN_480P,
                  options={"radial": {"decay_factor": 0.2}},
                  source="Radial Attention Wan2.1 setting; n_train of the 480p models"),
}


def find_preset(name_or_path: str | None) -> Preset | None:
    """The preset of a model id, also matched as the tail of a local path or hub-cache folder name."""
    if not name_or_path:
        return None
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    normalized = name_or_path.rstrip("/").replace("--", "/")
    for model_id, preset in PRESETS.items():
        if normalized.endswith(model_id) or normalized.endswith(model_id.split("/")[-1]):
            return preset
    return None


def resolve_preset(preset: str | None, family: str, name_or_path: str | None) -> Preset | None:
    """``"auto"``: by model id, then the family default; a model id: that preset; ``None``: no preset."""
    if preset is None:
        return None
    if preset == "auto":
        return find_preset(name_or_path) or FAMILY_DEFAULTS.get(family)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: auto, {', '.join(PRESETS)}")
    return PRESETS[preset]
