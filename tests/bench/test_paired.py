"""The paired sign test that the toy bench uses to say whether a configuration differs from dense."""

from __future__ import annotations

import pytest

from fastdit.bench.paired import paired_hits, sign_test


def test_sign_test_matches_the_binomial_tail():
    assert sign_test(0, 0) == 1.0
    assert sign_test(3, 3) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)  # both all-heads and all-tails of 5 flips
    assert sign_test(0, 5) == sign_test(5, 0)
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)
    assert sign_test(20, 2) < 0.001 < sign_test(8, 4)


def test_paired_hits_count_disagreements_per_prompt_and_attribute():
    rows = [{"prompt": "a", "config": "dense", "colour": True, "motion": False},
            {"prompt": "a", "config": "radial", "colour": True, "motion": True},
            {"prompt": "b", "config": "dense", "colour": True, "motion": True},
            {"prompt": "b", "config": "radial", "colour": False, "motion": False},
            {"prompt": "c", "config": "radial", "colour": True, "motion": True}]  # no dense video: not paired
    assert paired_hits(rows, "radial", "dense", ("colour", "motion")) == (1, 2)
    assert paired_hits(rows, "dense", "radial", ("colour", "motion")) == (2, 1)
