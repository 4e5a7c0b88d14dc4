"""An installed fastdit (not the checkout) finds the bundled sample and generates with it: what ``make
install-check`` proves from a fresh virtual environment, here without the network (the wheel is built from
this checkout and installed without dependencies next to the test's own)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fastdit.models.loading import sample_dir

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_the_installed_package_holds_the_sample_and_generates_with_it_from_another_folder(tmp_path):
    pytest.importorskip("setuptools")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "wheel"), str(ROOT)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named pip" in build.stderr:
        pytest.skip("pip is not installed")
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "wheel").glob("fastdit-*.whl"))
    sample = {f"fastdit/models/tiny-wan/{p.relative_to(sample_dir()).as_posix()}"
              for p in sample_dir().rglob("*") if p.is_file()}
    assert sample - set(zipfile.ZipFile(wheel).namelist()) == set()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    code = ("import fastdit.cli, sys; from fastdit.models.loading import sample_dir; print(sample_dir()); "
            "sys.exit(fastdit.cli.main(['generate', '--prompt', 'a red ball', '--frames', '5', '--height', '64', "
            "'--width', '64', '--steps', '2', '--out', 'ball.mp4']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(str(tmp_path / "site"))  # the installed copy's sample, not the checkout's
    assert (elsewhere / "ball.mp4").stat().st_size > 0
