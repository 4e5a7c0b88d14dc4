"""`fastdit bench kernels`: its command line everywhere, its layouts on CPU, a short real run on a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from fastdit import TokenGrid, available_methods
from fastdit.bench.kernels import layout_at_density
from fastdit.cli import main


def test_help_describes_the_suite(capsys):
    with pytest.raises(SystemExit) as done:
        main(["bench", "kernels", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--shapes", "--methods", "--densities", "--out", "cudnn", "FlexAttention",
                   "--compile-only", "--no-v1"):
        assert option in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_refuses_in_one_line_without_a_gpu(tmp_path, capsys):
    assert main(["bench", "kernels", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdit bench: error:") and "no CUDA GPU" in err[0]
    assert not any(tmp_path.iterdir())


def test_compile_only_refuses_the_interpreter_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert main(["bench", "kernels", "--compile-only", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unset TRITON_INTERPRET" in err[0]


def test_compile_table_counts_green_rows():
    from fastdit.bench.kernels import compile_markdown

    rows = [{"arch": 90, "variant": "level0", "config": "128x128 w8 s3", "kv_tile": 128, "registers": 237,
             "spill_bytes": 0, "shared_bytes": 229376, "kv_buffers": 3, "pooled_buffers": None, "mma": "wgmma",
             "mma_count": 16, "serialized": [], "tma_ops": 0, "bar_sync": 7, "ok": True, "failures": ""},
            {"arch": 80, "variant": "levels", "config": "128x64 w8 s3", "kv_tile": 64, "registers": 255,
             "spill_bytes": 0, "shared_bytes": 98816, "kv_buffers": 2, "pooled_buffers": 1, "mma": "mma.sync",
             "mma_count": 256, "serialized": [], "tma_ops": 0, "bar_sync": 13, "ok": False,
             "failures": "2 K/V buffers in the level-0 loop (< 3)"}]
    same = [{"arch": 90, "config": "128x128 w8 s3", "level0": 582, "level0_padded": 576, "ratio": 0.99, "ok": True},
            {"arch": 90, "config": "64x64 w4 s4", "level0": 410, "level0_padded": 438, "ratio": 1.07, "ok": None}]
    text = compile_markdown({"head_dim": 128, "dtype": "bf16", "block": 128, "shared_cap": {90: 232448, 80: 166912},
                             "rows": rows, "same_code": same})
    assert "**1 of 2 green**" in text and "## sm_90" in text and "## sm_80" in text
    assert "**1 of 1**" in text  # the same-code check counts the checked configs only


def test_compile_report_lists_the_builds_changed_since_a_baseline():
    """--baseline: only builds compiled in both reports whose resources moved, each before -> after."""
    from fastdit.bench.kernels import compile_markdown
    from fastdit.bench.triton_compile import against

    def row(config, registers, loops, spill=0):
        return {"arch": 80, "variant": "levels", "config": config, "registers": registers, "spill_bytes": spill,
                "shared_bytes": 123648, "loop_instructions": loops, "bar_sync": 13, "ok": not spill, "failures": ""}

    before = [row("64x64 w4 s4", 255, [783, 1034], spill=8), row("64x64 w4 s5", 255, [784, 1046]),
              row("128x64 w8 s4", 200, [541])]
    after = [row("64x64 w4 s4", 255, [724, 781, 939]), row("64x64 w4 s5", 255, [784, 1046]),
             row("64x64 w4 s3", 250, [700])]
    changed = against(after, before)
    assert changed == [{"arch": 80, "variant": "levels", "config": "64x64 w4 s4", "registers": [255, 255],
                        "spill_bytes": [8, 0], "shared_bytes": [123648, 123648],
                        "loop_instructions": [[783, 1034], [724, 781, 939]], "bar_sync": [13, 13]}]
    data = {"head_dim": 128, "dtype": "bf16", "block": 128, "shared_cap": {90: 232448, 80: 166912}, "rows": after,
            "same_code": [], "baseline": {"path": "old.json", "environment": {"date": "then"}, "changed": changed}}
    text = compile_markdown(data)
    assert "## Since the baseline" in text and "`old.json` (then)" in text and ": **1**" in text
    assert "| 8 → 0 |" in text and "[783, 1034] → [724, 781, 939]" in text


def test_a_path_off_the_reference_fails_its_row_and_counts_toward_no_target():
    from fastdit.bench.kernels import failed_paths, markdown

    assert failed_paths({"rel_err": 3e-3, "ws_rel_err": 0.4, "flex_rel_err": None}) == ["ws"]
    assert failed_paths({"rel_err": float("nan")}) == ["triton"]
    row = {"shape": "s", "method": "radial", "setting": "x", "density": 0.3, "levels": 0, "ratio": 1.0,
           "vs_flex": 2.0, "rel_err": 3e-3}
    bad = {**row, "setting": "y", "rel_err": 0.5}
    rows = [{**r, "failed": failed_paths(r)} for r in (row, bad)]
    text = markdown({"dtype": "bf16", "block_size": 128, "dense": [], "rows": rows})
    assert "density 0.1-0.5: 1 of 1 rows" in text and "(radial, grat): 1 of 1 rows" in text
    assert "rows failed" in text and ": 1 of 2" in text


def test_quick_points_are_distinct_layouts():
    """Radial's density floor makes low targets one layout: --quick replaces a repeat by a density not asked for."""
    import argparse

    from fastdit.bench.kernels import _distinct_layouts

    grid = TokenGrid(8, 16, 16)
    args = argparse.Namespace(densities=[0.0, 0.05, 0.6], block_size=16, quick=False)
    assert len(list(_distinct_layouts("radial", grid, args, None, None))) == 2
    args.quick = True
    points = list(_distinct_layouts("radial", grid, args, None, None))
    assert len(points) == 3 and len({setting for _, _, setting in points}) == 3


@pytest.mark.parametrize("method,targets", [("grat", (0.1, 0.3, 0.5)), ("radial", (0.4, 0.5)),
                                            ("pyramid", (0.1, 0.3, 0.5)), ("sol", (0.3, 0.5))])
def test_layouts_are_tuned_to_the_target_density(method, targets):
    if method not in available_methods():
        pytest.skip(f"this install has no {method!r} method")
    grid = TokenGrid(8, 16, 16)
    q, k = (torch.randn(1, 2, 2048, 16) for _ in range(2))
    for target in targets:
        layout, setting = layout_at_density(method, grid, 16, target, q=q, k=k)
        assert abs(layout.density() - target) < 0.05, (target, setting, layout.density())


def test_radial_below_its_floor_returns_its_sparsest_layout():
    grid = TokenGrid(8, 16, 16)
    sparsest, _ = layout_at_density("radial", grid, 16, 0.0)
    assert sparsest.density() <= layout_at_density("radial", grid, 16, 0.4)[0].density()
    assert sparsest.density() == pytest.approx(layout_at_density("radial", grid, 16, 0.05)[0].density())


@pytest.mark.gpu
def test_quick_run_writes_a_report_of_correct_kernels(tmp_path):
    assert main(["bench", "kernels", "--quick", "--no-flex", "--methods", "grat", "--densities", "0.3",
                 "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["environment"]["device"] != "cpu" and len(data["rows"]) == 1
    row = data["rows"][0]
    assert row["rel_err"] < 1e-2 and row["triton_ms"] > 0 and row["ratio"] > 0
    assert row["v1_ms"] > 0 and row["padding"] >= 0 and row["density"] > 0
    assert "## Targets" in (tmp_path / "kernels.md").read_text()
