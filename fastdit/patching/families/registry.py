"""The table of model families fastdit patches: one line per family file.

Adding a family is one new file in this package that defines a :class:`~fastdit.patching.families.base.Family`,
plus its line in ``_FAMILIES`` below. Code outside fastdit registers its own with :func:`register_family`.
"""

from __future__ import annotations

from typing import Any

from fastdit.patching.families import (allegro, anyflow, auraflow, bria_fibo2, cogvideox, cogview4, cosmos, dit,
                                       dreamlite, easyanimate, ernie_image, flux, glm_image, helios, hidream,
                                       hunyuan_image, hunyuan_video, hunyuan_video15, ideogram4, joyimage, kandinsky,
                                       krea2, latte, ltx, lumina2, minimax_h3, mochi, motif_video, omnigen, prx,
                                       qwen_image, qwen_image21, sana_wm_refiner, sd3, unet, wan, z_image)
from fastdit.patching.families.base import Family, unwrap_model

__all__ = ["register_family", "families", "detect_family", "UNSUPPORTED", "unsupported_reason"]

_FAMILIES: dict[str, Family] = {f.name: f for f in (
    wan.WAN,
    wan.SKYREELS_V2,
    wan.CHRONOEDIT,
    wan.WAN_VACE,
    wan.WAN_ANIMATE,
    wan.WAN_ANIMATE2,
    helios.HELIOS,
    cosmos.COSMOS,
    hunyuan_video.HUNYUAN_VIDEO,
    hunyuan_video.HUNYUAN_VIDEO_FRAMEPACK,
    hunyuan_video15.HUNYUAN_VIDEO15,
    motif_video.MOTIF_VIDEO,
    cogvideox.COGVIDEOX,
    cogvideox.CONSISID,
    cogvideox.COGVIEW3PLUS,
    easyanimate.EASYANIMATE,
    ltx.LTX,
    ltx.LTX2,
    sana_wm_refiner.SANA_WM_REFINER,
    minimax_h3.MINIMAX_H3,
    anyflow.ANYFLOW,
    anyflow.ANYFLOW_FAR,
    kandinsky.KANDINSKY5,
    kandinsky.KANDINSKY6,
    mochi.MOCHI,
    allegro.ALLEGRO,
    latte.LATTE,
    flux.FLUX,
    flux.CHROMA,
    flux.LONGCAT_IMAGE,
    flux.OVIS_IMAGE,
    flux.BRIA,
    flux.BRIA_FIBO,
    flux.FLUX2,
    bria_fibo2.BRIA_FIBO2,
    flux.FLUX3,
    qwen_image.QWEN_IMAGE,
    qwen_image.NUCLEUS_MOE_IMAGE,
    qwen_image21.QWEN_IMAGE21,
    prx.PRX,
    glm_image.GLM_IMAGE,
    hunyuan_image.HUNYUAN_IMAGE,
    joyimage.JOYIMAGE_EDIT,
    joyimage.JOYIMAGE_EDIT_PLUS,
    ernie_image.ERNIE_IMAGE,
    krea2.KREA2,
    z_image.Z_IMAGE,
    ideogram4.IDEOGRAM4,
    sd3.SD3,
    dit.PIXART,
    dit.DIT,
    dit.TRANSFORMER_2D,
    hidream.HIDREAM,
    lumina2.LUMINA2,
    omnigen.OMNIGEN,
    auraflow.AURAFLOW,
    cogview4.COGVIEW4,
    dreamlite.DREAMLITE,  # before unet: DreamLiteUNetModel is a UNet2DConditionModel
    unet.UNET,
)}


# Denoisers fastdit recognises and can't sparsify, with the reason ``apply`` and ``fastdit info`` give.
_LINEAR = "its self-attention is linear (a kernel feature map, no softmax), so there is no attention matrix to skip"
UNSUPPORTED: dict[str, str] = {
    "SanaVideoTransformer3DModel": _LINEAR,
    "SanaTransformer2DModel": _LINEAR,
    "SanaWMTransformer3DModel": "its self-attention is linear (a gated delta net, no softmax) in every block but each "
                                "`softmax_every_n`-th, whose softmax attention calls SDPA in a module with no "
                                "attention processor for fastdit to replace",
    "Kandinsky6SRTransformer3DModel": "its self-attention is already sparse: its processor names the flex backend "
                                      "with its own NABLA block mask over a fractal token order, which fastdit "
                                      "doesn't replace",
}


def unsupported_reason(model: Any) -> str | None:
    """Why fastdit can't sparsify ``model``'s attention, when its class (or a base) is a known case."""
    for cls in type(unwrap_model(model)).__mro__:
        if cls.__name__ in UNSUPPORTED:
            return f"{cls.__name__}: {UNSUPPORTED[cls.__name__]}"
    return None


def register_family(family: Family) -> Family:
    """Make ``family`` known to ``fastdit.apply`` (a family of the same name is replaced). Returns ``family``."""
    if not isinstance(family, Family):
        raise TypeError(f"register_family takes a fastdit Family, got {type(family).__name__}")
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    """Every registered family by name."""
    return dict(_FAMILIES)


def detect_family(model: Any) -> Family | None:
    """The family whose model classes include ``model``'s class (or one of its bases); ``None`` if none does."""
    names = {cls.__name__ for cls in type(unwrap_model(model)).__mro__}
    for family in _FAMILIES.values():
        if names & set(family.model_classes):
            return family
    return None
