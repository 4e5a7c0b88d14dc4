"""The per-head order cost benchmark: runs from the CLI and reports each part as a share of dense attention."""

from __future__ import annotations

import json

from fastdit.cli import main


def test_order_cost_reports_kmeans_and_permutation_next_to_dense(tmp_path):
    assert main(["bench", "order-cost", "--tokens", "512", "--heads", "1", "--head-dim", "16", "--q-clusters", "4",
                 "--k-clusters", "8", "--repeats", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "order_cost.json").read_text())
    (row,) = data["results"]
    assert row["tokens"] == 512 and all(row[f"{part}_ms"] > 0 for part in ("dense", "init", "step", "permute"))
    assert abs(row["step_percent"] - 100 * row["step_ms"] / row["dense_ms"]) < 1e-6
    assert "--tokens 512" in data["command"] and "| tokens |" in (tmp_path / "order_cost.md").read_text()
