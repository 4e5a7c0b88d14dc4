"""The losses and update steps that train the toy model; the schedule and checkpoints are ``train_sample``'s.

Both objectives are the published ones, at toy scale:

- **VAE**: reconstruction (L1 + MSE on pixels in [-1, 1], decoding a sample of the posterior so the decoder
  learns to tolerate latent noise) plus a small KL term that keeps the latent close to a unit Gaussian.
- **Transformer**: rectified flow as Wan is trained: ``x_t = (1 - sigma) x_0 + sigma * noise``, the model
  predicts ``noise - x_0`` at timestep ``1000 * sigma``, with ``sigma = shift * u / (1 + (shift - 1) * u)``,
  ``u`` uniform: the distribution of the scheduler's own shifted inference sigmas. ``x_0`` is the VAE latent
  normalised with ``latents_mean`` and ``latents_std``, the inverse of what ``WanPipeline`` does before decoding.
  A share of clips draws ``sigma`` per latent frame instead (as diffusion forcing trains; Wan2.2's transformer
  takes a timestep per token), which teaches motion sooner: see :func:`draw_batch`.
  A share of prompts is replaced by the empty prompt (the pipeline's default negative prompt), so
  classifier-free guidance has an unconditional model to steer from.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch

from fastdit.toy.world import Clip

__all__ = ["video_tensor", "video_frames", "vae_loss", "latent_statistics", "normalise_latents", "shifted_sigmas",
           "flow_loss", "object_mask", "ema_update", "encode_prompts", "encode_clips", "draw_batch", "scaled_frames",
           "conditioning_gap", "weights_checksum", "pipeline_checksums"]


def video_tensor(clips: Sequence[Clip]) -> torch.Tensor:
    """``[B, 3, F, H, W]`` float32 in [-1, 1], the range the Wan VAE reads and writes."""
    frames = np.stack([c.frames for c in clips])  # [B, F, H, W, 3]
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def video_frames(video: torch.Tensor) -> np.ndarray:
    """One ``[3, F, H, W]`` video in [-1, 1] (a VAE's output) -> uint8 ``[F, H, W, 3]``: :func:`video_tensor` undone."""
    return ((video.permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


def vae_loss(vae: torch.nn.Module, video: torch.Tensor, kl_weight: float,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction of a posterior sample plus ``kl_weight`` times the mean KL per latent element."""
    posterior = vae.encode(video).latent_dist
    recon = vae.decode(posterior.sample(generator=generator)).sample
    l1 = (recon - video).abs().mean()
    mse = (recon - video).pow(2).mean()
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
    loss = l1 + mse + kl_weight * kl
    return loss, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


@torch.no_grad()
def latent_statistics(vae: torch.nn.Module, videos: Sequence[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the posterior means of ``videos`` (the VAE's
    ``latents_mean`` / ``latents_std``, which the pipeline uses to map the transformer's output back)."""
    latents = torch.cat([vae.encode(v).latent_dist.mean for v in videos])  # [N, C, F, H, W]
    flat = latents.transpose(0, 1).reshape(latents.shape[1], -1).double()
    return flat.mean(1).tolist(), flat.std(1).tolist()


def normalise_latents(latents: torch.Tensor, vae_config: Any) -> torch.Tensor:
    """Posterior means -> the transformer's space: ``(z - latents_mean) / latents_std`` per channel."""
    shape = (1, -1) + (1,) * (latents.ndim - 2)
    mean = torch.tensor(vae_config.latents_mean, dtype=latents.dtype).view(shape)
    std = torch.tensor(vae_config.latents_std, dtype=latents.dtype).view(shape)
    return (latents - mean) / std


def shifted_sigmas(count: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Noise levels distributed like ``FlowMatchEulerDiscreteScheduler(shift=shift)``'s inference sigmas."""
    u = torch.rand(count, generator=generator)
    return shift * u / (1 + (shift - 1) * u)


def flow_loss(transformer: torch.nn.Module, latents: torch.Tensor, text: torch.Tensor, sigmas: torch.Tensor,
              noise: torch.Tensor, weight: torch.Tensor | None = None, temporal: float = 0.0) -> torch.Tensor:
    """Mean squared error of the predicted velocity ``noise - latents`` at noise levels ``sigmas``: ``[B]``, one
    per clip, or ``[B, F]``, one per latent frame (passed to the transformer as per-token timesteps, Wan2.2's
    ``timestep`` of shape ``[B, tokens]``); ``weight`` ``[B, F, H, W]`` (per latent position) makes it a
    weighted mean.

    ``temporal > 0`` adds that multiple of the same mean over the error's frame-to-frame differences (weighted
    by the larger weight of the two frames). An error that is the same in every frame (a wrong colour, a wrong
    background) does not count there; one in where an object goes next does. The plain mean is dominated by
    appearance, which every frame repeats, so a model learns motion last; this term gives it its own share."""
    s = (sigmas if sigmas.ndim == 2 else sigmas[:, None])[:, None, :, None, None]  # [B, 1, F or 1, 1, 1]
    noisy = (1 - s) * latents + s * noise
    prediction = transformer(hidden_states=noisy, timestep=_timesteps(transformer, sigmas, latents.shape),
                             encoder_hidden_states=text, return_dict=False)[0]
    error = prediction.float() - (noise - latents)
    loss = _weighted_mean(error.pow(2).mean(1), weight)
    if temporal:
        change = (error[:, :, 1:] - error[:, :, :-1]).pow(2).mean(1)
        loss = loss + temporal * _weighted_mean(
            change, None if weight is None else torch.maximum(weight[:, 1:], weight[:, :-1]))
    return loss


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return values.mean() if weight is None else (values * weight).sum() / weight.sum()


def _timesteps(transformer: torch.nn.Module, sigmas: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The transformer's ``timestep``: ``1000 * sigma`` per clip, or per token for per-frame ``sigmas`` (a
    temporal patch of several frames takes its first frame's level)."""
    if sigmas.ndim == 1:
        return sigmas * 1000
    pt, ph, pw = transformer.config.patch_size
    height, width = shape[-2] // ph, shape[-1] // pw
    return (sigmas[:, ::pt, None].expand(-1, -1, height * width) * 1000).flatten(1)


@torch.no_grad()
def conditioning_gap(transformer: torch.nn.Module, latents: torch.Tensor, text: torch.Tensor,
                     other_text: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor) -> float:
    """Relative increase of the flow loss of ``latents`` when conditioned on ``other_text`` instead of their own
    ``text``, at the same noise: about 0 when the model ignores whatever differs between the two prompts.

    With prompts that differ in one word (the motion, the colour), this tells early in a run whether the
    transformer reads that word, long before generated videos show it."""
    own = flow_loss(transformer, latents, text, sigmas, noise)
    other = flow_loss(transformer, latents, other_text, sigmas, noise)
    return (other / own - 1).item()


def object_mask(clip: Clip, latent_shape: tuple[int, int, int], temporal: int, spatial: int) -> torch.Tensor:
    """``[F, H, W]`` on the latent grid: 1 where an object is, 0 elsewhere (loss weights are ``1 + boost *``
    this).

    Objects cover a few percent of a frame, so a plain mean spends almost all of the loss on flat background;
    weighting their latents up teaches shape, colour and motion, what the prompts are about. Latent frame ``j``
    covers video frames ``4j - 3 .. 4j`` (frame 0 alone for ``j = 0``, the Wan VAE's causal grouping); a
    latent cell is foreground when any of its frames' object boxes touches its ``spatial``-pixel square.
    """
    frames, height, width = latent_shape
    mask = torch.zeros(frames, height, width)
    for track in clip.tracks:
        for f, (x0, y0, x1, y1) in enumerate(track.boxes.tolist()):
            rows = slice(max(int(y0 // spatial), 0), int(y1 // spatial) + 1)
            cols = slice(max(int(x0 // spatial), 0), int(x1 // spatial) + 1)
            mask[(f + temporal - 1) // temporal, rows, cols] = 1
    return mask


@torch.no_grad()
def weights_checksum(module: torch.nn.Module) -> float:
    """Sum of all parameters and buffers in float64: changes with any training step, costs one pass over the
    weights. Keys what must not outlive the weights it was computed with (a latent cache, a benchmark's
    resumable progress)."""
    return float(sum(t.double().sum() for t in module.state_dict().values()))


def pipeline_checksums(pipe: Any) -> dict[str, float]:
    """``weights_checksum`` of a toy pipeline's trained parts (transformer and VAE): what a benchmark report
    records so that a reader can tell which weights it measured."""
    return {name: weights_checksum(getattr(pipe, name)) for name in ("transformer", "vae")}


@torch.no_grad()
def ema_update(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * model``, parameter by parameter."""
    for a, p in zip(average.parameters(), model.parameters()):
        a.lerp_(p, 1 - decay)


@torch.no_grad()
def encode_prompts(pipe: Any, prompts: Sequence[str], max_text_tokens: int) -> torch.Tensor:
    """``[N, max_text_tokens, D]`` text embeddings exactly as ``WanPipeline`` computes them at generation
    (trimmed to each prompt's length, then zero-padded), so training conditions on what inference feeds."""
    embeds, _ = pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                   max_sequence_length=max_text_tokens, device=torch.device("cpu"))
    return embeds.float()


@torch.no_grad()
def encode_clips(pipe: Any, clips: Iterable[Clip], max_text_tokens: int) -> dict[str, torch.Tensor]:
    """Training data of ``clips``: ``latents`` (posterior means, normalised as the transformer sees them),
    the embeddings of their distinct prompts (``text``, indexed by ``prompt_index``) and of the empty prompt
    (``empty``, for classifier-free guidance dropout)."""
    latents, prompts = [], []
    for clip in clips:
        latents.append(pipe.vae.encode(video_tensor([clip])).latent_dist.mean)
        prompts.append(clip.prompt)
    unique = sorted(set(prompts))
    embeds = encode_prompts(pipe, unique + [""], max_text_tokens)
    index = {p: i for i, p in enumerate(unique)}
    return {"latents": normalise_latents(torch.cat(latents), pipe.vae.config), "text": embeds[:-1],
            "empty": embeds[-1], "prompt_index": torch.tensor([index[p] for p in prompts])}


def draw_batch(data: dict[str, torch.Tensor], batch: int, text_dropout: float, shift: float,
               generator: torch.Generator, frame_noise: float = 0.0) -> tuple[torch.Tensor, ...]:
    """``(pick, latents, text, sigmas, noise)``: ``batch`` random clips of :func:`encode_clips`' ``data``,
    their prompts (a ``text_dropout`` share replaced by the empty one), noise levels and noise.

    With ``frame_noise > 0`` the noise levels are ``[B, F]``, one per latent frame, and that share of the clips
    draws each frame's level independently (the others keep one level for all frames, as at generation).
    A clip whose first frames are nearly clean while later ones are noisy poses the question motion answers,
    where the object goes next, directly; with one level for all frames it only arises as the sampler commits
    to a trajectory, and the model is slow to learn it (see the motion word gap in the training log)."""
    pick = torch.randint(len(data["latents"]), (batch,), generator=generator)
    latents = data["latents"][pick].float()
    text = data["text"][data["prompt_index"][pick]]
    drop = torch.rand(batch, generator=generator) < text_dropout
    text = torch.where(drop[:, None, None], data["empty"], text)
    sigmas = shifted_sigmas(batch, shift, generator)
    if frame_noise > 0:
        frames = latents.shape[2]
        independent = shifted_sigmas(batch * frames, shift, generator).view(batch, frames)
        chosen = torch.rand(batch, generator=generator) < frame_noise
        sigmas = torch.where(chosen[:, None], independent, sigmas[:, None].expand(-1, frames))
    return pick, latents, text, sigmas, torch.randn(latents.shape, generator=generator)


def scaled_frames(num_frames: int, scale: int, temporal: int) -> int:
    """``scale`` times a ``temporal k + 1``-frame video's length, again ``temporal k + 1`` frames (Wan: 4k + 1)."""
    return (num_frames - 1) // temporal * scale * temporal + 1
