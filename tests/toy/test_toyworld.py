"""The toy world: reproducible clips whose ground truth is what the frames show, a grammar that reads its own
prompts, a held-out split training never shows, and a detector that reads rendered clips back."""

from __future__ import annotations

import numpy as np
import pytest

from fastdit.toy.world import (ATTRIBUTES, COLOURS, HELD_OUT_PROMPTS, HELD_OUT_SCENES, HELD_OUT_TRIPLES, MOTIONS,
                               SHAPES, attribute_hits, detect, is_held_out, parse_prompt, render_scene, training_clip)
from fastdit.toy.world.detect import classify_motion, winding
from fastdit.toy.world.grammar import DIRECTIONS, SIZES
from fastdit.toy.world.render import shape_area
from fastdit.toy.world.score import score_video
from fastdit.toy.world.split import sample_training_scene


def test_clips_are_reproducible_from_seed_and_index():
    a, b, other = training_clip(7, 3), training_clip(7, 3), training_clip(7, 4)
    assert a.prompt == b.prompt and np.array_equal(a.frames, b.frames)
    assert all(np.array_equal(x.centroids, y.centroids) for x, y in zip(a.tracks, b.tracks))
    assert not np.array_equal(a.frames, other.frames)
    assert a.frames.shape == (17, 128, 128, 3) and a.frames.dtype == np.uint8


@pytest.mark.parametrize("index", range(6))
def test_ground_truth_is_what_the_frames_show(index):
    clip = training_clip(11, index)
    found = {o.colour: o for o in detect(clip.frames)}
    for track in clip.tracks:
        seen = found[track.spec.colour]
        assert np.abs(seen.centroids - track.centroids).max() < 0.5  # pixels
        extent = (track.boxes[0, 2] - track.boxes[0, 0]) / 2
        assert np.allclose(seen.areas, shape_area(track.spec.shape, extent), rtol=0.05)
        inside = (track.boxes[:, :2] >= 0).all() and (track.boxes[:, 2:] <= 128).all()
        assert inside, "objects stay inside the frame"


def test_prompts_parse_back_to_their_scene():
    rng = np.random.default_rng(0)
    for scene in [*HELD_OUT_SCENES, *(sample_training_scene(rng) for _ in range(200))]:
        assert parse_prompt(scene.prompt) == scene
    assert parse_prompt("A  Red ball bouncing in a white room").objects[0].colour == "red"
    with pytest.raises(ValueError, match="not a toy-world prompt"):
        parse_prompt("a green ball bouncing in a white room")


def test_held_out_split():
    assert len(HELD_OUT_PROMPTS) >= 48 and len(set(HELD_OUT_PROMPTS)) == len(HELD_OUT_PROMPTS)
    unseen = [s for s in HELD_OUT_SCENES if s.objects[0].triple in HELD_OUT_TRIPLES]
    assert len(unseen) >= 48
    for values, index in ((COLOURS, 0), (SHAPES, 1), (MOTIONS, 2)):  # every attribute value stays trainable
        assert {t[index] for t in HELD_OUT_TRIPLES} == set(values)
    rng = np.random.default_rng(1)
    scenes = [sample_training_scene(rng) for _ in range(2000)]
    assert not any(is_held_out(s) for s in scenes)
    assert not {s.prompt for s in scenes} & set(HELD_OUT_PROMPTS)
    assert 0.15 < np.mean([len(s.objects) == 2 for s in scenes]) < 0.35


def test_detector_reads_rendered_clips():
    """At least 98% right per attribute, on training clips (one or two objects) and held-out scenes."""
    rng = np.random.default_rng(5)
    clips = [training_clip(21, i) for i in range(30)] + [render_scene(s, rng) for s in HELD_OUT_SCENES[::4]]
    totals = {a: [] for a in ATTRIBUTES}
    for clip in clips:
        for attribute, hits in attribute_hits(clip.scene, detect(clip.frames)).items():
            totals[attribute] += hits
    rates = {a: np.mean(h) for a, h in totals.items()}
    assert all(rate >= 0.98 for rate in rates.values()), rates


def _arc(turns: float, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """17 points on a circle of radius 0.15 (frame sides) over ``turns`` turns, with Gaussian jitter."""
    angle = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi * turns, 17)
    return 0.5 + 0.15 * np.stack([np.cos(angle), np.sin(angle)], 1) + rng.normal(0, jitter, (17, 2))


def _bent_path(direction: tuple[float, float], bend: float, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """17 points along ``direction`` over 0.35 frame sides, bowed sideways by ``bend`` of that length at the
    middle (a parabola), with Gaussian jitter: what a generated object moving one way often looks like."""
    t = np.linspace(-1, 1, 17)[:, None]
    unit = np.array(direction)
    return 0.5 + 0.175 * t * unit + bend * 0.35 * (1 - t**2) * unit[::-1] * (1, -1) + rng.normal(0, jitter, (17, 2))


def test_circling_means_going_round_not_a_bent_path():
    """Generated objects rarely move in perfect lines: a path bowed by up to a quarter of its length, with
    jitter, still reads as its direction (the enclosed-area rule this replaced called a 5% bow circling),
    while 3/4 to 1 turn reads as circling and half a turn does not."""
    rng = np.random.default_rng(0)
    for name, direction in DIRECTIONS.items():
        for bend in (0.0, 0.1, 0.25):
            track = _bent_path(direction, bend, rng, jitter=0.01)
            assert classify_motion(track * 128, 128.0) == name, (name, bend, winding(track))
    for turns in (0.75, 0.9, 1.0):
        assert all(classify_motion(_arc(turns, rng, 0.01) * 128, 128.0) == "circling" for _ in range(10))
    assert not any(classify_motion(_arc(0.5, rng, 0.0) * 128, 128.0) == "circling" for _ in range(10))
    wobble = 0.5 + rng.normal(0, 0.02, (17, 2))  # jitter around a point winds at random, at a tiny radius
    assert classify_motion(wobble * 128, 128.0) != "circling"


def test_score_reports_the_track_it_read():
    """A scored video carries each detected object's centroid track: the evidence for its motion verdict."""
    clip = training_clip(3, 0)
    scored = score_video(clip.scene, clip.frames)
    assert len(scored["tracks"]) == len(scored["detected"]) >= 1
    track = np.array(scored["tracks"][0], dtype=float)
    assert track.shape == (len(clip.frames), 2)
    truth = min(clip.tracks, key=lambda t: np.abs(t.centroids - track).max()).centroids
    assert np.abs(track - truth).max() < 1.0


def test_detector_on_an_empty_or_malformed_video():
    assert detect(np.full((5, 64, 64, 3), 235, np.uint8)) == []
    with pytest.raises(ValueError, match="frames, height, width, 3"):
        detect(np.zeros((64, 64, 3), np.uint8))


def test_sizes_and_longer_clips():
    scene = parse_prompt("a small cyan triangle moving right on grass")
    clip = render_scene(scene, np.random.default_rng(0), frames=65, side=128)
    assert len(clip.frames) == 65 and (clip.tracks[0].boxes[:, 2] <= 128).all()
    assert detect(clip.frames)[0].motion == "right"
    assert SIZES["small"][1] < SIZES["medium"][1] < SIZES["big"][1]
