"""Running a model bigger than the GPU: diffusers' CPU offload and VAE tiling, by name, for the CLI.

The 14B models and HunyuanVideo at 720p hold more weights than most GPUs, and their VAE decodes a whole video
at once. diffusers' own remedies are offered as they are: ``model`` offload
(``enable_model_cpu_offload``: each component moves to the GPU while it runs, at a small cost in speed),
``sequential`` offload (``enable_sequential_cpu_offload``: each layer does, the least memory and the
slowest), and VAE tiling with slicing (``vae.enable_tiling`` / ``enable_slicing``: the decode goes tile by
tile and video by video). Sparse attention is applied on top of either offload as usual: it replaces
attention processors, which the offload hooks leave alone.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OFFLOAD_KINDS", "place_pipeline"]

# --offload KIND -> the diffusers pipeline method
OFFLOAD_KINDS = {"model": "enable_model_cpu_offload", "sequential": "enable_sequential_cpu_offload"}


def place_pipeline(pipe: Any, device: str, *, offload: str | None = None, vae_tiling: bool = False) -> Any:
    """Put ``pipe`` (loaded on the CPU) on ``device``, whole or offloaded, with VAE tiling if asked.

    Args:
        pipe: a diffusers pipeline whose weights are on the CPU.
        device: ``"cuda"`` or ``"cpu"``.
        offload: ``None`` (everything on ``device``), ``"model"`` or ``"sequential"`` (see the module docstring).
        vae_tiling: decode tile by tile and one video at a time.

    Returns:
        ``pipe``.

    Raises:
        ValueError: an offload without a GPU, an unknown offload kind, or tiling asked of a pipeline whose VAE
            can't tile; nothing is changed then.
    """
    if offload is not None:
        if offload not in OFFLOAD_KINDS:
            raise ValueError(f"unknown offload {offload!r}; available: {', '.join(OFFLOAD_KINDS)}")
        if device != "cuda":
            raise ValueError(f"offload {offload!r} moves weights between the CPU and a GPU; it needs a CUDA device "
                             f"(got {device})")
    vae = getattr(pipe, "vae", None)
    if vae_tiling and not hasattr(vae, "enable_tiling"):
        raise ValueError(f"{type(pipe).__name__}'s VAE ({type(vae).__name__}) can't decode in tiles")
    if vae_tiling:
        vae.enable_tiling()
        if hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
    if offload is None:
        return pipe.to(device)
    getattr(pipe, OFFLOAD_KINDS[offload])(device=device)
    return pipe
