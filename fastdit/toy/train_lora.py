"""Fine-tune a LoRA of a toy-world model for longer videos, under sparse attention (``fastdit train-lora``).

Radial Attention's length-extension recipe at toy scale: the model was trained on 17-frame clips; a LoRA on
its attention layers is trained on clips ``--scale`` times longer, with the sparse method active in every
training forward (the mask the LoRA will be used with), so it learns to make the most of the blocks the method
keeps. ``--method dense`` trains the same LoRA with dense attention, the baseline of the same budget.

The data is the procedural world's (a clip stream the base model never saw), encoded once with the model's
own VAE; the loss is the base model's flow-matching objective (``fastdit.toy.training``). The LoRA is
saved in diffusers' format, so ``pipe.load_lora_weights(OUT)`` reads it, with ``train_lora.json`` (settings,
loss curve summary and time per step).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fastdit.runtime.files import usual_permissions
from fastdit.toy.training import draw_batch, encode_clips, flow_loss, scaled_frames
from fastdit.toy.world import training_clip

__all__ = ["LoraSettings", "train_lora", "check_fits"]

_LORA_STREAM = 5  # clip stream (seed offset) of LoRA data; the base model's training used streams 0-2
WEIGHTS_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default name, the one `load_lora_weights` finds
ATTENTION_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
_TARGETS = tuple(f"{attn}.{m}" for attn in ("attn1", "attn2") for m in ATTENTION_MODULES)  # self and cross


@dataclass(frozen=True)
class LoraSettings:
    """What a LoRA run depends on (written next to the weights)."""

    method: str = "radial"
    scale: int = 2
    steps: int = 150
    batch: int = 2
    clips: int = 96
    rank: int = 16
    lr: float = 1e-3
    text_dropout: float = 0.1
    seed: int = 0

    def check(self) -> None:
        """Reject settings that can't train, with what was given."""
        for name in ("scale", "steps", "batch", "clips", "rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.text_dropout < 1:
            raise ValueError(f"text_dropout must be in [0, 1), got {self.text_dropout}")


def check_fits(pipe: Any, call: dict[str, Any], settings: LoraSettings) -> int:
    """The training clips' frame count, once it is known the model can take them and the LoRA's rank fits
    its layers; else a ``ValueError`` naming the limit (a rank above a projection's width adds nothing, and a
    length past the RoPE table or the machine's memory would fail after the clips were encoded).

    Args:
        pipe: the toy-world pipeline, loaded.
        call: its generation defaults (``num_frames``, ``height``, ``width``).
        settings: the run's settings.

    Returns:
        The number of frames each training clip has.
    """
    from fastdit.models.limits import check_call_limits

    settings.check()
    frames = scaled_frames(call["num_frames"], settings.scale, getattr(pipe, "vae_scale_factor_temporal", 4))
    try:
        check_call_limits(pipe, {**call, "num_frames": frames}, "cpu")
    except ValueError as err:
        raise ValueError(f"scale {settings.scale} ({frames} frames): {err}") from None
    widths = [min(m.in_features, m.out_features) for name, m in pipe.transformer.named_modules()
              if isinstance(m, torch.nn.Linear) and name.endswith(_TARGETS)]
    if widths and settings.rank > min(widths):
        raise ValueError(f"rank must be at most {min(widths)}, the narrowest attention projection's width; "
                         f"got {settings.rank}")
    return frames


def train_lora(pipe: Any, call: dict[str, Any], out: str | Path, settings: LoraSettings, *,
               preset: str | None = "auto", progress: bool = True) -> dict[str, Any]:
    """Train a LoRA of ``pipe``'s transformer attention (self and cross) on ``settings.scale`` x longer toy
    clips under ``settings.method``, save it to ``out`` and return the run's summary.

    ``call`` holds the model's generation defaults (``num_frames``, ``height``, ``max_sequence_length``).
    ``pipe`` is left as it was found: fastdit removed, the adapter deleted.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from fastdit.patching.patch import apply, remove

    frames = check_fits(pipe, call, settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stream = settings.seed * 10 + _LORA_STREAM
    clips = (training_clip(stream, i, frames, call["height"])
             for i in tqdm(range(settings.clips), desc="encode clips", disable=not progress, dynamic_ncols=True))
    data = encode_clips(pipe, clips, call["max_sequence_length"])
    transformer = pipe.transformer
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=settings.rank, lora_alpha=settings.rank, init_lora_weights=True,
                                       target_modules=list(_TARGETS)), adapter_name="fastdit_lora")
    if settings.method != "dense":
        apply(pipe, settings.method, preset=preset, dense_steps=0)  # sparse at every noise level it trains on
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(settings.seed)
    shift = float(pipe.scheduler.config.get("shift", 1.0))
    losses: list[float] = []
    seconds: list[float] = []
    transformer.train()
    try:
        with tqdm(total=settings.steps, desc=f"lora ({settings.method}, {frames} frames)", disable=not progress,
                  dynamic_ncols=True) as bar:
            for _ in range(settings.steps):
                start = time.perf_counter()
                _, latents, text, sigmas, noise = draw_batch(data, settings.batch, settings.text_dropout, shift,
                                                             generator)
                loss = flow_loss(transformer, latents, text, sigmas, noise)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                losses.append(loss.item())
                seconds.append(time.perf_counter() - start)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
                bar.update()
        type(pipe).save_lora_weights(out, weight_name=WEIGHTS_FILE, transformer_lora_layers=get_peft_model_state_dict(
            transformer, adapter_name="fastdit_lora"))
        usual_permissions(out / WEIGHTS_FILE)
    finally:
        transformer.eval()
        if settings.method != "dense":
            remove(pipe)
        transformer.delete_adapters("fastdit_lora")
    window = max(1, len(losses) // 10)
    summary = {"settings": asdict(settings), "frames": frames, "height": call["height"], "width": call["width"],
               "loss_first": sum(losses[:window]) / window, "loss_last": sum(losses[-window:]) / window,
               "seconds_per_step": sum(seconds) / len(seconds), "total_s": sum(seconds),
               "losses": [round(v, 5) for v in losses]}
    (out / "train_lora.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
