"""``torch.compile`` of a patched model vs the same model unpatched: graphs, graph breaks, recompiles over a
generation, compile time, step time, and the largest difference from eager.

Both of diffusers' recipes run with ``fullgraph=True``: the whole transformer (``torch.compile(model)``) and
regional compilation (``model.compile_repeated_blocks``). A generation is ``--steps`` forward calls at falling
timesteps; the patched model runs its first step dense (warm-up) and the rest sparse, so a compiled model
that guarded on fastdit's per-step state would recompile here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from fastdit.runs.report import markdown_table, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (eager: tracing only)")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks of the tiny Wan model")
    parser.add_argument("--grid", type=int, nargs=3, default=(4, 16, 16), metavar=("T", "H", "W"),
                        help="latent token grid (frames, rows, columns)")
    parser.add_argument("--steps", type=int, default=6, help="denoising steps per generation")
    parser.add_argument("--method", default="radial", help="the sparse method compared with dense/unpatched")
    parser.add_argument("--name", default="compile_cpu", help="report file name (without extension)")


def _inputs(grid: tuple[int, int, int], timestep: float) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    t, h, w = grid
    return dict(hidden_states=torch.randn(1, 16, t, 2 * h, 2 * w, generator=g), timestep=torch.tensor([timestep]),
                encoder_hidden_states=torch.randn(1, 7, 32, generator=g), return_dict=False)


def _measure(args: argparse.Namespace, variant: str, how: str) -> dict[str, Any]:
    from torch._dynamo.utils import counters
    from torch._inductor.utils import fresh_inductor_cache

    import fastdit
    from fastdit.dummy.wan import dummy_wan_transformer

    model = dummy_wan_transformer(num_layers=args.layers)
    if variant != "unpatched":
        fastdit.apply(model, method=variant, preset=None, block_size=16, dense_steps=1)
    steps = [_inputs(tuple(args.grid), 1000.0 * (1 - i / args.steps)) for i in range(args.steps)]
    torch._dynamo.reset()
    counters.clear()
    # a fresh inductor cache per run: the patched variants share their graphs, so a warm cache would time
    # the second one's compilation as a cache hit
    with torch.no_grad(), fresh_inductor_cache():
        eager, eager_s = [], []
        for x in steps:
            start = time.perf_counter()
            eager.append(model(**x)[0])
            eager_s.append(time.perf_counter() - start)
        if how == "whole":
            compiled = torch.compile(model, backend=args.backend, fullgraph=True)
        else:
            model.compile_repeated_blocks(backend=args.backend, fullgraph=True)
            compiled = model
        start = time.perf_counter()
        outs = [compiled(**steps[0])[0]]
        first_s = time.perf_counter() - start
        graphs_first = counters["stats"]["unique_graphs"]
        step_s = []
        for x in steps[1:]:
            start = time.perf_counter()
            outs.append(compiled(**x)[0])
            step_s.append(time.perf_counter() - start)
    sparse_calls = (sum(r.calls for r in fastdit.stats(model).records if not r.dense)
                    if variant != "unpatched" else 0)
    return {"variant": variant, "compile": how, "graphs": graphs_first,
            "recompiles": counters["stats"]["unique_graphs"] - graphs_first,
            "graph_breaks": sum(counters["graph_break"].values()), "first_call_s": first_s,
            "eager_step_ms": statistics.median(eager_s[1:]) * 1e3,
            "compiled_step_ms": statistics.median(step_s) * 1e3,
            "max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(outs, eager)),
            "sparse_calls": sparse_calls}


def run(args: argparse.Namespace) -> int:
    _measure(args, "unpatched", "whole")  # warm-up: the first compilation in a process imports the compiler
    rows = []
    for how in ("whole", "regional"):
        for variant in ("unpatched", "dense", args.method):
            row = _measure(args, variant, how)
            rows.append(row)
            print(f"{how:<8} {variant:<10} graphs {row['graphs']} recompiles {row['recompiles']} breaks "
                  f"{row['graph_breaks']} first call {row['first_call_s']:.1f} s, step {row['compiled_step_ms']:.1f} "
                  f"ms (eager {row['eager_step_ms']:.1f}), max diff {row['max_abs_diff']:.2g}", flush=True)
    t, h, w = args.grid
    command = (f"fastdit bench compile --backend {args.backend} --layers {args.layers} --grid {t} {h} {w} "
               f"--steps {args.steps} --method {args.method}")
    body = (f"Tiny Wan transformer, {args.layers} blocks, grid {t}x{h}x{w} ({t * h * w} tokens), {args.steps} steps "
            f"at falling timesteps, backend `{args.backend}`, `fullgraph=True`, one process. Patched runs use "
            "block 16 and one dense warm-up step. `graphs`: graphs compiled by the first call (torch.compile of "
            "the whole model compiles the forward pre-hook as a frame of its own); `recompiles`: graphs compiled "
            "by the later steps; `first_call_s` includes compilation.\n\n" + markdown_table(rows))
    json_path, md_path = write_report(args.out, args.name, "torch.compile of a patched model vs unpatched",
                                      {"rows": rows}, body, command)
    print(f"wrote {json_path} and {md_path}")
    return 0
