"""Auto-calibration: per layer and head, the sparsest layout that keeps attention within a quality target.

    calibration = fastdit.calibrate(pipe, ["a red ball bouncing"], target=0.05)
    calibration.save("wan-480p.json")
    fastdit.apply(pipe, calibration="wan-480p.json")

:func:`measure` runs dense generations and measures candidate layouts on sampled query rows;
:func:`select` picks per target (cheap: measure once, select for several targets); :class:`Calibration` is
the result and its JSON file.
"""

from fastdit.calibration.measurements import Measurements
from fastdit.calibration.run import DEFAULT_METHODS, calibrate, default_steps, measure
from fastdit.calibration.selection import ALLOCATIONS, METRICS, select
from fastdit.runtime.calibration_file import Calibration, HeadChoice, LayerChoice, load_calibration

__all__ = ["calibrate", "measure", "select", "Calibration", "Measurements", "HeadChoice", "LayerChoice",
           "load_calibration", "default_steps", "DEFAULT_METHODS", "METRICS", "ALLOCATIONS"]
