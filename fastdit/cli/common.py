"""Flags and checks that ``generate`` and ``compare`` share: the model, the call, and the sparse settings.

Everything a user can get wrong without loading a model (method names, method options, numbers out of range
or not finite, seeds, caches, output paths, devices) is checked first, so a mistake costs a fraction of a
second and leaves no file behind. What depends on the model (its size rules, the RoPE length, the
scheduler's steps, the memory a size needs) is checked right after loading, before anything runs.
"""

from __future__ import annotations

import argparse
import ast
import math
import shlex
import sys
from typing import Any, Callable

from fastdit.cli import CLIError

__all__ = ["add_model_arguments", "add_sparse_arguments", "parse_value", "parse_options", "check_method",
           "check_arguments", "resolve_device", "resolve_dtype", "load_model", "call_arguments",
           "sparse_arguments", "check_calibration", "check_preset", "step_count_or_share", "finite_float",
           "whole_number", "read_prompts", "run_label", "read_images", "json_call", "cache_spec", "check_cacheable",
           "command_line", "format_bytes", "MAX_GUIDANCE", "MAX_FPS"]

_DTYPES = ("auto", "float32", "float16", "bfloat16")
# published models guide at 1 to 20; far beyond, the guided noise prediction overflows to NaN (a black video)
MAX_GUIDANCE = 100.0
MAX_FPS = 240  # ffmpeg's H.264 encoder fails on frame rates far past what any display shows


def add_model_arguments(parser: argparse.ArgumentParser, *, several_prompts: bool = False) -> None:
    """The model and pipeline-call flags; ``several_prompts``: the command uses all its prompts in one result
    (calibration), not one run each."""
    g = parser.add_argument_group("model and call")
    g.add_argument("--model", default="sample",
                   help="'sample' (the bundled toy-world model, default), a local diffusers folder, or a hub id "
                        "such as Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    add_lora_argument(g)
    prompt = g.add_mutually_exclusive_group(required=True)
    each = "all are used" if several_prompts else "one run each, the model loaded once"
    prompt.add_argument("--prompt", action="append", help=f"the text prompt; repeat for several ({each})")
    prompt.add_argument("--prompt-file", metavar="PATH",
                        help=f"a UTF-8 text file of prompts, one per line, blank lines and lines starting with # "
                             f"skipped ({each})")
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--image", metavar="PATH",
                   help="the input image of image-to-video pipelines (its first frame: Wan I2V, LTX-Video, "
                        "CogVideoX, HunyuanVideo I2V...) and image-to-image ones; resized to the call's size")
    g.add_argument("--last-image", metavar="PATH",
                   help="the last frame, for pipelines that take one (Wan first-last-frame-to-video)")
    g.add_argument("--frames", type=int, help="number of frames (Wan: 4k+1); default: the model's")
    g.add_argument("--height", type=int, help="pixels (Wan: a multiple of 16); default: the model's")
    g.add_argument("--width", type=int, help="pixels (Wan: a multiple of 16); default: the model's")
    g.add_argument("--steps", type=int, help="denoising steps; default: the model's")
    g.add_argument("--guidance", type=finite_float, help=f"classifier-free guidance scale, 0 to {MAX_GUIDANCE:g}; "
                                                        "default: the model's")
    g.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**64 - 1")
    g.add_argument("--fps", type=whole_number(1, MAX_FPS),
                   help=f"frame rate of the written video, 1 to {MAX_FPS}; default: the model's (Wan: 16)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when available, else cpu")
    g.add_argument("--dtype", default="auto", choices=_DTYPES, help="auto: bfloat16 on cuda, float32 on cpu")
    g.add_argument("--offload", choices=("model", "sequential"),
                   help="keep weights on the CPU and move them to the GPU as they run, per component (model) or "
                        "per layer (sequential: least memory, slowest), for models bigger than the GPU")
    g.add_argument("--vae-tiling", action="store_true",
                   help="decode the video tile by tile and one video at a time (less memory at large sizes)")
    g.add_argument("--skip-memory-check", action="store_true",
                   help="run sizes whose estimated memory exceeds what the device has free (the RoPE and step "
                        "limits of the model still hold)")


def add_lora_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--lora", metavar="PATH", help="LoRA weights to load into the model first (a folder or "
                                                       "file in diffusers' format, e.g. from `fastdit train-lora`)")


def add_sparse_arguments(parser: argparse.ArgumentParser) -> None:
    from fastdit.runs.caches import CACHE_KINDS  # no torch or diffusers: the parser stays light

    g = parser.add_argument_group("sparse attention (defaults: the model's preset)")
    g.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, repeatable; values parse as int, float, true/false, tuples (1,2,3) or "
                        "text (see `fastdit info` for each method's options)")
    g.add_argument("--preset", default="auto", help="'auto' (by model id or config), 'none', or a preset id")
    g.add_argument("--dense-steps", type=step_count_or_share, metavar="N|SHARE",
                   help="the first N denoising steps run dense, or a share of the steps (0.25: the first quarter)")
    g.add_argument("--dense-layers", type=int, help="the first N transformer blocks run dense")
    g.add_argument("--block-size", type=int, help="kernel block in tokens (a power of two)")
    g.add_argument("--backend", default="auto", help="kernel backend: auto, torch, flex, triton (see fastdit info)")
    g.add_argument("--entropy-scaling", action="store_true",
                   help="scale the softmax by sqrt(log N / log N_train) for sizes the model wasn't trained at")
    g.add_argument("--calibration", metavar="PATH",
                   help="a calibration file from `fastdit calibrate`: method and options per layer and head, "
                        "warm-up and block size (instead of --method / --option / --block-size)")
    g.add_argument("--reuse-calibration", action="store_true",
                   help="run a --calibration on another video size than it was made for (with a warning)")
    g.add_argument("--cache", choices=list(CACHE_KINDS), metavar="KIND",
                   help=f"also run a diffusers step cache ({' | '.join(CACHE_KINDS)}; see fastdit.runs.caches)")
    g.add_argument("--cache-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the cache's diffusers config, repeatable (e.g. threshold=0.1)")


def finite_float(text: str) -> float:
    """argparse type: a float that is neither infinite nor NaN (``inf`` guidance writes a black video)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def whole_number(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (``None``: no upper bound), so a count that
    can't work (``--repeats 0``, ``--frames 100001``) is refused by the parser, before anything loads or runs.

    Args:
        low: the smallest number allowed.
        high: the largest, or ``None``.

    Returns:
        The parsing function to pass as ``type=``.
    """
    bound = f">= {low}" if high is None else f"from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number {bound}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a whole number {bound}, got {text!r}")
        return value

    return parse


def step_count_or_share(text: str) -> int | float:
    """argparse type: a step count (``12``) or a share of the steps (``0.25``)."""
    from fastdit.runtime.config import check_dense_steps

    try:
        value: int | float = int(text)
    except ValueError:
        value = finite_float(text)
    try:
        return check_dense_steps(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a step count >= 0 or a share of the steps in [0, 1], got "
                                         f"{text!r}") from None


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


def parse_options(items: list[str], flag: str = "--option") -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{flag} takes KEY=VALUE, got {item!r}")
        options[key.strip()] = parse_value(value)
    return options


def check_method(method: str, options: dict[str, Any]) -> None:
    """An unknown method or option fails here, naming what exists (methods are registered at import time,
    so this list grows with the install)."""
    from fastdit.methods import available_methods, get_method
    from fastdit.methods import parse_options as method_options

    if method not in available_methods():
        raise CLIError(f"unknown method {method!r}; available: {', '.join(available_methods())}")
    try:
        method_options(get_method(method), options)
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from None


def check_arguments(args: argparse.Namespace) -> None:
    """The prompts, numbers in range, a seed a generator takes, and a preset and backend that exist."""
    from fastdit.kernels import available_backends
    from fastdit.runs.run import check_seed
    from fastdit.runtime.config import check_block_size

    read_prompts(args)
    for flag in ("steps", "frames", "height", "width", "fps"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise CLIError(f"--{flag} must be > 0, got {value}")
    if args.dense_layers is not None and args.dense_layers < 0:
        raise CLIError(f"--dense-layers must be >= 0, got {args.dense_layers}")
    if args.guidance is not None and not 0 <= args.guidance <= MAX_GUIDANCE:
        raise CLIError(f"--guidance must be from 0 to {MAX_GUIDANCE:g}, got {args.guidance:g}")
    try:
        check_seed(args.seed)
    except ValueError as err:
        raise CLIError(f"--{err}") from None
    try:
        if args.block_size is not None:
            check_block_size(args.block_size)
    except ValueError as err:
        raise CLIError(f"--{err}".replace("block_size", "block-size", 1)) from None
    check_preset(args.preset)
    if args.backend not in ("auto", *available_backends()):
        raise CLIError(f"unknown backend {args.backend!r}; available: auto, {', '.join(available_backends())}")
    if args.calibration is not None:
        check_calibration(args.calibration)
    elif args.reuse_calibration:
        raise CLIError("--reuse-calibration needs --calibration PATH")


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts of ``--prompt`` (one, or several where repeatable) or ``--prompt-file``, set as
    ``args.prompts`` (``args.prompt``: the first); an unreadable or empty file is a one-line error before the
    model loads."""
    if args.prompt_file is None:
        prompts = list(args.prompt)
    else:
        try:
            with open(args.prompt_file, encoding="utf-8") as lines:
                prompts = [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
        except OSError as err:
            raise CLIError(f"--prompt-file {args.prompt_file!r}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise CLIError(f"--prompt-file {args.prompt_file!r}: not UTF-8 text") from None
        if not prompts:
            raise CLIError(f"--prompt-file {args.prompt_file!r} holds no prompt (one per line)")
    args.prompts, args.prompt = prompts, prompts[0]
    return prompts


def run_label(index: int, count: int) -> str:
    """``index`` (from 1) of ``count`` runs, zero-padded so outputs sort in prompt order (``07`` of 12)."""
    return f"{index:0{len(str(count))}d}"


def check_preset(name: str) -> None:
    """``--preset``: ``auto``, ``none`` or a preset fastdit has, checked before any model loads."""
    from fastdit.patching.presets import PRESETS

    if name not in ("auto", "none", *PRESETS):
        raise CLIError(f"unknown preset {name!r}; known: auto, none, {', '.join(PRESETS)}")


def cache_spec(args: argparse.Namespace):
    """The ``--cache`` and its ``--cache-option``s as a :class:`fastdit.runs.caches.CacheSpec` (``None`` without
    ``--cache``), checked against the diffusers config it builds before any model loads."""
    from fastdit.runs.caches import CacheSpec, cache_config

    options = parse_options(args.cache_option, "--cache-option")
    if args.cache is None:
        if options:
            raise CLIError("--cache-option needs --cache KIND")
        return None
    spec = CacheSpec(args.cache, options)
    try:
        cache_config(spec)
    except ValueError as err:
        raise CLIError(str(err)) from None
    return spec


def check_cacheable(pipe: Any) -> None:
    """``--cache`` on a model without diffusers cache support is a one-line error, before anything runs."""
    from fastdit.patching.components import denoisers
    from fastdit.runs.caches import check_cacheable as check

    try:
        check([model for _, model in denoisers(pipe)])
    except ValueError as err:
        raise CLIError(f"--cache: {err}") from None


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


# flag -> the pipeline-call argument it fills
_IMAGE_INPUTS = {"image": "image", "last_image": "last-image"}


def read_images(args: argparse.Namespace) -> dict[str, Any]:
    """``--image`` and ``--last-image`` as RGB pictures, keyed by the call argument they fill; a missing or
    unreadable file is a one-line error before the model loads."""
    from PIL import Image, UnidentifiedImageError

    images = {}
    for key, flag in _IMAGE_INPUTS.items():
        path = getattr(args, key)
        if path is None:
            continue
        try:
            with Image.open(path) as image:
                images[key] = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            why = err.strerror if isinstance(err, OSError) and err.strerror else "not an image file PIL can read"
            raise CLIError(f"--{flag} {path!r}: {why}") from None
    return images


def _image_call(pipe: Any, images: dict[str, Any]) -> dict[str, Any]:
    """The pictures as call arguments, once the pipeline is known to take them: an image-to-video pipeline
    called without ``--image`` (its required input) and a pipeline given one it has no use for are refused."""
    import inspect

    params = inspect.signature(pipe.__call__).parameters
    name = type(pipe).__name__
    for key, flag in _IMAGE_INPUTS.items():
        if key in images and key not in params:
            raise CLIError(f"{name} takes no {flag.replace('-', ' ')}; --{flag} doesn't apply")
    image = params.get("image")
    if image is not None and image.default is inspect.Parameter.empty and "image" not in images:
        raise CLIError(f"{name} makes its output from an input image: give --image PATH")
    return images


def json_call(call: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``call`` for a JSON report: the pictures given by their paths."""
    return {k: getattr(args, k) if k in _IMAGE_INPUTS else v for k, v in call.items()}


def load_model(args: argparse.Namespace):
    """(source, pipeline, device) for ``--model``, placed as ``--offload`` and ``--vae-tiling`` say; a missing
    model or missing weights is a one-line error, and an offload without a GPU one before anything loads."""
    from fastdit.models.loading import ModelError, load_pipeline, resolve_model
    from fastdit.runs.memory import place_pipeline

    device = resolve_device(args.device)
    if args.offload is not None and device != "cuda":
        raise CLIError(f"--offload {args.offload} moves weights between the CPU and a GPU; it needs --device cuda "
                       f"(got {device})")
    try:
        source = resolve_model(args.model)
        pipe = load_pipeline(source, "cpu", resolve_dtype(args.dtype, device), lora=args.lora)
        place_pipeline(pipe, device, offload=args.offload, vae_tiling=args.vae_tiling)
    except ModelError as err:
        raise CLIError(str(err)) from None
    except ValueError as err:
        raise CLIError(f"--vae-tiling: {err}") from None
    return source, pipe, device


def call_arguments(args: argparse.Namespace, pipe: Any, source: Any, device: str,
                   images: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pipeline call arguments: the flags, then the model folder's fastdit.json, then the pipeline's own
    defaults; sizes the model can't make, and sizes or step counts past its limits or the device's memory,
    are rejected here, naming the rule. ``images`` (from :func:`read_images`) join the call where the pipeline
    takes them."""
    from fastdit.models.limits import MemoryLimitError, check_call_limits
    from fastdit.models.loading import call_defaults, check_video_size, video_size_rule
    from fastdit.runs.run import is_video_pipeline

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
    call.update(_image_call(pipe, images or {}))
    resolved = {k: call.get(k, defaults.get(k)) for k in ("num_frames", "height", "width")}
    step, multiple = video_size_rule(pipe)
    try:
        check_video_size(type(pipe).__name__, resolved["num_frames"] if video else None, resolved["height"],
                         resolved["width"], frame_step=step, multiple=multiple)
        check_call_limits(pipe, {**defaults, **call, **resolved}, device, check_memory=not args.skip_memory_check)
    except MemoryLimitError as err:
        raise CLIError(f"{err}, or pass --skip-memory-check to try anyway") from None
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
    if args.calibration is not None:
        out["calibration"] = args.calibration  # a path keeps run reports JSON (checked by check_arguments)
        out["reuse_calibration"] = args.reuse_calibration
    return out


def check_calibration(path: str):
    """The ``--calibration`` file, read and checked before any model loads."""
    from fastdit.calibration import load_calibration

    try:
        return load_calibration(path)
    except ValueError as err:
        raise CLIError(f"--calibration: {err}") from None


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
