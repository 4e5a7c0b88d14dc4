"""One number per question an evaluation asks of a generated toy-world video.

Adherence: did the video show the prompt's colour, shape, size and motion (per object, via the detector)?
Temporal consistency: does the object stay the same thing from frame to frame? A model whose attention misses
the frames it should see tends to let an object fade, grow, shrink or change colour on the way, so three
measures read that: the share of frames the object is found in, the variation of its area (standard deviation
over mean), and its colour drift (mean change of its mean RGB between consecutive frames, in [0, 1] units).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .detect import ATTRIBUTES, DetectedObject, attribute_hits, detect
from .grammar import SceneSpec

__all__ = ["score_video", "consistency"]


def consistency(found: DetectedObject | None) -> dict[str, float | None]:
    """``present``, ``area_cv`` and ``colour_drift`` of one detected object (``None`` when not found)."""
    if found is None or found.present == 0:
        return {"present": 0.0, "area_cv": None, "colour_drift": None}
    areas = found.areas[~np.isnan(found.areas)]
    steps = np.abs(np.diff(found.colours, axis=0)) / 255.0
    drift = steps[~np.isnan(steps).any(axis=1)]
    return {"present": found.present, "area_cv": float(areas.std() / areas.mean()),
            "colour_drift": float(drift.mean()) if len(drift) else None}


def score_video(scene: SceneSpec, frames: np.ndarray) -> dict[str, Any]:
    """Adherence per attribute (True only if every object of ``scene`` shows it), ``all`` (every attribute of
    every object), the consistency of the first object (the one a single-object prompt asks for), and what
    was detected: each object's attributes and its centroid track (pixels per frame, ``None`` where it
    wasn't found), so that a report shows why a motion was read the way it was."""
    found = detect(frames)
    hits = attribute_hits(scene, found)
    result: dict[str, Any] = {a: all(hits[a]) for a in ATTRIBUTES}
    result["all"] = all(result[a] for a in ATTRIBUTES)
    main = next((o for o in found if o.colour == scene.objects[0].colour), found[0] if found else None)
    result.update(consistency(main))
    result["detected"] = [f"{o.size} {o.colour} {o.shape} {o.motion}" for o in found]
    result["tracks"] = [[None if np.isnan(x) else [round(float(x), 1), round(float(y), 1)] for x, y in o.centroids]
                        for o in found]
    return result
