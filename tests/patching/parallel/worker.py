"""One rank of the context-parallel tests: ``python worker.py RANK WORLD INIT_FILE OUT_JSON``.

Every rank runs every case twice: once in this process alone (the single-process fastdit output) and once
under diffusers' context parallelism with fastdit patched (alternately before and after
``enable_parallelism``). Rank 0 writes, per case, the largest difference, the sparse densities the parallel
run used, and the error message when the case is expected to raise.
"""

from __future__ import annotations

import json
import sys
import traceback

import torch
import torch.distributed as dist

import fastdit
from fastdit.dummy.image import dummy_flux_transformer, dummy_unet
from fastdit.dummy.wan import dummy_wan_transformer
from fastdit.patching.parallel.launch import enable_context_parallel

TEXT = 7
SPARSE = {
    "dense": {},
    "radial": {"block_size": 16, "dense_steps": 0, "dense_layers": 0},
    "pyramid": {"block_size": 16, "dense_steps": 0, "dense_layers": 0},
    # each tile attends only itself: the ring skips the other rank's chunk
    "grat": {"block_size": 16, "dense_steps": 0, "dense_layers": 0, "mode": "surround", "radius": 0},
}


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def _wan(grid, heads=2):
    t, h, w = grid
    return (dummy_wan_transformer(num_layers=2, heads=heads),
            dict(hidden_states=_randn(2, 16, t, 2 * h, 2 * w), timestep=torch.full((2,), 500.0),
                 encoder_hidden_states=_randn(2, TEXT, 32)))


def _flux(grid):
    _, h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()
    return (dummy_flux_transformer(num_layers=1, num_single_layers=1),
            dict(hidden_states=_randn(2, h * w, 4), encoder_hidden_states=_randn(2, TEXT, 32),
                 pooled_projections=_randn(2, 32), timestep=torch.full((2,), 0.5), img_ids=img_ids,
                 txt_ids=torch.zeros(TEXT, 3)))


def _case(name: str):
    """A family of ``tests/patching/conftest.py``'s ``CASES``: its tiny denoiser and a batch of 2 inputs."""
    from tests.patching.conftest import CASES

    case = CASES[name]
    return lambda grid: (case.build(), case.inputs(grid, 2))


BUILD = {"wan": _wan, "flux": _flux,
         **{name: _case(name) for name in ("chronoedit", "qwen_image", "flux2", "minimax_h3")}}


def _forward(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def _patch(model, method):
    if method == "per-head":
        fastdit.apply(model, _per_head_config(model))
        return
    fastdit.apply(model, method=method, preset=None, **SPARSE[method])


def _per_head_config(model) -> fastdit.SparseConfig:
    """A calibration's kind of config: per layer one method, per head its own options or a dense head."""
    from fastdit.runtime.config import LayerPlan

    heads = model.config.num_attention_heads
    loose, tight = {"thresholds": (0.3, 0.4, 0.5, 0.6)}, {"thresholds": (0.8, 0.9, 0.95, 0.98)}
    settings = [loose, tight, None][:heads] + [loose] * (heads - 3)
    layers = {("transformer", layer): LayerPlan.create("pyramid", settings) for layer in range(model.config.num_layers)}
    return fastdit.SparseConfig.create("pyramid", {}, block_size=16, layers=layers)


def run_case(case: dict) -> dict:
    family, grid = BUILD[case["family"]], tuple(case["grid"])
    build = (lambda g: family(g, heads=case["heads"])) if "heads" in case else family
    model, inputs = build(grid)
    _patch(model, case["method"])
    reference = _forward(model, inputs)

    model, inputs = build(grid)
    if case.get("apply_first"):
        _patch(model, case["method"])
    enable_context_parallel(model, case["kind"], dist.get_world_size(), anything=case.get("anything", True))
    if not case.get("apply_first"):
        _patch(model, case["method"])
    out = _forward(model, inputs)
    records = fastdit.stats(model).records
    result = {"diff": float((out - reference).abs().max()),
              "densities": sorted({round(r.density, 4) for r in records if not r.dense}),
              "dense_calls": sum(r.dense for r in records)}
    if case.get("remove"):  # the stock processors under the same parallel config: diffusers' own result
        fastdit.remove(model)
        unpatched, _ = build(grid)
        try:
            result["removed_diff"] = float((_forward(model, inputs) - _forward(unpatched, inputs)).abs().max())
        except ValueError as error:  # diffusers' own refusal (its native backend can't run ring attention)
            result["removed_error"] = str(error)
    return result


def run_training_case(case: dict) -> dict:
    """Gradients of the attention's query projection through fastdit's Ulysses backward: each rank holds its
    shard's share, so their sum is the single-process gradient."""
    build = BUILD[case["family"]]
    grid = tuple(case["grid"])

    def query_grad(model, inputs):
        model(**inputs, return_dict=False)[0].square().mean().backward()
        return model.blocks[0].attn1.to_q.weight.grad

    model, inputs = build(grid)
    _patch(model, case["method"])
    reference = query_grad(model, inputs)
    model, inputs = build(grid)
    enable_context_parallel(model, case["kind"], dist.get_world_size(), anything=False)
    _patch(model, case["method"])
    grad = query_grad(model, inputs)
    dist.all_reduce(grad)
    return {"diff": float((grad - reference).abs().max()), "scale": float(reference.abs().max())}


def run_error_case(case: dict) -> dict:
    if case["family"] == "unet":
        model = dummy_unet()
        inputs = dict(sample=_randn(2, 4, 16, 16), timestep=torch.full((2,), 500.0),
                      encoder_hidden_states=_randn(2, 7, 32))
        plan = {"": {"sample": _split_input()}}
        fastdit.apply(model, method="dense", preset=None)
        enable_context_parallel(model, "ulysses", dist.get_world_size(), cp_plan=plan)
        _forward(model, inputs)
        return {"error": None}
    raise ValueError(case["family"])


def _split_input():
    from diffusers.models._modeling_parallel import ContextParallelInput

    return ContextParallelInput(split_dim=2, expected_dims=4, split_output=False)


def _gloo_uneven_all_gather() -> None:
    """gloo's ``all_gather`` needs equal shapes, which diffusers' output gather of an uneven split ("anything")
    doesn't give (NCCL takes them): gather padded shapes and trim, on this CPU test only."""
    from diffusers.hooks import context_parallel
    from diffusers.models._modeling_parallel import gather_size_by_comm

    def gather(tensor, dim, group):
        sizes = gather_size_by_comm(tensor.shape[dim], group)
        pad = [0, 0] * (tensor.ndim - 1 - dim) + [0, max(sizes) - tensor.shape[dim]]
        padded = torch.nn.functional.pad(tensor.contiguous(), pad)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim=dim)

    context_parallel._all_gather_anything = gather


def main() -> None:
    rank, world, init_file, out_path, cases_path = sys.argv[1:6]
    torch.set_num_threads(1)
    _gloo_uneven_all_gather()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=int(rank), world_size=int(world))
    cases = json.loads(open(cases_path).read())
    results = {}
    for name, case in cases.items():
        try:
            run = run_error_case if case.get("error") else run_training_case if case.get("train") else run_case
            results[name] = run(case)
        except Exception as error:  # noqa: BLE001 - the test reads the message
            results[name] = {"error": f"{type(error).__name__}: {error}",
                             "trace": traceback.format_exc(limit=3)}
        dist.barrier()
    if int(rank) == 0:
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
