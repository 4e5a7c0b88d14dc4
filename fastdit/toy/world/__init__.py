"""A procedural video world the bundled model is trained on, and a detector that reads its videos back.

Clips show one or two coloured shapes moving over a plain or lightly textured background, each with its prompt
from a small grammar and its ground truth; they are unlimited and reproducible from a seed. A fixed set of
held-out prompts, including colour x shape x motion combinations training never shows, measures prompt
adherence, which the detector scores on any video of this world, generated or rendered.

  >>> from fastdit.toy.world import training_clip, detect
  >>> clip = training_clip(seed=0, index=0)
  >>> clip.prompt, clip.frames.shape          # ('a ... in a white room', (17, 128, 128, 3))
  >>> detect(clip.frames)[0].motion
"""

from fastdit.toy.world.detect import ATTRIBUTES, DetectedObject, attribute_hits, classify_motion, detect
from fastdit.toy.world.grammar import (
           BACKGROUNDS,
           COLOURS,
           MOTIONS,
           SHAPES,
           SIZES,
           ObjectSpec,
           SceneSpec,
           parse_prompt,
           vocabulary,
)
from fastdit.toy.world.render import Clip, Track, render_scene
from fastdit.toy.world.split import HELD_OUT_PROMPTS, HELD_OUT_SCENES, HELD_OUT_TRIPLES, is_held_out, training_clip

__all__ = ["ATTRIBUTES", "BACKGROUNDS", "COLOURS", "MOTIONS", "SHAPES", "SIZES", "Clip", "DetectedObject",
           "HELD_OUT_PROMPTS", "HELD_OUT_SCENES", "HELD_OUT_TRIPLES", "ObjectSpec", "SceneSpec", "Track",
           "attribute_hits", "classify_motion", "detect", "is_held_out", "parse_prompt", "render_scene",
           "training_clip", "vocabulary"]
