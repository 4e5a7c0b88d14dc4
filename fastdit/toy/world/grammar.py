"""The toy world's vocabulary and prompt grammar: what a clip can contain, and how a prompt says it.

A scene is one or two objects over a background. Every attribute is a closed set, so a prompt maps to exactly
one scene description and back (``scene.prompt`` and :func:`parse_prompt`), which is what lets an evaluation
score a generated video against the prompt it came from. Colours are chosen by hue, at least 35 degrees apart,
and none is close to a background, so a detector can tell them apart in a blurry generated frame.

  a red ball bouncing in a white room
  a small blue square moving left on grass
  a big yellow triangle circling and a pink ball staying still in a dark room
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["COLOURS", "SHAPES", "SIZES", "MOTIONS", "BACKGROUNDS", "DIRECTIONS", "ObjectSpec", "SceneSpec",
           "parse_prompt", "vocabulary"]

# name -> sRGB; hues 0, 50, 186, 227, 274 and 325 degrees, all fully saturated and bright enough to read on
# a dark background
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "yellow": (245, 205, 20),
    "cyan": (20, 195, 215),
    "blue": (35, 75, 225),
    "purple": (145, 55, 215),
    "pink": (240, 70, 170),
}
SHAPES = ("ball", "square", "triangle")
# name -> prompt word ("" for the default size) and half-extent as a fraction of the frame side
SIZES: dict[str, tuple[str, float]] = {"small": ("small", 0.08), "medium": ("", 0.11), "big": ("big", 0.15)}
# name -> prompt phrase
MOTIONS: dict[str, str] = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "up_right": "moving up and right",
    "down_left": "moving down and left",
    "bouncing": "bouncing",
    "circling": "circling",
    "still": "staying still",
}
# straight motions -> unit direction in image coordinates (x right, y down)
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
    "up_right": (2**-0.5, -(2**-0.5)), "down_left": (-(2**-0.5), 2**-0.5),
}
# name -> prompt phrase
BACKGROUNDS: dict[str, str] = {"white_room": "in a white room", "dark_room": "in a dark room", "grass": "on grass"}


@dataclass(frozen=True)
class ObjectSpec:
    """One object: what it is and how it moves (its start position and speed are drawn when rendering)."""

    colour: str
    shape: str
    size: str
    motion: str

    def __post_init__(self) -> None:
        for field, value, allowed in (("colour", self.colour, COLOURS), ("shape", self.shape, SHAPES),
                                      ("size", self.size, SIZES), ("motion", self.motion, MOTIONS)):
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r}; allowed: {', '.join(allowed)}")

    @property
    def triple(self) -> tuple[str, str, str]:
        """(colour, shape, motion): the combination the held-out split keeps away from training."""
        return self.colour, self.shape, self.motion

    @property
    def phrase(self) -> str:
        size_word = SIZES[self.size][0]
        return " ".join(w for w in ("a", size_word, self.colour, self.shape, MOTIONS[self.motion]) if w)


@dataclass(frozen=True)
class SceneSpec:
    """A clip's content: one or two objects of different colours over a background."""

    objects: tuple[ObjectSpec, ...]
    background: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"a scene has 1 or 2 objects, got {len(self.objects)}")
        if len({o.colour for o in self.objects}) != len(self.objects):
            raise ValueError("the objects of a scene must have different colours (the colour tells them apart)")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; allowed: {', '.join(BACKGROUNDS)}")

    @property
    def prompt(self) -> str:
        return " and ".join(o.phrase for o in self.objects) + " " + BACKGROUNDS[self.background]


_SIZE_WORDS = {word: name for name, (word, _) in SIZES.items() if word}
_FIELDS = ("size", "colour", "shape", "motion")


def _object_pattern(prefix: str) -> str:
    """A regex for one object phrase, its groups named ``prefix + field``."""
    choices = {"size": _SIZE_WORDS, "colour": COLOURS, "shape": SHAPES, "motion": MOTIONS.values()}
    size, colour, shape, motion = (f"(?P<{prefix}{f}>{'|'.join(map(re.escape, choices[f]))})" for f in _FIELDS)
    return rf"a (?:{size} )?{colour} {shape} {motion}"


_BACKGROUND = rf"(?P<background>{'|'.join(map(re.escape, BACKGROUNDS.values()))})"
_PROMPT = re.compile(rf"(?:{_object_pattern('a_')} and )?{_object_pattern('b_')} {_BACKGROUND}")
_MOTION_NAMES = {phrase: name for name, phrase in MOTIONS.items()}
_BACKGROUND_NAMES = {phrase: name for name, phrase in BACKGROUNDS.items()}


def parse_prompt(prompt: str) -> SceneSpec:
    """The scene a prompt of this grammar describes (whitespace and case are ignored).

    Raises ``ValueError`` naming the grammar for anything else, so an evaluation never scores a prompt it
    can't read.
    """
    text = " ".join(prompt.lower().split())
    match = _PROMPT.fullmatch(text)
    if match is None:
        raise ValueError(f"{prompt!r} is not a toy-world prompt; the grammar is 'a [small|big] COLOUR SHAPE MOTION "
                         f"[and a ...] BACKGROUND', e.g. 'a red ball bouncing in a white room'")
    groups = [{f: match[prefix + f] for f in _FIELDS} for prefix in ("a_", "b_") if match[prefix + "colour"]]
    return SceneSpec(
        tuple(ObjectSpec(g["colour"], g["shape"], _SIZE_WORDS.get(g["size"] or "", "medium"),
                         _MOTION_NAMES[g["motion"]]) for g in groups),
        _BACKGROUND_NAMES[match["background"]])


def vocabulary() -> list[str]:
    """Every word a prompt of this grammar can use (the tokenizer is trained on them, one token per word)."""
    phrases = ["a and", *COLOURS, *SHAPES, *(w for w, _ in SIZES.values() if w), *MOTIONS.values(),
               *BACKGROUNDS.values()]
    return sorted({word for phrase in phrases for word in phrase.split()})
