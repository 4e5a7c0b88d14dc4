"""Finding and loading the pipeline a user names: ``sample`` (the bundled model), a local folder, or a hub id.

Names are checked before anything heavy is imported or loaded, so an unknown model costs a fraction of a
second; hub ids go through diffusers' normal cache (``HF_HOME``), and weights that are missing while offline
become one sentence that says which id is missing and how to get it, not a stack trace.

A local model folder may carry a ``fastdit.json`` next to its ``model_index.json``::

    {"call": {"num_frames": 33, "height": 256, "width": 256, "num_inference_steps": 8, ...}, "fps": 8}

``call`` holds the pipeline-call defaults that fit the model (the bundled sample is far too small for the
pipeline class's own 480x832 defaults), ``fps`` the frame rate its videos are written at. Flags given on the
command line win over both. Both files are checked when the model is resolved, before anything loads: a
``model_index.json`` must name a pipeline class diffusers has and take its components from diffusers,
transformers or fastdit only (diffusers imports whatever module a component names); every ``call`` key must be
an argument of that class's ``__call__`` that fastdit does not set itself (``output_type``, ``return_dict``,
one video per prompt), with a value of the right kind (sizes and steps whole numbers > 0, guidance a finite
number >= 0, a text length within the tokenizer's ``model_max_length``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

__all__ = ["ModelError", "ModelSource", "SAMPLE", "SAMPLE_NAMES", "sample_dir", "resolve_model", "load_pipeline",
           "call_defaults", "benchmark_call", "video_size_rule", "check_video_size", "DEFAULT_FPS"]

SAMPLE = "sample"
SAMPLE_NAMES = (SAMPLE, "tiny")  # "tiny" is what earlier releases called the sample
SETTINGS_FILE = "fastdit.json"
DEFAULT_FPS = 16  # Wan's frame rate; a model folder's fastdit.json can say otherwise
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelError(ValueError):
    """The model can't be found or loaded; the message says what to do about it."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``location`` is a local folder or a hub id; ``settings`` its fastdit.json."""

    name: str
    location: str
    local: bool
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> int:
        return int(self.settings.get("fps", DEFAULT_FPS))


def sample_dir() -> Path:
    """The bundled sample, fastdit's toy-world Wan model: package data of ``fastdit.models`` (``tiny-wan/``),
    so it is found from a checkout and from an installed wheel alike."""
    return Path(str(resources.files("fastdit.models").joinpath("tiny-wan")))


_WHOLE = ("num_frames", "height", "width", "num_inference_steps", "max_sequence_length")  # ints > 0
_SCALES = ("guidance_scale", "guidance_scale_2")  # finite numbers >= 0
# a run reads one video per prompt from a seeded call's numpy output: these are fastdit's to set
_FASTDIT_SETS = ("output_type", "return_dict", "generator", "callback_on_step_end",
                 "callback_on_step_end_tensor_inputs")
_ONE_PER_PROMPT = ("num_videos_per_prompt", "num_images_per_prompt")
# the libraries a model_index.json may take components from: diffusers imports the module a component names
_LIBRARIES = ("diffusers", "transformers", "fastdit")
_NO_LIMIT = 10**20  # transformers' model_max_length when a tokenizer states none (int(1e30))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{path} is not valid JSON ({err})") from None
    except OSError as err:
        raise ModelError(f"can't read {path} ({err.strerror})") from None


def _pipeline_class(folder: Path) -> type:
    """The diffusers pipeline class a folder's ``model_index.json`` names."""
    import diffusers

    path = folder / "model_index.json"
    index = _read_json(path)
    name = index.get("_class_name") if isinstance(index, dict) else None
    if not isinstance(name, str):
        raise ModelError(f'{path} names no pipeline class ("_class_name"); it is not a diffusers model_index.json')
    cls = getattr(diffusers, name, None)
    if not isinstance(cls, type):
        raise ModelError(f"{path} names the pipeline class {name!r}, which diffusers {diffusers.__version__} "
                         "doesn't have")
    for key, value in index.items():
        # a component is [library, class] ([null, null]: absent); other entries are the pipeline's config
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2 or value == [None, None]:
            continue
        if value[0] not in _LIBRARIES or not isinstance(value[1], str):
            raise ModelError(f"{path}: component {key!r} is {value!r}; fastdit loads components from "
                             f"{', '.join(_LIBRARIES)} only")
    return cls


def _text_limit(folder: Path, pipeline: type) -> int | None:
    """The most text tokens a call may ask for: the tokenizer's ``model_max_length`` when its config states one,
    else the pipeline's default ``max_sequence_length`` (``None``: neither is known)."""
    path = folder / "tokenizer" / "tokenizer_config.json"
    config = _read_json(path) if path.is_file() else None
    limit = config.get("model_max_length") if isinstance(config, dict) else None
    if _is_whole(limit) and limit < _NO_LIMIT:
        return limit
    param = inspect.signature(pipeline.__call__).parameters.get("max_sequence_length")
    default = None if param is None else param.default
    return default if _is_whole(default) else None


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_scale(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _check_call(path: Path, call: dict[str, Any], pipeline: type) -> None:
    """Every ``call`` key an argument of ``pipeline.__call__`` that fastdit leaves to the model, with a value of
    the kind it takes."""
    params = set(inspect.signature(pipeline.__call__).parameters) - {"self"}
    for key, value in call.items():
        if key not in params:
            raise ModelError(f"{path}: {key!r} in \"call\" is not an argument of {pipeline.__name__}.__call__")
        if key in _FASTDIT_SETS:
            raise ModelError(f"{path}: {key!r} can't be in \"call\": fastdit sets it on every call")
        if key in _ONE_PER_PROMPT and value != 1:
            raise ModelError(f"{path}: \"call\" {key} must be 1 (fastdit writes one video per prompt), got {value!r}")
        if key in _WHOLE and not _is_whole(value):
            raise ModelError(f"{path}: \"call\" {key} must be a whole number > 0, got {value!r}")
        if key in _SCALES and not _is_scale(value):
            raise ModelError(f"{path}: \"call\" {key} must be a finite number >= 0, got {value!r}")
    limit = _text_limit(path.parent, pipeline) if "max_sequence_length" in call else None
    if limit is not None and call["max_sequence_length"] > limit:
        raise ModelError(f"{path}: \"call\" max_sequence_length {call['max_sequence_length']} is more than the "
                         f"{limit} text tokens the model's tokenizer takes")


def _read_settings(folder: Path) -> dict[str, Any]:
    pipeline = _pipeline_class(folder)
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return {}
    settings = _read_json(path)
    if not isinstance(settings, dict) or not isinstance(settings.get("call", {}), dict):
        raise ModelError(f'{path} must be an object like {{"call": {{...}}, "fps": 16}}')
    if "fps" in settings and not _is_whole(settings["fps"]):
        raise ModelError(f"{path}: fps must be a whole number > 0, got {settings['fps']!r}")
    _check_call(path, settings.get("call", {}), pipeline)
    return settings


def resolve_model(name: str | None) -> ModelSource:
    """``sample`` (or ``tiny``, or nothing), an existing diffusers folder, or something shaped like a hub id
    ``org/name``."""
    from fastdit.patching.presets import PRESETS

    name = name or SAMPLE
    if name in SAMPLE_NAMES:
        folder = sample_dir()
        if not (folder / "model_index.json").is_file():
            raise ModelError(f"the bundled model is missing from {folder}; restore it from the repository "
                             f"(git checkout -- {folder}) or retrain it (python -m fastdit.toy.train_sample)")
        return ModelSource(name, str(folder), True, _read_settings(folder))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{name!r} is a folder but not a diffusers pipeline (it has no model_index.json)")
        return ModelSource(name, str(path), True, _read_settings(path))
    if path.exists():
        raise ModelError(f"{name!r} is a file; give a diffusers pipeline folder, a hub id or 'sample'")
    if _HUB_ID.match(name):
        return ModelSource(name, name, False)
    raise ModelError(f"unknown model {name!r}: not a folder here, and not a hub id like org/name. Use 'sample' "
                     f"(the bundled model), a local diffusers folder, or a hub id (presets: {', '.join(PRESETS)})")


def load_pipeline(source: ModelSource, device: str = "cpu", dtype: Any = None, lora: str | None = None) -> Any:
    """The diffusers pipeline of ``source`` on ``device``, with the LoRA weights at ``lora`` loaded when given;
    failures become a one-line :class:`ModelError`."""
    from diffusers import DiffusionPipeline

    try:
        with _quiet_loading():
            pipe = DiffusionPipeline.from_pretrained(source.location, torch_dtype=dtype,
                                                     local_files_only=source.local)
    except OSError as err:
        if source.local:
            raise ModelError(f"can't load the pipeline in {source.location}: {_first_line(err)}") from None
        from huggingface_hub import constants

        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _first_line(err)
        raise ModelError(
            f"can't load {source.location!r}: it is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"can't be downloaded ({why}). Download it with `hf download {source.location}` (older hubs: "
            f"`huggingface-cli download {source.location}`), or point HF_HOME at a cache that has it") from None
    if lora is not None:
        _load_lora(pipe, lora)
    return pipe.to(device)


def _load_lora(pipe: Any, path: str) -> None:
    if not hasattr(pipe, "load_lora_weights"):
        raise ModelError(f"--lora: {type(pipe).__name__} does not load LoRA weights")
    if not Path(path).exists():
        raise ModelError(f"--lora: {path!r} does not exist")
    try:
        with _quiet_loading():
            pipe.load_lora_weights(path)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelError(f"--lora: can't load {path!r} into {type(pipe).__name__}: {_first_line(err)}") from None


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Keep loading chatter off stderr, so a failure after it is still one line: per-component progress
    bars, "couldn't connect to the Hub" notices (the error message says it all), and the ``torch_dtype``
    rename warning of newer diffusers (older ones only know ``torch_dtype``). Download progress stays."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    level = diffusers_logging.get_verbosity()
    bars = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            yield
    finally:
        diffusers_logging.set_verbosity(level)
        if bars[0]:
            diffusers_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()


def _first_line(err: BaseException, limit: int = 160) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


def call_defaults(pipe: Any, source: ModelSource) -> dict[str, Any]:
    """The call arguments the model runs with when no flag overrides them: the pipeline's own signature
    defaults, then the model folder's fastdit.json."""
    params = inspect.signature(pipe.__call__).parameters
    defaults = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
    defaults.update(source.settings.get("call", {}))
    return defaults


def benchmark_call(pipe: Any, source: ModelSource, steps: int | None = None) -> dict[str, Any]:
    """The arguments a benchmark generates with: the model's defaults for length, size, steps, guidance and
    text length (``steps`` overrides the step count), so every configuration it compares runs the same call."""
    defaults = call_defaults(pipe, source)
    call = {k: defaults[k] for k in ("num_frames", "height", "width", "num_inference_steps", "guidance_scale",
                                     "max_sequence_length") if k in defaults}
    if steps is not None:
        call["num_inference_steps"] = steps
    return call


# pipelines that take any frame count: Allegro rounds the latent length up and crops the decoded video;
# Helios and SkyReels-V2's diffusion forcing generate in chunks of their own length
_ANY_FRAME_COUNT = ("AllegroPipeline", "HeliosPipeline", "HeliosPyramidPipeline", "SkyReelsV2DiffusionForcing")


def video_size_rule(pipe: Any) -> tuple[int | None, int | None]:
    """``(frame_step, size_multiple)`` of a video pipeline: frames must be ``k * frame_step + 1`` and height
    and width multiples of ``size_multiple`` (``None``: no rule known).

    Video VAEs compress time keeping the first frame (Wan, HunyuanVideo, CogVideoX: 4; LTX-Video, Cosmos: 8;
    Mochi: 6), and space by a factor the transformer's spatial patch multiplies (Wan: 8 x 2 = 16; LTX: 32 x 1),
    each under the name its pipeline gives it (:func:`fastdit.models.limits.vae_compression`); a pipeline
    that makes any number of frames has no frame rule. Sizes are also kept to multiples of 16, which
    ``WanPipeline.check_inputs`` demands whatever the patch (the bundled model's patch is 1x1x1) and every
    other diffusers video model's rule already implies.
    """
    from fastdit.models.limits import vae_compression

    step, spatial = vae_compression(pipe)
    if type(pipe).__name__.startswith(_ANY_FRAME_COUNT):
        step = None
    if spatial is None:
        return step, None
    patch = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "patch_size", None)
    spatial *= max(patch[1:]) if isinstance(patch, (tuple, list)) else (patch or 1)
    return step, math.lcm(spatial, 16)


def check_video_size(model: str, frames: int | None, height: int | None, width: int | None, *,
                     frame_step: int | None, multiple: int | None) -> None:
    """Reject sizes the model can't generate, naming the rule and the nearest valid values, instead of letting
    the pipeline silently round them."""
    if frames is not None and frame_step and (frames - 1) % frame_step:
        below = max(1, (frames - 1) // frame_step * frame_step + 1)
        raise ValueError(f"{model} needs frames = {frame_step}k+1 (its VAE compresses time by {frame_step} and "
                         f"keeps the first frame); got {frames}, try {below} or {below + frame_step}")
    for flag, value in (("height", height), ("width", width)):
        if value is not None and multiple and value % multiple:
            lower = max(multiple, value // multiple * multiple)
            raise ValueError(f"{model} needs height and width divisible by {multiple}; got {flag} {value}, try "
                             f"{lower} or {lower + multiple}")
