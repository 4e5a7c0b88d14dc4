"""What svg2's ``zero_step_kmeans_init`` changes on the bundled sample: its first sparse step and its videos.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/svg2_warmup_effect.py [--prompts 8] [--seed 0]

Runs the sample (samples/tiny-wan at its defaults and svg2 preset: 3 of 16 steps dense) on held-out prompts
(spread over the set, as ``fastdit bench toy --prompts N`` picks them) dense, with svg2 and with svg2 plus
``zero_step_kmeans_init``. At the first sparse step, each self-attention call's layout (the engine's own) is
scored on that call's q, k, v as ``fastdit bench fidelity`` scores a layout:
density, recall (share of the dense softmax mass on the token pairs it computes) and output error against dense
attention; its layout time (k-means, mass estimate, blocks; on this CPU) comes from the engine's record, as
does the layout time of the whole video (the dense warm-up's k-means included). Each video is compared with the
dense one (PSNR over all frames). Prints per setting the means over calls and prompts.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import torch

import fastdit
from fastdit.bench.attention_mass import dense_reference
from fastdit.bench.fidelity import Setting, evaluate
from fastdit.bench.toy import _prompts
from fastdit.models.loading import load_pipeline, resolve_model
from fastdit.patching.patch import _states
from fastdit.runs.media import to_uint8
from fastdit.runs.metrics import psnr
from fastdit.runs.report import markdown_table
from fastdit.runtime.engine import AttentionCall, Decision, SparseAttention
from fastdit.runtime.timing import CallTimes

SETTINGS = {"svg2": {}, "svg2 + zero_step_kmeans_init": {"zero_step_kmeans_init": True}}


class FirstSparseStep:
    """Scores the layout of every sparse call of the first sparse step: the engine's observer keeps each call's
    q, k, v, and its ``record`` (wrapped), which follows with the call's decision, scores that decision."""

    def __init__(self, engine: SparseAttention) -> None:
        self.engine, self.call, self.first, self.rows = engine, None, None, []
        self.layout_s = 0.0  # every call's, the dense warm-up's k-means included
        self.record = engine.record
        engine.observer, engine.record = self.observe, self.score

    def observe(self, call: AttentionCall) -> None:
        self.call = call

    def score(self, decision: Decision, times: CallTimes | None = None, gathered: bool = True) -> None:
        self.record(decision, times, gathered)
        self.layout_s += times.layout
        call, self.call = self.call, None
        if decision.dense or call is None:
            return
        self.first = call.step if self.first is None else self.first
        if call.step != self.first:
            return
        q, k, v = call.q.float(), call.k.float(), call.v.float()
        ref = dense_reference(q, k, v, call.grid, [decision.layout.head_order])
        row = evaluate(Setting("svg2", "svg2", ""), decision.layout, q, k, v, ref)
        self.rows.append({**row, "layout_ms": 1e3 * times.layout})


def run(pipe: Any, call: dict[str, Any], prompt: str, seed: int, options: dict[str, Any] | None
        ) -> tuple[np.ndarray, list[dict[str, Any]], float]:
    """``(frames, first sparse step rows, layout seconds of the whole video)`` of one video; ``options=None``:
    the stock attention."""
    observer = None
    if options is not None:
        fastdit.apply(pipe, "svg2", **options)
        (state,) = _states(pipe)
        observer = FirstSparseStep(state.engine)
    try:
        with torch.inference_mode():
            frames = to_uint8(pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), output_type="np",
                                   **call).frames[0])
    finally:
        if options is not None:
            fastdit.remove(pipe)
    return frames, [] if observer is None else observer.rows, 0.0 if observer is None else observer.layout_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = resolve_model("sample")
    pipe = load_pipeline(source, "cpu")
    pipe.set_progress_bar_config(disable=True)
    call = source.settings["call"]
    results: dict[str, dict[str, list[float]]] = {name: {} for name in SETTINGS}
    for prompt in _prompts(args.prompts):
        dense, _, _ = run(pipe, call, prompt, args.seed, None)
        for name, options in SETTINGS.items():
            frames, rows, layout_s = run(pipe, call, prompt, args.seed, options)
            out = results[name]
            out.setdefault("psnr_db", []).append(psnr(frames, dense))
            out.setdefault("video_layout_s", []).append(layout_s)
            for key in ("density", "recall", "rel_l2", "layout_ms"):
                out.setdefault(key, []).extend(r[key] for r in rows)
        print(prompt, {name: round(values["psnr_db"][-1], 2) for name, values in results.items()}, flush=True)
    table = [{"setting": name, "prompts": len(values["psnr_db"]), "first sparse step calls": len(values["density"]),
              **{key: statistics.mean(v) for key, v in values.items() if key not in ("psnr_db", "video_layout_s")},
              "layout_ms median": statistics.median(values["layout_ms"]),
              "layout s per video (median)": statistics.median(values["video_layout_s"]),
              "video PSNR vs dense (dB)": statistics.mean(values["psnr_db"])}
             for name, values in results.items()]
    print(markdown_table(table, list(table[0])))


if __name__ == "__main__":
    main()
