"""The sparse self-attention engine that every patched processor calls.

Processors do the model-specific work (projections, norms, RoPE, where text tokens sit) and hand this engine
``q, k, v [B, H, S, D]`` in the model's token order. The engine decides dense or sparse for this step and
layer, applies entropy scaling, builds (or reuses) the layout, moves tokens into the layout's own order and
back, runs the kernel, and records what it did, with the time of each part (the context's clock).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from fastdit.kernels import attention
from fastdit.layout.block import BlockLayout
from fastdit.layout.grid import TokenGrid
from fastdit.layout.order import TokenOrder
from fastdit.methods import HeadSlice, Method, get_method, layout_order, make_head_layout, make_layout
from fastdit.runtime.config import LayerPlan, SparseConfig
from fastdit.runtime.context import RunContext
from fastdit.runtime.entropy import entropy_scale_factor
from fastdit.runtime.stats import LayerRecord
from fastdit.runtime.timing import CallTimes

__all__ = ["SparseAttention", "AttentionCall", "Decision", "key_padding", "check_backend"]

# Messages already shown in this process: a model is patched again for every run of the CLI's compare and the
# app's requests, and Python's own once-per-location filter forgets whenever any code touches the filters.
_WARNED: set[str] = set()


def key_padding(mask: torch.Tensor, seq_len: int, video: slice | None = None) -> torch.Tensor | None:
    """``[B | 1, S]`` bool (``True`` = key kept) when ``mask`` only hides keys, else ``None``.

    ``mask`` is an SDPA mask (bool, or additive float), broadcast against ``[B, H, S_q, S_kv]`` as SDPA does.
    It is a key-padding mask when it is the same for every head and every query and hides keys completely
    (``False``, or ``-inf`` / the dtype's lowest value); then a block layout can express it exactly through
    its key validity. A bool ``[B, 1, S, S]`` mask that differs between queries counts too when every kept
    query attends exactly the kept keys, so that hidden keys are attended by hidden (padding) queries only:
    HunyuanVideo-1.5 hides every key from its padded text's queries, Ideogram 4's segment mask lets its padding
    tokens attend each other only. The kept keys are those of the first ``video`` query (where the video tokens
    sit), else every key any query attends. Kept queries' outputs are then exact; what a padding query computes
    differs from the mask's, but no kept token ever reads a padding token, so it only matters where the model
    outputs padding positions (the family must check that its pipeline drops them).
    Anything else (a bias, a per-query pattern) returns ``None``.
    """
    if mask.ndim > 4 or mask.shape[-1] != seq_len:
        return None
    m = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
    rows = m[:, :1, :1, :]
    if (m.shape[1] > 1 or m.shape[2] > 1) and not bool((m == rows).all()):
        return _padding_apart(m, video)
    rows = rows[:, 0, 0, :]
    if rows.dtype == torch.bool:
        return rows
    kept = rows == 0
    hidden = rows[~kept]
    if not bool(((hidden == float("-inf")) | (hidden <= torch.finfo(rows.dtype).min / 2)).all()):
        return None
    return kept


def _padding_apart(m: torch.Tensor, video: slice | None) -> torch.Tensor | None:
    """``[B, S]`` kept keys when in the bool mask ``m [B, 1, S, S]`` every kept query's row is the kept keys
    (the first ``video`` query's row, else every key some query attends); padding queries' rows are free."""
    if m.dtype != torch.bool or m.shape[1] != 1 or m.shape[2] != m.shape[3]:
        return None
    m = m[:, 0]
    kept = m[:, video.start] if video is not None and video.start < m.shape[1] else m.any(-2)
    exact = (m == kept[:, None, :]).all(-1) | ~kept  # per query: its row is the kept keys, or it is padding
    return kept if bool(exact.all()) else None


@dataclass(frozen=True)
class AttentionCall:
    """What an observer of the engine sees of one self-attention call (``fastdit.calibrate`` measures layouts
    on it): ``q, k, v [B, H, S, D]`` in the model's token order, and where and when the call happens."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    model: str
    layer: int
    step: int
    grid: TokenGrid | None  # with this call's text tokens
    scale: float | None
    attn_mask: torch.Tensor | None


@dataclass(eq=False)
class Decision:
    """What the engine decided for one self-attention call (:meth:`SparseAttention.decide`): dense, with the
    ``reason``, or sparse on ``layout`` in ``order`` (``keys``: per-sample key validity of padded prompts;
    ``ordered_qk``: q and k in ``order`` when a dynamic method already moved them there)."""

    layer: int
    model: str
    tokens: int
    grid: TokenGrid | None  # the call's video grid
    full_grid: TokenGrid | None  # with this call's text tokens
    scale: float | None
    reason: str | None = None
    order: TokenOrder | None = None
    layout: BlockLayout | None = None
    method: str = ""
    keys: torch.Tensor | None = None
    ordered_qk: tuple[torch.Tensor, torch.Tensor] | None = None
    times: CallTimes = dataclasses.field(default_factory=CallTimes)  # layout build and q, k permutation so far

    @property
    def dense(self) -> bool:
        return self.reason is not None


class SparseAttention:
    def __init__(self, config: SparseConfig, context: RunContext) -> None:
        self.config = config
        self.context = context
        self.method = get_method(config.method)
        self.observer: Callable[[AttentionCall], None] | None = None

    def scale(self, num_tokens: int, head_dim: int, n_train: int | None = None) -> float | None:
        """Softmax scale for a self-attention over ``num_tokens`` video/image tokens (``None``: ``1/sqrt(D)``).

        ``n_train`` (default: the configured one) is the token count of this attention at the training
        resolution. Text tokens are not counted: their number is fixed by the prompt, not by the resolution.
        """
        n_train = self.config.n_train if n_train is None else n_train
        if not self.config.entropy_scaling or num_tokens < 2:
            return None
        return head_dim**-0.5 * entropy_scale_factor(num_tokens, n_train)

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        layer: int,
        model: str,
        text_tokens: int = 0,
        text_position: str = "after",
        attn_mask: torch.Tensor | None = None,
        grid: TokenGrid | None = None,
        dense: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float | None], torch.Tensor] | None = None,
        heads: HeadSlice | None = None,
        return_lse: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention of ``q, k, v [B, H, S, D]`` in the model's token order; returns ``[B, H, S, D]``.

        ``attn_mask`` is the model's own SDPA mask. The dense path passes it to SDPA unchanged (so
        ``method="dense"`` is exactly the stock processor); the sparse path runs when it is a key-padding mask
        over text tokens (padded prompts), keeping those keys masked per sample. ``grid`` is this call's grid
        when it differs from the one the pre-hook recorded for the model input (a UNet level); the training
        token count for entropy scaling shrinks by the same ratio. ``dense(q, k, v, scale)`` is the processor's
        own dense attention (the one its stock version calls, mask included), used instead of SDPA when the
        call runs dense. ``heads``: which of the model's heads ``q, k, v`` hold, when context parallelism
        (Ulysses) gave this rank a slice of them (per-head settings and per-head random draws follow it).
        ``return_lse``: return ``(out, lse)``, the fp32 ``lse [B, H, S]`` of a sparse call's rows, so a caller can
        merge in attention over keys of its own (side keys, :mod:`fastdit.patching.dispatch`); a dense call gives
        ``None`` there, its ``dense`` having run the model's whole attention.

        ``q`` may hold only the video's rows when the call's ``text_tokens`` are keys only (the text has no
        queries: ``Family.text_keys_only``, a KV cache): ``k, v`` then hold the joint sequence, and the kernel
        runs just the video's query blocks of the joint layout, over every key block (the text keys dense), so
        the text costs ``video × text`` scores and not the ``text × (video + text)`` of query rows padded in.

        Always runs eagerly: the layout choice reads per-call Python state (step, grid) that traced code would
        turn into graph guards, so a compiled or exported model reaches it through the
        ``fastdit::self_attention`` operator (``fastdit.patching.ops``).
        """
        held = self.context.held
        if held is not None and (attn_mask is not None or grid is not None or text_tokens):
            raise RuntimeError("fastdit: tokens permuted once per forward reached a self-attention call with a mask, "
                               "text or a grid of its own; this family can't permute once (set permute_once=False)")
        keys_only = k.shape[2] - q.shape[2]
        if keys_only and keys_only != text_tokens:
            raise ValueError(f"q has {q.shape[2]} tokens and k {k.shape[2]}: a call with fewer queries than keys "
                             f"must have one key per video query plus its {text_tokens} text keys")
        clock = self.context.clock
        call = clock.start(q.device)
        decision = self.decide(k.shape[2], q.shape[-1], layer=layer, model=model, text_tokens=text_tokens,
                               text_position=text_position, attn_mask=attn_mask, grid=grid, heads=heads,
                               ordered_qk=lambda order: (_ordered_queries(order, q, held=held),
                                                         _into(order, held, k)),
                               device=q.device)
        times = decision.times
        if self.observer is not None:
            queries = _joint_queries(q, text_tokens, text_position, decision.full_grid) if keys_only else q
            self.observer(AttentionCall(queries, k, v, model, layer, max(self.context.step, 0), decision.full_grid,
                                        decision.scale, attn_mask))
        self.record(decision, times, gathered=held is None)
        if decision.dense:  # attention without a mask gives each token the same output in any token order
            with clock.span(q.device, times, "kernel"):
                if dense is not None:
                    out = dense(q, k, v, decision.scale)
                else:
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=decision.scale)
            clock.stop(call, times, "total")
            return (out, None) if return_lse else out
        order, layout = decision.order, decision.layout.to(q.device)
        rows = order.video_blocks if keys_only else order.num_blocks
        heads = layout.head_order
        with clock.span(q.device, times, "permute"):
            qt, kt = decision.ordered_qk or (_ordered_queries(order, q, rows * order.block_size, held),
                                             _into(order, held, k))
            vt = _into(order, held, v)
            if heads is not None:  # per-head orders computed from q and k (SVG2): queries and keys apart
                qt, kt, vt = heads.queries(qt), heads.keys(kt), heads.keys(vt)
        with clock.span(q.device, times, "kernel"):
            if heads is None:
                out = self._sparse(qt[:, :, :rows * order.block_size], kt, vt, order, layout, decision.scale,
                                   decision.keys, rows, return_lse)
            else:
                out = self._per_batch(qt[:, :, :rows * order.block_size], kt, vt, order, layout, decision.scale,
                                      decision.keys, rows, return_lse)
        out, lse = out if return_lse else (out, None)
        with clock.span(q.device, times, "permute"):
            if heads is not None:
                out, lse = heads.restore(out), (None if lse is None else heads.restore(lse))
            if held is not None:  # the tokens stay in the order: only the padding at its end goes
                out, lse = out[:, :, :q.shape[2]], (None if lse is None else lse[:, :, :q.shape[2]])
            elif keys_only:  # back from the layout's order: the video's rows only
                video = order.video_destination.to(out.device)
                out, lse = out.index_select(2, video), (None if lse is None else lse.index_select(2, video))
            else:
                out, lse = order.from_order(out), (None if lse is None else order.from_order(lse, dim=-1))
        clock.stop(call, times, "total")
        return (out, lse) if return_lse else out

    def forward_order(self) -> TokenOrder | None:
        """The token order every sparse self-attention call of the forward starting now runs in, when tokens can
        be permuted into it once for the whole forward (:mod:`fastdit.patching.permute`); ``None`` keeps the
        per-call path: ``permute_once`` off, per-layer plans or an order that changes by layer (VMoBA), an
        observer that must see the model's order, a dense step, text tokens in the self-attention, or padding
        between the order's tokens (a tile that does not divide the grid)."""
        cfg, grid, spec = self.config, self.context.grid, self.method
        if not cfg.permute_once or cfg.layers is not None or spec.name == "dense" or spec.layer_orders \
                or self.observer is not None or grid is None or grid.text_tokens:
            return None
        if max(self.context.step, 0) < cfg.warmup_steps(self.context.schedule):
            return None  # every layer runs dense: nothing to save
        order = layout_order(spec, grid, cfg.block_size, cfg.options, order=cfg.order, tile=cfg.tile)
        return order if int(order.destination.max()) < grid.num_tokens else None

    def decide(self, tokens: int, head_dim: int, *, layer: int, model: str, text_tokens: int = 0,
               text_position: str = "after", attn_mask: torch.Tensor | None = None, grid: TokenGrid | None = None,
               heads: HeadSlice | None = None,
               ordered_qk: Callable[[TokenOrder], tuple[torch.Tensor, torch.Tensor]] | None = None,
               device: torch.device | None = None) -> Decision:
        """Dense or sparse, and on which layout, for a self-attention call over ``tokens`` tokens, without
        running it: the arguments are :meth:`__call__`'s. ``ordered_qk(order)`` gives q and k in the layout's
        order; it is called only when a dynamic method reads them; the time that takes and the layout build go
        to ``decision.times``, timed on ``device`` (where q and k are; default the CPU). Context-parallel ring
        attention decides here and runs the kernel on its own share of the rows
        (:mod:`fastdit.patching.parallel.ring`)."""
        call_grid = grid if grid is not None else self.context.grid
        full_grid = None if call_grid is None else dataclasses.replace(
            call_grid, text_tokens=text_tokens, text_position=text_position,
            text_before=call_grid.text_before if text_position == "around" else 0)
        decision = Decision(layer, model, tokens, call_grid, full_grid,
                            self.scale(tokens - text_tokens, head_dim, self._n_train(call_grid)))
        plan = self.config.plan(model, layer)
        spec = self.method if plan is None or plan.dense else get_method(plan.method)
        reason = self._dense_reason(layer, tokens, text_tokens, call_grid, plan)
        if reason is None and attn_mask is not None:
            decision.keys, reason = self._text_padding(attn_mask, tokens, full_grid.video_slice)
        settings = (self.config.options,) if plan is None else plan.heads
        if plan is not None and heads is not None:
            settings = settings[heads.start:heads.stop]
            if reason is None and all(h is None for h in settings):
                reason = "dense_plan"  # every head of this rank's slice attends every block
        if reason == "dense_steps" and spec.warms_up is not None and ordered_qk is not None:
            self._warm_up(spec, settings, layer, model, tokens, text_tokens, full_grid, heads, ordered_qk, device,
                          decision.times)
        if reason is None:
            order = self._order(spec, settings, layer, full_grid)
            device, clock = device or torch.device("cpu"), self.context.clock
            qt, kt = None, None
            if spec.dynamic:
                with clock.span(device, decision.times, "permute"):
                    qt, kt = ordered_qk(order)
            with clock.span(device, decision.times, "layout"):
                layout = self._layout(spec, settings, order, qt, kt, layer, per_head=plan is not None, shard=heads,
                                      state=self.context.method_state.setdefault((model, layer), {}))
            if layout.density() >= 1.0:
                reason = self._full_layout(order, spec.name)
            else:
                decision.order, decision.layout, decision.method = order, layout, spec.name
                decision.ordered_qk = None if qt is None else (qt, kt)
        decision.reason = reason
        return decision

    def record(self, decision: Decision, times: CallTimes | None = None, gathered: bool = True) -> None:
        """Count ``decision``'s call in the stats (dense with its reason, or sparse with its density, and
        whether q, k, v were ``gathered`` into its order for this call), with ``times``, which the caller fills
        as the call runs (``None``: untimed)."""
        timed = [] if times is None else [times]
        if decision.dense:
            self._record(decision.layer, decision.model, True, 1.0, decision.reason, decision.tokens, timed)
            self.context.stats.last_grid = decision.grid
            return
        self._record(decision.layer, decision.model, False, decision.layout.density(), decision.method,
                     decision.tokens, timed, gathered)
        self.context.stats.last_layout = decision.layout

    def _warm_up(self, spec: Method, settings: tuple, layer: int, model: str, tokens: int, text_tokens: int,
                 grid: TokenGrid | None, shard: HeadSlice | None,
                 ordered_qk: Callable[[TokenOrder], tuple[torch.Tensor, torch.Tensor]], device: torch.device | None,
                 times: CallTimes) -> None:
        """A call the dense warm-up steps run dense: where the method ``warms_up`` with these options (SVG2's
        ``zero_step_kmeans_init``), its ``warm_up`` fills the layer's state from q and k in the order its sparse
        calls use (timed as permutation and layout); skipped on layers no call runs sparse (``dense_layers``, a
        dense plan), where the work could only cost, and on a call whose tokens don't fit the grid (it can't run
        sparse either)."""
        options = next((h for h in settings if h is not None), None)
        if options is None or not spec.warms_up(options) or layer < self.config.dense_layers or grid is None \
                or grid.video_tokens + text_tokens != tokens:
            return
        order = self._order(spec, settings, layer, grid)
        device, clock = device or torch.device("cpu"), self.context.clock
        with clock.span(device, times, "permute"):
            qt, kt = ordered_qk(order)
        with clock.span(device, times, "layout"), torch.no_grad():
            spec.warm_up(order, options, q=qt, k=kt, layer=layer, heads=shard,
                         state=self.context.method_state.setdefault((model, layer), {}))

    def _order(self, spec: Method, heads: tuple, layer: int, grid: TokenGrid) -> TokenOrder:
        """The token order of this call: the configured one, shaped by the first sparse head's options."""
        cfg = self.config
        options = next(h for h in heads if h is not None)
        return layout_order(spec, grid, cfg.block_size, options, order=cfg.order, tile=cfg.tile, layer=layer)

    def _layout(self, spec: Method, heads: tuple, order: TokenOrder, q: torch.Tensor | None,
                k: torch.Tensor | None, layer: int, per_head: bool, shard: HeadSlice | None = None,
                state: dict | None = None) -> BlockLayout:
        """The layout of this call (``q, k`` in ``order``, for dynamic methods): the configured method's, or a
        layer plan's with one setting per head (``shard``: the model heads ``q, k`` hold; ``state``: the layer's
        state of a stateful method, kept for the pipeline call)."""
        data = {"q": q, "k": k} if spec.dynamic else {}
        if not per_head:
            return make_layout(spec, order, heads[0], layer=layer, heads=shard, state=state, **data)
        return make_head_layout(spec, order, heads, layer=layer, shard=shard, state=state, **data)

    def _sparse(self, q, k, v, order: TokenOrder, layout: BlockLayout, scale, keys: torch.Tensor | None,
                rows: int, return_lse: bool = False):
        """Kernel call on tensors in the layout's order, for the layout's first ``rows`` query blocks (``q``
        holds just those: all of them, or the video's when the text is keys only); samples with different key
        padding get their own key validity. With ``return_lse``: ``(out, lse)``."""
        def run(q_, k_, v_, layout_: BlockLayout):
            if rows < layout_.n_q_blocks:  # the rows' pattern over every key block, a layout of its own
                layout_ = layout_.block_slice(range(0, rows), range(0, layout_.n_kv_blocks))
            return attention(q_, k_, v_, layout_.to(q.device), scale=scale, backend=self.config.backend,
                             order=order, return_lse=return_lse)

        if keys is None:
            return run(q, k, v, layout)
        patterns, group = torch.unique(keys.expand(q.shape[0], -1), dim=0, return_inverse=True)
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32) if return_lse else None
        for i, pattern in enumerate(patterns):
            samples = (group == i).nonzero().flatten()
            valid = torch.zeros(order.seq_len, dtype=torch.bool)
            valid[order.destination] = pattern.cpu()
            selection = None if layout.selection is None else layout.selection.batch_rows(samples)  # their own
            result = run(q[samples], k[samples], v[samples],
                         dataclasses.replace(layout, kv_valid=valid, selection=selection))
            if return_lse:
                out[samples], lse[samples] = result
            else:
                out[samples] = result
        return (out, lse) if return_lse else out

    def _per_batch(self, q, k, v, order: TokenOrder, layout: BlockLayout, scale, keys: torch.Tensor | None,
                   rows: int, return_lse: bool):
        """:meth:`_sparse` on a per-head-ordered layout (``q, k, v`` already permuted): its ``B * H`` heads are
        one pattern per batch element and head, so each batch element runs with its own heads."""
        H = q.shape[1]
        parts = [self._sparse(q[b:b + 1], k[b:b + 1], v[b:b + 1], order, layout.head_slice(b * H, (b + 1) * H),
                              scale, None if keys is None else keys[b:b + 1], rows, return_lse)
                 for b in range(q.shape[0])]
        if not return_lse:
            return torch.cat(parts)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _full_layout(self, order: TokenOrder, method: str) -> str:
        """Why a layout kept every block: one block of video, or a method with nothing to drop on this grid
        (radial on a single image: its only frame distance is 0, which it keeps whole)."""
        g, block = order.grid, self.config.block_size
        if order.video_blocks == 1:
            self._warn_once(f"grid {g.t}x{g.h}x{g.w} is too small for any sparsity with {block}-token blocks; "
                            "running dense")
            return "grid too small"
        self._warn_once(f"{method} keeps every block of grid {g.t}x{g.h}x{g.w} with {block}-token "
                        "blocks; running dense")
        return "full layout"

    def _text_padding(self, attn_mask: torch.Tensor, tokens: int,
                      video: slice) -> tuple[torch.Tensor | None, str | None]:
        """``(key validity, None)`` when the mask only hides text keys (those outside ``video``, the video
        tokens' place in the sequence), ``(None, reason)`` when it must run dense."""
        keys = key_padding(attn_mask, tokens, video)
        if keys is None:
            self._warn_once("this call carries an attention mask that is not a key-padding mask; running dense")
            return None, "attention mask"
        if not bool(keys[:, video].all()):
            self._warn_once("this call's attention mask hides video tokens, which the layout can't express; "
                            "running dense")
            return None, "attention mask"
        return (None if bool(keys.all()) else keys), None

    def _n_train(self, grid: TokenGrid | None) -> int | None:
        """Training token count of an attention over ``grid``, scaled like ``grid`` is to the model input's."""
        n_train, base = self.config.n_train, self.context.grid
        if n_train is None or grid is None or base is None or grid == base:
            return n_train
        return max(2, round(n_train * grid.video_tokens / base.video_tokens))

    def _dense_reason(self, layer: int, tokens: int, text_tokens: int, grid: TokenGrid | None,
                      plan: LayerPlan | None = None) -> str | None:
        """Why this call must run dense, or ``None`` when it may run sparse."""
        cfg = self.config
        self._check_grid()
        if cfg.method == "dense" and plan is None:
            return "method"
        if max(self.context.step, 0) < cfg.warmup_steps(self.context.schedule):  # no timestep yet: step 0
            return "dense_steps"
        if layer < cfg.dense_layers:
            return "dense_layers"
        if plan is not None and plan.dense:
            return "dense_plan"
        if grid is None:
            self._warn_once("the latent grid of this model call is unknown; running dense")
            return "no grid"
        if grid.video_tokens + text_tokens != tokens:
            self._warn_once(f"self-attention has {tokens} tokens but the grid {grid.t}x{grid.h}x{grid.w} plus "
                            f"{text_tokens} text tokens has {grid.video_tokens + text_tokens}; running dense")
            return "grid mismatch"
        return None

    def _check_grid(self) -> None:
        """Per-layer plans hold for the grid they were measured on: refuse another one (``ValueError``), or
        warn once when the user asked to re-use them (``reuse_grid``)."""
        expected, grid = self.config.grid, self.context.grid
        if expected is None or grid is None or (grid.t, grid.h, grid.w) == tuple(expected):
            return
        message = (f"the per-layer settings were calibrated on a {'x'.join(map(str, expected))} latent grid, "
                   f"this call's is {grid.t}x{grid.h}x{grid.w}")
        if not self.config.reuse_grid:
            raise ValueError(f"{message}; calibrate for this size, or re-use them anyway with "
                             "reuse_calibration=True (--reuse-calibration)")
        self._warn_once(f"{message}; re-using them as asked")

    def _warn_once(self, message: str) -> None:
        if message not in _WARNED:
            _WARNED.add(message)
            warnings.warn(f"fastdit: {message}", stacklevel=2)

    def _record(self, layer: int, model: str, dense: bool, density: float, reason: str, tokens: int,
                times: list[CallTimes], gathered: bool = False) -> None:
        self.context.record(LayerRecord(step=max(self.context.step, 0), layer=layer, model=model, dense=dense,
                                        density=density, reason=reason, tokens=tokens, times=times,
                                        gathered=gathered))


def _ordered_queries(order: TokenOrder, q: torch.Tensor, length: int | None = None,
                     held: TokenOrder | None = None) -> torch.Tensor:
    """``q [B, H, S, D]`` in ``order``, where ``q`` is a whole call's queries or only its video's (the text is
    keys only): then the text's rows are zero, as a dynamic method reads them when the text has no queries, and
    ``length`` may stop the ordered queries after the video's (the rows the kernel runs). ``held``: the order
    the tokens were permuted into once per forward (see :func:`_into`)."""
    if q.shape[2] == order.grid.num_tokens:
        return _into(order, held, q)
    shape = (*q.shape[:2], order.seq_len if length is None else length, q.shape[3])
    return q.new_zeros(shape).index_copy_(2, order.video_destination.to(q.device), q)


def _joint_queries(q: torch.Tensor, text_tokens: int, text_position: str, grid: TokenGrid | None) -> torch.Tensor:
    """The video queries ``q [B, H, S_video, D]`` of a call whose text is keys only, with zero text rows where the
    model's key sequence holds its text: a query per key, as an observer measures a call."""
    start = grid.video_slice.start if grid is not None else text_tokens if text_position == "before" else 0
    joint = q.new_zeros(*q.shape[:2], q.shape[2] + text_tokens, q.shape[3])
    joint[:, :, start:start + q.shape[2]] = q
    return joint


def _into(order: TokenOrder, held: TokenOrder | None, x: torch.Tensor) -> torch.Tensor:
    """``x [B, H, S, D]`` in ``order`` with its padding: gathered from the model's order, or, when the tokens
    are already ``held`` in ``order`` (permuted once per forward, padding only at the end), padded at the end."""
    if held is None:
        return order.to_order(x)
    if order != held:
        raise RuntimeError(f"fastdit: tokens were permuted once into the {held.describe()} order, but this call "
                           f"runs in the {order.describe()} order")
    pad = order.seq_len - x.shape[-2]
    return F.pad(x, (0, 0, 0, pad)) if pad else x


def check_backend(config: SparseConfig, device: torch.device, dtype: torch.dtype, head_dim: int) -> None:
    """Raise ``ValueError`` now when the configured kernel backend can't run this model's sparse attention.

    Device, dtype, head dim, block size and pooled pyramid levels are all known when ``apply`` is called, so
    the backend's own constraints run on a probe (zeros with the model's head dim, dtype and device; the
    method's layout on a 16-block grid) instead of failing at the first sparse layer of a generation.
    ``device`` is where attention will run: a CPU model on a machine with CUDA may still move there.
    """
    if config.method == "dense":
        return
    from fastdit.kernels import backends, select_backend

    spec = get_method(config.method)
    block = config.block_size
    order = layout_order(spec, TokenGrid(4, 4, block), block, config.options, order=config.order, tile=config.tile)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 1, order.grid.num_tokens, head_dim, generator=generator)
    if spec.dynamic:
        layout = make_layout(spec, order, config.options, q=order.to_order(sample), k=order.to_order(sample))
    else:
        layout = make_layout(spec, order, config.options)
    probe = torch.zeros(1, 1, order.seq_len, head_dim, device=device, dtype=dtype)
    if config.backend == "auto":
        select_backend(probe, probe, probe, layout)  # fails only when no backend runs it (an unsupported dtype)
        return
    reason = backends()[config.backend].why_not(probe, probe, probe, layout)
    if reason:
        raise ValueError(f"backend {config.backend!r} can't run this model's {config.method} attention: {reason}")
