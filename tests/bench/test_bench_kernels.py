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
    for option in ("--quick", "--shapes", "--methods", "--densities", "--out", "cudnn", "FlexAttention"):
        assert option in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_refuses_in_one_line_without_a_gpu(tmp_path, capsys):
    assert main(["bench", "kernels", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdit bench: error:") and "no CUDA GPU" in err[0]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("method,targets", [("grat", (0.1, 0.3, 0.5)), ("radial", (0.4, 0.5)),
                                            ("pyramid", (0.1, 0.3, 0.5))])
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
    assert "## Targets" in (tmp_path / "kernels.md").read_text()
