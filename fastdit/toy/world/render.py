"""Rendering the toy world in numpy: a scene, a random generator and a clip size in, frames and truth out.

Shapes are drawn from signed distance fields, with a pixel's coverage ``clip(0.5 - distance, 0, 1)`` as its
opacity: one-pixel anti-aliased edges at no extra cost, and the same code at any frame size. Backgrounds are
plain or smoothly textured (a detector and a small VAE both cope with low-frequency texture; per-pixel noise
would only teach the VAE to blur). Motions are defined per frame, so a longer clip moves further, as a
model asked for more frames should.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastdit.toy.world.grammar import COLOURS, DIRECTIONS, SIZES, ObjectSpec, SceneSpec

__all__ = ["Track", "Clip", "render_scene", "plan_paths", "draw_clip", "plan_track", "draw_background",
           "shape_area", "MARGIN"]

MARGIN = 2.0  # pixels kept between an object and the frame edge
_SPEED = (0.018, 0.026)  # straight motions: frame sides per frame
_BOUNCE_HEIGHT = (0.3, 0.5)  # frame sides
_BOUNCE_PERIOD = (10.0, 16.0)  # frames
_ORBIT_RADIUS = (0.13, 0.18)  # frame sides
_ORBIT_SPEED = (0.30, 0.40)  # radians per frame: 0.75 to 1 turn in 17 frames
_GAP = 4.0  # pixels always kept between the two objects of a scene


@dataclass(frozen=True)
class Track:
    """Ground truth of one object per frame: the centroid of its pixels and its bounding box, in pixels
    (x right, y down; box ``x0, y0, x1, y1`` of the shape's exact extent)."""

    spec: ObjectSpec
    centroids: np.ndarray  # [F, 2]
    boxes: np.ndarray  # [F, 4]


@dataclass(frozen=True)
class Clip:
    """A rendered clip: ``frames`` uint8 ``[F, H, W, 3]``, its scene (and prompt) and one track per object."""

    scene: SceneSpec
    frames: np.ndarray
    tracks: tuple[Track, ...]

    @property
    def prompt(self) -> str:
        return self.scene.prompt


def _half_extent(spec: ObjectSpec, side: int) -> float:
    return SIZES[spec.size][1] * side


def shape_area(shape: str, half_extent: float) -> float:
    """Pixel area of a shape of half-extent ``s``: disc of radius s, square of side 2s, triangle of base and
    height 2s (so the fill ratio of its bounding box is pi/4, 1 and 1/2: the detector's shape cue)."""
    return {"ball": np.pi, "square": 4.0, "triangle": 2.0}[shape] * half_extent**2


def plan_track(spec: ObjectSpec, rng: np.random.Generator, frames: int, side: int) -> np.ndarray:
    """Bounding-box centres ``[frames, 2]`` of one object: its motion, with a random start and speed that keep
    the whole shape inside the frame for every frame."""
    s = _half_extent(spec, side)
    lo, hi = s + MARGIN, side - s - MARGIN
    t = np.arange(frames, dtype=np.float64)
    if spec.motion in DIRECTIONS:
        direction = np.array(DIRECTIONS[spec.motion])
        span = (frames - 1) * np.abs(direction)
        speed = rng.uniform(*_SPEED) * side
        speed = min(speed, *(0.99 * (hi - lo) / d for d in span if d > 0))  # long clips: slow down to stay in
        travel = direction * speed * (frames - 1)
        start = np.array([rng.uniform(lo - min(d, 0), hi - max(d, 0)) for d in travel])
        return start + t[:, None] * (travel / max(frames - 1, 1))
    if spec.motion == "bouncing":
        floor = hi
        height = min(rng.uniform(*_BOUNCE_HEIGHT) * side, floor - lo)
        period = rng.uniform(*_BOUNCE_PERIOD)
        contact = rng.uniform(0.25, 0.75) * (frames - 1)
        phase = np.mod((t - contact) / period, 1.0)
        y = floor - 4 * height * phase * (1 - phase)
        return np.stack([np.full(frames, rng.uniform(lo, hi)), y], axis=1)
    if spec.motion == "circling":
        radius = rng.uniform(*_ORBIT_RADIUS) * side
        angle = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * rng.uniform(*_ORBIT_SPEED) * t
        centre = rng.uniform(lo + radius, hi - radius, size=2)
        return centre + radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return np.tile(rng.uniform(lo, hi, size=2), (frames, 1))  # still


def _distance(shape: str, x: np.ndarray, y: np.ndarray, s: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) from pixel centres ``x, y`` (relative to the box centre)
    to a shape of half-extent ``s``; the triangle's is the max over its edges, exact near the edges, which is
    all the anti-aliasing reads."""
    if shape == "ball":
        return np.hypot(x, y) - s
    if shape == "square":
        qx, qy = np.abs(x) - s, np.abs(y) - s
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    # apex (0, -s), base corners (+-s, s): slanted edges have normals (+-2, 1)/sqrt(5)
    slant = (2 * np.abs(x) - y - s) / np.sqrt(5.0)
    return np.maximum(slant, y - s)


def draw_background(name: str, rng: np.random.Generator, side: int) -> np.ndarray:
    """A static ``[side, side, 3]`` float image: a room (wall over a floor) or a lawn (mottled, mown stripes)."""
    y = (np.arange(side) + 0.5)[:, None]
    if name in ("white_room", "dark_room"):
        wall, floor = (((236, 234, 228), (212, 206, 196)) if name == "white_room"
                       else ((46, 46, 54), (30, 30, 35)))
        horizon = rng.uniform(0.62, 0.75) * side
        on_floor = np.clip(y - horizon + 0.5, 0, 1)[..., None]
        image = np.asarray(wall, np.float64) * (1 - on_floor) + np.asarray(floor, np.float64) * on_floor
        return np.broadcast_to(image, (side, side, 3)).copy()
    # grass: a coarse random grid upsampled bilinearly (mottling) plus vertical mowing stripes
    cells = rng.normal(0, 1, size=(9, 9))
    coords = np.linspace(0, 8, side)
    i0 = np.minimum(coords.astype(int), 7)
    f = coords - i0
    rows = cells[i0] * (1 - f)[:, None] + cells[i0 + 1] * f[:, None]
    mottle = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
    x = np.arange(side) + 0.5
    stripes = np.cos(2 * np.pi * (x / (side / 4) + rng.uniform()))[None, :]
    brightness = 1 + 0.07 * mottle + 0.05 * stripes
    return np.asarray((76, 138, 60), np.float64) * brightness[..., None]


def _separated(a: np.ndarray, sa: float, b: np.ndarray, sb: float) -> bool:
    """True when two boxes (centres ``[F, 2]``, half-extents) never come within :data:`_GAP` of each other."""
    gap = np.abs(a - b) - (sa + sb)
    return bool(np.all(gap.max(axis=1) >= _GAP))


def plan_paths(scene: SceneSpec, rng: np.random.Generator, frames: int, side: int,
               tries: int = 100) -> list[np.ndarray] | None:
    """Box-centre paths of every object, re-drawn until two objects never overlap (so each object's pixels
    are its own, and what the truth says is what the frames show); ``None`` when ``tries`` draws all overlap,
    which happens for two big objects whose motions need most of the frame."""
    if frames < 2 or side < 32:
        raise ValueError(f"a clip needs at least 2 frames of 32x32 pixels, got {frames} of {side}x{side}")
    extents = [_half_extent(o, side) for o in scene.objects]
    for _ in range(tries):
        paths = [plan_track(o, rng, frames, side) for o in scene.objects]
        if len(paths) == 1 or _separated(paths[0], extents[0], paths[1], extents[1]):
            return paths
    return None


def draw_clip(scene: SceneSpec, paths: list[np.ndarray], rng: np.random.Generator, side: int) -> Clip:
    """The frames and truth of ``scene`` with its objects on ``paths`` (from :func:`plan_paths`)."""
    frames = len(paths[0])
    image = np.broadcast_to(draw_background(scene.background, rng, side), (frames, side, side, 3)).copy()
    pixel = np.arange(side) + 0.5
    tracks = []
    for spec, path in zip(scene.objects, paths):
        s = _half_extent(spec, side)
        colour = np.asarray(COLOURS[spec.colour], np.float64)
        for f, (cx, cy) in enumerate(path):
            cover = np.clip(0.5 - _distance(spec.shape, pixel[None, :] - cx, pixel[:, None] - cy, s), 0, 1)
            image[f] += cover[..., None] * (colour - image[f])
        offset = np.array([0.0, s / 3 if spec.shape == "triangle" else 0.0])  # a triangle's centroid sits low
        tracks.append(Track(spec, path + offset, np.concatenate([path - s, path + s], axis=1)))
    return Clip(scene, np.round(image).clip(0, 255).astype(np.uint8), tuple(tracks))


def render_scene(scene: SceneSpec, rng: np.random.Generator, frames: int = 17, side: int = 128) -> Clip:
    """Draw ``scene`` as ``frames`` square frames of ``side`` pixels, with its ground truth (start positions,
    speeds and texture from ``rng``)."""
    paths = plan_paths(scene, rng, frames, side)
    if paths is None:
        raise ValueError(f"the objects of {scene.prompt!r} don't fit apart in {frames} frames of {side}x{side}")
    return draw_clip(scene, paths, rng, side)
