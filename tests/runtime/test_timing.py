"""Where the time goes: each attention call split into kernel, layout build, permutation and the rest, and each
step's time inside the denoiser, in ``stats``; eager, under ``torch.compile`` and switched off."""

from __future__ import annotations

import time

import pytest
import torch

import fastdit
from fastdit.dummy.wan import dummy_wan_transformer
from fastdit.runtime.timing import CallTimes, Clock

STEPS = (900.0, 700.0)  # the first step runs dense (dense_steps=1), the second sparse


def _inputs(timestep: float) -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(1, 16, 4, 16, 16, generator=g), timestep=torch.tensor([timestep]),
                encoder_hidden_states=torch.randn(1, 7, 32, generator=g), return_dict=False)


def _run(method: str, model=None, cfg: int = 1) -> tuple[fastdit.AttentionStats, list[float]]:
    """Two steps of a patched dummy Wan (``cfg`` forwards per step); the stats and each step's wall time."""
    model = model or dummy_wan_transformer(num_layers=2)
    fastdit.apply(model, method=method, preset=None, block_size=16, dense_steps=1)
    walls = []
    with torch.no_grad():
        for t in STEPS:
            start = time.perf_counter()
            for _ in range(cfg):
                model(**_inputs(t))
            walls.append(time.perf_counter() - start)
    return fastdit.stats(model), walls


@pytest.mark.parametrize("method", ["radial", "pyramid"])
def test_each_call_is_split_into_parts_that_add_up_and_each_step_is_timed(method):
    stats, walls = _run(method, cfg=2)
    for r in stats.records:
        assert r.calls == 2 and len(r.times) == 2  # CFG's second call adds its times to the layer-step's
        parts = r.kernel_s + r.layout_s + r.permute_s + r.rest_s
        assert r.attention_s > 0 and parts == pytest.approx(r.attention_s)
        assert r.kernel_s > 0
        if r.dense:  # SDPA on the model's tokens: nothing to build or move
            assert r.layout_s == r.permute_s == 0
        else:
            assert r.permute_s > 0 and r.layout_s > 0
    dynamic = [r for r in stats.records if not r.dense]
    if method == "pyramid":  # built from q and k per call: its layout time is real work
        assert stats.seconds("layout", dynamic) > 0.01 * stats.seconds("attention", dynamic)
    forward = [stats.step_times[s].forward for s in sorted(stats.step_times)]
    assert len(forward) == 2
    for inside, wall in zip(forward, walls):  # the hooks time the forwards a step is made of
        assert 0.9 * wall <= inside <= wall
    assert 0 < stats.attention_share() < 1
    assert stats.warmup_steps() == [0]
    data = stats.to_dict()
    assert data["time_s"]["attention"] == pytest.approx(stats.seconds("attention"))
    assert data["records"][0]["kernel_s"] > 0 and "times" not in data["records"][0]
    assert "of the denoiser's time" in stats.summary()


def test_timing_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("FASTDIT_TIMING", "0")
    stats, _ = _run("radial")
    assert stats.records and all(r.attention_s == 0 for r in stats.records)
    assert all(t.forward == 0 for t in stats.step_times.values())
    assert "attention" not in stats.summary()


def test_a_new_run_starts_with_no_times_of_the_last():
    model = dummy_wan_transformer(num_layers=2)
    first, _ = _run("radial", model)
    second, _ = _run("radial", model)
    assert first is not second and len(second.step_times) == 2
    assert all(len(r.times) == 1 for r in second.records)


def test_attention_calls_are_timed_inside_a_compiled_model():
    torch._dynamo.reset()
    model = dummy_wan_transformer(num_layers=2)
    fastdit.apply(model, method="radial", preset=None, block_size=16, dense_steps=1)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        for t in STEPS:
            compiled(**_inputs(t))
    records = fastdit.stats(model).records
    torch._dynamo.reset()
    assert {r.step for r in records} == {0, 1}
    assert all(r.attention_s > 0 and r.kernel_s > 0 for r in records)  # the engine runs eagerly in its operator


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events need a GPU")
def test_cuda_spans_are_events_read_when_settled():
    clock, times = Clock(enabled=True), CallTimes()
    x = torch.randn(2048, 2048, device="cuda")
    span = clock.start(x.device)
    for _ in range(10):
        x = x @ x / 2048
    clock.stop(span, times, "kernel")
    assert times.kernel == 0  # nothing waited for the GPU yet
    clock.settle()
    assert times.kernel > 0
