"""Flags and checks that ``generate`` and ``compare`` share: the model, the call, and the sparse settings.

Everything a user can get wrong without loading a model (method names, method options, step counts, output
paths, devices) is checked first, so a mistake costs a fraction of a second and leaves no file behind.
"""

from __future__ import annotations

import argparse
import ast
import shlex
import sys
from typing import Any

from . import CLIError

__all__ = ["add_model_arguments", "add_sparse_arguments", "parse_value", "parse_options", "check_method",
           "check_arguments", "resolve_device", "resolve_dtype", "load_model", "call_arguments",
           "sparse_arguments", "command_line", "format_bytes"]

_DTYPES = ("auto", "float32", "float16", "bfloat16")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model and call")
    g.add_argument("--model", default="tiny",
                   help="'tiny' (the bundled random-weight model, default), a local diffusers folder, or a hub id "
                        "such as Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--frames", type=int, help="number of frames (Wan: 4k+1); default: the model's")
    g.add_argument("--height", type=int, help="pixels (Wan: a multiple of 16); default: the model's")
    g.add_argument("--width", type=int, help="pixels (Wan: a multiple of 16); default: the model's")
    g.add_argument("--steps", type=int, help="denoising steps; default: the model's")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale; default: the model's")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--fps", type=int, help="frame rate of the written video; default: the model's (Wan: 16)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when available, else cpu")
    g.add_argument("--dtype", default="auto", choices=_DTYPES, help="auto: bfloat16 on cuda, float32 on cpu")


def add_sparse_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sparse attention (defaults: the model's preset)")
    g.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, repeatable; values parse as int, float, true/false, tuples (1,2,3) or "
                        "text (see `fastdit info` for each method's options)")
    g.add_argument("--preset", default="auto", help="'auto' (by model id or config), 'none', or a preset id")
    g.add_argument("--dense-steps", type=int, help="the first N denoising steps run dense")
    g.add_argument("--dense-layers", type=int, help="the first N transformer blocks run dense")
    g.add_argument("--block-size", type=int, help="kernel block in tokens (a power of two)")
    g.add_argument("--backend", default="auto", help="kernel backend: auto, torch, flex, triton (see fastdit info)")
    g.add_argument("--entropy-scaling", action="store_true",
                   help="scale the softmax by sqrt(log N / log N_train) for sizes the model wasn't trained at")


def parse_value(text: str) -> Any:
    """``3`` → int, ``0.5`` → float, ``true``/``false`` → bool, ``1,2,3`` or ``(1,2,3)`` → tuple, else text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text
    if isinstance(value, list):
        value = tuple(value)
    return value if isinstance(value, (int, float, tuple, str)) else text


def parse_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--option takes KEY=VALUE, got {item!r}")
        options[key.strip()] = parse_value(value)
    return options


def check_method(method: str, options: dict[str, Any]) -> None:
    """An unknown method or option fails here, naming what exists (methods are registered at import time,
    so this list grows with the install)."""
    from ..methods import available_methods, get_method, parse_options as method_options

    if method not in available_methods():
        raise CLIError(f"unknown method {method!r}; available: {', '.join(available_methods())}")
    try:
        method_options(get_method(method), options)
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from None


def check_arguments(args: argparse.Namespace) -> None:
    """Numbers in range, and a preset and backend that exist."""
    from ..kernels import available_backends
    from ..presets import PRESETS

    for flag in ("steps", "frames", "height", "width", "fps"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise CLIError(f"--{flag} must be > 0, got {value}")
    for flag in ("dense_steps", "dense_layers"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 0, got {value}")
    if args.guidance is not None and args.guidance < 0:
        raise CLIError(f"--guidance must be >= 0, got {args.guidance}")
    block = args.block_size
    if block is not None and (block < 1 or block & (block - 1)):
        raise CLIError(f"--block-size must be a power of two, got {block}")
    if args.preset not in ("auto", "none", *PRESETS):
        raise CLIError(f"unknown preset {args.preset!r}; known: auto, none, {', '.join(PRESETS)}")
    if args.backend not in ("auto", *available_backends()):
        raise CLIError(f"unknown backend {args.backend!r}; available: auto, {', '.join(available_backends())}")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available here (use --device cpu)")
    return name


def resolve_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, name)


def load_model(args: argparse.Namespace):
    """(source, pipeline, device) for ``--model``; a missing model or missing weights is a one-line error."""
    from ..pipelines.loading import ModelError, load_pipeline, resolve_model

    device = resolve_device(args.device)
    try:
        source = resolve_model(args.model)
        pipe = load_pipeline(source, device, resolve_dtype(args.dtype, device))
    except ModelError as err:
        raise CLIError(str(err)) from None
    return source, pipe, device


def call_arguments(args: argparse.Namespace, pipe: Any, source: Any) -> dict[str, Any]:
    """Pipeline call arguments: the flags, then the model folder's fastdit.json, then the pipeline's own
    defaults; sizes the model can't make are rejected here, naming the rule."""
    from ..pipelines.loading import call_defaults, check_video_size, video_size_rule
    from ..run import is_video_pipeline

    defaults = call_defaults(pipe, source)
    flags = {"num_frames": args.frames, "height": args.height, "width": args.width,
             "num_inference_steps": args.steps, "guidance_scale": args.guidance}
    video = is_video_pipeline(pipe)
    if not video and args.frames is not None:
        raise CLIError(f"{type(pipe).__name__} makes images; --frames doesn't apply")
    call = dict(source.settings.get("call", {}))
    call.update({k: v for k, v in flags.items() if v is not None})
    call["prompt"] = args.prompt
    if args.negative_prompt is not None:
        call["negative_prompt"] = args.negative_prompt
    resolved = {k: call.get(k, defaults.get(k)) for k in ("num_frames", "height", "width")}
    step, multiple = video_size_rule(pipe)
    try:
        check_video_size(type(pipe).__name__, resolved["num_frames"] if video else None, resolved["height"],
                         resolved["width"], frame_step=step, multiple=multiple)
    except ValueError as err:
        raise CLIError(str(err)) from None
    return call


def sparse_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """``fastdit.apply`` keywords shared by every method (the method and its options are added per run)."""
    out: dict[str, Any] = {"preset": None if args.preset == "none" else args.preset, "backend": args.backend,
                           "entropy_scaling": args.entropy_scaling}
    for key in ("dense_steps", "dense_layers", "block_size"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    return out


def command_line() -> str:
    """The command as typed (for reports), with the program name as users run it."""
    return shlex.join(["fastdit", *sys.argv[1:]])


def format_bytes(n: int) -> str:
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"
