"""What a model family is, and the pieces its processors share.

A :class:`Family` says how to recognise a denoiser (transformer or UNet), which of its attention modules are
video/image self-attention, how to read the latent grid and the timestep from its forward inputs, and, only
where the stock processor calls SDPA itself, which fastdit processor replaces it. Such processors read only
public attention-module attributes (``to_q``, ``norm_q``, ``to_out`` ...) and never touch a model's
``forward``; the small helpers below are the pieces they share (projections, head layout, joint text/video
split, the engine call), and the grid rules several families share.
"""

from __future__ import annotations

import functools
import inspect
import math
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching import ops
from fastdit.patching.parallel import parallel_attention, parallel_config

__all__ = ["Family", "SideKeys", "BlockTokens", "SparseProcessorMixin", "forward_input", "replace_input",
           "read_timestep", "unwrap_model", "install", "Rotary", "latent_grid", "grid_with_conditioning",
           "history_tokens", "attention_in_blocks", "double_then_single", "qkv_projections", "added_projections",
           "heads_first", "heads_merged", "qk_norm", "split_text"]


@dataclass(frozen=True)
class SideKeys:
    """Where the keys sit that a model's own mask (a flex ``BlockMask``) adds to a video self-attention call,
    and which queries see them, so that fastdit can take such a call.

    The call's first ``video`` queries are the video's, and so are its ``video`` keys from ``video_keys`` on
    (``0``: the keys start with the video's; more where side keys come first, a KV cache); every video query
    attends every video key; queries past ``video`` are padding whose rows the model drops. The video queries
    ``rows`` fall into ``groups`` equal consecutive runs, and run ``i`` also attends run ``i`` of ``groups`` equal
    runs of the side keys ``keys`` (one slice, or several taken in order as one sequence) (Wan-Animate 2: frame
    ``f`` of the video also attends frame ``f - 1`` of its reference video). No other key is attended: fastdit
    runs the video part through the engine, the side keys dense, and merges the two by their log-sum-exp
    (:meth:`fastdit.patching.dispatch.DispatchedAttention.side`).
    """

    video: int
    rows: slice
    keys: slice | tuple[slice, ...]
    groups: int = 1
    video_keys: int = 0

    @property
    def parts(self) -> tuple[slice, ...]:
        """The side keys' slices, in order."""
        return self.keys if isinstance(self.keys, tuple) else (self.keys,)

    @property
    def count(self) -> int:
        """How many side keys there are."""
        return sum(part.stop - part.start for part in self.parts)


@dataclass(frozen=True)
class BlockTokens:
    """Where a family's transformer blocks take their tokens, so they can be permuted once per forward.

    Exact only for a family whose blocks treat tokens one by one except in self-attention over exactly the
    video tokens (no text, no mask: permuting queries and keys alike permutes its output alike) and attentions
    whose queries are the tokens (cross-attention to the text); what a block needs per token (RoPE tables, a
    per-token timestep embedding) is named here and permuted with the tokens.

    ``blocks``: the model attribute that lists the blocks (the first one's input is permuted, the last one's
    output restored); ``hidden_states``: the block argument carrying the ``[B, S, C]`` token sequence (the
    blocks return it); ``per_token``: ``(argument, ndim)`` of each other per-token argument, a tensor or a tuple
    of tensors with tokens on axis 1, permuted when it has ``ndim`` dims (a Wan 2.1 timestep embedding
    ``[B, 6, C]`` is shared by all tokens, Wan 2.2 TI2V's ``[B, S, 6, C]`` is per token).
    """

    blocks: str
    hidden_states: str = "hidden_states"
    per_token: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Family:
    """How fastdit patches one model family: data, plus a processor only where diffusers' own calls SDPA directly.

    ``self_attention(model)`` yields ``(layer, module)`` for every attention module to sparsify (several
    modules may share a layer index when a block holds more than one self-attention);
    ``grid(model, args, kwargs)`` reads the latent token grid (and, for joint models, the text length) from the
    denoiser's forward inputs; ``processor`` is ``None`` for a family whose stock processor calls
    ``dispatch_attention_fn`` (the generic path, :mod:`fastdit.patching.dispatch`: the stock processor stays
    and fastdit takes the call where it is dispatched), else ``processor(original, engine, layer,
    model_name)`` builds the replacement processor; ``stock_processors`` names the processor classes diffusers
    installs by default (anything else was set by the user and is only touched with ``force=True``);
    ``train_tokens(model)`` is the self-attention token count at the training resolution when the model's
    config states it (``None`` otherwise), used for entropy scaling when no preset knows it;
    ``grid_inputs`` names the forward inputs ``grid`` reads (a compiled model hands the pre-hook only these);
    ``timestep_rises`` says the model's timestep input goes *up* during a run (Z-Image and Ideogram 4 take the
    share of the way to the clean image, 0 at pure noise), so :func:`read_timestep` negates it into a falling
    noise level: the run context counts steps from falling values and reads a rise as a new run;
    ``text_position`` is where a joint sequence holds its text tokens on the generic path (``"before"``,
    ``"around"`` or ``"after"`` the video tokens; how many comes from ``grid``); ``text_keys_only``: the text enters
    the self-attention as keys and values only (the image queries attend image and text keys, the text has no
    queries there: Nucleus-MoE, PRX), at ``text_position`` in the key sequence; ``call_grid(grid, tokens)`` is, on
    the generic path, the grid of a self-attention call over ``tokens`` tokens when the model attends over other
    grids than the recorded ``grid`` (a UNet's lower levels; ``None`` there: the call runs dense, "grid mismatch"),
    where a hand-written processor overrides :meth:`SparseProcessorMixin.call_grid` instead;
    ``context_parallel_joined``: diffusers' context-parallel plan splits the model's joined sequence (non-video and
    video tokens together) into contiguous shards, where a joint model like Flux splits text and video apart;
    ``grid_method`` names a model method the pipeline calls before each forward, where the forward's own inputs
    hold no grid (the Sana-WM refiner's ``build_rotary_emb_for_absolute_positions``: packed tokens and a RoPE in,
    no sizes): ``apply`` wraps that method on the model (``remove`` restores it), ``grid`` reads the arguments of
    each of its calls (by name) instead of the forward's inputs, and a forward runs on the grid of the last call;
    ``side_keys(grid, queries, keys)`` is, on the generic path, the :class:`SideKeys` of a self-attention call
    over ``queries`` queries and ``keys`` keys that the stock processor sends with a backend and mask of its own
    (``None``: that call runs as the model sent it); with it fastdit takes that call too;
    ``keeps_backend``: (with ``side_keys``) the stock processor accepts only the backend it names itself
    (AnyFlow-FAR's raises on any other), so fastdit leaves its ``_attention_backend`` alone and takes its calls by
    the module's pre-hook and the wrapped ``dispatch_attention_fn`` alone.
    ``block_tokens``: where its blocks take their tokens, for a family whose tokens can be permuted once per
    forward into a layout's order (``None``: they can't, the engine moves q, k, v at every call). ``models``,
    ``sparsified``, ``untouched`` and ``grid_rule`` say it in words (markdown) for ``fastdit info`` and the
    README's model table, which are made from them.
    """

    name: str
    model_classes: tuple[str, ...]
    self_attention: Callable[[torch.nn.Module], Iterator[tuple[int, torch.nn.Module]]]
    grid: Callable[[torch.nn.Module, tuple, dict], TokenGrid | None]
    processor: Callable[..., Any] | None
    stock_processors: tuple[str, ...]
    timestep_arg: str = "timestep"
    timestep_rises: bool = False
    train_tokens: Callable[[torch.nn.Module], int | None] | None = None
    grid_inputs: tuple[str, ...] = ("hidden_states",)
    text_position: str = "after"
    text_keys_only: bool = False
    context_parallel_joined: bool = False
    call_grid: Callable[[TokenGrid, int], TokenGrid | None] | None = None
    block_tokens: BlockTokens | None = None
    grid_method: str | None = None
    side_keys: Callable[[TokenGrid, int, int], SideKeys | None] | None = None
    keeps_backend: bool = False
    models: str = ""
    sparsified: str = ""
    untouched: str = "—"
    grid_rule: str = ""


Rotary = tuple[torch.Tensor, torch.Tensor]  # (cos, sin) tables processors receive for RoPE

def unwrap_model(model: Any) -> Any:
    """The module under a ``torch.compile`` wrapper (``OptimizedModule._orig_mod``), else ``model`` itself."""
    return getattr(model, "_orig_mod", model)


@functools.lru_cache(maxsize=None)
def _forward_parameters(cls: type) -> tuple[str, ...]:
    return tuple(inspect.signature(cls.forward).parameters)[1:]  # without self


def forward_input(model: torch.nn.Module, args: tuple, kwargs: dict, name: str) -> Any:
    """The forward argument ``name`` of a call seen by a pre-hook, passed by keyword or by position.

    Reads the class's ``forward`` signature, not the instance attribute, because offloading hooks
    (accelerate) replace ``model.forward`` with a ``*args, **kwargs`` wrapper.
    """
    if name in kwargs:
        return kwargs[name]
    params = _forward_parameters(type(model))
    index = params.index(name) if name in params else len(args)
    return args[index] if index < len(args) else None


def replace_input(module: torch.nn.Module, args: tuple, kwargs: dict, name: str,
                  fn: Callable[[Any], Any]) -> tuple[tuple, dict]:
    """What a pre-hook returns to call ``module`` with its forward argument ``name`` replaced by ``fn`` of it.

    Args:
        module: the module whose pre-hook (``with_kwargs=True``) got ``args, kwargs``.
        args, kwargs: the call's arguments.
        name: the forward argument, passed by keyword or by position (absent: nothing changes).
        fn: the new value from the old one.

    Returns:
        ``(args, kwargs)`` of the call with that argument replaced.
    """
    if name in kwargs:
        return args, {**kwargs, name: fn(kwargs[name])}
    params = _forward_parameters(type(module))
    index = params.index(name) if name in params else len(args)
    if index >= len(args):
        return args, kwargs
    return (*args[:index], fn(args[index]), *args[index + 1:]), kwargs


def read_timestep(family: Family, model: torch.nn.Module, args: tuple, kwargs: dict) -> float | None:
    """The noise level of a forward call, as one float that falls during a run: the denoising timestep (the
    largest, for per-token timesteps), or, for a family whose timestep rises, its negation (the smallest
    timestep is then the noisiest token's). Only its order matters: the run context counts distinct values
    as steps and reads a rise as a new run."""
    t = forward_input(model, args, kwargs, family.timestep_arg)
    if t is None:
        return None
    sign = -1.0 if family.timestep_rises else 1.0
    return float((sign * t.detach().float()).max()) if isinstance(t, torch.Tensor) else sign * float(t)


def latent_grid(x: Any, patch: tuple[int, int, int], frames_dim: int = 2) -> TokenGrid | None:
    """Token grid of a latent ``[B, C, F, H, W]`` (or ``[B, F, C, H, W]`` with ``frames_dim=1``, or an image
    ``[B, C, H, W]``) after a ``(t, h, w)`` patchify; ``None`` when ``x`` is not such a tensor."""
    if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5):
        return None
    frames = x.shape[frames_dim] if x.ndim == 5 else 1
    pt, ph, pw = patch
    return TokenGrid(max(frames // pt, 1), x.shape[-2] // ph, x.shape[-1] // pw)


def attention_in_blocks(attention: str, *block_lists: str) -> Callable[[torch.nn.Module],
                                                                     Iterator[tuple[int, torch.nn.Module]]]:
    """A family's ``self_attention``: ``(layer, block.<attention>)`` for every block of the model's lists
    ``block_lists`` (attributes; a list the model lacks counts as empty), layers numbered across the lists."""

    def modules(model: torch.nn.Module) -> Iterator[tuple[int, torch.nn.Module]]:
        blocks = [block for name in block_lists for block in getattr(model, name, ())]
        for i, block in enumerate(blocks):
            yield i, getattr(block, attention)

    return modules


# the self-attention of Flux, HunyuanVideo and the models built like them: double-stream blocks, then single
double_then_single = attention_in_blocks("attn", "transformer_blocks", "single_transformer_blocks")


def grid_with_conditioning(model: torch.nn.Module, args: tuple, kwargs: dict, patch: tuple[int, int, int],
                           conditioning: tuple[str, ...]) -> TokenGrid | None:
    """The latent grid of ``hidden_states`` after a ``(t, h, w)`` patchify, with the tokens of the forward inputs
    ``conditioning`` (``[B, L, C]`` each; absent ones count 0) as its text: for joint models that append every
    conditioning token after the video (HunyuanVideo and the models built like it)."""
    grid = latent_grid(forward_input(model, args, kwargs, "hidden_states"), patch)
    if grid is None:
        return None
    tokens = [forward_input(model, args, kwargs, name) for name in conditioning]
    text = sum(x.shape[1] for x in tokens if isinstance(x, torch.Tensor))
    return TokenGrid(grid.t, grid.h, grid.w, text_tokens=text, text_position="after")


def history_tokens(model: torch.nn.Module, args: tuple, kwargs: dict, patch: tuple[int, int, int],
                   history: tuple[tuple[str, str, int], ...]) -> int:
    """Tokens of the history latents a frame-packing model (Helios, HunyuanVideo-Framepack) puts before the
    video: for each ``(latents, indices, scale)`` forward-input pair present, its ``[B, C, F, H, W]`` latents
    patchified at ``scale`` times ``patch``, after the model pads them to whole strides."""
    count = 0
    for latents_name, indices_name, scale in history:
        latents = forward_input(model, args, kwargs, latents_name)
        if isinstance(latents, torch.Tensor) and forward_input(model, args, kwargs, indices_name) is not None:
            count += math.prod(-(-n // (p * scale)) for n, p in zip(latents.shape[2:], patch))
    return count


# The fastdit processor installed on each patched attention module, for processors that a diffusers loader
# re-creates with no arguments (see SparseProcessorMixin.__init__).
_INSTALLED: "weakref.WeakKeyDictionary[torch.nn.Module, SparseProcessorMixin]" = weakref.WeakKeyDictionary()


def install(module: torch.nn.Module, processor: "SparseProcessorMixin | None") -> None:
    """Record (or, with ``None``, forget) the fastdit processor ``apply`` installed on ``module``."""
    if processor is None:
        _INSTALLED.pop(module, None)
    else:
        _INSTALLED[module] = processor


class SparseProcessorMixin:
    """Shared state of fastdit processors: the stock processor they replace, the engine, their layer.

    diffusers' loaders re-create the processor of every attention they don't adapt with its class and no
    arguments (``load_ip_adapter`` does so for UNet ``attn1`` and Flux single-stream blocks). Such an instance
    starts empty and, on its first call, takes over the state of the processor fastdit installed on the
    module it is called for, so that attention stays sparse.
    """

    def __init__(self, original: Any = None, engine: Any = None, layer: int = 0, model_name: str = "") -> None:
        self.original = original
        self.engine = engine
        self.layer = layer
        self.model_name = model_name
        # what names this processor in traced graphs, set by apply (fastdit.patching.ops.register)
        self.handle: torch.Tensor | None = None
        self.spec = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is None:
            return

        @functools.wraps(call)  # keeps the signature: legacy ``Attention.forward`` filters kwargs by it
        def __call__(self, attn, *args, **kwargs):
            if self.engine is None:
                self._adopt(attn)
            return call(self, attn, *args, **kwargs)

        cls.__call__ = __call__

    def _adopt(self, attn: torch.nn.Module) -> None:
        installed = _INSTALLED.get(attn)
        if installed is None:
            raise RuntimeError(f"{type(self).__name__} was created without arguments for an attention module "
                               "fastdit doesn't patch (or no longer patches); use fastdit.apply to install it")
        self.__dict__.update(installed.__dict__)

    # diffusers reads these on processors (attention backend dispatch, context parallelism)
    _attention_backend = None
    _parallel_config = None

    def user_backend(self) -> Any:
        """The diffusers attention backend the user set for dense attention (on this processor, or on the stock
        processor it replaced; ``None``: diffusers' active one)."""
        return self._attention_backend or getattr(self.original, "_attention_backend", None)

    def installed_on(self, module: torch.nn.Module) -> bool:
        """Whether ``module``'s self-attention still runs through fastdit (a loader or the user may have
        replaced its processor since ``apply``)."""
        return isinstance(module.processor, SparseProcessorMixin)

    @property
    def grid(self) -> TokenGrid | None:
        """The grid the denoiser's pre-hook recorded for the current forward call."""
        return self.engine.context.grid

    def call_grid(self, tokens: int) -> TokenGrid | None:
        """The grid of an attention over ``tokens`` tokens when it differs from the model input's (``None``:
        the recorded one); a UNet level overrides this."""
        return None

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
               text_tokens: int | None = 0, text_position: str = "after", dispatch: bool = False) -> torch.Tensor:
        """Self-attention of ``[B, H, S, D]`` tensors (the layout of processors that call SDPA directly).

        ``text_tokens=None``: the text length the pre-hook recorded (blocks that get text and video already
        joined). ``dispatch``: dense calls go through ``dispatch_attention_fn`` (see :meth:`attend_bshd`).
        Under ``torch.compile`` or ``torch.export`` this is one call of the ``fastdit::self_attention``
        operator, which runs :meth:`run` eagerly, so fastdit adds no graph break and no guard.
        """
        if torch.compiler.is_compiling():
            return ops.self_attention(q, k, v, attn_mask, self.engine.context.token, self.handle, self.spec,
                                      text_tokens, text_position, dispatch)
        return self.run(q, k, v, attn_mask, text_tokens, text_position, dispatch)

    def attend_bshd(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, text_tokens: int | None = 0,
                    text_position: str = "after") -> torch.Tensor:
        """Self-attention of ``[B, S, H, D]`` tensors, for processors whose stock version calls
        ``dispatch_attention_fn``.

        Dense calls go through ``dispatch_attention_fn`` too, with the attention backend and parallel config
        the user set (on this processor, or on the stock one before ``apply``), so dense warm-up steps keep
        e.g. flash or sage attention. The sparse path reads a 2-D ``[B, S_kv]`` mask as diffusers' native
        backend does: a key mask.
        """
        out = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask, text_tokens,
                          text_position, dispatch=True)
        return out.transpose(1, 2)

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
            text_tokens: int | None, text_position: str, dispatch: bool) -> torch.Tensor:
        """The engine call behind :meth:`attend`, always eager (the operator's body)."""
        config = parallel_config(self)
        if config is not None:  # ranks hold slices of the sequence: attention must exchange them
            return parallel_attention(self, q, k, v, attn_mask, text_tokens, text_position, dispatch, config)
        if text_tokens is None:
            text_tokens = self.grid.text_tokens if self.grid is not None else 0
        dense = None
        if dispatch:
            dense = self._dispatch_dense(attn_mask)
            if attn_mask is not None and attn_mask.ndim == 2 and attn_mask.shape == (q.shape[0], k.shape[2]):
                attn_mask = attn_mask[:, None, None, :]
        return self.engine(q, k, v, layer=self.layer, model=self.model_name, text_tokens=text_tokens,
                           text_position=text_position, attn_mask=attn_mask, grid=self.call_grid(k.shape[2]),
                           dense=dense)

    def _dispatch_dense(self, attn_mask: torch.Tensor | None):
        """Dense attention of ``[B, H, S, D]`` tensors through ``dispatch_attention_fn`` with the user's backend."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        backend = self.user_backend()
        parallel = self._parallel_config or getattr(self.original, "_parallel_config", None)

        def dense(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor, scale: float | None) -> torch.Tensor:
            out = dispatch_attention_fn(q_.transpose(1, 2), k_.transpose(1, 2), v_.transpose(1, 2),
                                        attn_mask=attn_mask, scale=scale, backend=backend, parallel_config=parallel)
            return out.transpose(1, 2)

        return dense


def qkv_projections(attn: torch.nn.Module, hidden_states: torch.Tensor):
    """``to_q/to_k/to_v`` of ``hidden_states`` (the direct-SDPA stock processors never fuse them)."""
    return attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)


def added_projections(attn: torch.nn.Module, encoder_hidden_states: torch.Tensor):
    """The text stream's ``add_q/k/v_proj`` in joint attention."""
    return (attn.add_q_proj(encoder_hidden_states), attn.add_k_proj(encoder_hidden_states),
            attn.add_v_proj(encoder_hidden_states))


def heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, S, H·D]`` → ``[B, H, S, D]`` exactly as diffusers' direct-SDPA processors do it."""
    return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)


def heads_merged(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, S, D]`` → ``[B, S, H·D]`` (inverse of :func:`heads_first`)."""
    batch, heads, _, dim = x.shape
    return x.transpose(1, 2).reshape(batch, -1, heads * dim)


def qk_norm(attn: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, added: bool = False):
    """``norm_q``/``norm_k`` (or ``norm_added_q/k`` for the text stream), each skipped when absent."""
    norm_q, norm_k = ("norm_added_q", "norm_added_k") if added else ("norm_q", "norm_k")
    if getattr(attn, norm_q, None) is not None:
        query = getattr(attn, norm_q)(query)
    if getattr(attn, norm_k, None) is not None:
        key = getattr(attn, norm_k)(key)
    return query, key


def split_text(x: torch.Tensor, text_tokens: int, text_position: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(video, text)`` parts of a joint sequence along dim 1, text ``"before"`` or ``"after"`` the video."""
    if text_position == "before":
        return x[:, text_tokens:], x[:, :text_tokens]
    return x[:, : x.shape[1] - text_tokens], x[:, x.shape[1] - text_tokens:]


