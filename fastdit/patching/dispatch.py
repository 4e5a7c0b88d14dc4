"""The generic path: fastdit takes a video self-attention call where diffusers dispatches it.

Every new-style diffusers processor (Wan, and most transformers since) projects q, k, v, applies its norms and
RoPE, then calls ``dispatch_attention_fn(..., backend=self._attention_backend)``. fastdit leaves that stock
processor installed and sets its backend, on each video self-attention module only, to fastdit's entry in
diffusers' backend registry, so the call arrives with diffusers' own projections, norms and RoPE already
applied. Everything else keeps going where the user sent it: cross-attention modules are never touched, and a
self-attention call fastdit can't take (dropout, a causal flag, a custom scale, grouped-query heads, a mask
that is not a tensor, such as a flex ``BlockMask``) goes to the user's backend, as do dense warm-up steps and
layers.

One backend entry serves every patched module: the module's forward pre-hook names the module's fastdit
handler just before its processor runs, and the entry reads it. The handler's handle is a tensor, so the
blocks of a regionally compiled model share one graph (an entry per layer would be a constant per block, and
a recompile each). diffusers has no public way to register a backend (``AttentionBackendName`` is a closed
``Enum``), so the entry goes into its private registry; :func:`check_registry` says in one line when an
installed diffusers lays that registry out differently. A ``set_attention_backend`` call after ``apply``
replaces fastdit's entry on the processors (the model then runs dense on the user's backend, and ``stats``
says the layers are no longer fastdit's); call it before ``apply`` to keep both.

A stock processor that never reads ``self._attention_backend`` (Cosmos's calls ``dispatch_attention_fn`` without
``backend=``, so it always runs on the active backend) is taken one level down instead: the
``dispatch_attention_fn`` its module imported is wrapped, for as long as one of its modules is patched, and the
wrapper hands the first call after a patched module's pre-hook to that module's handler; every other call passes
through unchanged.

A family with ``side_keys`` (Wan-Animate 2) has its module's ``dispatch_attention_fn`` wrapped the same way,
because its processor's denoising call names a backend of its own (flex) with the model's own ``BlockMask``
over keys packed ``[video | side keys]``. The wrapper hands that call to :meth:`DispatchedAttention.side`: the
video part runs through the engine, the side keys (which the family's :class:`SideKeys` says which queries see)
dense, and the two merge by their log-sum-exp, which is exactly the model's masked attention when the video
part is dense; a dense decision runs the model's own call unchanged. A processor that accepts no backend but its
own (AnyFlow-FAR's, whose video keys come after its KV cache's) keeps it (the family's ``keeps_backend``):
fastdit recognises its module by the pre-hook alone.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import torch

from fastdit.kernels.common import merge_partial
from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, SideKeys, SparseProcessorMixin
from fastdit.patching.parallel import parallel_config

__all__ = ["DispatchedAttention", "check_registry"]

_ARGUMENTS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa",
              "_parallel_config")


def check_registry() -> Any:
    """diffusers' attention backend registry, checked to have the private layout fastdit relies on
    (a ``RuntimeError`` in one line names the installed diffusers when it doesn't)."""
    import diffusers
    from diffusers.models import attention_dispatch

    registry = getattr(attention_dispatch, "_AttentionBackendRegistry", None)
    names = getattr(attention_dispatch, "AttentionBackendName", None)
    needed = ("_backends", "_constraints", "_supported_arg_names", "_supports_context_parallel")
    if registry is None or names is None or not all(hasattr(registry, n) for n in needed) \
            or not issubclass(names, str):
        raise RuntimeError(f"fastdit: diffusers {diffusers.__version__} has no attention backend registry laid out "
                           "as fastdit expects (diffusers.models.attention_dispatch._AttentionBackendRegistry); "
                           "fastdit's generic path is tested with diffusers 0.42.1: install that, or report this "
                           "version")
    return registry


class _Current:
    """The patched module whose processor is about to dispatch (set by its forward pre-hook); ``armed`` is the
    same for a processor that dispatches without ``backend=``, until the wrapper takes its one call."""

    handler: "DispatchedAttention | None" = None
    armed: "DispatchedAttention | None" = None


_CURRENT = _Current()


@functools.lru_cache(maxsize=None)
def _entry() -> Any:
    """fastdit's entry in diffusers' backend registry (registered on first use, once per process)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    registry = check_registry()
    member = str.__new__(AttentionBackendName, "fastdit")  # an entry of the closed enum, known to the registry only
    member._name_, member._value_ = "FASTDIT", "fastdit"
    registry._backends[member] = _dispatched
    registry._constraints[member] = []
    registry._supported_arg_names[member] = set(_ARGUMENTS)
    registry._supports_context_parallel.add(member.value)  # fastdit exchanges shards itself (Ulysses, ring)
    return member


def _dispatched(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
                dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
                _parallel_config: Any = None) -> torch.Tensor:
    """The registered backend: ``query, key, value [B, S, H, D]`` of the self-attention of the module whose
    pre-hook ran last."""
    handler = _CURRENT.handler
    if handler is None:
        raise RuntimeError("fastdit: its attention backend was called outside a module fastdit patched; set another "
                           "backend there (model.set_attention_backend) or call fastdit.apply")
    return handler.backend(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, _parallel_config)


def _reads_backend(processor: Any) -> bool:
    """Whether a stock processor passes ``self._attention_backend`` on to ``dispatch_attention_fn``."""
    call = getattr(type(processor).__call__, "__code__", None)
    return call is None or "_attention_backend" in call.co_names


class _Wrapped:
    """The ``dispatch_attention_fn`` of one diffusers module, wrapped while some of its processors are patched."""

    def __init__(self, namespace: Any) -> None:
        self.namespace = namespace
        self.original: Callable[..., torch.Tensor] = namespace.dispatch_attention_fn
        self.users = 0

        @functools.wraps(self.original)
        def dispatch_attention_fn(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any,
                                  backend: Any = None, parallel_config: Any = None, **kwargs: Any) -> torch.Tensor:
            handler = _CURRENT.armed
            if handler is None or (backend is not None and handler.side_keys is None):
                return self.original(query, key, value, *args, backend=backend, parallel_config=parallel_config,
                                     **kwargs)
            _CURRENT.armed = None  # one call per pre-hook: the module's own dispatch, nothing after it
            call = dict(zip(_ARGUMENTS[3:8], args), **kwargs)
            if backend is not None and backend is not handler.entry:  # the processor names its own backend
                return handler.side(query, key, value, backend, parallel_config, call)
            return handler.backend(query, key, value, call.get("attn_mask"), call.get("dropout_p", 0.0),
                                   call.get("is_causal", False), call.get("scale"), call.get("enable_gqa", False),
                                   parallel_config)

        self.wrapper = dispatch_attention_fn


_WRAPPED: dict[str, _Wrapped] = {}  # diffusers module name -> its wrapped dispatch_attention_fn


def _wrap_dispatch(processor: Any) -> None:
    """Wrap the ``dispatch_attention_fn`` of the module that defines ``processor``'s class (once per module)."""
    name = type(processor).__module__
    if name not in _WRAPPED:
        _WRAPPED[name] = _Wrapped(sys.modules[name])
        _WRAPPED[name].namespace.dispatch_attention_fn = _WRAPPED[name].wrapper
    _WRAPPED[name].users += 1


def _unwrap_dispatch(processor: Any) -> None:
    """One patched module of ``processor``'s diffusers module less; the last one restores its function."""
    wrapped = _WRAPPED[type(processor).__module__]
    wrapped.users -= 1
    if wrapped.users == 0:
        wrapped.namespace.dispatch_attention_fn = wrapped.original
        del _WRAPPED[type(processor).__module__]


class DispatchedAttention(SparseProcessorMixin):
    """fastdit's side of one patched self-attention module whose stock processor stays installed.

    :meth:`take` points the stock processor at fastdit's backend entry and hooks the module; its calls arrive
    as ``[B, S, H, D]`` tensors after the stock projections, norms and RoPE and run through the engine (sparse,
    or dense on the user's backend). :meth:`give_back` restores the processor's own backend choice.
    """

    def __init__(self, original: Any, engine: Any, layer: int, model_name: str, family: Family):
        super().__init__(original, engine, layer, model_name)
        self.text_position = family.text_position
        self.text_keys_only = family.text_keys_only
        self.grid_of = family.call_grid  # this call's grid from the recorded one, where the model has several
        self.context_parallel_joined = family.context_parallel_joined
        self.side_keys = family.side_keys
        self.keeps_backend = family.keeps_backend
        self.saved_backend = getattr(original, "_attention_backend", None)
        self.hook: Any = None
        self.entry: Any = None
        # dispatches without backend=, or names a backend of its own for side keys: taken by the module wrapper
        self.wrapped = family.side_keys is not None or not _reads_backend(original)

    def user_backend(self) -> Any:
        return self._attention_backend or self.saved_backend

    def call_grid(self, tokens: int) -> TokenGrid | None:
        """The grid of a call over ``tokens`` tokens by the family's rule (a UNet level); ``None``: the recorded
        one (where the family has no rule, or its rule finds no grid of that size: then "grid mismatch")."""
        if self.grid_of is None or self.grid is None:
            return None
        return self.grid_of(self.grid, tokens)

    def installed_on(self, module: torch.nn.Module) -> bool:
        return self.hook is not None and self._ours(module.processor)

    def _ours(self, processor: Any) -> bool:
        """Whether ``processor`` dispatches to this handler: it names fastdit's backend entry, or, where the
        family keeps the processor's own backend, it is the processor fastdit took."""
        if self.keeps_backend:
            return processor is self.original
        return getattr(processor, "_attention_backend", None) is self.entry  # not _entry(): traced in enter

    def take(self, module: torch.nn.Module) -> None:
        """Point ``module``'s stock processor at fastdit's backend entry, and name this handler before each of
        its calls."""
        self.entry = _entry()
        if not self.keeps_backend:  # also for a wrapped processor: the mark installed_on reads
            self.original._attention_backend = self.entry
        if self.wrapped:
            _wrap_dispatch(self.original)
        self.hook = module.register_forward_pre_hook(self.enter)

    def enter(self, module: torch.nn.Module, args: tuple) -> None:
        """The module's forward pre-hook: its processor's next dispatch is this handler's.

        diffusers' loaders re-create the processor of every attention they don't adapt with its class and no
        arguments (``load_ip_adapter``); such a processor, of the stock class with no backend set, is taken
        over, so attention stays sparse."""
        processor = module.processor
        if processor is not self.original and type(processor) is type(self.original) \
                and getattr(processor, "_attention_backend", None) is None:
            self.original = processor
            processor._attention_backend = _entry()
        _CURRENT.handler = self
        if self.wrapped:
            # unless the user has set another backend since apply (then the model runs dense on the active one)
            _CURRENT.armed = self if self._ours(processor) else None

    def give_back(self) -> None:
        """The stock processor gets the backend it had before :meth:`take`, unless the user has set another one
        since; the pre-hook goes."""
        if getattr(self.original, "_attention_backend", None) is _entry():
            self.original._attention_backend = self.saved_backend
        self.hook.remove()
        self.hook = None
        if self.wrapped:
            _unwrap_dispatch(self.original)
        if _CURRENT.handler is self:
            _CURRENT.handler = None
        if _CURRENT.armed is self:
            _CURRENT.armed = None

    def backend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
                dropout_p: float, is_causal: bool, scale: float | None, enable_gqa: bool,
                _parallel_config: Any) -> torch.Tensor:
        """This module's self-attention of ``query, key, value [B, S, H, D]``: through the engine, or, for a
        call fastdit can't take, on the user's backend.

        With ``text_keys_only`` (the family's image queries attend the image's keys and the text's, and the text
        has no queries: Nucleus-MoE, PRX, a KV cache) a call with more keys than queries runs the image's query
        rows of the joint layout over all keys (the engine takes fewer queries than keys): the text keys stay
        dense and cost ``image × text`` scores, however many they are. Under context parallelism, whose
        exchanges move whole joint sequences, the text gets zero query rows, dropped after (exactly the same
        attention for the image rows, at ``text × (image + text)`` more scores)."""
        extra = key.shape[1] - query.shape[1]
        if dropout_p or is_causal or enable_gqa or key.shape[2] != query.shape[2] \
                or not isinstance(attn_mask, (torch.Tensor, type(None))) \
                or (scale is not None and scale != query.shape[-1] ** -0.5) \
                or (extra and not self._text_keys(extra, attn_mask)):
            from diffusers.models.attention_dispatch import dispatch_attention_fn

            return dispatch_attention_fn(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                         is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
                                         backend=self.user_backend(), parallel_config=_parallel_config)
        if extra and parallel_config(self) is not None:
            spare = query.new_zeros(query.shape[0], extra, *query.shape[2:])
            first = self.text_position == "before"
            joint = torch.cat((spare, query) if first else (query, spare), dim=1)
            out = self.attend_bshd(joint, key, value, attn_mask, text_tokens=extra, text_position=self.text_position)
            return out[:, extra:] if first else out[:, :query.shape[1]]
        return self.attend_bshd(query, key, value, attn_mask, text_tokens=extra or None,
                                text_position=self.text_position)

    @torch.compiler.disable  # reads per-call Python state (grid, step), like the engine's operator
    def side(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend: Any,
             parallel_config: Any, call: dict[str, Any]) -> torch.Tensor:
        """A call the processor sends with a backend and mask of its own (``call``: its other arguments), over
        keys that hold side keys beside the video's (:class:`~fastdit.patching.families.base.SideKeys`, from the
        family).

        The video queries over the video keys run through the engine; when it decides dense, its dense
        attention is the model's own call, whole, so dense is the stock processor exactly. When sparse, each
        run of queries attends its run of side keys dense, and each row's two parts merge by their log-sum-exp
        (at the engine's softmax scale, so entropy scaling covers both). A call the family describes no side
        keys for, or that fastdit can't take (dropout, a causal flag, a custom scale, grouped-query heads,
        context parallelism, autograd), runs as the model sent it."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        def stock(scale: float | None = call.get("scale")) -> torch.Tensor:
            return dispatch_attention_fn(query, key, value, **dict(call, scale=scale), backend=backend,
                                         parallel_config=parallel_config)

        layout = None if self.grid is None else self.side_keys(self.grid, query.shape[1], key.shape[1])
        if layout is None or parallel_config is not None or call.get("dropout_p") or call.get("is_causal") \
                or call.get("scale") is not None or call.get("enable_gqa") or key.shape[2] != query.shape[2] \
                or (torch.is_grad_enabled() and any(x.requires_grad for x in (query, key, value))):
            return stock()
        whole: list[torch.Tensor] = []

        def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> torch.Tensor:
            whole.append(stock(scale))
            return whole[0][:, :layout.video].transpose(1, 2)

        keys = slice(layout.video_keys, layout.video_keys + layout.video)
        video = [query[:, :layout.video].transpose(1, 2)] + [x[:, keys].transpose(1, 2) for x in (key, value)]
        out, lse = self.engine(*video, layer=self.layer, model=self.model_name, grid=self.call_grid(layout.video),
                               dense=dense, return_lse=True)
        if lse is None:
            return whole[0]
        result = torch.zeros_like(query)  # padding rows: the model drops them
        if not layout.count:
            result[:, :layout.video] = out.transpose(1, 2)
            return result
        side_out, side_lse = self._side_attention(query, key, value, layout,
                                                  self.engine.scale(layout.video, query.shape[-1]))
        rows = layout.rows
        merged, _ = merge_partial(out[:, :, rows].float(), lse[:, :, rows], side_out.float(), side_lse)
        out = out.clone()
        out[:, :, rows] = merged.to(out.dtype)
        result[:, :layout.video] = out.transpose(1, 2)
        return result

    def _side_attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: SideKeys,
                        scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out [B, H, R, D], lse [B, H, R])`` of the ``R`` side-key rows, each run of queries over its run of
        side keys, dense: the runs folded into the batch, through the engine's kernels on a layout that keeps
        every block (padded to whole blocks, the padding keys masked)."""
        from fastdit.kernels import attention
        from fastdit.layout.block import BlockLayout

        batch, _, heads, dim = query.shape
        groups, block = layout.groups, self.engine.config.block_size

        def runs(x: torch.Tensor, *parts: slice) -> torch.Tensor:  # [B, S, H, D] parts -> [B·G, H, S/G padded, D]
            x = torch.cat([x[:, part] for part in parts], dim=1) if len(parts) > 1 else x[:, parts[0]]
            x = x.reshape(batch * groups, x.shape[1] // groups, heads, dim).transpose(1, 2)
            return torch.nn.functional.pad(x, (0, 0, 0, -x.shape[2] % block))

        q, k, v = runs(query, layout.rows), runs(key, *layout.parts), runs(value, *layout.parts)
        n_q, n_kv = q.shape[2] // block, k.shape[2] // block
        row_ptr = (torch.arange(n_q + 1) * n_kv)[None]
        full = BlockLayout(row_ptr, torch.arange(n_kv).repeat(n_q), block, block, q.shape[2], k.shape[2],
                           kv_valid=torch.arange(k.shape[2], device=q.device) < layout.count // groups)
        out, lse = attention(q, k, v, full.to(q.device), scale=scale, backend=self.engine.config.backend,
                             return_lse=True)
        rows = (layout.rows.stop - layout.rows.start) // groups
        out = out[:, :, :rows].reshape(batch, groups, heads, rows, dim).transpose(1, 2).flatten(2, 3)
        lse = lse[:, :, :rows].reshape(batch, groups, heads, rows).transpose(1, 2).flatten(2, 3)
        return out, lse

    def _text_keys(self, extra: int, attn_mask: torch.Tensor | None) -> bool:
        """Whether a call with ``extra`` more keys than queries is image queries over image and text keys that
        fastdit can take: the family says its text is keys only, and any mask is the same for every query."""
        return self.text_keys_only and extra > 0 and self.text_position in ("before", "after") and (
            attn_mask is None or attn_mask.ndim == 2 or (attn_mask.ndim == 4 and attn_mask.shape[2] == 1))
