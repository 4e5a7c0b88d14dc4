"""``--option KEY=VALUE``: typed values, and which method a compare option belongs to."""

from __future__ import annotations

import pytest

from fastdit.cli import CLIError
from fastdit.cli.common import parse_options, parse_value
from fastdit.cli.compare import _method_options


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.25", 0.25), ("1e-3", 1e-3), ("true", True), ("False", False), ("1,2,3", (1, 2, 3)),
    ("(4, 8, 8)", (4, 8, 8)), ("[1, 2]", (1, 2)), ("crisscross", "crisscross"), ("2d", "2d"), ("None", "None"),
])
def test_parse_value(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_options():
    assert parse_options(["decay_factor=0.4", "adjacent=full", "radius=1,2,2"]) == {
        "decay_factor": 0.4, "adjacent": "full", "radius": (1, 2, 2)}
    with pytest.raises(CLIError, match="KEY=VALUE"):
        parse_options(["decay_factor"])


def test_compare_options_are_per_method():
    options = {"radial.decay_factor": 0.4, "grat.mode": "surround"}
    assert _method_options(["radial", "grat"], options) == {"radial": {"decay_factor": 0.4},
                                                            "grat": {"mode": "surround"}}
    assert _method_options(["radial"], {"decay_factor": 0.4}) == {"radial": {"decay_factor": 0.4}}
    with pytest.raises(CLIError, match="not one of --methods"):
        _method_options(["radial"], {"grat.mode": "surround"})
