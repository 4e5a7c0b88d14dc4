"""How well a toy-world model fits longer videos, dense vs sparse: ``fastdit bench toy-loss``.

``fastdit bench toy`` scores generated videos with a detector, which counts whole prompts and needs a model that
draws every attribute well. This asks the model directly, with the objective it was trained on: held-out clips
of the procedural world (a clip stream no training used), at the training length and ``--scales`` times longer,
encoded by the model's own VAE, are noised at fixed levels with fixed noise, and each configuration's
flow-matching loss is measured on exactly the same inputs. A model that breaks at a length it was not trained
for has a higher loss there; an attention that keeps it closer to its training-length loss extends better,
which is Radial Attention's and entropy scaling's claim.

  loss        mean flow-matching MSE over clips and noise levels (lower is better)
  vs_dense    mean over clips of loss / the stock attention's loss on the same clip and length, with its
              standard error (the comparison is paired: same clips, noise and levels)
  vs_1x       loss / the stock attention's loss at the training length

Sparse methods run at every noise level (no dense warm-up steps), as ``fastdit train-lora`` trains them.
Noise levels are the midpoints of ``--levels`` equal shares of the scheduler's (shifted) training distribution.

  fastdit bench toy-loss
  fastdit bench toy-loss --lora out/lora-radial-4x --scales 4 --name toy_loss_lora_radial_4x
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from fastdit.bench.toy import DENSE_LABEL, add_model_arguments, check_model_arguments, configs, load_model
from fastdit.runs.report import markdown_table, write_report

_EVAL_STREAM = 7  # clip stream (seed offset) of these clips: base training used 0-2, LoRA training 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.methods import available_methods

    sparse = [m for m in available_methods() if m != "dense"]
    add_model_arguments(parser)
    parser.add_argument("--methods", nargs="*", default=["radial"], choices=sparse, metavar="METHOD",
                        help=f"sparse methods to compare with the stock attention ({', '.join(sparse)}; "
                             "default: radial)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4],
                        help="clip lengths as multiples of the training length (default: 1 2 4)")
    parser.add_argument("--clips", type=int, default=16, help="held-out clips per length (default: 16)")
    parser.add_argument("--levels", type=int, default=4, help="noise levels per clip (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="clip stream and noise")
    parser.add_argument("--name", default="toy_loss", help="report file name without extension")


def noise_levels(count: int, shift: float) -> list[float]:
    """Midpoints of ``count`` equal shares of the shifted training distribution of noise levels
    (``sigma = shift·u / (1 + (shift − 1)·u)``, ``u`` uniform), from least to most noisy."""
    u = (np.arange(count) + 0.5) / count
    return [float(v) for v in shift * u / (1 + (shift - 1) * u)]


def clip_losses(pipe: Any, data: dict[str, Any], sigmas: list[float], seed: int) -> np.ndarray:
    """Flow-matching loss of each encoded clip of ``data`` (:func:`~fastdit.toy.training.encode_clips`),
    averaged over ``sigmas``, with noise fixed by ``seed``: ``[clips]``."""
    import torch

    from fastdit.toy.training import flow_loss

    latents, text = data["latents"], data["text"][data["prompt_index"]]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(sigmas), *latents.shape), generator=generator)
    out = np.zeros(len(latents))
    with torch.no_grad():
        for i in range(len(latents)):
            for j, sigma in enumerate(sigmas):
                out[i] += flow_loss(pipe.transformer, latents[i:i + 1], text[i:i + 1], torch.tensor([sigma]),
                                    noise[j, i:i + 1]).item()
    return out / len(sigmas)


def summarise(losses: dict[tuple[int, str], np.ndarray], frames: dict[int, int]) -> list[dict[str, Any]]:
    """One row per (scale, configuration): mean loss, paired ratio to the stock attention at that length (mean
    and standard error over clips) and ratio to the stock attention at the training length."""
    base = losses.get((1, DENSE_LABEL))
    rows = []
    for (scale, label), values in losses.items():
        ratio = values / losses[(scale, DENSE_LABEL)]
        rows.append({"scale": scale, "frames": frames[scale], "config": label, "loss": float(values.mean()),
                     "vs_dense": float(ratio.mean()),
                     "vs_dense_sem": float(ratio.std(ddof=1) / np.sqrt(len(ratio))) if len(ratio) > 1 else None,
                     "vs_1x": float(values.mean() / base.mean()) if base is not None else None})
    return rows


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from fastdit.cli import CLIError
    from fastdit.cli.common import command_line
    from fastdit.models.loading import call_defaults
    from fastdit.patching.patch import apply, remove
    from fastdit.toy.training import encode_clips, scaled_frames
    from fastdit.toy.world import training_clip

    if args.clips < 1 or args.levels < 1:
        raise CLIError(f"--clips and --levels must be >= 1, got {args.clips} and {args.levels}")
    check_model_arguments(args)
    pipe, source, preset = load_model(args)
    call = call_defaults(pipe, source)
    sigmas = noise_levels(args.levels, float(pipe.scheduler.config.get("shift", 1.0)))
    step = getattr(pipe, "vae_scale_factor_temporal", 4)
    plan = [(scale, configs(args.methods, scale, False, args.entropy_for)) for scale in args.scales]
    losses: dict[tuple[int, str], np.ndarray] = {}
    frames: dict[int, int] = {}
    with tqdm(total=sum(len(c) for _, c in plan), desc="toy loss", dynamic_ncols=True) as bar:
        for scale, scale_configs in plan:
            frames[scale] = scaled_frames(call["num_frames"], scale, step)
            bar.set_postfix_str(f"{scale}x: encoding clips")
            clips = (training_clip(args.seed * 10 + _EVAL_STREAM, i, frames[scale], call["height"])
                     for i in range(args.clips))
            data = encode_clips(pipe, clips, call["max_sequence_length"])
            for config in scale_configs:
                bar.set_postfix_str(f"{scale}x {config.label}"[:40])
                sparse = config.sparse(preset)
                if sparse is not None:
                    apply(pipe, **sparse, dense_steps=0)
                try:
                    losses[(scale, config.label)] = clip_losses(pipe, data, sigmas, args.seed)
                finally:
                    if sparse is not None:
                        remove(pipe)
                bar.update()
    rows = summarise(losses, frames)
    table = markdown_table(rows, ["frames", "config", "loss", "vs_dense", "vs_dense_sem", "vs_1x"], floatfmt=".4g")
    lora = f" with LoRA `{args.lora}`" if args.lora else ""
    body = (f"Model `{args.model}`{lora} (preset `{args.preset}`), {args.clips} held-out clips per length "
            f"(stream {args.seed * 10 + _EVAL_STREAM}), noise levels {', '.join(f'{s:.3f}' for s in sigmas)}, "
            f"{call['width']}x{call['height']}. Sparse methods at every noise level. vs_dense: paired ratio to the "
            "stock attention on the same clips (mean ± standard error); vs_1x: to the stock attention at the "
            "training length.\n\n" + table)
    data = {"model": args.model, "lora": args.lora, "preset": args.preset, "seed": args.seed, "clips": args.clips,
            "sigmas": sigmas, "rows": rows,
            "clip_losses": {f"{scale}x {label}": [round(float(v), 6) for v in values]
                            for (scale, label), values in losses.items()}}
    json_path, md_path = write_report(args.out, args.name, "Toy-world denoising loss vs video length", data, body,
                                      command_line())
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 0
