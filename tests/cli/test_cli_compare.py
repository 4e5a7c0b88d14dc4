"""``fastdit compare``: the table's numbers are consistent, and the side-by-side video has every run."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio

from fastdit.runs.media import LABEL_HEIGHT


def test_compare_table_is_consistent(fastdit_cli, small, tmp_path):
    # one-group surround: criss-cross planes keep every group of so small a grid
    result = fastdit_cli("compare", "--prompt", "a red ball", "--methods", "dense", "grat", "--option",
                         "grat.mode=surround", "--option", "grat.radius=0", *small, "--no-warmup", "--out", "cmp")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "cmp"
    data = json.loads((out / "compare.json").read_text())
    rows = {row["method"]: row for row in data["rows"]}
    grat_label = "grat(mode=surround,radius=0)"
    assert list(rows) == ["dense", "dense (fastdit)", grat_label]

    for name in ("dense", "dense (fastdit)"):  # dense against itself: identical pixels
        assert rows[name]["psnr_db"] == "inf" and rows[name]["ssim"] == 1.0 and rows[name]["density"] == 1.0
    assert rows["dense"]["speedup"] == 1.0

    grat = rows[grat_label]
    assert 0 < grat["density"] < 1 and grat["sparse_fraction"] == 1.0
    assert isinstance(grat["psnr_db"], float) and math.isfinite(grat["psnr_db"])
    assert grat["ssim"] < 1.0
    assert math.isclose(grat["speedup"], rows["dense"]["total_s"] / grat["total_s"])
    assert math.isclose(grat["step_speedup"], rows["dense"]["step_s"] / grat["step_s"])

    table = (out / "compare.md").read_text()
    assert f"| {grat_label} |" in table and "inf" in table
    assert f"| {grat_label} |" in result.stdout
    # the table leads with what sparse attention changed, and says what bounds the speedup
    header = ("| method | attention_s | attention_speedup | density | psnr_db | ssim | lpips | speedup | bound | "
              "attention_share |")
    assert header in table and header in result.stdout  # written, and printed by `make demo`
    assert 1 <= grat["bound"] and 0 < grat["attention_share"] < 1 and grat["attention_speedup"] > 0
    assert grat["dense_attention_s"] == rows["dense (fastdit)"]["attention_s"]  # timed on fastdit's dense run
    assert f"- **{grat_label}**: attention " in result.stdout and "is the most a perfect kernel could" in table

    video = iio.imread(out / "compare.mp4")
    assert video.shape == (5, 64 + LABEL_HEIGHT, 3 * 64, 3)
    assert video[:, : LABEL_HEIGHT // 2].max() > 200  # the labels are drawn
    still = iio.imread(out / "frames.png")  # one row per run: its label over its 5 frames
    assert still.shape == (3 * (LABEL_HEIGHT + 64), 5 * 64, 3)


def test_compare_with_a_cache_shows_the_cache_alone_and_combined(fastdit_cli, small, tmp_path):
    # the trained sample's first block changes by more than 0.5 between these 4 steps: at 0.8 the cache serves
    result = fastdit_cli("compare", "--prompt", "a red ball", "--methods", "radial", *small, "--steps", "4",
                         "--cache", "fbcache", "--cache-option", "threshold=0.8", "--no-warmup", "--out", "cmp")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    rows = {row["method"]: row for row in data["rows"]}
    cache, combined = "fbcache(threshold=0.8)", "radial+fbcache(threshold=0.8)"
    assert list(rows) == ["dense", cache, "radial", combined]
    assert data["settings"]["cache"] == {"kind": "fbcache", "options": {"threshold": 0.8}}
    assert rows["radial"]["cached_fraction"] == 0 and rows["radial"]["sparse_fraction"] == 1.0
    for name in (cache, combined):  # the cache served layer calls, and counts them as work not done
        assert 0 < rows[name]["cached_fraction"] < 1 and rows[name]["density"] < 1
        assert rows[name]["speedup"] > 0 and math.isfinite(rows[name]["psnr_db"])
    assert rows[combined]["density"] < rows["radial"]["density"]
    assert rows[combined]["sparse_density"] == rows["radial"]["sparse_density"]  # the same layouts where it ran
    video = iio.imread(tmp_path / "cmp" / "compare.mp4")
    assert video.shape[2] == 4 * 64  # every run side by side
