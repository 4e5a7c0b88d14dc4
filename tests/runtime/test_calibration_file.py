"""A calibration file is read whole or refused with one ``ValueError`` naming what is wrong (issue 39, point 8),
also where ``--calibration`` hands it to ``generate``, ``compare`` and the demo."""

from __future__ import annotations

import copy
import json

import pytest

from fastdit.cli import main
from fastdit.runtime.calibration_file import Calibration, HeadChoice, LayerChoice, load_calibration

VALID = Calibration(model=None, fingerprint="0" * 16, grid=(4, 8, 8), block_size=16, target=0.1, metric="rel_l2",
                    schedule=50, dense_steps=0, expected_density=0.5,
                    layers=(LayerChoice("transformer", 0, "dense"),
                            LayerChoice("transformer", 1, "radial", (HeadChoice({"decay_factor": 0.05}),
                                                                     HeadChoice(None))))).to_dict()


def _set(path: str, value) -> dict:
    """``VALID`` with the entry at ``path`` (keys and indices, dot-separated) replaced by ``value``."""
    data = copy.deepcopy(VALID)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


HOSTILE = {
    "a list of layers that are lists": (_set("layers.0", [1, 2]), "layers[0] must be a mapping, got list"),
    "heads a string": (_set("layers.1.heads", "ab"), "layers[1]: heads must be a list, got str"),
    "a head that is a list": (_set("layers.1.heads.0", [1]), "each of heads must be a mapping, got list"),
    "options a list": (_set("layers.1.heads.0.options", [1]), "options must be a mapping or null, got list"),
    "infinite layer": (_set("layers.1.layer", float("inf")), "layers[1]: layer must be an int >= 0, got inf"),
    "zero steps": (_set("schedule", 0), "schedule must be an int >= 1, got 0"),
    "infinite steps": (_set("schedule", float("inf")), "schedule must be an int >= 1, got inf"),
    "zero grid": (_set("grid", [0, 8, 8]), "each grid size must be an int >= 1, got 0"),
    "infinite grid": (_set("grid.0", float("inf")), "each grid size must be an int >= 1, got inf"),
    "zero block": (_set("block_size", 0), "block_size must be a power of two from 16 to 1024, got 0"),
    "infinite target": (_set("target", float("inf")), "target must be a finite number >= 0, got inf"),
    "nan density": (_set("layers.1.heads.0.density", float("nan")), "density must be a finite number"),
    "warm-up past the steps": (_set("dense_steps", 51), "dense_steps must be an int in [0, 50], got 51"),
    "unknown metric": (_set("metric", "psnr"), "metric must be one of rel_l2, mass, got 'psnr'"),
    "a layer without its method": (_set("layers.1", {"model": "transformer", "layer": 1}),
                                   "layers[1] has no 'method'"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_calibration_is_one_value_error(tmp_path, case):
    data, message = HOSTILE[case]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="malformed calibration") as info:
        load_calibration(path)
    assert message in str(info.value)


def test_arrays_nested_too_deeply_are_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"format": "fastdit-calibration/1", "layers": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match="nested too deeply"):
        load_calibration(path)


def test_the_valid_file_loads(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(VALID))
    assert load_calibration(path).to_dict() == VALID


@pytest.mark.parametrize("command", ["generate", "compare", "app"])
def test_calibration_option_refuses_it_in_one_line(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps(_set("schedule", 0)))
    prompt = [] if command == "app" else ["--prompt", "x"]
    assert main([command, *prompt, "--calibration", "c.json"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--calibration: malformed calibration: schedule must be an int >= 1" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]
