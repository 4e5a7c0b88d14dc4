"""Why a speedup is what it is: attention dense vs sparse, its share, overhead, warm-up and the Amdahl bound."""

from __future__ import annotations

import json

import pytest

from fastdit.cli import main
from fastdit.methods import available_methods
from fastdit.runs.breakdown import explain
from fastdit.runtime.stats import AttentionStats, LayerRecord, StepTimes
from fastdit.runtime.timing import CallTimes


def _record(step: int, layer: int, dense: bool, density: float, total: float, kernel: float) -> LayerRecord:
    return LayerRecord(step, layer, "transformer", dense, density, "dense_steps" if dense else "radial", 100,
                       times=[CallTimes(total=total, kernel=kernel, layout=0.0, permute=total - kernel)])


def _stats() -> AttentionStats:
    """Step 0 dense (warm-up: 2 s of attention per layer), steps 1-3 sparse at density 0.25 (0.6 s per layer,
    0.1 s of it outside the kernel); 2 layers; every step 6 s inside the denoiser."""
    stats = AttentionStats(records=[_record(0, layer, True, 1.0, 2.0, 2.0) for layer in range(2)])
    stats.records += [_record(step, layer, False, 0.25, 0.6, 0.5) for step in (1, 2, 3) for layer in range(2)]
    stats.step_times = {step: StepTimes(forward=6.0) for step in range(4)}
    return stats


def test_the_bound_is_amdahls_law_at_the_runs_density():
    stats = _stats()
    why = explain(25.0, stats, dense_total_s=30.0, dense_stats=AttentionStats(
        records=[_record(s, la, True, 1.0, 2.0, 2.0) for s in range(4) for la in range(2)]))
    assert why.dense_measured and why.dense_attention_s == pytest.approx(16.0)
    assert why.attention_s == pytest.approx(4 + 3.6) and why.kernel_s == pytest.approx(4 + 3.0)
    assert why.attention_speedup == pytest.approx(16 / 7.6)
    assert why.attention_share == pytest.approx(16 / 30)
    density = (2 * 1.0 + 6 * 0.25) / 8
    assert why.density == pytest.approx(density)
    assert why.bound == pytest.approx(30 / (30 - 16 * (1 - density)))
    assert why.warmup_share == pytest.approx(6 / 25)
    assert why.overhead_share == pytest.approx(0.6 / 7.6)
    parts = why.parts()  # each bar adds up to its run's total
    assert sum(parts["dense"].values()) == pytest.approx(30) and sum(parts["sparse"].values()) == pytest.approx(25)
    text = why.sentence()
    assert "16.00 s -> 7.60 s" in text and f"{why.bound:.2f}x is the most" in text and "measured 1.20x" in text


def test_without_a_timed_dense_run_dense_attention_comes_from_the_runs_dense_calls():
    why = explain(25.0, _stats(), dense_total_s=30.0)  # a stock baseline: no stats
    assert not why.dense_measured and why.dense_attention_s == pytest.approx(2.0 * 8)  # 8 layer calls at 2 s
    alone = explain(25.0, _stats())  # generate: no dense run at all
    assert not alone.dense_run and alone.dense_total_s == pytest.approx(25 - 7.6 + 16)
    assert "estimated" in alone.sentence() and "measured" not in alone.sentence()
    sparse_only = AttentionStats(records=[r for r in _stats().records if not r.dense])
    assert explain(25.0, sparse_only, 30.0).bound is None  # nothing timed dense attention
    assert explain(25.0, AttentionStats(records=[LayerRecord(0, 0, "t", False, 0.5, "radial", 100)])) is None


def test_the_forwards_parts_add_up_to_it_and_a_part_counted_twice_shows():
    stats = _stats()
    stats.step_times[2].permute = 0.05  # tokens permuted once per forward: overhead, outside the calls
    parts = stats.parts_s()
    assert parts == pytest.approx({"kernel": 4 + 3.0, "layout": 0.0, "permute": 0.6 + 0.05, "bookkeeping": 0.0,
                                   "other": 24 - 7.6 - 0.05})
    assert sum(parts.values()) == pytest.approx(stats.forward_s())
    assert stats.overhead_s() == pytest.approx(0.6 + 0.05)
    assert explain(25.0, stats).overhead_s == pytest.approx(0.65)
    doubled = _stats()
    doubled.records[2].times[0].layout = 0.5  # the kernel's time counted as layout build too
    assert sum(doubled.parts_s().values()) == pytest.approx(24 + 0.5)


def test_bench_e2e_parts_add_up_to_the_measured_forward_for_every_method(tmp_path, capsys):
    """The target at a CPU-sized grid (the README has it at 16k tokens): for each method, per call and with
    tokens permuted once per forward, every part of the forward is reported (kernel, layout, permutation,
    bookkeeping, the rest of the model) and they add up to the measured forward within 5%, which the report
    prints; a part dropped from the timing or the report fails here."""
    methods = [m for m in available_methods() if m != "dense"]
    code = main(["bench", "e2e", "--quick", "--frames", "9", "--height", "256", "--width", "512", "--repeats", "1",
                 "--warmup", "0", "--permute-once", "--out", str(tmp_path), "--name", "e2e"])
    assert code == 0
    rows = {row["method"]: row for row in json.loads((tmp_path / "e2e.json").read_text())["rows"]}
    assert rows["dense"]["attention_s"] > 0 and 0 < rows["dense"]["attention_share"] < 1
    printed = capsys.readouterr().out
    for method in ["dense (fastdit)", *methods, *(f"{m} once" for m in methods)]:
        row = rows[method]
        assert list(row["parts_s"]) == ["kernel", "layout", "permute", "bookkeeping", "other"], method
        assert sum(row["parts_s"].values()) == pytest.approx(row["accounted"] * row["measured_s"])
        assert 0.95 <= row["accounted"] <= 1.05, (method, row)
        assert f"  {method}: kernel " in printed and f"({row['accounted']:.1%}, ok)" in printed
        assert row["kernel_s"] + row["overhead_s"] == pytest.approx(row["attention_s"])
        assert row["overhead_s"] == pytest.approx(sum(row["parts_s"][p] for p in ("layout", "permute",
                                                                                  "bookkeeping")))
        assert row["bound"] >= 1 and row["attention_speedup"] > 0
    for method in methods:  # the per-call path gathers at every sparse call; dynamic methods build layouts
        assert rows[method]["parts_s"]["permute"] > 0 and rows[method]["parts_s"]["kernel"] > 0
    assert rows["grat once"]["parts_s"]["permute"] > 0  # tiles: the tokens move once per forward
    assert all(rows[m]["parts_s"]["layout"] > 0 for m in ("pyramid", "vmoba"))
    assert any(rows[m]["density"] < 1 for m in methods)  # the grid is large enough for sparsity
    text = (tmp_path / "e2e.md").read_text()
    assert "| speedup | bound | attention_s |" in text and "Timed parts of each method's median forward" in text
