"""Paired comparison of two configurations scored on the same prompts: how many detector hits one gains and
loses against the other, and whether that differs from chance (an exact two-sided sign test).

With a few dozen prompts a difference of two or three videos is noise; a report that says "closer" should say
how sure it is. Pairing by prompt (same seed, same length) removes the variation between prompts, so the
test only sees the prompts where the two configurations disagree.
"""

from __future__ import annotations

from math import comb
from typing import Any, Mapping, Sequence


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven among ``wins + losses`` coin
    flips (ties are left out before calling). 1.0 when there is nothing to compare."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_hits(rows: Sequence[dict[str, Any]], challenger: str, reference: str,
                attributes: Sequence[str]) -> tuple[int, int]:
    """``(wins, losses)`` of ``challenger`` against ``reference`` over the prompts both were run on: one per
    (prompt, attribute) the challenger gets right and the reference wrong, and the reverse. ``rows`` are
    video rows with ``prompt``, ``config`` and a boolean per attribute, all of one length."""
    by_config: dict[str, dict[str, dict[str, Any]]] = {challenger: {}, reference: {}}
    for row in rows:
        if row["config"] in by_config:
            by_config[row["config"]][row["prompt"]] = row

    def hits(label: str) -> dict[tuple[str, str], bool]:
        return {(prompt, a): bool(row[a]) for prompt, row in by_config[label].items() for a in attributes}

    return paired_signs(hits(challenger), hits(reference))


def paired_signs(challenger: Mapping[Any, Any], reference: Mapping[Any, Any]) -> tuple[int, int]:
    """``(wins, losses)``: over the keys both hold, how often ``challenger``'s value is above ``reference``'s
    and how often below (ties left out, as ``sign_test`` wants)."""
    shared = challenger.keys() & reference.keys()
    return (sum(challenger[k] > reference[k] for k in shared), sum(challenger[k] < reference[k] for k in shared))
