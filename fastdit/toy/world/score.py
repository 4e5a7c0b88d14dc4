"""One number per question an evaluation asks of a generated toy-world video, and where its objects go.

Adherence: did the video show the prompt's colour, shape, size and motion (per object, via the detector)?
Temporal consistency: does the object stay the same thing from frame to frame? A model whose attention misses
the frames it should see tends to let an object fade, grow, shrink or change colour on the way, so three
measures read that: the share of frames the object is found in, the variation of its area (standard deviation
over mean), and its colour drift (mean change of its mean RGB between consecutive frames, in [0, 1] units).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastdit.toy.world.detect import ATTRIBUTES, DetectedObject, attribute_hits, detect
from fastdit.toy.world.grammar import DIRECTIONS, SceneSpec, parse_prompt

__all__ = ["score_video", "consistency", "motion_geometry", "single_object_move"]


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


def motion_geometry(rows: list[dict[str, Any]]) -> dict[str, tuple[int, float, float | None]]:
    """Where single objects go, from the first to the last frame the detector finds them in, over ``rows``:
    ``{"straight": (videos, mean displacement in pixels, mean cosine of it with the asked direction),
    "still": (videos, mean displacement, None)}``. It separates a model that ignores the motion words (no
    displacement) from one that moves objects but picks the direction at random (cosine near 0), which the
    detector's right/wrong motion share cannot."""
    moves: dict[str, list[tuple[float, float]]] = {"straight": [], "still": []}
    for row in rows:
        move = single_object_move(row)
        if move is not None:
            moves[move[0]].append(move[1:])
    return {kind: (len(values), float(np.mean([d for d, _ in values])),
                   float(np.mean([c for _, c in values])) if kind == "straight" else None)
            for kind, values in moves.items() if values}


def single_object_move(row: dict[str, Any]) -> tuple[str, float, float] | None:
    """``(kind, displacement in pixels, cosine with the asked direction)`` of a one-object video's object from
    the first to the last frame the detector finds it in; ``kind`` is ``"straight"`` (asked to move along a
    direction) or ``"still"`` (cosine 0). None for other prompts, or an object found in fewer than 2 frames."""
    objects = parse_prompt(row["prompt"]).objects
    found = [point for point in (row["tracks"] or [[]])[0] if point is not None]
    if len(objects) != 1 or len(found) < 2 or objects[0].motion not in (*DIRECTIONS, "still"):
        return None
    shift = np.subtract(found[-1], found[0])
    distance = float(np.hypot(*shift))
    if objects[0].motion == "still":
        return "still", distance, 0.0
    return "straight", distance, float(np.dot(shift, DIRECTIONS[objects[0].motion])) / distance if distance else 0.0
