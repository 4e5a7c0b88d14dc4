"""``apply`` / ``remove`` / ``stats``: patch a diffusers pipeline (or a bare transformer/UNet) in one call.

A patch belongs to the model it patches, not to the pipeline it was applied through: pipelines that share a
transformer (``WanPipeline.from_pipe``) all report it, and ``remove`` through any of them restores it. Applying
again through any of them re-configures the shared model for all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import json
import math
import sys
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.methods import DEFAULT_BLOCK_SIZE, get_method
from fastdit.patching import ops
from fastdit.patching.components import find_denoisers, name_or_path
from fastdit.patching.dispatch import DispatchedAttention
from fastdit.patching.families import Family, SparseProcessorMixin, forward_input, read_timestep, unwrap_model
from fastdit.patching.families.base import install
from fastdit.patching.parallel import hand_back
from fastdit.patching.permute import PermuteOnce
from fastdit.patching.presets import resolve_preset
from fastdit.runtime.config import SparseConfig
from fastdit.runtime.context import RunContext
from fastdit.runtime.engine import SparseAttention, check_backend
from fastdit.runtime.stats import AttentionStats

__all__ = ["apply", "remove", "sparse", "stats", "is_patched", "patch_config", "set_observer", "rebuild"]

_STATE = "_fastdit_state"


@dataclass
class _PatchState:
    config: SparseConfig
    context: RunContext
    engine: SparseAttention
    # (module, its processor before apply, the processor apply put there)
    saved_processors: list[tuple[torch.nn.Module, Any, Any]] = field(default_factory=list)
    dispatched: list[DispatchedAttention] = field(default_factory=list)  # the generic path's modules
    hooks: list[Any] = field(default_factory=list)
    observers: list["_Observer"] = field(default_factory=list)  # the pre-hooks' state
    permuters: list[PermuteOnce] = field(default_factory=list)  # per model whose tokens are permuted once
    named: list[ops.Named] = field(default_factory=list)  # per model, what its traced operators name (ops.register)
    scheduler: Any = None
    models: list[torch.nn.Module] = field(default_factory=list)


def _held_models(target: Any) -> list[torch.nn.Module]:
    """The modules whose patch ``target`` reports: the model itself, or every module of a pipeline."""
    if isinstance(target, torch.nn.Module):
        return [unwrap_model(target)]
    components = getattr(target, "components", None)
    if not isinstance(components, dict):
        return []
    return [unwrap_model(c) for c in components.values() if isinstance(c, torch.nn.Module)]


def _states(target: Any) -> list[_PatchState]:
    """The patches on ``target``'s models, each once (one ``apply`` patches all denoisers of a pipeline)."""
    found: list[_PatchState] = []
    for model in _held_models(target):
        state = model.__dict__.get(_STATE)
        if state is not None and all(state is not other for other in found):
            found.append(state)
    return found


_Probe = tuple[torch.device, torch.dtype, int]


def _attention_probe(models: list[tuple[str, torch.nn.Module, Family]]) -> _Probe | None:
    """Device, dtype and head dim the sparse kernel will see, read from the first patched attention module
    (``None`` when it doesn't expose them). A model on the CPU (or offloaded to ``meta``) on a machine with
    CUDA is probed on CUDA: it may well move there before it runs."""
    _, model, family = models[0]
    _, module = next(iter(family.self_attention(model)), (None, None))
    param = next(module.parameters(), None) if module is not None else None
    heads = getattr(module, "heads", None)
    width = getattr(getattr(module, "to_q", None), "out_features", None)
    if param is None or not heads or not width:
        return None
    device = param.device
    if device.type in ("cpu", "meta") and torch.cuda.is_available():
        device = torch.device("cuda")
    elif device.type == "meta":
        device = torch.device("cpu")
    # weights stored in 8 bits (layerwise casting) are computed in bfloat16
    dtype = param.dtype if param.dtype.is_floating_point and param.dtype.itemsize >= 2 else torch.bfloat16
    return device, dtype, width // heads


def _check_processors(models: list[tuple[str, torch.nn.Module, Family]], force: bool) -> None:
    """Refuse to silently replace a processor the user installed (e.g. an IP-adapter or another library's)."""
    if force:
        return
    for name, model, family in models:
        for layer, module in family.self_attention(model):
            proc = module.processor
            if isinstance(proc, SparseProcessorMixin) or type(proc).__name__ in family.stock_processors:
                continue
            raise ValueError(f"{name} ({family.name}) layer {layer} uses a custom attention processor "
                             f"{type(proc).__name__} instead of {' / '.join(family.stock_processors)}; fastdit "
                             "would replace it. Pass force=True to replace it anyway.")


def apply(
    target: Any,
    method: str | SparseConfig | None = None,
    *,
    preset: str | None = "auto",
    dense_steps: int | None = None,
    dense_layers: int | None = None,
    entropy_scaling: bool = False,
    n_train: int | None = None,
    backend: str = "auto",
    block_size: int | None = None,
    order: str | None = None,
    tile: tuple[int, int, int] | None = None,
    force: bool = False,
    calibration: Any = None,
    reuse_calibration: bool = False,
    permute_once: bool = False,
    **method_options: Any,
) -> Any:
    """Replace the video/image self-attention of a diffusers pipeline (or transformer/UNet) with sparse attention.

    Calling ``apply`` again re-configures; ``remove`` restores the original processors exactly. Every argument
    is checked before anything is patched, the backend against the model's device, dtype and head dim too.
    The patch belongs to the model: pipelines sharing it (e.g. ``from_pipe``) all see it.

    Args:
        target: a diffusers pipeline (every supported denoiser is patched, e.g. Wan 2.2's ``transformer`` and
            ``transformer_2``) or a bare transformer/UNet.
        method: a registered method (``dense``, ``radial``, ``grat``, ``pyramid``, ``vmoba``, ...; default:
            the preset's, else ``radial``), or a :class:`~fastdit.SparseConfig` that holds every setting (then
            pass no other setting, only ``force``).
        preset: ``"auto"`` takes the published defaults for the model id (or its config, or its family) for
            everything not given here; a model id picks that preset; ``None`` uses none.
        dense_steps: the first steps run dense: a count (int) or a share of each call's steps (float in
            [0, 1]); a preset's published warm-up (12 of 50) is used as a share, so a 4-step model gets 1.
        dense_layers: the first transformer blocks run dense.
        entropy_scaling: multiply the softmax scale by ``sqrt(log N / log n_train)``.
        n_train: video/image tokens at the training resolution (default: the preset's or the model config's).
        backend: the kernel backend (``"auto"``, ``"torch"``, ``"triton"``, ``"flex"``).
        block_size: the kernel block in tokens (a power of two, 16 to 1024).
        order: the token order layouts are built in (default: the method's published one: ``raster`` for
            radial and vmoba, ``tiles`` for grat, ``gilbert`` for pyramid).
        tile: the ``(t, h, w)`` tile of the ``tiles`` order (GRAT's group), a whole number of blocks.
        force: replace a processor the user installed (an IP-adapter's, another library's) too.
        calibration: a ``fastdit.calibrate`` result or the path of its JSON file: the method and options per
            layer and head, the warm-up and the block size (``dense_steps`` / ``dense_layers`` given here still
            win); it must come from this model's architecture.
        reuse_calibration: run a calibration on another latent grid than the one it was measured on (warns).
        permute_once: for families and methods where it is exact (Wan; token orders that are the same for
            every layer), permute the tokens into the layout's order once per forward instead of moving q, k, v
            at every attention call (the same output; off by default).
        **method_options: the method's knobs (``fastdit info`` lists them).

    Returns:
        ``target``, patched.
    """
    if not isinstance(force, bool):  # "yes" (or "no"!) would be truthy: replacing a user's processor is opt-in
        raise TypeError(f"force must be True or False, got {force!r}")
    if isinstance(method, SparseConfig):
        given = {"preset": preset != "auto", "dense_steps": dense_steps is not None,
                 "dense_layers": dense_layers is not None, "entropy_scaling": entropy_scaling is not False,
                 "n_train": n_train is not None, "backend": backend != "auto", "block_size": block_size is not None,
                 "order": order is not None, "tile": tile is not None, "calibration": calibration is not None,
                 "reuse_calibration": reuse_calibration is not False, "permute_once": permute_once is not False}
        extra = sorted(name for name, passed in given.items() if passed) + sorted(method_options)
        if extra:
            raise ValueError(f"a SparseConfig holds every setting; don't pass {', '.join(extra)} with it")
        return _install(target, find_denoisers(target), method.checked(), force)
    models = find_denoisers(target)
    if calibration is not None:
        return _apply_calibration(target, models, calibration, reuse_calibration, method, method_options,
                                  preset=preset, dense_steps=dense_steps, dense_layers=dense_layers,
                                  entropy_scaling=entropy_scaling, n_train=n_train, backend=backend,
                                  block_size=block_size, order=order, tile=tile, force=force,
                                  permute_once=permute_once)
    _, model, family = models[0]
    found = resolve_preset(preset, family.name, name_or_path(target, model), getattr(model, "config", None),
                           len(models))
    method = method if method is not None else (found.method if found else "radial")
    settings = found.for_method(method) if found else None
    options = dict(settings.options) if settings else {}
    options.update(method_options)
    if block_size is None:  # the published setting's, the method's own (sol: 64), or the model preset's
        block_size = (settings.block_size if settings is not None and settings.block_size is not None
                      else get_method(method).block_size or (found.block_size if found else DEFAULT_BLOCK_SIZE))
    preset_tile = settings.tile if settings is not None else None
    if tile is None and order in (None, "tiles") and preset_tile is not None \
            and math.prod(preset_tile) % block_size == 0:  # a published group, if it holds whole blocks
        tile = preset_tile
    if n_train is None and found is not None:
        n_train = found.n_train
    if n_train is None and family.train_tokens is not None:
        n_train = family.train_tokens(model)
    config = SparseConfig.create(
        method, options,
        dense_steps=dense_steps if dense_steps is not None else (settings.warmup_share if settings else 0),
        dense_layers=dense_layers if dense_layers is not None else (settings.dense_layers if settings else 0),
        entropy_scaling=entropy_scaling,
        n_train=n_train,
        backend=backend,
        block_size=block_size,
        order=order,
        tile=tile,
        permute_once=permute_once,
    )
    return _install(target, models, config, force)


def _apply_calibration(target: Any, models: list[tuple[str, torch.nn.Module, Family]], calibration: Any,
                       reuse: bool, method: str | None, method_options: dict[str, Any], *, preset: str | None,
                       block_size: int | None, order: str | None, tile: Any, **fields: Any) -> Any:
    """``apply`` with a calibration's per-layer plans (checked against the model before anything changes)."""
    from fastdit.runtime.calibration_file import load_calibration

    if method is not None or method_options:
        raise ValueError("calibration= chooses the method and options of every layer and head; don't pass "
                         "method= or method options with it")
    if not isinstance(reuse, bool):
        raise TypeError("reuse_calibration must be True or False")
    found = load_calibration(calibration)
    if order is not None or tile is not None or block_size not in (None, found.block_size):
        raise ValueError(f"calibration= fixes the block size ({found.block_size}) and the token orders it was "
                         "measured with; don't pass block_size=, order= or tile= with it")
    heads = {(name, layer): int(getattr(module, "heads", 0) or 0)
             for name, model, family in models for layer, module in family.self_attention(model)}
    found.check_model([(name, model) for name, model, _ in models], heads)
    force = fields.pop("force")
    n_train = fields.pop("n_train")
    if n_train is None:
        resolved = resolve_preset(preset, models[0][2].name, name_or_path(target, models[0][1]),
                                  getattr(models[0][1], "config", None), len(models))
        n_train = resolved.n_train if resolved is not None else None
    config = SparseConfig.create(
        found.main_method, {},
        dense_steps=fields["dense_steps"] if fields["dense_steps"] is not None else found.dense_share,
        dense_layers=fields["dense_layers"] if fields["dense_layers"] is not None else 0,
        entropy_scaling=fields["entropy_scaling"], n_train=n_train, backend=fields["backend"],
        block_size=found.block_size, layers=found.plans(), grid=tuple(found.grid), reuse_grid=reuse,
        permute_once=fields["permute_once"])
    return _install(target, models, config, force)


def _install(target: Any, models: list[tuple[str, torch.nn.Module, Family]], config: SparseConfig,
             force: bool) -> Any:
    """Patch every self-attention module of ``models`` with ``config`` (after the last checks)."""
    _check_processors(models, force)
    probe = _attention_probe(models)
    if probe is not None:
        check_backend(config, *probe)
        plans = {plan.method: plan for plan in (config.layers or {}).values() if not plan.dense}
        for plan in plans.values():  # calibrated layers may use other methods than the main one
            options = next(h for h in plan.heads if h is not None)
            check_backend(dataclasses.replace(config, method=plan.method, options=options), *probe)
    remove(target)  # re-configure: never wrap our own processors (nor leave a shared model's old patch behind)

    context = RunContext()
    state = _PatchState(config, context, SparseAttention(config, context))
    patch = uuid.uuid4().hex  # names this apply call in the specs its traced operators carry
    for name, model, family in models:
        observer = _patch_model(state, name, model, family, _spec(patch, name, model, family, config))
        observer.wrap_grid_method(model)
        state.hooks.append(model.register_forward_pre_hook(observer, with_kwargs=True))
        state.hooks.append(model.register_forward_hook(observer.done, always_call=True))
    scheduler = getattr(target, "scheduler", None)
    if scheduler is not None and hasattr(scheduler, "set_timesteps"):
        scheduler.set_timesteps = _new_run_signal(scheduler, context)
        state.scheduler = scheduler
    return target


def _patch_model(state: _PatchState, name: str, model: torch.nn.Module, family: Family, spec: str) -> "_Observer":
    """Install ``state``'s processors on every self-attention module of ``model``, named for the operators by
    ``spec``; returns its pre-hook (registered by the caller)."""
    patched = []
    for layer, module in family.self_attention(model):
        if family.processor is None:  # the generic path: the stock processor stays, its dispatch is ours
            if type(module.processor).__name__ not in family.stock_processors:  # force=True: a stock one
                stock = _stock_processor(model, module, family)
                state.saved_processors.append((module, module.processor, stock))
                _set_processor(module, stock)
            handler = DispatchedAttention(module.processor, state.engine, layer, name, family)
            handler.take(module)
            state.dispatched.append(handler)
        else:
            handler = family.processor(module.processor, state.engine, layer, name)
            state.saved_processors.append((module, module.processor, handler))
            _set_processor(module, handler)
            install(module, handler)
        patched.append((layer, module, handler))
    if family.block_tokens is not None and state.config.permute_once and patched:
        state.permuters.append(PermuteOnce(family.block_tokens, state.engine, model, patched[0][2]))
    observer = _Observer(family, state.context, name, model, patched)
    state.observers.append(observer)
    state.models.append(model)
    setattr(model, _STATE, state)
    state.named.append(ops.register(spec, [observer, *(handler for _, _, handler in patched)]))
    return observer


def _spec(patch: str, name: str, model: torch.nn.Module, family: Family, config: SparseConfig) -> str:
    """What the traced operators of denoiser ``name`` carry to run without this process (JSON): the apply call,
    the family, the configuration, and the model's class and diffusers config (``None`` when it has none)."""
    denoiser = None
    if hasattr(model, "to_json_string"):
        cls = type(model)
        denoiser = {"class": f"{cls.__module__}:{cls.__qualname__}", "config": json.loads(model.to_json_string())}
    return json.dumps({"patch": patch, "model": name, "family": family.name, "config": config.to_dict(),
                       "denoiser": denoiser}, sort_keys=True)


# Patches rebuilt from the specs of traced operators that run in a process without them (spec -> the named
# objects; patch -> its state, shared by the denoisers of one apply call as their live patch shares it).
_REBUILT: dict[str, ops.Named] = {}
_REBUILT_STATES: dict[str, _PatchState] = {}


def rebuild(spec: str) -> ops.Named:
    """The pre-hook state and processors a traced operator's ``spec`` names, built once per process on a
    weightless (``meta``) copy of the denoiser made from its class and config: what an exported patched model
    runs on in a process that didn't patch it. Its step count and stats are its own."""
    if spec in _REBUILT:
        return _REBUILT[spec]
    from fastdit.patching.families.registry import families

    data = json.loads(spec)
    family = families().get(data["family"])
    if family is None:
        raise RuntimeError(f"fastdit: this traced model was patched as a {data['family']!r} model, a family this "
                           "process doesn't know; register it (import the code that does) before running it")
    if data["denoiser"] is None:
        raise RuntimeError(f"fastdit: this traced model's {data['model']} has no diffusers config to rebuild its "
                           "patch from; run it in the process that patched it")
    module, _, qualname = data["denoiser"]["class"].partition(":")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    with torch.device("meta"):
        model = cls.from_config(data["denoiser"]["config"])
    state = _REBUILT_STATES.get(data["patch"])
    if state is None:
        config = SparseConfig.from_dict(data["config"])
        context = RunContext()
        state = _REBUILT_STATES[data["patch"]] = _PatchState(config, context, SparseAttention(config, context))
    _patch_model(state, data["model"], model, family, spec)
    _REBUILT[spec] = state.named[-1]
    return _REBUILT[spec]


ops.REBUILD = rebuild


def _stock_processor(model: torch.nn.Module, module: torch.nn.Module, family: Family) -> Any:
    """A new instance of the processor diffusers installs on ``module`` by default: the module's default class
    when it is one of the family's stock classes (a module class shared across models may name another model's),
    else the family's first stock class from the model's own diffusers module, or from the diffusers module
    that defines it (a model built from another family's blocks, as HunyuanVideo-Framepack is, may not import
    it)."""
    default = getattr(module, "_default_processor_cls", None)
    name = family.stock_processors[0]
    if default is None or default.__name__ not in family.stock_processors:
        default = getattr(sys.modules.get(type(model).__module__), name, None)
    if default is None:
        default = next((getattr(m, name) for m_name, m in list(sys.modules.items())
                        if m_name.startswith("diffusers.") and isinstance(getattr(m, name, None), type)), None)
    if default is None:
        raise ValueError(f"fastdit can't find {family.stock_processors[0]} to put in place of the custom processor "
                         f"on {type(module).__name__}; remove that processor before apply")
    return default()


def _set_processor(module: torch.nn.Module, processor: Any) -> None:
    if hasattr(module, "set_processor"):
        module.set_processor(processor)
    else:  # e.g. MochiAttention has no set_processor
        module.processor = processor


class _Observer:
    """The forward pre-hook of one patched denoiser: records the latent grid, the denoising step and the call.

    Eager, it reads the inputs directly. Traced (``torch.compile`` of the whole model, ``torch.export``), the
    same bookkeeping runs inside the ``fastdit::observe_forward`` operator, so neither the step counting nor
    the timestep's value (data-dependent) enters the graph: no graph break, no guard, exportable.
    """

    def __init__(self, family: Family, context: RunContext, name: str, model: torch.nn.Module,
                 modules: list[tuple[int, torch.nn.Module, SparseProcessorMixin]]) -> None:
        self.family, self.context, self.name = family, context, name
        self.model = weakref.ref(model)
        self.modules = modules  # (layer, attention module, fastdit's handler) of every module apply patched
        self.input_names = tuple(dict.fromkeys((*family.grid_inputs, family.timestep_arg)))
        self.handle: torch.Tensor | None = None  # set with spec by ops.register
        self.spec = ""
        self.method_grid: TokenGrid | None = None  # the last grid_method call's (Family.grid_method)

    def wrap_grid_method(self, model: torch.nn.Module) -> None:
        """Wrap the model method the family reads its grid from (``Family.grid_method``), on ``model`` itself:
        each call records the grid of its arguments for the forwards after it, and returns what it returned."""
        name = self.family.grid_method
        if name is None:
            return
        method = getattr(model, name)
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            self.method_grid = self.family.grid(self.model(), (), dict(bound.arguments))
            return method(*args, **kwargs)

        wrapped._fastdit_wrapper = True
        setattr(model, name, wrapped)

    def unwrap_grid_method(self) -> None:
        """Undo :meth:`wrap_grid_method`: the model's method is its class's again."""
        model, name = self.model(), self.family.grid_method
        if model is not None and name is not None and getattr(model.__dict__.get(name), "_fastdit_wrapper", False):
            delattr(model, name)

    def __call__(self, model: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = {name: forward_input(model, args, kwargs, name) for name in self.input_names}
        if torch.compiler.is_compiling():
            self.context.token = ops.observe_forward(self.handle, self.spec, *ops.pack_inputs(inputs))
        else:
            self.context.enter_forward()
            self.context.token = None
            self.observe(inputs)
            device = next((x.device for x in inputs.values() if isinstance(x, torch.Tensor)), torch.device("cpu"))
            self.context.start_forward(device)

    def done(self, model: torch.nn.Module, args: tuple, output: Any) -> None:
        """The forward hook (also called when the forward raised): this thread's call has left the model."""
        if not torch.compiler.is_compiling():
            self.context.end_forward()
            self.context.exit_forward()

    def observe(self, inputs: dict[str, Any]) -> None:
        """The bookkeeping itself, on the forward inputs named by ``input_names``."""
        model = self.model()
        family = self.family
        self.context.grid = self.method_grid if family.grid_method is not None else family.grid(model, (), inputs)
        # a layer whose processor a loader or the user replaced (an IP-adapter) is no longer fastdit's to
        # report: without this, stats would count its calls as served by a cache
        self.context.expect_layers(self.name, [layer for layer, module, handler in self.modules
                                               if handler.installed_on(module)])
        self.context.observe_forward(self.name, read_timestep(self.family, model, (), inputs))


def _new_run_signal(scheduler: Any, context: RunContext):
    """Wrap the scheduler's ``set_timesteps`` (called once at the start of every pipeline call): a new run
    begins, and its number of steps sizes a warm-up given as a share of the steps."""
    set_timesteps = scheduler.set_timesteps

    @functools.wraps(set_timesteps)  # keeps the signature diffusers inspects for `sigmas` / `timesteps`
    def wrapped(*args, **kwargs):
        context.begin_run()
        result = set_timesteps(*args, **kwargs)
        steps = getattr(scheduler, "num_inference_steps", None) or len(getattr(scheduler, "timesteps", ()) or ())
        context.schedule = int(steps) or None
        return result

    wrapped._fastdit_wrapper = True
    return wrapped


def is_patched(target: Any) -> bool:
    """Whether fastdit patches ``target`` or, for a pipeline, any of its models (also through another
    pipeline that shares them)."""
    return bool(_states(target))


def remove(target: Any) -> Any:
    """Restore the original attention processors, hooks and scheduler exactly; for a pipeline, of every
    patched model it holds, whichever pipeline patched it. A no-op when not patched.

    Only fastdit's processors are replaced: one the user (or a diffusers loader such as ``load_ip_adapter``)
    set after ``apply`` stays where it is.

    Args:
        target: the pipeline or model ``apply`` patched (or another pipeline sharing its models).

    Returns:
        ``target``, as it was before ``apply``.
    """
    for state in _states(target):
        for handler in reversed(state.dispatched):
            handler.give_back()
        for module, processor, installed in reversed(state.saved_processors):
            # fastdit's processor (or one a loader re-created from its class) goes; one the user set stays
            if isinstance(module.processor, SparseProcessorMixin) or type(module.processor) is type(installed):
                hand_back(module.processor, processor)  # enable_parallelism after apply set them on ours
                _set_processor(module, processor)
            install(module, None)
        for handle in state.hooks:
            handle.remove()
        for permuter in state.permuters:
            permuter.remove()
        for observer in state.observers:
            observer.unwrap_grid_method()
        scheduler = state.scheduler
        if scheduler is not None and getattr(scheduler.__dict__.get("set_timesteps"), "_fastdit_wrapper", False):
            del scheduler.set_timesteps
        for model in state.models:
            if model.__dict__.get(_STATE) is state:
                delattr(model, _STATE)
    return target


@contextlib.contextmanager
def sparse(target: Any, method: str | SparseConfig | None = None, **settings: Any) -> Iterator[Any]:
    """``apply`` for the ``with`` block only: ``remove`` runs when it ends, also when it raises.

    ``with fastdit.sparse(pipe, "radial"): video = pipe(prompt).frames`` is ``apply`` then ``remove``, as
    diffusers' ``attention_backend(...)`` scopes a backend. A target fastdit already patches is refused: leaving
    the block would remove that patch too (``remove`` it first, or re-configure it with ``apply``).

    Args:
        target: a diffusers pipeline or a bare transformer/UNet, not patched.
        method: as in :func:`apply` (a method name or a :class:`~fastdit.SparseConfig`).
        **settings: every other argument of :func:`apply` (``preset``, ``dense_steps``, method options, ...).

    Returns:
        A context manager that yields ``target``, patched; on exit it is restored exactly.
    """
    if is_patched(target):
        raise ValueError(f"{type(target).__name__} is already patched by fastdit ({patch_config(target).method}); "
                         "leaving the with block would remove that patch too: fastdit.remove it first, or "
                         "re-configure it with fastdit.apply")
    apply(target, method, **settings)
    try:
        yield target
    finally:
        remove(target)


def patch_config(target: Any) -> SparseConfig:
    """The configuration ``target`` is patched with (presets and defaults resolved)."""
    states = _states(target)
    if not states:
        raise ValueError(f"{type(target).__name__} is not patched by fastdit; call fastdit.apply first")
    return states[0].config


def set_observer(target: Any, observer: Any) -> None:
    """Have ``observer(call: fastdit.runtime.engine.AttentionCall)`` see every self-attention call of the patched
    ``target`` before it runs (``None``: stop); ``fastdit.calibrate`` measures layouts this way."""
    states = _states(target)
    if not states:
        raise ValueError(f"{type(target).__name__} is not patched by fastdit; call fastdit.apply first")
    for state in states:
        state.engine.observer = observer


def restart_stats(target: Any) -> None:
    """Start ``target``'s record afresh, as a new pipeline call does, but keep what stateful methods carry from
    step to step (SVG2's centroids, from which its next k-means starts): so a benchmark's next forward is timed and
    recorded as a later step of a run, not as its first.

    Args:
        target: a patched pipeline or model.
    """
    for state in _states(target):
        state.context.begin_run(keep_method_state=True)


def stats(target: Any) -> AttentionStats:
    """What the last pipeline call ran: per step and layer, dense, sparse or served by a diffusers cache, why,
    the density used and the time of the attention calls (kernel, layout build, permutation, the rest); per step,
    the time inside the denoiser's forwards. On a GPU, reading them waits for the timed work to finish.

    Args:
        target: a patched pipeline or model (for a pipeline, its first patched denoiser's record).

    Returns:
        The :class:`~fastdit.AttentionStats` of the last call (``str()`` of it is a one-line summary;
        ``mean_density()``, ``sparse_fraction()``, ``per_layer_density()``, ``to_dict()``).
    """
    states = _states(target)
    if not states:
        raise ValueError(f"{type(target).__name__} is not patched by fastdit; call fastdit.apply first")
    return states[0].context.settle()
