"""Running sparse attention inside a model: what to run, per call.

``config.py`` holds :class:`SparseConfig` (one method for the model, or per-layer :class:`LayerPlan`\\s) and
its checks; ``calibration_file.py`` the calibration result and its JSON file format (one source of a config);
``context.py`` the per-forward state hooks record (grid, step); ``engine.py`` the attention call: decide dense
or sparse, build or fetch the layout, permute, run the kernel, record; ``stats.py`` what ran;
``entropy.py`` attention-entropy scaling; ``files.py`` atomic file writes. No diffusers import.
"""

from fastdit.runtime.calibration_file import Calibration, load_calibration
from fastdit.runtime.config import LayerPlan, SparseConfig
from fastdit.runtime.entropy import entropy_scale_factor
from fastdit.runtime.stats import AttentionStats, LayerRecord

__all__ = ["SparseConfig", "LayerPlan", "Calibration", "load_calibration", "AttentionStats", "LayerRecord",
           "entropy_scale_factor"]
