"""Upper bounds on a pipeline call, from the model's own limits, checked before anything runs.

Sizes the model can't represent fail deep inside diffusers (a RoPE table shorter than the latent axis is an
index error; a hundred million steps is an out-of-memory in the scheduler), and sizes it can represent but
the machine can't hold start allocating and thrash. Both are refused here with the number that decides it:

- **RoPE**: transformers with fixed rotary tables (Wan's ``rope_max_seq_len``) cover that many latent
  positions per axis (frames, height, width after the VAE and the patch).
- **steps**: at most the scheduler's ``num_train_timesteps`` (its discretisation has no more).
- **memory**: an estimate of what the call allocates beyond the loaded weights (see
  :func:`estimate_call_bytes`) against what the device has free. Being an estimate, this one can be
  skipped (``check_memory=False``; the CLI's ``--skip-memory-check``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["CallSize", "MemoryLimitError", "vae_compression", "call_size", "estimate_call_bytes", "available_bytes",
           "check_call_limits"]

# float32 RGB video held about three times at the end of a call (the VAE's output, the post-processed array
# and a copy while converting): 36 bytes per pixel, measured as 35 on the bundled model (33 -> 65 frames)
_VIDEO_BYTES_PER_PIXEL = 36
# a VAE attention block scores one frame's latent pixels against each other, in float32 with its softmax:
# 6.6 bytes per pair measured on CPU (1.7 GiB at a 128x128 latent); CUDA kernels never hold the matrix
_VAE_ATTENTION_BYTES_PER_PAIR = 6


@dataclass(frozen=True)
class CallSize:
    """What a call's size means for the model: pixels, latent and token grids."""

    frames: int
    height: int
    width: int
    latent: tuple[int, int, int]  # latent frames, height, width (after the VAE)
    tokens: tuple[int, int, int]  # the transformer's token grid (after the patch)

    @property
    def pixels(self) -> int:
        return self.frames * self.height * self.width


def _patch(transformer: Any) -> tuple[int, int, int]:
    patch = getattr(getattr(transformer, "config", None), "patch_size", None) or 1
    if isinstance(patch, (tuple, list)):
        return tuple(int(p) for p in patch) if len(patch) == 3 else (1, int(patch[-2]), int(patch[-1]))
    t = getattr(transformer.config, "patch_size_t", None) or 1
    return int(t), int(patch), int(patch)


# what diffusers' pipelines call their VAE's compression: Wan, HunyuanVideo, CogVideoX...; LTX and EasyAnimate;
# Mochi (in this order of preference)
_TEMPORAL = ("vae_scale_factor_temporal", "vae_temporal_compression_ratio", "vae_temporal_scale_factor")
_SPATIAL = ("vae_scale_factor_spatial", "vae_spatial_compression_ratio", "vae_spatial_scale_factor")


def _first_attribute(pipe: Any, names: tuple[str, ...]) -> int | None:
    return next((int(v) for v in (getattr(pipe, n, None) for n in names) if v), None)


def vae_compression(pipe: Any) -> tuple[int | None, int | None]:
    """``(temporal, spatial)`` compression of a pipeline's VAE, whatever the pipeline names it (``None``: it
    names none; an image pipeline has no temporal one).

    Args:
        pipe: a diffusers pipeline.

    Returns:
        Frames per latent frame (the first frame kept apart) and pixels per latent pixel.
    """
    return _first_attribute(pipe, _TEMPORAL), _first_attribute(pipe, _SPATIAL)


def call_size(pipe: Any, frames: int | None, height: int, width: int) -> CallSize:
    """The latent and token grids of a ``frames x height x width`` call (an image: ``frames=None``)."""
    temporal, spatial = vae_compression(pipe)
    t_step = temporal or 1
    spatial = spatial or getattr(pipe, "vae_scale_factor", None) or 8
    count = frames or 1
    latent = ((count - 1) // t_step + 1, height // spatial, width // spatial)
    denoiser = getattr(pipe, "transformer", None)
    patch = _patch(denoiser) if denoiser is not None else (1, 1, 1)
    tokens = tuple(max(1, -(-n // p)) for n, p in zip(latent, patch))
    return CallSize(count, height, width, latent, tokens)


def _width(transformer: Any) -> tuple[int, int]:
    """(hidden width, feed-forward width) of a transformer, from its config."""
    config = transformer.config
    hidden = (config.get("num_attention_heads") or 0) * (config.get("attention_head_dim") or 0)
    return hidden, config.get("ffn_dim") or 4 * hidden


def _has_attention(module: Any) -> bool:
    return any("attention" in type(m).__name__.lower() for m in module.modules())


def estimate_call_bytes(pipe: Any, size: CallSize, device: str) -> int:
    """Bytes a call of ``size`` allocates beyond the loaded weights, from its largest buffers: the decoded
    video (float32, held about three times), one transformer layer's activations for a conditional and an
    unconditional pass (hidden and feed-forward width per token), and on CPU a VAE attention block's score
    matrix over one frame's latent pixels. A lower-side estimate: it leaves out what is small at large sizes."""
    need = _VIDEO_BYTES_PER_PIXEL * size.pixels
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None and hasattr(transformer, "config"):
        hidden, ffn = _width(transformer)
        itemsize = next(transformer.parameters()).element_size()
        need += 2 * math.prod(size.tokens) * (4 * hidden + ffn) * itemsize
    vae = getattr(pipe, "vae", None)
    if device == "cpu" and vae is not None and _has_attention(vae):
        need += _VAE_ATTENTION_BYTES_PER_PAIR * (size.latent[1] * size.latent[2]) ** 2
    return need


def available_bytes(device: str) -> int:
    """Memory free for a new call: free GPU memory on CUDA; on CPU the kernel's ``MemAvailable`` (free plus
    reclaimable cache), else the physical memory."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


class MemoryLimitError(ValueError):
    """The memory estimate exceeds what the device has free (the one limit a caller may choose to skip)."""


def check_call_limits(pipe: Any, call: dict[str, Any], device: str, *, check_memory: bool = True) -> None:
    """Raise ``ValueError`` naming the limit when ``call`` asks for more steps, frames or pixels than the model
    can represent, or :class:`MemoryLimitError` when more memory than the device has free (see the module
    docstring)."""
    max_steps = (getattr(getattr(pipe, "scheduler", None), "config", None) or {}).get("num_train_timesteps")
    steps = call.get("num_inference_steps")
    if max_steps and steps and steps > max_steps:
        raise ValueError(f"{steps} steps is more than the scheduler's {max_steps} training timesteps; use at most "
                         f"{max_steps}")
    if call.get("height") is None or call.get("width") is None:  # the pipeline sizes it from its own config
        return
    size = call_size(pipe, call.get("num_frames"), call["height"], call["width"])
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    rope = config.get("rope_max_seq_len") if config is not None else None
    for axis, tokens, value in zip(("frames", "height", "width"), size.tokens, (size.frames, size.height, size.width)):
        if rope and tokens > rope:
            raise ValueError(f"{axis} {value} is {tokens} latent positions, more than the {rope} the model's rotary "
                             "position table covers (rope_max_seq_len)")
    if not check_memory:
        return
    need, free = estimate_call_bytes(pipe, size, device), available_bytes(device)
    if need > free:
        raise MemoryLimitError(f"{size.frames} frame(s) of {size.width}x{size.height} need about {_gib(need)} of "
                               f"memory (estimated), and {device} has {_gib(free)} free; make it smaller")
