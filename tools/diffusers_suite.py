"""Run diffusers' own model test suites against fastdit: unpatched, with ``method="dense"`` and sparse.

    python tools/diffusers_suite.py /path/to/diffusers [--files tests/models/...py ...] [--modes ...]

Each test file runs once per mode in its own pytest process, single-threaded, with
``tools/fastdit_pytest_plugin.py`` patching every model the suite constructs (see that file). The installed
diffusers is the one under test; the checkout provides the tests (use the checkout closest to the installed
version; its test dependencies, e.g. ``parameterized`` and ``requests-mock``, must be installed). Writes
``bench/results/diffusers_suite.json`` (every test's outcome per mode, failure messages, sparse/dense
attention calls) and ``.md`` (per file passed/failed/skipped per mode, and every test that passes
unpatched but not patched).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import diffusers

from fastdit.runs.report import write_report

ROOT = Path(__file__).resolve().parent.parent
MODES = ("unpatched", "dense", "sparse")
FILES = (
    "tests/models/transformers/test_models_transformer_wan.py",
    "tests/models/transformers/test_models_transformer_flux.py",
    "tests/models/transformers/test_models_transformer_hunyuan_video.py",
    "tests/models/unets/test_models_unet_2d_condition.py",
)


def _outcomes(junit: Path) -> dict[str, dict[str, str]]:
    """``{test id: {"outcome": passed|failed|skipped, "message": first line of the failure}}``."""
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                outcome, message = name, (found.get("message") or "").strip().splitlines()[:1]
                message = message[0][:300] if message else ""
                break
        results[test] = {"outcome": outcome, "message": message}
    return results


def run_file(checkout: Path, test_file: str, mode: str, timeout: float, select: str | None,
             cpu_compile: bool = False) -> dict:
    """One pytest process over ``test_file`` in ``mode``: outcomes, attention calls, wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        junit, stats = Path(tmp, "junit.xml"), Path(tmp, "calls.json")
        env = dict(os.environ, FASTDIT_SUITE_MODE=mode, FASTDIT_SUITE_STATS=str(stats), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT / "tools"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   FASTDIT_SUITE_CPU_COMPILE="1" if cpu_compile else "0")
        command = [sys.executable, "-m", "pytest", test_file, "-p", "fastdit_pytest_plugin", "-p", "no:cacheprovider",
                   "-q", "-o", "addopts=", f"--junitxml={junit}"] + (["-k", select] if select else [])
        start = time.time()
        try:
            subprocess.run(command, cwd=checkout, env=env, timeout=timeout, capture_output=True, check=False)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        seconds = time.time() - start
        tests = _outcomes(junit) if junit.exists() else {}
        calls = json.loads(stats.read_text()) if stats.exists() else {}
    totals = {name: sum(t["outcome"] == name for t in tests.values()) for name in ("passed", "failed", "skipped")}
    attention = {kind: sum(c[kind] for c in calls.values()) for kind in ("sparse", "dense")}
    return dict(tests=tests, totals=totals, attention=attention, seconds=round(seconds, 1), timed_out=timed_out)


def differences(modes: dict[str, dict]) -> dict[str, list[dict[str, str]]]:
    """Per patched mode, the tests that pass unpatched but not patched, with the patched failure message."""
    base = modes.get("unpatched", {}).get("tests", {})
    found: dict[str, list[dict[str, str]]] = {}
    for mode, result in modes.items():
        if mode == "unpatched":
            continue
        found[mode] = [{"test": test, "outcome": got["outcome"], "message": got["message"]}
                       for test, got in result["tests"].items()
                       if base.get(test, {}).get("outcome") == "passed" and got["outcome"] != "passed"]
    return found


def markdown(report: dict) -> str:
    """The report's body: per file and mode the totals, then every test that passes only unpatched."""
    head = f"diffusers {report['diffusers']} (installed) with the tests of {report['checkout']}, one thread"
    head += "; diffusers' torch.compile tests run on the CPU too." if report["cpu_compile"] else "."
    lines = [head, "", "Sparse: " + ", ".join(f"{k}={v}" for k, v in report["sparse_options"].items()) + ".\n",
             "| test file | mode | passed | failed | skipped | attention calls sparse / dense | time (s) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for test_file, modes in report["files"].items():
        for mode, result in modes.items():
            t, a = result["totals"], result["attention"]
            note = " (timed out)" if result["timed_out"] else ""
            lines.append(f"| {Path(test_file).name} | {mode} | {t['passed']} | {t['failed']} | {t['skipped']} | "
                         f"{a['sparse']} / {a['dense']} | {result['seconds']}{note} |")
    lines.append("\n## Tests that pass unpatched but not patched\n")
    for test_file, modes in report["files"].items():
        for mode, diffs in differences(modes).items():
            for d in diffs:
                lines.append(f"- {Path(test_file).name} [{mode}] `{d['test']}`: {d['outcome']}: {d['message']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from fastdit_pytest_plugin import OPTIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a diffusers source checkout (its tests/ are run)")
    parser.add_argument("--files", nargs="+", default=list(FILES), help="test files, relative to the checkout")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("-k", dest="select", help="pytest -k expression applied to every file")
    parser.add_argument("--cpu-compile", action="store_true",
                        help="also run diffusers' torch.compile tests (accelerator-only) on the CPU")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per file and mode")
    parser.add_argument("--revision", help="the checkout's commit (default: asked of git in the checkout)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results", help="folder for the reports")
    parser.add_argument("--name", default="diffusers_suite", help="report file name (without extension)")
    parser.add_argument("--update", action="store_true",
                        help="keep the files of an existing report that this run doesn't run again")
    args = parser.parse_args(argv)
    if not (args.checkout / "tests").is_dir():
        parser.error(f"{args.checkout} has no tests/ folder; pass a diffusers source checkout")
    revision = args.revision or subprocess.run(["git", "-C", str(args.checkout), "rev-parse", "HEAD"],
                                               capture_output=True, text=True).stdout.strip() or "unknown"
    command = "python tools/diffusers_suite.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    report = dict(diffusers=diffusers.__version__, checkout=f"diffusers@{revision}", cpu_compile=args.cpu_compile,
                  sparse_options=OPTIONS["sparse"], files={})
    previous = args.out / f"{args.name}.json"
    if args.update and previous.exists():
        earlier = json.loads(previous.read_text())
        report["files"] = {f: modes for f, modes in earlier["files"].items() if f not in args.files}
        command = f"{earlier['command']}; {command}"
    for test_file in args.files:
        for mode in args.modes:
            result = run_file(args.checkout, test_file, mode, args.timeout, args.select, args.cpu_compile)
            report["files"].setdefault(test_file, {})[mode] = result
            print(f"{test_file} [{mode}]: {result['totals']} attention {result['attention']} "
                  f"{result['seconds']} s", flush=True)
    json_path, md_path = write_report(args.out, args.name, "diffusers' model test suites with fastdit", report,
                                      markdown(report), command)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
