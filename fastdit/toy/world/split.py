"""Training clips and the held-out prompts they never show.

The held-out set is fixed by rule, not by a random draw, so it is the same in every version of this file that
keeps the vocabulary: 18 colour x shape x motion combinations never appear in a training clip (not even as
one of two objects), each colour 3 times, each shape 6 times and each motion twice; each is asked for in 3
prompts (backgrounds and sizes rotated), 54 prompts in all. 18 more prompts use combinations that training does
show, but never with that size and background: 72 held-out prompts. An evaluation on them measures whether
the model composes attributes it learned separately.

Training clips are unlimited and reproducible: clip ``index`` of ``seed`` always has the same scene, start
positions and speeds (``numpy.random.default_rng([seed, index])``).
"""

from __future__ import annotations

import numpy as np

from fastdit.toy.world.grammar import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, SIZES, ObjectSpec, SceneSpec
from fastdit.toy.world.render import Clip, draw_clip, plan_paths

__all__ = ["HELD_OUT_TRIPLES", "HELD_OUT_SCENES", "HELD_OUT_PROMPTS", "is_held_out", "sample_training_scene",
           "training_clip", "TWO_OBJECT_SHARE"]

TWO_OBJECT_SHARE = 0.25  # of training clips; the rest show one object

_colours, _motions, _backgrounds, _sizes = list(COLOURS), list(MOTIONS), list(BACKGROUNDS), list(SIZES)
HELD_OUT_TRIPLES: tuple[tuple[str, str, str], ...] = tuple(
    (_colours[i % 6], SHAPES[(i + i // 6) % 3], _motions[i % 9]) for i in range(18))


def _held_out_scenes() -> tuple[SceneSpec, ...]:
    unseen = [SceneSpec((ObjectSpec(c, s, _sizes[(i + 2 * k) % 3], m),), _backgrounds[(i + k) % 3])
              for i, (c, s, m) in enumerate(HELD_OUT_TRIPLES) for k in range(3)]
    # seen combinations: the triple of index i shifted by one shape (never a held-out triple, checked below)
    seen = [SceneSpec((ObjectSpec(c, SHAPES[(SHAPES.index(s) + 1) % 3], _sizes[i % 3], m),), _backgrounds[i % 3])
            for i, (c, s, m) in enumerate(HELD_OUT_TRIPLES)]
    if any(scene.objects[0].triple in HELD_OUT_TRIPLES for scene in seen):
        raise AssertionError("a 'seen' held-out prompt uses a held-out combination")
    return tuple(unseen + seen)


HELD_OUT_SCENES: tuple[SceneSpec, ...] = _held_out_scenes()
HELD_OUT_PROMPTS: tuple[str, ...] = tuple(scene.prompt for scene in HELD_OUT_SCENES)
_HELD_OUT_SET = frozenset(HELD_OUT_SCENES)
_HELD_OUT_TRIPLE_SET = frozenset(HELD_OUT_TRIPLES)


def is_held_out(scene: SceneSpec) -> bool:
    """True for a scene training must not show: a held-out prompt, or any held-out combination in it."""
    return scene in _HELD_OUT_SET or any(o.triple in _HELD_OUT_TRIPLE_SET for o in scene.objects)


def _random_object(rng: np.random.Generator, exclude_colour: str | None = None) -> ObjectSpec:
    colours = [c for c in _colours if c != exclude_colour]
    return ObjectSpec(colours[rng.integers(len(colours))], SHAPES[rng.integers(3)], _sizes[rng.integers(3)],
                      _motions[rng.integers(len(_motions))])


def sample_training_scene(rng: np.random.Generator) -> SceneSpec:
    """A random scene that is not held out: uniform attributes, two objects in :data:`TWO_OBJECT_SHARE`."""
    while True:
        first = _random_object(rng)
        objects = (first, _random_object(rng, first.colour)) if rng.random() < TWO_OBJECT_SHARE else (first,)
        scene = SceneSpec(objects, _backgrounds[rng.integers(len(_backgrounds))])
        if not is_held_out(scene):
            return scene


def training_clip(seed: int, index: int, frames: int = 17, side: int = 128) -> Clip:
    """Training clip ``index`` of the stream ``seed``: the same scene and frames on every machine and run."""
    rng = np.random.default_rng([seed, index])
    while True:  # a two-object scene whose motions can't be kept apart is replaced by another draw
        scene = sample_training_scene(rng)
        paths = plan_paths(scene, rng, frames, side)
        if paths is not None:
            return draw_clip(scene, paths, rng, side)
