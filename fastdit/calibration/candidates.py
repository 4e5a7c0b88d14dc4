"""The settings calibration tries per method: its main knob on a ladder, every other option as the preset has it.

Each ladder spans the knob's useful range from very sparse to nearly dense, so the search can find both the
sparsest setting within a loose target and one that barely drops anything for a tight one. Only knobs that
keep the method's token order vary (radial's decay, pyramid's bands, vmoba's threshold, grat's radius, svg2's
top-p, sol's tau), so the heads of one layer can take different rungs and still share one kernel call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastdit.methods import get_method, parse_options

__all__ = ["KNOBS", "SEARCHABLE", "candidates", "knob_value", "options_dict"]

# radial: the far-frame window grows with the decay (published 0.2 Wan2.1 ... 0.95 HunyuanVideo)
_DECAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)
# pyramid: each band's cumulative share moved towards 1 by this factor of its distance from 1 (1 = as given)
_BAND_STRETCH = (1.5, 1.0, 0.6, 0.35, 0.2, 0.1, 0.05, 0.02)
_THRESHOLDS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.95)  # vmoba: share of the gate mass each query keeps
_RADII = (0, 1, 2, 3)  # grat surround: groups kept around the query group, on every axis
_TOP_P = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.995)  # svg2: attention mass each query cluster keeps (published 0.9)
# sol: standard deviations above the row's mean block score (published 1.0; Sana's Wan2.1-14B run 1.7)
_TAUS = (3.0, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5)

KNOBS = {"radial": "decay_factor", "pyramid": "thresholds", "vmoba": "threshold", "grat": "radius", "svg2": "top_p",
         "sol": "tau"}
SEARCHABLE = tuple(KNOBS)


def _pyramid_bands(base: tuple[float, ...]) -> list[dict[str, Any]]:
    out = []
    for stretch in _BAND_STRETCH:
        bands = tuple(round(min(1.0, max(0.02, 1 - (1 - t) * stretch)), 4) for t in base)
        out.append({"thresholds": bands})
    return out


def candidates(method: str, base: dict[str, Any] | None = None) -> list[Any]:
    """Validated options of ``method`` for every rung of its knob's ladder; ``base`` holds the other options
    (a preset's, e.g. HunyuanVideo's radial without the sink), which stay as they are."""
    if method not in KNOBS:
        raise ValueError(f"calibration searches the methods {', '.join(SEARCHABLE)}, not {method!r}")
    spec = get_method(method)
    start = parse_options(spec, dict(base or {}))
    if method == "radial":
        rungs = [{"decay_factor": d} for d in _DECAYS]
    elif method == "pyramid":
        rungs = _pyramid_bands(start.thresholds)
    elif method == "vmoba":
        rungs = [{"threshold": t} for t in _THRESHOLDS]
    elif method == "svg2":  # top-p leaves the clusters, so the per-head orders, as they are
        rungs = [{"top_p": p} for p in _TOP_P]
    elif method == "sol":
        rungs = [{"tau": t} for t in _TAUS]
    else:  # grat: fastdit's surround groups (criss-cross has no knob to search)
        rungs = [{"mode": "surround", "radius": (r, r, r)} for r in _RADII]
    unique = dict.fromkeys(dataclasses.replace(start, **rung) for rung in rungs)
    return list(unique)


def options_dict(options: Any) -> dict[str, Any]:
    """A method's validated options as ``fastdit.apply`` keywords (every field, defaults included)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def knob_value(method: str, options: Any) -> Any:
    """The searched knob's value in ``options`` (for reports)."""
    return getattr(options, KNOBS[method])
