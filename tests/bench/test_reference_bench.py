import json

from fastdit.cli import main


def test_reference_bench_quick_writes_its_report(tmp_path):
    assert main(["bench", "reference", "--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "reference_cpu.json").read_text())
    assert {r["case"] for r in data["rows"]} == {"radial", "radial-no-sink", "grat-surround", "grat-crisscross"}
    for row in data["rows"]:
        assert 0 < row["density"] <= 1 and row["dense_ms"] > 0 and row["sparse_ms"] > 0
        assert row["meets_target"] == (row["speedup"] >= 0.7 / row["density"])
    assert "Target" in (tmp_path / "reference_cpu.md").read_text()


def test_a_run_from_the_repository_root_leaves_the_committed_reports_alone(tmp_path, monkeypatch):
    committed = tmp_path / "bench" / "results" / "reference_cpu.json"
    committed.parent.mkdir(parents=True)
    committed.write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "reference", "--quick", "--repeats", "1"]) == 0
    assert committed.read_text() == "{}\n"  # refreshed only with an explicit --out bench/results
    assert json.loads((tmp_path / "out" / "bench" / "reference_cpu.json").read_text())["rows"]


def test_the_vmoba_suite_reports_kept_pairs_per_partition(tmp_path):
    assert main(["bench", "reference", "--suite", "vmoba", "--quick", "--repeats", "1", "--heads", "2",
                 "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "reference_vmoba.json").read_text())
    assert [r["case"] for r in data["rows"]] == ["vmoba-1d", "vmoba-2d", "vmoba-3d"]
    assert data["suite"] == "vmoba" and data["dtype"] == "fp32"
    for row in data["rows"]:
        assert 0 < row["density"] < 1 and row["meets_target"] == (row["speedup"] >= 0.7 / row["density"])


def test_cpu_clock_times_one_thread_only(tmp_path, monkeypatch):
    """``--clock cpu`` (process CPU time: a shared core's waits do not count) is named in the report and
    refused with more than one thread, where it would add the threads' time up."""
    import argparse

    import pytest
    import torch

    from fastdit.bench.reference import add_arguments, run
    from fastdit.cli import CLIError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--suite", "vmoba", "--quick", "--repeats", "1", "--heads", "1", "--clock", "cpu"])
    args.out = str(tmp_path)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    with pytest.raises(CLIError, match="OMP_NUM_THREADS=1"):
        run(args)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert run(args) == 0
    report = (tmp_path / "reference_vmoba.md").read_text()
    assert "--clock cpu" in report and "medians of the CPU time" in report
