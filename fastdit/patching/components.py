"""The denoisers of a pipeline: the one place fastdit decides which transformers/UNets it patches, caches and
times (a denoiser under any component name counts, as long as its family is known)."""

from __future__ import annotations

from typing import Any

import torch

from fastdit.patching.families import Family, detect_family, families, unsupported_reason, unwrap_model

__all__ = ["find_denoisers", "denoisers", "name_or_path"]


def _supported() -> str:
    return "; ".join(f"{f.name} ({', '.join(f.model_classes)})" for f in families().values())


def find_denoisers(target: Any) -> list[tuple[str, torch.nn.Module, Family]]:
    """The supported transformers/UNets of a pipeline (e.g. Wan 2.2's ``transformer`` and ``transformer_2``).

    A ``torch.compile``-wrapped denoiser is patched through the module it wraps.
    """
    if isinstance(target, torch.nn.Module):
        family = detect_family(target)
        if family is None:
            reason = unsupported_reason(target)
            raise TypeError(f"fastdit can't sparsify {reason}" if reason else
                            f"{type(target).__name__} has no attention fastdit supports (supported families: "
                            f"{_supported()})")
        return [("transformer", unwrap_model(target), family)]
    components = getattr(target, "components", None)
    if not isinstance(components, dict):
        raise TypeError(f"expected a diffusers pipeline or a transformer/UNet, got {type(target).__name__}")
    found = [(name, unwrap_model(comp), detect_family(comp)) for name, comp in components.items()
             if isinstance(comp, torch.nn.Module)]
    reasons = [reason for _, comp, fam in found if fam is None and (reason := unsupported_reason(comp))]
    found = [(name, comp, fam) for name, comp, fam in found if fam is not None]
    if not found and reasons:
        raise TypeError(f"fastdit can't sparsify {type(target).__name__}'s {reasons[0]}")
    if not found:
        raise TypeError(f"{type(target).__name__} has no denoiser fastdit supports (supported families: "
                        f"{_supported()})")
    return found


def denoisers(target: Any) -> list[tuple[str, torch.nn.Module]]:
    """``(component name, model)`` of every denoiser fastdit patches in ``target`` (a pipeline, or a bare
    transformer/UNet, named ``"transformer"``); names as ``stats`` reports them. A ``TypeError`` says when
    there is none."""
    return [(name, model) for name, model, _ in find_denoisers(target)]


def name_or_path(target: Any, model: torch.nn.Module) -> str | None:
    """The hub id or folder ``target`` (a pipeline) or ``model`` was loaded from, ``None`` when unknown."""
    for obj in (target, model):
        config = getattr(obj, "config", None)
        name = getattr(config, "_name_or_path", None) or (config.get("_name_or_path") if isinstance(config, dict)
                                                           else None)
        if name:
            return str(name)
    return None
