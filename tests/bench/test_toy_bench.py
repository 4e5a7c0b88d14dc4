"""``fastdit bench toy`` scores every configuration's videos and writes its report (numbers never asserted)."""

from __future__ import annotations

import json

import pytest

from fastdit.bench.toy import (Config, append_unit, configs, findings, load_progress, motion_hits, pooled_psnr,
                              summarise, vae_ceiling)
from fastdit.cli import main
from fastdit.toy.world.score import motion_geometry

pytestmark = pytest.mark.usefixtures("one_thread")


def _scored_row(prompt: str, config: str, scale: int = 1, setting: str = "preset", motion: bool = False,
                tracks: list | None = None) -> dict:
    """A video row as ``bench toy`` stores it: colour right, motion right where ``motion``, the other attributes
    wrong, the same consistency, density and time columns everywhere."""
    attributes = ("colour", "shape", "size", "motion", "all")
    return {"prompt": prompt, "kind": "unseen", "scale": scale, "frames": 16 * scale + 1, "config": config,
            "method": config.split()[0], "setting": setting, "psnr_db": 30.0, "ssim": 0.9, "present": 1.0,
            "area_cv": 0.1, "colour_drift": 0.0, "density": 0.5, "total_s": 1.0, "tracks": tracks or [],
            **{a: a == "colour" or (a == "motion" and motion) for a in attributes}}


def _left_moves(colours: int) -> list[str]:
    """Prompts of one object moving left: the first ``colours`` colours, each as a ball and a square."""
    return [f"a {colour} {shape} moving left in a white room"
            for colour in ("red", "yellow", "cyan", "blue", "purple", "pink")[:colours] for shape in ("ball", "square")]


def test_report_has_a_row_per_video_and_a_summary_per_configuration(mini_model, tmp_path):
    code = main(["bench", "toy", "--model", str(mini_model), "--preset", "fastdit/tiny-wan", "--prompts", "2",
                 "--scales", "1", "2", "--methods", "grat", "--no-alternates", "--out", str(tmp_path),
                 "--name", "toy_test"])
    assert code == 0
    data = json.loads((tmp_path / "toy_test.json").read_text())
    labels = {(s["scale"], s["config"]) for s in data["summary"]}
    assert labels == {(1, "dense (stock)"), (1, "grat"), (2, "dense (stock)"), (2, "grat"),
                      (2, "dense +entropy"), (2, "radial +entropy")}
    assert len(data["videos"]) == 2 * len(labels)
    assert {v["frames"] for v in data["videos"]} == {5, 9}  # the mini model's 5 frames, and twice as long
    assert all(set(v) >= {"colour", "shape", "motion", "psnr_db", "density", "present"} for v in data["videos"])
    # each detected object's track comes with it, one point (or null) per frame
    assert all(len(v["tracks"]) == len(v["detected"]) for v in data["videos"])
    assert all(len(track) == v["frames"] for v in data["videos"] for track in v["tracks"])
    assert set(data["vae_ceiling"]) == {"colour", "shape", "size", "motion", "all"}
    assert all(0 <= share <= 1 for share in data["vae_ceiling"].values())
    report = (tmp_path / "toy_test.md").read_text()
    assert "Dense at the training length" in report and "Through the VAE alone" in report
    assert (tmp_path / "toy_test.png").stat().st_size > 0


def test_configurations_and_pooled_psnr():
    plan = configs(["radial", "grat"], scale=1, alternates=True, entropy_for=["dense", "radial"])
    assert [c.setting for c in plan].count("alternate") == 4 and not any(c.entropy for c in plan)
    assert [c.label for c in configs([], scale=2, alternates=True, entropy_for=[])] == ["dense (stock)"]
    assert Config(None).sparse("auto") is None
    assert Config("radial", entropy=True).sparse("auto")["entropy_scaling"] is True
    assert pooled_psnr([float("inf"), float("inf")]) == float("inf")
    assert pooled_psnr([20.0, float("inf")]) == pytest.approx(23.01, abs=0.01)


def test_bad_arguments_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:  # the parser's own check, before anything loads
        main(["bench", "toy", "--prompts", "0"])
    assert exit_info.value.code == 2
    assert "argument --prompts: must be a whole number >= 1, got '0'" in capsys.readouterr().err


def test_an_interrupted_run_resumes_where_it_stopped(mini_model, tmp_path, monkeypatch):
    import fastdit.runs.run

    real, calls, interrupts = fastdit.runs.run.run_pipeline, [], [3]

    def counted(*args, **kwargs):
        calls.append(kwargs["label"])
        if interrupts and len(calls) == interrupts[0]:  # the second prompt's first video: the first prompt is
            interrupts.pop()  # done, the second is not (once)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fastdit.runs.run, "run_pipeline", counted)
    argv = ["bench", "toy", "--model", str(mini_model), "--preset", "fastdit/tiny-wan", "--prompts", "2",
            "--scales", "1", "--methods", "grat", "--no-alternates", "--out", str(tmp_path), "--name", "toy_resume"]
    assert main(argv) == 130  # Ctrl-C
    partial = tmp_path / "toy_resume.partial.jsonl"
    lines = partial.read_text().splitlines()
    assert len(lines) == 2  # settings + the first prompt's unit
    header = json.loads(lines[0])
    assert set(header["settings"]["weights"]) == {"transformer", "vae"}
    header["settings"]["weights"]["transformer"] += 1.0  # as if the model had been retrained since
    partial.write_text("\n".join([json.dumps(header), lines[1]]) + "\n")
    calls.clear()
    assert main(argv) == 0
    assert len(calls) == 4  # another model's progress is not resumed: all four videos again
    partial.write_text("\n".join(lines) + "\n")
    calls.clear()
    assert main(argv) == 0
    assert len(calls) == 2  # only the second prompt's two videos were generated again
    data = json.loads((tmp_path / "toy_resume.json").read_text())
    assert len(data["videos"]) == 4 and len({v["prompt"] for v in data["videos"]}) == 2
    assert data["weights"] == json.loads(lines[0])["settings"]["weights"]  # the report says what it measured
    assert not partial.exists()


def test_units_finished_between_two_interruptions_are_kept(tmp_path, capsys):
    progress, settings = tmp_path / "toy.partial.jsonl", {"model": "m", "seed": 0}
    load_progress(progress, settings)
    append_unit(progress, 1, "a", [{"config": "dense (stock)"}])
    with progress.open("a") as file:
        file.write('{"scale": 1, "prompt": "b", "ro')  # killed while writing the second unit
    assert list(load_progress(progress, settings)) == [(1, "a")]
    append_unit(progress, 1, "b", [{"config": "dense (stock)"}])  # the resumed run finishes it...
    with progress.open("a") as file:
        file.write('{"scale": 1, "prompt": "c", "ro')  # ...and is killed in the third
    assert list(load_progress(progress, settings)) == [(1, "a"), (1, "b")]


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage", b"[1, 2]\n", b'{"settings": {"model": "m", "seed": 0}}\n'
                                     b'["not", "a", "unit"]\n{"scale": "1", "prompt": 2, "rows": 3}\n'])
def test_a_corrupt_progress_file_is_replaced_or_its_bad_lines_dropped(tmp_path, capsys, content):
    progress, settings = tmp_path / "toy.partial.jsonl", {"model": "m", "seed": 0}
    progress.write_bytes(content)
    assert load_progress(progress, settings) == {}
    assert progress.read_text() == json.dumps({"settings": settings}) + "\n"


def test_a_run_reports_each_finished_length_and_resumes_only_what_its_plan_changes(mini_model, tmp_path, monkeypatch):
    import fastdit.runs.run

    real, calls = fastdit.runs.run.run_pipeline, []

    def stop_at_2x(*args, **kwargs):
        calls.append(kwargs["label"])
        if len(calls) == 3:  # 1x ran dense and grat; the first 2x video stops the run
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fastdit.runs.run, "run_pipeline", stop_at_2x)
    argv = ["bench", "toy", "--model", str(mini_model), "--preset", "fastdit/tiny-wan", "--prompts", "1",
            "--scales", "1", "2", "--methods", "grat", "--no-alternates", "--entropy-for", "--out", str(tmp_path),
            "--name", "toy_lengths"]
    assert main(argv) == 130
    data = json.loads((tmp_path / "toy_lengths.json").read_text())
    assert data["pending_scales"] == [2] and {s["scale"] for s in data["summary"]} == {1}
    assert "Partial report**: the 2x lengths have not run yet" in (tmp_path / "toy_lengths.md").read_text()
    # resumed with a plan that changes only the 2x configurations: 1x is not run again
    calls.clear()
    monkeypatch.setattr(fastdit.runs.run, "run_pipeline", lambda *a, **k: calls.append(k["label"]) or real(*a, **k))
    assert main(argv[:-4] + ["radial", "--out", str(tmp_path), "--name", "toy_lengths"]) == 0
    assert calls == ["dense (stock)", "grat", "radial +entropy"]
    data = json.loads((tmp_path / "toy_lengths.json").read_text())
    assert data["pending_scales"] == [] and {(s["scale"], s["config"]) for s in data["summary"]} == {
        (1, "dense (stock)"), (1, "grat"), (2, "dense (stock)"), (2, "grat"), (2, "radial +entropy")}
    assert "Partial" not in (tmp_path / "toy_lengths.md").read_text()


def test_motion_hits_count_each_asked_motion():
    rows = [{"prompt": "a red ball moving left in a white room", "motion": True},
            {"prompt": "a big blue square moving left on grass", "motion": False},
            {"prompt": "a pink triangle bouncing and a cyan ball staying still in a dark room", "motion": True}]
    assert motion_hits(rows) == {"left": (1, 2), "bouncing": (1, 1)}


def test_the_bundled_vae_keeps_a_rendered_clips_colour_and_motion():
    from fastdit.models.loading import benchmark_call, load_pipeline, resolve_model

    source = resolve_model("sample")
    pipe = load_pipeline(source, "cpu")
    ceiling = vae_ceiling(pipe, ["a red ball moving left in a white room"], benchmark_call(pipe, source), seed=0)
    assert ceiling["colour"] == 1.0 and ceiling["motion"] == 1.0


def test_alternates_run_at_the_training_length_unless_asked_for_more(mini_model, tmp_path):
    argv = ["bench", "toy", "--model", str(mini_model), "--preset", "fastdit/tiny-wan", "--prompts", "1",
            "--scales", "1", "2", "--methods", "grat", "--entropy-for", "--out", str(tmp_path)]
    assert main(argv + ["--name", "toy_alt"]) == 0
    settings = [(s["scale"], s["setting"]) for s in json.loads((tmp_path / "toy_alt.json").read_text())["summary"]]
    assert settings.count((1, "alternate")) == 2 and (2, "alternate") not in settings
    assert main(argv + ["--alternate-scales", "1", "2", "--name", "toy_alt_all"]) == 0
    settings = [(s["scale"], s["setting"]) for s in json.loads((tmp_path / "toy_alt_all.json").read_text())["summary"]]
    assert settings.count((2, "alternate")) == 2


def test_the_longer_length_finding_compares_each_preset_with_dense_at_that_length():
    rows = []
    for index, prompt in enumerate(_left_moves(6)):
        for scale, config, motion in [(1, "dense (stock)", True), (2, "dense (stock)", index < 6),
                                      (2, "radial", True), (2, "radial +entropy", index < 5)]:
            rows.append(_scored_row(prompt, config, scale, "entropy" if "entropy" in config else "preset", motion,
                                    [[[60, 60], [40, 60]]]))
    lines = findings(summarise(rows), rows)
    length = [line for line in lines if line.startswith("At 2x")]
    # dense at 1x: colour and motion right everywhere (50%); at 2x dense loses motion on 6 prompts (-12.5),
    # radial keeps it (+0, 6 hits gained: p = 2/64), radial +entropy loses one more than dense (1 lost)
    assert "dense (stock) -12, radial +0 (+6/-0, p=0.03), radial +entropy -15 (+0/-1, p=1.00)." in length[0]
    assert length[1] == ("At 2x frames, different from dense beyond chance (sign test, p < 0.05): radial (closer to "
                         "the training-length figure).")


def test_motion_geometry_tells_random_directions_from_no_motion():
    def row(prompt, start, end):
        return {"prompt": prompt, "tracks": [[start, None, end]]}

    rows = [row("a red ball moving left in a white room", [60, 60], [40, 60]),  # 20 px the asked way
            row("a red ball moving up in a white room", [60, 60], [60, 80]),  # 20 px the opposite way
            row("a red ball moving right in a white room", [60, 60], [60, 50]),  # 10 px across
            row("a red ball staying still in a white room", [60, 60], [63, 64]),
            row("a red ball bouncing in a white room", [60, 60], [10, 10]),  # neither straight nor still
            row("a red ball moving left and a blue square staying still on grass", [60, 60], [0, 60])]  # two
    assert motion_geometry(rows) == {"straight": (3, pytest.approx(50 / 3), pytest.approx(0.0)),
                                     "still": (1, pytest.approx(5.0), None)}


def test_motion_alone_is_paired_against_dense_for_every_setting_at_the_training_length():
    rows = []
    for index, prompt in enumerate(_left_moves(4)):
        for config, setting, motion in [("dense (stock)", "preset", True), ("radial", "preset", True),
                                        ("vmoba (threshold=0.1)", "alternate", index < 1)]:
            rows.append(_scored_row(prompt, config, setting=setting, motion=motion))
    line = next(line for line in findings(summarise(rows), rows) if line.startswith("Motion alone"))
    # the alternate loses motion on 7 of 8 prompts where dense has it: p = 2/128
    assert line.endswith("radial +0/-0 (p=1.00), vmoba (threshold=0.1) +0/-7 (p=0.02).")


def test_the_travel_finding_pairs_how_far_objects_go_the_asked_way_against_dense():
    rows = []
    for prompt in _left_moves(6):  # "left" is -x: dense goes 40 px the asked way at 1x, 4 px at 2x, radial 10 px
        for scale, config, end_x in [(1, "dense (stock)", 20), (2, "dense (stock)", 56), (2, "radial", 50)]:
            rows.append(_scored_row(prompt, config, scale, tracks=[[[60, 60], None, [end_x, 60]]]))
    line = next(line for line in findings(summarise(rows), rows) if line.startswith("At 2x frames, single"))
    assert line == ("At 2x frames, single objects asked to move straight (12 videos) go the asked way, first to last "
                    "frame found (dense at 1x: 40 px): dense (stock) 4 px, radial 10 px (farther than dense on 12, "
                    "shorter on 0, p=0.00).")
