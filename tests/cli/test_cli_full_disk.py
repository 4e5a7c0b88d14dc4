"""A full disk while a command writes its output: one line naming the file, status 2, and no file under the
output's name nor a temporary one (a file-size limit stands in for the full disk: it needs no privileges)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SIZE = ["--frames", "5", "--height", "64", "--width", "64", "--steps", "2"]


@pytest.mark.parametrize("args, output", [
    (["generate", "--prompt", "a red ball", *SIZE, "--out", "ball.mp4"], "'ball.mp4': ffmpeg: stopped by SIGXFSZ"),
    pytest.param(["compare", "--prompt", "a red ball", *SIZE, "--methods", "radial", "--no-warmup", "--out", "cmp"],
                 "'cmp/compare.mp4': ffmpeg: stopped by SIGXFSZ", marks=pytest.mark.slow),
    pytest.param(["calibrate", "--prompt", "a red ball", *SIZE, "--block-size", "16", "--target", "0.5",
                  "--methods", "radial", "--out", "cal.json"], "'cal.json': File too large", marks=pytest.mark.slow),
    pytest.param(["bench", "reference", "--quick", "--repeats", "1", "--out", "reports"],
                 "'reports/reference_cpu.json': File too large", marks=pytest.mark.slow),
])
def test_a_full_disk_is_one_line_and_leaves_no_file(cli_env, tmp_path, file_size_limit, args, output):
    result = subprocess.run([sys.executable, "-m", "fastdit", *args], cwd=tmp_path, env=cli_env, text=True,
                            capture_output=True, timeout=300, preexec_fn=file_size_limit(1024))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == f"fastdit {args[0]}: error: can't write {output}" + (
        " (File size limit exceeded)" if "ffmpeg" in output else ""), result.stderr
    assert "Traceback" not in result.stderr
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
