"""Train the bundled model on the toy world: ``python -m fastdit.toy.train_sample OUT [--resume]``.

Five phases, each resumable, all reproducible from ``--seed``:

1. ``vae``: the Wan VAE learns to reconstruct short clips (fresh clips every step);
2. ``cache``: ``latents_mean`` / ``latents_std`` are measured on the trained VAE, then a fixed set of training
   clips is encoded once (the transformer then never waits for the VAE), with their prompt embeddings;
3. ``transformer``: flow matching on the cached latents (objects' latents weighted up, ``object_mask``),
   with an exponential moving average of the weights;
4. ``refine``: the same, at a lower rate;
5. ``export``: the pipeline (EMA weights) is written to ``OUT/model`` with ``save_pretrained``.

What lands in OUT:

  checkpoint.pt   the full training state (weights, optimizer, RNG, step), written every few minutes and at
                  every phase end; ``--resume`` continues from it exactly (same numbers as an uninterrupted run)
  log.jsonl       one JSON line per logged step (loss terms, learning rate, seconds), plus evaluations: the
                  preview's detector hits, and ``word_gaps``, how much the loss rises when a clip's motion
                  (or colour) word is swapped for another (0: the model does not read that word)
  preview/        frames generated at each transformer checkpoint, and what the detector reads in them
  cache/          the latent cache (rebuilt from the checkpoint if missing; not needed to resume otherwise)
  model/          the finished ``WanPipeline``

Ctrl-C or SIGTERM stops after the current step with a checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from fastdit.runtime.files import atomic_path
from fastdit.toy.recipe import RECIPES, ToyRecipe, assemble_pipeline, build_components, save_pipeline
from fastdit.toy.training import (conditioning_gap, draw_batch, ema_update, encode_clips, encode_prompts, flow_loss,
                                  latent_statistics, object_mask, vae_loss, video_frames, video_tensor,
                                  weights_checksum)
from fastdit.toy.world import COLOURS, Clip, SceneSpec, training_clip
from fastdit.toy.world.grammar import DIRECTIONS

__all__ = ["Trainer", "main"]

PHASES = ("vae", "cache", "transformer", "refine", "export", "done")
FORMAT = 1
_LOG_EVERY = 10
REFINE_KEYS = ("refine_steps", "refine_lr", "foreground_boost")
# recipe keys added later, with the value that runs from before them used
NEUTRAL_KEYS = {"frame_noise": 0.0, "temporal_loss": 0.0}
_PREVIEW_PROMPT = "a red ball bouncing in a white room"
_VAE_STREAM, _STATS_STREAM, _CACHE_STREAM = 0, 1, 2  # clip streams (seed offsets) of the three data uses
_PROBE_CLIPS, _PROBE_SIGMAS = 16, (0.5, 0.7, 0.9)  # word-gap probe: one-object straight-motion cached clips
_OPPOSITE = {name: next(other for other, (u, v) in DIRECTIONS.items() if (u, v) == (-x, -y))
             for name, (x, y) in DIRECTIONS.items()}  # straight motion -> the one reversing it


def _lr(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then a cosine from 1 down to 0.1 at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))


class Trainer:
    """One training run in ``out``: its state, its phases, and its checkpoints."""

    def __init__(self, out: str | Path, recipe: ToyRecipe, seed: int = 0, checkpoint_minutes: float = 5.0,
                 progress: bool = True) -> None:
        self.out, self.recipe, self.seed = Path(out), recipe, seed
        self.checkpoint_seconds = checkpoint_minutes * 60
        self.progress = progress
        self.components = build_components(recipe, seed)
        self.vae, self.transformer = self.components["vae"], self.components["transformer"]
        self.ema = copy.deepcopy(self.transformer).requires_grad_(False)
        self.vae_optimizer = torch.optim.AdamW(self.vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
        self.optimizer = torch.optim.AdamW(self.transformer.parameters(), lr=recipe.lr, weight_decay=0.01)
        self.generator = torch.Generator().manual_seed(seed)
        self.phase, self.step, self.elapsed = PHASES[0], 0, 0.0
        self._stop = False
        self._cache: dict[str, torch.Tensor] | None = None
        self._probe: dict[str, torch.Tensor] | None = None
        self._object_masks: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------- state
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def log_path(self) -> Path:
        return self.out / "log.jsonl"

    def state(self) -> dict[str, Any]:
        """Everything the run depends on; what the VAE or transformer phase no longer needs is left out."""
        vae_phase, later = self.phase == "vae", PHASES.index(self.phase) >= PHASES.index("transformer")
        return {
            "format": FORMAT, "recipe": self.recipe.to_dict(), "seed": self.seed, "phase": self.phase,
            "step": self.step, "elapsed": self.elapsed, "generator": self.generator.get_state(),
            "log_bytes": self.log_path.stat().st_size if self.log_path.exists() else 0,
            "vae": self.vae.state_dict(),
            "vae_config": {k: self.vae.config[k] for k in ("latents_mean", "latents_std")},
            "vae_optimizer": self.vae_optimizer.state_dict() if vae_phase else None,
            "transformer": self.transformer.state_dict() if later else None,
            "ema": self.ema.state_dict() if later else None,
            "optimizer": self.optimizer.state_dict() if later else None,
        }

    def save(self) -> None:
        """Write the checkpoint atomically: a crash or a full disk mid-write leaves the previous one, and no
        temporary file.

        Raises:
            WriteError: the checkpoint could not be written (a full disk, for one).
        """
        # serialized first, then written by Python: a failed write is then the OSError that atomic_path reports
        # (torch's file writer reports it as a RuntimeError about stream positions)
        buffer = io.BytesIO()
        torch.save(self.state(), buffer)
        with atomic_path(self.checkpoint_path) as tmp:
            tmp.write_bytes(buffer.getbuffer())

    def load(self) -> None:
        """Continue from ``checkpoint.pt``; the log is cut back to what the checkpoint had seen.

        Raises:
            FileNotFoundError: there is no checkpoint.
            ValueError: the checkpoint can't be read (empty, cut short, another kind of file), or belongs to
                another recipe or seed.
        """
        path = self.checkpoint_path
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        try:
            state = torch.load(path, weights_only=True)
        except Exception as err:  # torch's reader fails in many ways (EOFError, UnpicklingError, RuntimeError...)
            raise ValueError(f"--resume: {path} can't be read as a checkpoint: it is empty, cut short, or "
                             f"another kind of file ({type(err).__name__})") from None
        if not isinstance(state, dict):
            raise ValueError(f"--resume: {path} is not a checkpoint of this code (it holds a {type(state).__name__}, "
                             "not a training state)")
        if state.get("format") != FORMAT:
            raise ValueError(f"--resume: {path} has format {state.get('format')}, this code reads {FORMAT}")
        try:
            self._restore(state)
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"--resume: {path} is not a whole checkpoint of this recipe ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from None
        if self.log_path.exists():
            with self.log_path.open("r+b") as log:
                # never longer: a log emptied or cut since the checkpoint would be padded with NUL bytes
                log.truncate(min(state["log_bytes"], self.log_path.stat().st_size))

    def _restore(self, state: dict[str, Any]) -> None:
        if not self._same_recipe(state["recipe"], state["phase"]) or state["seed"] != self.seed:
            raise ValueError(f"{self.checkpoint_path} was made with another recipe or seed (seed {state['seed']}); "
                             f"resume with the same --recipe and --seed, or start a new OUT folder")
        self.phase, self.step, self.elapsed = state["phase"], state["step"], state["elapsed"]
        self.generator.set_state(state["generator"])
        self.vae.load_state_dict(state["vae"])
        self.vae.register_to_config(**state["vae_config"])
        for module, key in ((self.vae_optimizer, "vae_optimizer"), (self.transformer, "transformer"),
                            (self.ema, "ema"), (self.optimizer, "optimizer")):
            if state[key] is not None:
                module.load_state_dict(state[key])

    def _same_recipe(self, stored: dict[str, Any], phase: str) -> bool:
        """The checkpoint's recipe is this one; keys it lacks were added for the refine phase, which a
        checkpoint from before that phase has not used yet, or have their ``NEUTRAL_KEYS`` value."""
        current, stored = (json.loads(json.dumps(r)) for r in (self.recipe.to_dict(), {**NEUTRAL_KEYS, **stored}))
        added = set(current) - set(stored)
        if added and (added - set(REFINE_KEYS) or PHASES.index(phase) > PHASES.index("transformer")):
            return False
        return all(current.get(k) == v for k, v in stored.items())

    # ------------------------------------------------------------------------------------------- run
    def run(self) -> bool:
        """Run the remaining phases; False when stopped early (a checkpoint was written)."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "recipe.json").write_text(json.dumps({"seed": self.seed, **self.recipe.to_dict()}, indent=2))
        phases: dict[str, Callable[[], None]] = {"vae": self._train_vae, "cache": self._build_cache,
                                                 "transformer": self._train_transformer, "refine": self._refine,
                                                 "export": self._export}
        while self.phase != "done":
            phases[self.phase]()
            if self._stop:
                self.save()
                return False
            self.phase, self.step = PHASES[PHASES.index(self.phase) + 1], 0
            self.save()
        return True

    def request_stop(self, *_: Any) -> None:
        """Finish the current step, checkpoint and return (installed as the SIGTERM/SIGINT handler)."""
        self._stop = True

    def _log(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a") as log:
            log.write(json.dumps({"phase": self.phase, "step": self.step, **record}) + "\n")

    def _loop(self, total: int, step_fn: Callable[[], dict[str, float]], on_checkpoint: Callable[[], None]) -> None:
        """Call ``step_fn`` until ``total`` steps are done, logging, checkpointing on the clock, and stopping
        cleanly when asked."""
        bar = tqdm(total=total, initial=self.step, desc=self.phase, disable=not self.progress, dynamic_ncols=True)
        last_save = time.monotonic()
        with bar:
            while self.step < total and not self._stop:
                start = time.monotonic()
                record = step_fn()
                self.step += 1
                self.elapsed += time.monotonic() - start
                if self.step % _LOG_EVERY == 0 or self.step == total:
                    self._log({**record, "seconds": round(self.elapsed, 1)})
                bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "lr"}, refresh=False)
                bar.update()
                if time.monotonic() - last_save >= self.checkpoint_seconds and self.step < total:
                    on_checkpoint()
                    self.save()
                    last_save = time.monotonic()
        if not self._stop:
            on_checkpoint()

    # ------------------------------------------------------------------------------------------- vae
    def _train_vae(self) -> None:
        r = self.recipe
        self.vae.train()

        def step() -> dict[str, float]:
            clips = [training_clip(self.seed * 10 + _VAE_STREAM, self.step * r.vae_batch + i, r.vae_frames, r.side)
                     for i in range(r.vae_batch)]
            lr = r.vae_lr * _lr(self.step, r.vae_steps, 0)
            for group in self.vae_optimizer.param_groups:
                group["lr"] = lr
            loss, parts = vae_loss(self.vae, _object_crops(clips, r.vae_crop, self.generator), r.vae_kl,
                                   self.generator)
            self.vae_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
            self.vae_optimizer.step()
            return {"loss": loss.item(), **parts, "lr": lr}

        self._loop(r.vae_steps, step, self._evaluate_vae)
        self.vae.eval()

    @torch.no_grad()
    def _evaluate_vae(self) -> None:
        """PSNR of full-length reconstructions of a few fixed clips, in the log."""
        from fastdit.runs.metrics import psnr

        self.vae.eval()
        scores = []
        for i in range(4):
            clip = training_clip(self.seed * 10 + _STATS_STREAM, 10_000 + i, self.recipe.frames, self.recipe.side)
            video = video_tensor([clip])
            recon = self.vae.decode(self.vae.encode(video).latent_dist.mode()).sample
            scores.append(psnr(video_frames(recon[0]), clip.frames))
        self._log({"eval": "vae_psnr", "value": round(sum(scores) / len(scores), 2)})
        self.vae.train(self.phase == "vae")

    # ----------------------------------------------------------------------------------------- cache
    @property
    def cache_path(self) -> Path:
        return self.out / "cache" / "latents.pt"

    def _build_cache(self) -> None:
        """Measure the latent statistics, then encode ``cache_clips`` clips and their prompts (saved to
        ``cache/``, keyed by a checksum of the VAE so a stale cache is never used)."""
        r = self.recipe
        start = time.monotonic()
        stream = self.seed * 10 + _STATS_STREAM
        videos = [video_tensor([training_clip(stream, i, r.frames, r.side)]) for i in range(r.stats_clips)]
        mean, std = latent_statistics(self.vae, videos)
        self.vae.register_to_config(latents_mean=mean, latents_std=std)
        self._log({"eval": "latent_std_raw", "value": [round(s, 3) for s in std]})
        self._load_cache(build=True)
        self.elapsed += time.monotonic() - start
        self._log({"eval": "cache", "clips": r.cache_clips, "seconds": round(self.elapsed, 1)})

    @torch.no_grad()
    def _load_cache(self, build: bool = False) -> dict[str, torch.Tensor]:
        if self._cache is not None:
            return self._cache
        if self.cache_path.is_file() and not build:
            cache = torch.load(self.cache_path, weights_only=True)
            if cache["checksum"].item() == weights_checksum(self.vae):
                self._cache = cache
                return cache
        r = self.recipe
        stream = self.seed * 10 + _CACHE_STREAM
        clips = (training_clip(stream, i, r.frames, r.side)
                 for i in tqdm(range(r.cache_clips), desc="cache", disable=not self.progress, dynamic_ncols=True))
        cache = encode_clips(assemble_pipeline(self.components), clips, r.max_text_tokens)
        cache["latents"] = cache["latents"].half()
        cache["checksum"] = torch.tensor(weights_checksum(self.vae), dtype=torch.float64)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cache, self.cache_path)
        self._cache = cache
        return cache

    # ----------------------------------------------------------------------------------- transformer
    def _train_transformer(self) -> None:
        r = self.recipe
        self._flow_matching(r.steps, lambda step: r.lr * _lr(step, r.steps, r.warmup),
                            weights=self._foreground_weights(r.transformer_boost) if r.transformer_boost else None)

    def _refine(self) -> None:
        """Continue with object latents weighted up; the moving average keeps its horizon (its warm-up counts
        the transformer phase's steps too)."""
        r = self.recipe
        if r.refine_steps:
            self._flow_matching(r.refine_steps,
                                lambda step: r.refine_lr * _lr(step, r.refine_steps, r.warmup // 10),
                                weights=self._foreground_weights(r.foreground_boost), ema_offset=r.steps)

    def _flow_matching(self, total: int, lr_at: Callable[[int], float], weights: torch.Tensor | None = None,
                       ema_offset: int = 0) -> None:
        r = self.recipe
        cache = self._load_cache()
        self.transformer.train()

        def step() -> dict[str, float]:
            pick, latents, text, sigmas, noise = draw_batch(cache, r.batch, r.text_dropout, r.shift, self.generator,
                                                            r.frame_noise)
            lr = lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            weight = None if weights is None else weights[pick]
            with self._autocast():
                loss = flow_loss(self.transformer, latents, text, sigmas, noise, weight, r.temporal_loss)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.transformer.parameters(), 1.0)
            self.optimizer.step()
            n = ema_offset + self.step
            ema_update(self.ema, self.transformer, min(r.ema, (1 + n) / (10 + n)))
            return {"loss": loss.item(), "lr": lr}

        self._loop(total, step, self._evaluate_transformer)
        self.transformer.eval()

    def _autocast(self) -> contextlib.AbstractContextManager:
        """The recipe's training precision: bf16 autocast on the CPU, or nothing (float32)."""
        if self.recipe.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=getattr(torch, self.recipe.precision))

    def _foreground_weights(self, boost: float) -> torch.Tensor:
        """``[N, F, H, W]`` loss weights of the cached clips: ``1 + boost`` on objects, 1 elsewhere. The object
        masks are rendered once per run (the renderer is deterministic) and shared by both phases."""
        if self._object_masks is None:
            r = self.recipe
            _, frames, height, width = r.latent_shape()
            stream = self.seed * 10 + _CACHE_STREAM
            self._object_masks = torch.stack([
                object_mask(training_clip(stream, i, r.frames, r.side), (frames, height, width),
                            r.vae["scale_factor_temporal"], r.vae["scale_factor_spatial"])
                for i in tqdm(range(r.cache_clips), desc="object masks", disable=not self.progress,
                              dynamic_ncols=True)])
        return 1 + boost * self._object_masks

    def pipeline(self) -> Any:
        """The pipeline as it would be exported now: the trained VAE and the transformer's moving average."""
        return assemble_pipeline({**self.components, "transformer": self.ema})

    def _evaluate_transformer(self) -> None:
        self._preview()
        self._word_gaps()

    @torch.no_grad()
    def _word_gaps(self) -> None:
        """Log how much the averaged model's loss rises on one-object straight-motion clips when their motion is
        reversed in the prompt ("moving left" -> "moving right"), and, for scale, when their colour is changed."""
        probe = self._probe_batch()
        if probe is None:
            return
        self.ema.eval()
        with self._autocast():
            gaps = {key: round(conditioning_gap(self.ema, probe["latents"], probe["own"], probe[key], probe["sigmas"],
                                                probe["noise"]), 4) for key in ("motion", "colour")}
        self._log({"eval": "word_gaps", **gaps})

    def _probe_batch(self) -> dict[str, torch.Tensor] | None:
        """The probe's fixed clips (each at every ``_PROBE_SIGMAS``), noise, and the three prompts' embeddings."""
        if self._probe is not None:
            return self._probe
        r, cache = self.recipe, self._load_cache()
        stream, picks, scenes = self.seed * 10 + _CACHE_STREAM, [], []
        for i in range(r.cache_clips):
            scene = training_clip(stream, i, r.frames, r.side).scene
            if len(scene.objects) == 1 and scene.objects[0].motion in DIRECTIONS:
                picks.append(i)
                scenes.append(scene)
            if len(picks) == _PROBE_CLIPS:
                break
        if not picks:
            return None
        colours = list(COLOURS)

        def swapped(scene: SceneSpec, **change: str) -> str:
            return dataclasses.replace(scene, objects=(dataclasses.replace(scene.objects[0], **change),)).prompt

        prompts = {"own": [s.prompt for s in scenes],
                   "motion": [swapped(s, motion=_OPPOSITE[s.objects[0].motion]) for s in scenes],
                   "colour": [swapped(s, colour=colours[(colours.index(s.objects[0].colour) + 3) % len(colours)])
                              for s in scenes]}
        pipe, repeat = self.pipeline(), len(_PROBE_SIGMAS)
        latents = cache["latents"][picks].float().repeat_interleave(repeat, 0)
        self._probe = {key: encode_prompts(pipe, p, r.max_text_tokens).repeat_interleave(repeat, 0)
                       for key, p in prompts.items()}
        self._probe.update(latents=latents, sigmas=torch.tensor(_PROBE_SIGMAS).repeat(len(picks)),
                           noise=torch.randn(latents.shape, generator=torch.Generator().manual_seed(self.seed)))
        return self._probe

    @torch.no_grad()
    def _preview(self) -> None:
        """Generate the preview prompt with the averaged weights; save its frames and what the detector sees."""
        from fastdit.runs.media import to_uint8, write_image
        from fastdit.toy.world import attribute_hits, detect, parse_prompt

        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        r = self.recipe
        video = pipe(_PREVIEW_PROMPT, num_frames=r.frames, height=r.side, width=r.side, num_inference_steps=16,
                     guidance_scale=5.0, max_sequence_length=r.max_text_tokens, output_type="np",
                     generator=torch.Generator().manual_seed(0)).frames[0]
        frames = to_uint8(video)
        write_image(np.concatenate(list(frames), axis=1), self.out / "preview" / f"step{self.step:06d}.png")
        hits = attribute_hits(parse_prompt(_PREVIEW_PROMPT), detect(frames))
        self._log({"eval": "preview", "hits": {a: h[0] for a, h in hits.items()}})

    # ---------------------------------------------------------------------------------------- export
    def _export(self) -> None:
        save_pipeline(self.pipeline(), self.out / "model", self.recipe.settings())


def _object_crops(clips: list[Clip], size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` x ``size`` windows of each clip that show its first object at a random frame, placed at a random
    offset, on the latent grid (multiples of 8 pixels, so a crop's latents are those of the full frame).

    Objects cover a few percent of a frame, so random windows would mostly teach the VAE flat background; these
    put an edge and an object colour in every sample.
    """
    video = video_tensor(clips)
    side = video.shape[-1]
    if size >= side:
        return video
    frames = torch.randint(video.shape[2], (len(clips),), generator=generator).tolist()
    jitter = (torch.rand(len(clips), 2, generator=generator) - 0.5) * size / 2
    crops = []
    for clip, v, f, (jx, jy) in zip(clips, video, frames, jitter.tolist()):
        cx, cy = clip.tracks[0].centroids[f]
        x, y = (int(min(max(c + j - size / 2, 0), side - size) // 8 * 8) for c, j in ((cx, jx), (cy, jy)))
        crops.append(v[..., y:y + size, x:x + size])
    return torch.stack(crops)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastdit.toy.train_sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="run folder (checkpoint, log, previews, cache, model)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--seed", type=int, default=0, help="weights, data and noise all follow from it")
    parser.add_argument("--recipe", default="full", choices=list(RECIPES),
                        help="full: the bundled model; mini: every phase in seconds (smoke test)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="checkpoint interval")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    trainer = Trainer(args.out, RECIPES[args.recipe], args.seed, args.checkpoint_minutes)
    if args.resume:
        try:
            trainer.load()
        except (FileNotFoundError, ValueError) as err:
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
            return 2
    elif trainer.checkpoint_path.exists():
        # one line, not argparse's usage too: the arguments were fine, the folder is taken
        print(f"{parser.prog}: error: {trainer.checkpoint_path} exists: pass --resume to continue it, or choose "
              "another OUT", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, trainer.request_stop)
    finished = trainer.run()
    print(f"finished: the model is in {trainer.out / 'model'}" if finished else
          f"stopped at {trainer.phase} step {trainer.step}; continue with --resume")
    return 0 if finished else 130


if __name__ == "__main__":
    sys.exit(main())
