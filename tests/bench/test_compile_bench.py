"""``fastdit bench compile``: one row per recipe and variant, read from a real (tiny, tracing-only) run."""

from __future__ import annotations

import json

import pytest

from fastdit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_report_rows_say_graphs_recompiles_and_agreement(tmp_path):
    code = main(["bench", "compile", "--backend", "eager", "--layers", "1", "--grid", "2", "8", "8", "--steps", "3",
                 "--out", str(tmp_path), "--name", "compile_test"])
    assert code == 0
    rows = json.loads((tmp_path / "compile_test.json").read_text())["rows"]
    assert [(r["compile"], r["variant"]) for r in rows] == [(how, v) for how in ("whole", "regional")
                                                            for v in ("unpatched", "dense", "radial")]
    assert all(r["recompiles"] == 0 and r["graph_breaks"] == 0 and r["max_abs_diff"] == 0 for r in rows)
    assert all(r["sparse_calls"] > 0 for r in rows if r["variant"] == "radial")
    assert "| radial | regional |" in (tmp_path / "compile_test.md").read_text()
