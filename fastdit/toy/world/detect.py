"""Reading a toy-world video back: which objects it shows, their colour, shape, size and motion.

It works on any video of this world, rendered or generated, with no learned parts, so it can score a model's
prompt adherence and is itself checked against the renderer's ground truth:

1. **Background.** Per frame and row, the median of the pixels that can't be an object (low saturation, or a
   hue far from every object colour): rooms are a wall over a floor, so a row is one colour.
2. **Objects.** Foreground pixels (far from their row's background) that are inside the foreground (not an
   edge) vote by hue for the nearest palette colour; colours with enough votes are objects, at most two.
3. **Masks.** A pixel ``p`` over background ``b`` is read as a mix ``b + a (c - b)`` with each object colour
   ``c``; it belongs to the object it fits best, with ``a`` as its coverage. Anti-aliased edges thus count by
   coverage, which makes areas and centroids sub-pixel accurate on rendered frames.
4. **Attributes.** Shape from the fill ratio of the bounding box (disc pi/4, square 1, triangle 1/2), size
   from the area, motion from the centroid track (see :func:`classify_motion`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from fastdit.toy.world.grammar import COLOURS, DIRECTIONS, SHAPES, SIZES, SceneSpec
from fastdit.toy.world.render import shape_area

__all__ = ["DetectedObject", "detect", "classify_motion", "winding", "attribute_hits", "ATTRIBUTES"]

ATTRIBUTES = ("colour", "shape", "size", "motion")
_FOREGROUND = 60.0  # RGB distance from the row's background that makes a pixel foreground
_OBJECT_SATURATION = 0.3  # below this a pixel is never an object's
_HUE_TOLERANCE = 30.0  # degrees from a palette hue for a pixel to vote for it
_MIN_AREA = 12.0  # pixels (at 128x128, scaled with the frame area) for an object to be present in a frame
_FILL = {"ball": np.pi / 4, "square": 1.0, "triangle": 0.5}
_ORBIT_MIN_TURN = 260.0  # degrees around the track's centre (see winding)
_ORBIT_MIN_RADIUS = 0.06  # frame sides; the renderer's orbits have 0.13 to 0.18


@dataclass(frozen=True)
class DetectedObject:
    """One object found in a video; per-frame arrays hold NaN where it wasn't found."""

    colour: str
    shape: str
    size: str
    motion: str
    centroids: np.ndarray  # [F, 2] pixels (x, y)
    areas: np.ndarray  # [F] pixels, coverage-weighted
    colours: np.ndarray  # [F, 3] mean RGB of its inner pixels

    @property
    def present(self) -> float:
        """Share of frames in which it was found."""
        return float(np.mean(~np.isnan(self.areas)))


def _hue_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV hue in degrees and saturation of ``[..., 3]`` RGB values."""
    high, low = rgb.max(-1), rgb.min(-1)
    chroma = high - low
    safe = np.where(chroma > 0, chroma, 1.0)
    r, g, b = np.moveaxis(rgb, -1, 0)
    hue = np.where(high == r, np.mod((g - b) / safe, 6), np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return hue * 60.0, np.where(high > 0, chroma / np.where(high > 0, high, 1.0), 0.0)


_NAMES = list(COLOURS)
_PALETTE_HUES = _hue_saturation(np.array(list(COLOURS.values()), np.float64))[0]


def _nearest_colour(hue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest palette hue and the angle to it, per pixel."""
    gap = np.abs(np.mod(hue[..., None] - _PALETTE_HUES + 180.0, 360.0) - 180.0)
    return gap.argmin(-1), gap.min(-1)


def _background(video: np.ndarray, objectlike: np.ndarray) -> np.ndarray:
    """``[F, H, 1, 3]`` background colour per frame and row, from pixels that can't be an object (the frame's
    such pixels where a row has too few)."""
    masked = np.where(objectlike[..., None], np.nan, video)
    enough = (~objectlike).sum(axis=2, keepdims=True)[..., None] >= 8
    with warnings.catch_warnings():  # rows (or frames) without background pixels are all NaN, replaced below
        warnings.simplefilter("ignore", RuntimeWarning)
        frame_level = np.nanmedian(masked.reshape(len(video), -1, 3), axis=1)[:, None, None, :]
        rows = np.nanmedian(masked, axis=2, keepdims=True)
    return np.where(enough, rows, np.nan_to_num(frame_level))


def _inner(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask [F, H, W]`` whose four neighbours are in it too (drops anti-aliased edges)."""
    return ~_grow(~mask)


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask [F, H, W]`` and the four neighbours of each of its pixels."""
    grown = mask.copy()
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    grown[:, :, 1:] |= mask[:, :, :-1]
    grown[:, :, :-1] |= mask[:, :, 1:]
    return grown


def winding(track: np.ndarray) -> float:
    """Degrees a track ``[F, 2]`` turns around its own centroid (unsigned net angle).

    A circle gives 360, the renderer's orbits (3/4 to 1 turn) 280 to 360, a half circle 240, and a straight
    or bent path much less (a path bowed by a fifth of its length about 80): unlike the area a path encloses,
    which a slight bend already makes large, this separates going round from going along a curve. Points
    within a quarter of the largest distance of the centroid are skipped, and so are steps of more than a
    quarter turn (an orbit moves a few degrees per frame): a path that passes by the centroid, or goes back
    and forth through it like a bounce, crosses it in one such step, whose direction only jitter decides.
    """
    offsets = track - track.mean(axis=0)
    distance = np.hypot(*offsets.T)
    far = offsets[distance >= 0.25 * distance.max()]
    turns = np.mod(np.diff(np.arctan2(far[:, 1], far[:, 0])) + np.pi, 2 * np.pi) - np.pi
    return float(np.degrees(abs(np.sum(turns[np.abs(turns) < np.pi / 2]))))


def classify_motion(centroids: np.ndarray, side: float) -> str:
    """The motion a centroid track ``[F, 2]`` (NaN rows: not found) shows, or ``"unknown"``.

    Checked in order, with distances in frame sides: *still* (never more than 0.03 from its median),
    *circling* (see :func:`winding`: the track turns at least 260 degrees around its own centre, at a mean
    radius of at least 0.06), *bouncing* (some low point is reached after falling and followed by rising, at
    least 0.06 each, with little sideways drift), then the straight motions by the direction of the net
    displacement (at least 0.1, and at least 0.6 of the path length), in 45-degree sectors.
    """
    track = centroids[~np.isnan(centroids).any(axis=1)] / side
    if len(track) < max(3, len(centroids) // 2):
        return "unknown"
    if np.abs(track - np.median(track, axis=0)).max() < 0.03:
        return "still"
    radius = float(np.hypot(*(track - track.mean(axis=0)).T).mean())
    if radius >= _ORBIT_MIN_RADIUS and winding(track) >= _ORBIT_MIN_TURN:
        return "circling"
    x, y = track.T
    fall = y - np.minimum.accumulate(y)  # how far it has come down to each point, and will go up after it
    rise = y - np.minimum.accumulate(y[::-1])[::-1]
    if np.minimum(fall, rise).max() >= 0.06 and np.ptp(x) < 0.5 * np.ptp(y):
        return "bouncing"
    net = track[-2:].mean(axis=0) - track[:2].mean(axis=0)
    distance = float(np.hypot(*net))
    length = float(np.hypot(*np.diff(track, axis=0).T).sum())
    if distance < 0.1 or distance < 0.6 * length:
        return "unknown"
    unit = net / distance
    name, cosine = max(((m, float(np.dot(unit, d))) for m, d in DIRECTIONS.items()), key=lambda item: item[1])
    return name if cosine >= np.cos(np.pi / 8) else "unknown"


def _shape(fill: float) -> str:
    return min(SHAPES, key=lambda s: abs(_FILL[s] - fill))


def _size(shape: str, area: float, side: float) -> str:
    extent = np.sqrt(area / shape_area(shape, 1.0)) / side
    return min(SIZES, key=lambda s: abs(np.log(SIZES[s][1] / extent)))


def detect(frames: np.ndarray, max_objects: int = 2) -> list[DetectedObject]:
    """The objects of a toy-world video ``[F, H, W, 3]`` (uint8, or floats in [0, 1]), largest first."""
    video = np.asarray(frames, np.float32)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a video [frames, height, width, 3], got shape {video.shape}")
    if np.asarray(frames).dtype != np.uint8:
        video = video * np.float32(255.0)
    count, height, width, _ = video.shape
    side = float(np.sqrt(height * width))
    min_area = _MIN_AREA * side**2 / 128**2
    hue, saturation = _hue_saturation(video)
    nearest, gap = _nearest_colour(hue)
    objectlike = (saturation >= _OBJECT_SATURATION) & (gap <= _HUE_TOLERANCE)
    background = _background(video, objectlike)
    offset = video - background
    foreground = np.linalg.norm(offset, axis=-1) > _FOREGROUND
    voters = _inner(foreground) & objectlike
    votes = np.bincount(nearest[voters], minlength=len(_NAMES))
    floor = max(0.05 * votes.max(initial=0), count * min_area / 2)
    chosen = [int(k) for k in np.argsort(-votes)[:max_objects] if votes[k] >= floor and votes[k] > 0]
    if not chosen:
        return []
    # coverage of each chosen object at every foreground pixel, from its mean inner colour
    fits = []
    for k in chosen:
        inside = voters & (nearest == k)
        direction = video[inside].mean(axis=0) - background  # [F, H, 1, 3]
        norm2 = np.maximum((direction**2).sum(-1), 1e-6)
        alpha = (offset * direction).sum(-1) / norm2
        residual = np.linalg.norm(offset - alpha[..., None] * direction, axis=-1) / np.sqrt(norm2)
        fits.append((np.clip(alpha, 0, 1), residual, inside))
    best = np.argmin(np.stack([f[1] for f in fits]), axis=0)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    found = []
    for i, (k, (alpha, residual, inside)) in enumerate(zip(chosen, fits)):
        fitting = (best == i) & (residual < 0.35)
        hard = fitting & (alpha > 0.5)
        # coverage counts on the object and its one-pixel rim only: textured background elsewhere fits weakly too
        weight = np.where(fitting & _grow(hard), alpha, 0.0)
        area = weight.sum(axis=(1, 2))
        present = (area >= min_area) & hard.any(axis=(1, 2))
        safe = np.where(area > 0, area, 1.0)
        centroid = np.stack([(weight * xs).sum(axis=(1, 2)) / safe, (weight * ys).sum(axis=(1, 2)) / safe], 1)
        fills = [area[f] / ((np.ptp(np.nonzero(hard[f].any(0))[0]) + 1) * (np.ptp(np.nonzero(hard[f].any(1))[0]) + 1))
                 for f in range(count) if present[f]]
        rgb = np.array([video[f][inside[f]].mean(axis=0) if inside[f].any() else np.full(3, np.nan)
                        for f in range(count)])
        centroid[~present], area = np.nan, np.where(present, area, np.nan)
        shape = _shape(float(np.median(fills))) if fills else "unknown"
        size = _size(shape, float(np.nanmedian(area)), side) if fills and shape != "unknown" else "unknown"
        found.append(DetectedObject(_NAMES[k], shape, size, classify_motion(centroid, side), centroid, area, rgb))
    return sorted(found, key=lambda o: -np.nan_to_num(np.nanmedian(o.areas)) if o.present else 0.0)


def attribute_hits(scene: SceneSpec, found: list[DetectedObject]) -> dict[str, list[bool]]:
    """Per attribute, one hit or miss per object of ``scene``: the detected object of its colour (for a single
    object, the largest one found, so a wrong colour costs the colour only) must show its shape, size and
    motion."""
    by_colour = {o.colour: o for o in found}
    hits: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    for spec in scene.objects:
        match = by_colour.get(spec.colour) or (found[0] if len(scene.objects) == 1 and found else None)
        for attribute in ATTRIBUTES:
            hits[attribute].append(match is not None and getattr(match, attribute) == getattr(spec, attribute))
    return hits
