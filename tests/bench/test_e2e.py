"""``fastdit bench e2e`` writes its report with a row per method (timings are never asserted)."""

from __future__ import annotations

import json

from fastdit.cli import main


def test_e2e_quick_report(tmp_path, capsys):
    out = tmp_path / "missing" / "folder"  # created when the report is written
    code = main(["bench", "e2e", "--quick", "--frames", "5", "--height", "128", "--width", "128", "--repeats", "1",
                 "--warmup", "0", "--methods", "grat", "--out", str(out), "--name", "e2e_test"])
    assert code == 0
    data = json.loads((out / "e2e_test.json").read_text())
    assert data["grid"] == [2, 8, 8] and data["config"]["num_layers"] == 2
    assert [r["method"] for r in data["rows"]] == ["dense", "dense (fastdit)", "grat"]
    assert all(r["median_s"] > 0 for r in data["rows"])
    assert "| grat |" in (out / "e2e_test.md").read_text()


def test_e2e_rejects_sizes_the_model_cannot_make(capsys):
    assert main(["bench", "e2e", "--quick", "--frames", "8"]) == 2
    assert "frames = 4k+1" in capsys.readouterr().err
