"""Fine-tune a LoRA of a toy-world model (the bundled one by default) on longer videos, under sparse attention.

  fastdit train-lora --scale 2 --method radial --out out/lora-radial-2x
  fastdit train-lora --scale 2 --method dense --out out/lora-dense-2x      # the same budget, dense
  fastdit generate --frames 33 --lora out/lora-radial-2x --prompt "a red ball moving left in a white room"

The model was trained on clips of its default length; the LoRA (rank --rank on the self- and cross-attention
projections) learns on --scale times longer clips of the same procedural world, with --method's mask in
every training forward. It is saved in diffusers' LoRA format (``pipe.load_lora_weights(OUT)``), with
train_lora.json: settings, loss at the start and end, and seconds per step. Training runs on the CPU.
"""

from __future__ import annotations

import argparse

from fastdit.cli import CLIError
from fastdit.cli.common import check_preset, whole_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.methods import available_methods
    from fastdit.runs.run import MAX_SEED
    from fastdit.toy.train_lora import LoraSettings

    d = LoraSettings()
    parser.add_argument("--model", default="sample", help="'sample' (the bundled model) or a toy-world model folder")
    parser.add_argument("--method", default=d.method, choices=available_methods(), metavar="METHOD",
                        help=f"attention during training: {' | '.join(available_methods())} (default: {d.method})")
    parser.add_argument("--preset", default="auto", help="fastdit preset for the method (default: by model)")
    parser.add_argument("--scale", type=int, default=d.scale, help=f"video length as a multiple of the model's "
                                                                   f"(default: {d.scale})")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default: {d.steps})")
    parser.add_argument("--batch", type=int, default=d.batch, help=f"clips per step (default: {d.batch})")
    parser.add_argument("--clips", type=int, default=d.clips, help=f"training clips, encoded once "
                                                                   f"(default: {d.clips})")
    parser.add_argument("--rank", type=int, default=d.rank, help=f"LoRA rank (default: {d.rank})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default: {d.lr})")
    parser.add_argument("--seed", type=whole_number(0, MAX_SEED), default=d.seed,
                        help="data, noise and LoRA initialisation, 0 to 2**64 - 1")
    parser.add_argument("--out", required=True, help="folder for the LoRA weights and train_lora.json")


def run(args: argparse.Namespace) -> int:
    """Everything checkable without the model (settings, preset, the output folder) is checked before it loads,
    and the scale and rank against it before any clip is encoded."""
    from fastdit.models.loading import ModelError, call_defaults, load_pipeline, resolve_model
    from fastdit.runs.media import check_writable
    from fastdit.toy.train_lora import LoraSettings, check_fits, train_lora

    settings = LoraSettings(method=args.method, scale=args.scale, steps=args.steps, batch=args.batch,
                            clips=args.clips, rank=args.rank, lr=args.lr, seed=args.seed)
    check_preset(args.preset)
    try:
        settings.check()
        check_writable(args.out, directory=True)
        source = resolve_model(args.model)
        pipe = load_pipeline(source, "cpu")
    except (ModelError, ValueError) as err:
        raise CLIError(str(err)) from None
    call = call_defaults(pipe, source)
    if call.get("height") != call.get("width") or "num_frames" not in call:
        raise CLIError(f"{args.model!r} is not a toy-world model: its fastdit.json must give num_frames and a "
                       f"square size (got {call})")
    try:
        check_fits(pipe, call, settings)
    except ValueError as err:
        raise CLIError(f"--{err}") from None
    summary = train_lora(pipe, call, args.out, settings, preset=None if args.preset == "none" else args.preset)
    print(f"{summary['frames']} frames, {args.steps} steps at {summary['seconds_per_step']:.2f} s/step: loss "
          f"{summary['loss_first']:.4f} -> {summary['loss_last']:.4f}; LoRA written to {args.out}")
    return 0
