"""Film projects end to end on a 3-shot clip with sound: init, render what is missing, re-render only
what changed, assemble without re-encoding, crash safety (kill -9 at chosen moments) and bad input."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from colormnet_core.__main__ import main
from colormnet_core.film import FilmError, FilmProject, FilmSettings, ProjectLocked, shot_states
from colormnet_core.film.jobs import RENDER_VERSION

from . import golden
from .clips import make_shot_clip, probe

REPO = golden.REPO
SHOTS = [(0, 11), (12, 21), (22, 32)]     # make_shot_clip's default: 12, 10 and 11 frames
SIZE = "64"


def decoded(path: Path) -> np.ndarray:
    """All frames of a video as uint8 RGB `T x H x W x 3`."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def film(*args: str) -> int:
    return main(["film", *args])


def render_args(project: Path, checkpoint: Path, *more: str) -> list[str]:
    return ["render", "--project", str(project), "--checkpoint", str(checkpoint), "--size", SIZE,
            "--device", "cpu", "--crf", "0", *more]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_shot_clip(tmp_path_factory.mktemp("clip") / "film.mp4")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, clip, golden_checkpoint):
    """The story of issue 14 in one project: exemplars for shots 0 and 2, render; add shot 1's, render;
    assemble. Returns what each step left, for the tests below to check."""
    project = tmp_path_factory.mktemp("film") / "project"
    steps = {"init": film("init", str(clip), "--project", str(project))}
    for first in (0, 22):
        shutil.copy(project / "keyframes" / f"{first:06d}.png", project / "exemplars")
    steps["first_render"] = film(*render_args(project, golden_checkpoint))
    steps["after_first"] = {"segments": digests(project / "segments"), "records": digests(project / "records"),
                            "states": [s.state for s in FilmProject.open(project).status()]}
    shutil.copy(project / "keyframes" / "000012.png", project / "exemplars")
    steps["second_render"] = film(*render_args(project, golden_checkpoint))
    steps["after_second"] = {"segments": digests(project / "segments"), "records": digests(project / "records")}
    steps["assemble"] = film("assemble", "--project", str(project), "--output", str(project.parent / "film.mp4"))
    return project, steps


def test_init_finds_the_three_shots_and_writes_their_keyframes(tmp_path, clip):
    project = FilmProject.init(clip, tmp_path / "p")
    assert [tuple(s) for s in project.shots] == SHOTS
    assert sorted(p.name for p in (tmp_path / "p" / "keyframes").iterdir()) == ["000000.png", "000012.png",
                                                                                 "000022.png"]
    states = project.status()
    assert [s.state for s in states] == ["needs_exemplar"] * 3
    assert states[1].keyframe == tmp_path / "p" / "keyframes" / "000012.png"
    with pytest.raises(FilmError, match="already a film project"):
        FilmProject.init(clip, tmp_path / "p")


@pytest.mark.slow
def test_render_skips_the_shot_without_exemplar_and_exits_non_zero(rendered):
    project, steps = rendered
    assert steps["init"] == 0
    assert steps["first_render"] == 3                       # incomplete: shot 1 needs an exemplar
    assert steps["after_first"]["states"] == ["done", "needs_exemplar", "done"]
    assert sorted(steps["after_first"]["segments"]) == ["000000.mp4", "000022.mp4"]


@pytest.mark.slow
def test_adding_an_exemplar_renders_only_that_shot(rendered):
    project, steps = rendered
    assert steps["second_render"] == 0
    before, after = steps["after_first"], steps["after_second"]
    for kind in ("segments", "records"):
        assert {k: v for k, v in after[kind].items() if not k.startswith("000012")} == before[kind]
    assert "000012.mp4" in after["segments"]
    assert [s.state for s in FilmProject.open(project).status()] == ["done"] * 3


@pytest.mark.slow
def test_assembled_film_has_the_source_frames_sound_and_equals_one_colorize_run(rendered, clip, golden_checkpoint,
                                                                                tmp_path):
    project, steps = rendered
    assert steps["assemble"] == 0
    output = project.parent / "film.mp4"
    info, source = probe(output), probe(clip)
    assert (info["video_codec"], info["pix_fmt"], info["format"]) == ("h264", "yuv420p", source["format"])
    assert info["frames"] == source["frames"] == 33
    assert info["times"] == pytest.approx(source["times"], abs=1e-6)
    assert info["audio_codec"] == "aac" and info["audio_bytes"] == source["audio_bytes"]
    # One continuous colorize run with the same shots and exemplars, also lossless (crf 0): the decoded
    # frames are identical, so the joins add nothing.
    single = tmp_path / "single.mp4"
    exemplars = [f"{project / 'exemplars' / f'{first:06d}.png'}@{first}" for first, _ in SHOTS]
    code = main(["colorize", "--input", str(clip), "--output", str(single), "--checkpoint", str(golden_checkpoint),
                 "--size", SIZE, "--device", "cpu", "--crf", "0", "--shots", "0-11,12-21,22-32",
                 *[a for e in exemplars for a in ("--exemplar", e)]])
    assert code == 0
    assert np.array_equal(decoded(output), decoded(single))


@pytest.mark.slow
def test_staleness_follows_content_not_time(rendered, golden_checkpoint, tmp_path):
    project_dir, _ = rendered
    project = FilmProject.open(project_dir)
    settings, checkpoint = project.settings(), project.data["checkpoint_sha256"]
    assert [s.state for s in shot_states(project, settings, checkpoint)] == ["done"] * 3
    other_size = FilmSettings(size="48", memory=settings.memory, crf=settings.crf)
    assert [s.state for s in shot_states(project, other_size, checkpoint)] == ["stale"] * 3
    assert [s.state for s in shot_states(project, settings, "0" * 64)] == ["stale"] * 3
    copy = tmp_path / "copy"
    shutil.copytree(project_dir, copy)
    moved = FilmProject.open(copy)
    assert [s.state for s in moved.status()] == ["done"] * 3           # content, not paths or times
    (copy / "exemplars" / "000012.png").write_bytes((copy / "keyframes" / "000000.png").read_bytes())
    assert [s.state for s in moved.status()] == ["done", "stale", "done"]
    segment = copy / "segments" / "000022.mp4"
    segment.write_bytes(segment.read_bytes()[:-100])                   # truncated: never done
    assert [s.state for s in moved.status()][2] == "damaged"


@pytest.mark.slow
def test_status_json_lists_every_shot(rendered, capsys):
    project, _ = rendered
    assert film("status", "--project", str(project), "--json") == 0
    shots = json.loads(capsys.readouterr().out)["shots"]
    assert [(s["index"], s["first"], s["last"], s["state"]) for s in shots] == [
        (i, f, l, "done") for i, (f, l) in enumerate(SHOTS)]
    assert shots[1]["keyframe"].endswith("keyframes/000012.png")


# -- kill -9 at chosen moments ------------------------------------------------------------------

KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    moment, count = sys.argv[1], int(sys.argv[2])
    calls = [0]

    def die_after(function):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] > count:
                os.kill(os.getpid(), signal.SIGKILL)
            return function(*args, **kwargs)
        return wrapper

    if moment == "mid_shot":
        from colormnet_core.film import render
        render.VideoWriter.write = die_after(render.VideoWriter.write)
    elif moment == "before_record":     # the segment has its final name, its record is not written yet
        from colormnet_core.film import commit
        def die(step, index):
            if step == "renamed":
                os.kill(os.getpid(), signal.SIGKILL)
        commit.fault_hook = die
    elif moment == "assemble":
        from colormnet_core.film import assemble
        assemble._AudioCopy.mux_until = die_after(assemble._AudioCopy.mux_until)
    from colormnet_core.__main__ import main
    sys.exit(main(sys.argv[3:]))
""")


def killed(tmp_path: Path, moment: str, count: int, argv: list[str]) -> int:
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(repo=str(REPO)))
    run = subprocess.run([sys.executable, str(script), moment, str(count), *argv], capture_output=True, timeout=600)
    return run.returncode


@pytest.mark.slow
def test_kill_9_at_any_moment_then_the_next_command_completes_the_same_film(rendered, golden_checkpoint,
                                                                             tmp_path):
    reference_dir, _ = rendered
    reference = decoded(reference_dir.parent / "film.mp4")
    project = tmp_path / "project"
    shutil.copytree(reference_dir, project)
    for first in (12, 22):
        (project / "segments" / f"{first:06d}.mp4").unlink()
        (project / "records" / f"{first:06d}.json").unlink()
    argv = ["film", *render_args(project, golden_checkpoint)]

    assert killed(tmp_path, "mid_shot", 4, argv) == -signal.SIGKILL              # in the middle of shot 1
    assert [s.state for s in FilmProject.open(project).status()] == ["done", "pending", "pending"]
    assert list((project / "segments").glob("000012.partial-*"))                  # what the kill left
    assert killed(tmp_path, "before_record", 0, argv) == -signal.SIGKILL         # shot 1 renamed, not recorded
    assert (project / "segments" / "000012.mp4").exists()
    assert [s.state for s in FilmProject.open(project).status()] == ["done", "pending", "pending"]
    assert film(*render_args(project, golden_checkpoint)) == 0
    assert not list((project / "segments").glob("*.partial-*"))

    output = tmp_path / "film.mp4"
    assemble = ["film", "assemble", "--project", str(project), "--output", str(output)]
    assert killed(tmp_path, "assemble", 10, assemble) == -signal.SIGKILL
    assert not output.exists()                              # a cut-short film never has the final name
    assert film(*assemble[1:]) == 0
    assert np.array_equal(decoded(output), reference)


# -- bad input ----------------------------------------------------------------------------------

@pytest.fixture
def fresh(tmp_path, clip):
    source = tmp_path / "film.mp4"
    shutil.copy(clip, source)
    return FilmProject.init(source, tmp_path / "project", shots=[tuple(s) for s in SHOTS])


def test_a_changed_source_is_named_and_nothing_is_overwritten(fresh, tmp_path):
    before = (fresh.dir / "film.json").read_bytes()
    make_shot_clip(fresh.source, shots=(12, 10, 12))
    with pytest.raises(FilmError, match=r"changed since the project was made: bytes was \d+, now \d+"):
        FilmProject.open(fresh.dir)
    make_shot_clip(fresh.source, shots=(12, 10, 11), gop=4)          # same length, other encoding
    with pytest.raises(FilmError, match="changed since the project was made.*Nothing was overwritten"):
        FilmProject.open(fresh.dir)
    assert (fresh.dir / "film.json").read_bytes() == before
    fresh.source.unlink()
    with pytest.raises(FilmError, match="is gone; put it back"):
        FilmProject.open(fresh.dir)


def test_a_project_of_another_format_version_is_refused(fresh):
    data = json.loads((fresh.dir / "film.json").read_text())
    (fresh.dir / "film.json").write_text(json.dumps({**data, "format": 99}))
    with pytest.raises(FilmError, match="format version 99.*reads version 1"):
        FilmProject.open(fresh.dir)
    assert main(["film", "status", "--project", str(fresh.dir)]) == 1


def test_bad_exemplar_files_are_named(fresh):
    exemplars = fresh.dir / "exemplars"
    (exemplars / "000012.png").write_text("not a picture")
    with pytest.raises(FilmError, match="exemplars/000012.png cannot be read as an image; replace it"):
        fresh.status()
    shutil.copy(fresh.keyframe_path(0), exemplars / "000012.png")
    shutil.copy(fresh.keyframe_path(0), exemplars / "12.jpg")
    with pytest.raises(FilmError, match=r"several exemplars are pinned to one frame \(frame 12: 000012.png, 12.jpg\)"):
        fresh.status()
    (exemplars / "12.jpg").unlink()
    shutil.copy(fresh.keyframe_path(0), exemplars / "000040.png")
    with pytest.raises(FilmError, match=r"pinned to frame\(s\) \[40\], but the film has frames 0-32"):
        fresh.status()
    (exemplars / "000040.png").unlink()
    shutil.copy(fresh.keyframe_path(0), exemplars / "sky.png")
    with pytest.raises(FilmError, match="not exemplars: sky.png. Name a colour picture by the frame"):
        fresh.status()
    (exemplars / "sky.png").rename(exemplars / "reference_sky.png")
    assert [s.state for s in fresh.status()] == ["pending"] * 3       # a reference colours every shot


def test_save_exemplar_pins_a_picture_and_replaces_the_old_one(fresh):
    shutil.copy(fresh.keyframe_path(1), fresh.dir / "exemplars" / "12.jpg")
    import torch

    replaced = (fresh.dir / "exemplars" / "12.jpg").read_bytes()
    path = fresh.save_exemplar(12, torch.zeros(3, 8, 8, dtype=torch.uint8))
    assert path.name == "000012.png"
    assert sorted(p.name for p in (fresh.dir / "exemplars").iterdir()) == ["000012.png", "history"]
    (kept,) = (fresh.dir / "exemplars" / "history").iterdir()      # the replaced picture is not lost
    assert kept.read_bytes() == replaced and kept.name.startswith("000012-") and kept.suffix == ".jpg"
    with pytest.raises(FilmError, match="frames 0-32"):
        fresh.save_exemplar(33, torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_a_second_render_refuses_while_one_holds_the_project(fresh, golden_checkpoint, capsys):
    with fresh.render_lock():
        assert film(*render_args(fresh.dir, golden_checkpoint)) == 1
    message = capsys.readouterr().err
    assert "is in use by pid" in message and "Wait for it to finish or stop it" in message
    with fresh.shot_lock(1), pytest.raises(ProjectLocked, match="shot 1 of"), fresh.shot_lock(1):
        pass


@pytest.mark.slow
def test_a_full_disk_fails_that_shot_cleanly_and_keeps_the_earlier_segments(fresh, golden_checkpoint,
                                                                              monkeypatch, capsys):
    for first, _ in SHOTS:
        shutil.copy(fresh.keyframe_path(SHOTS.index((first, _))), fresh.dir / "exemplars")
    from colormnet_core.film import render

    original, writes = render.VideoWriter.write, [0]

    def write(self, rgb, pts=None):
        writes[0] += 1
        if writes[0] == 12 + 3:            # the fourth frame of shot 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, rgb, pts)

    monkeypatch.setattr(render.VideoWriter, "write", write)
    assert film(*render_args(fresh.dir, golden_checkpoint)) == 3
    err = capsys.readouterr().err
    assert "shot 1 failed: writing shot 1's segment failed (No space left on device)" in err
    assert "Free disk space" in err and "rendered 1 shot in" in err          # shot 0 only, said so
    assert "shot 2 failed: not tried: the disk error above stopped the render" in err
    assert sorted(p.name for p in (fresh.dir / "segments").iterdir()) == ["000000.mp4"]
    assert not list((fresh.dir / "segments").glob("*.partial-*"))
    states = FilmProject.open(fresh.dir).status()
    assert [s.state for s in states] == ["done", "pending", "pending"]     # stopped: the disk is full
    monkeypatch.setattr(render.VideoWriter, "write", original)
    assert film(*render_args(fresh.dir, golden_checkpoint)) == 0
    assert [s.state for s in FilmProject.open(fresh.dir).status()] == ["done"] * 3


def test_assemble_lists_the_missing_shots(fresh, tmp_path, capsys):
    from colormnet_core.film import assemble_film

    assert film("assemble", "--project", str(fresh.dir), "--output", str(tmp_path / "x.mp4")) == 1
    assert "no shot has been rendered yet; render the shots first" in capsys.readouterr().err
    fresh.remember_settings(FilmSettings(size=SIZE), "0" * 64)
    shutil.copy(fresh.keyframe_path(0), fresh.dir / "exemplars")
    with pytest.raises(FilmError, match=r"3 of 3 shots are not rendered.*0 \(0-11: not rendered yet\), 1 \(12-21: "
                                        r"needs an exemplar\), 2 \(22-32: needs an exemplar\)"):
        assemble_film(fresh, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_jobs_round_trip_through_json_and_fingerprint_everything_that_matters(fresh):
    from colormnet_core.film import plan_jobs
    from colormnet_core.film.jobs import ShotJob

    shutil.copy(fresh.keyframe_path(0), fresh.dir / "exemplars")
    job = plan_jobs(fresh, FilmSettings(size="64"), "a" * 64)[0]
    again = ShotJob.from_json(json.loads(json.dumps(job.to_json())))
    assert again == job and again.fingerprint == job.fingerprint
    assert RENDER_VERSION == 1
    changed = [plan_jobs(fresh, FilmSettings(size="64", crf=20), "a" * 64)[0],
               plan_jobs(fresh, FilmSettings(size="64", precision="bfloat16"), "a" * 64)[0],
               plan_jobs(fresh, FilmSettings(size="64"), "b" * 64)[0]]
    assert len({job.fingerprint, *(c.fingerprint for c in changed)}) == 4


@pytest.mark.slow
def test_bidirectional_renders_a_shot_with_one_exemplar_as_forward_does(fresh, golden_checkpoint):
    shutil.copy(fresh.keyframe_path(1), fresh.dir / "exemplars")
    assert film(*render_args(fresh.dir, golden_checkpoint, "--shots", "1")) == 0       # the shot asked for is done
    forward = decoded(fresh.segment_path(1))
    project = FilmProject.open(fresh.dir)
    bidirectional = FilmSettings(size=SIZE, crf=0, propagation="bidirectional")
    assert shot_states(project, bidirectional)[1].state == "stale"          # propagation is part of the job
    assert film(*render_args(fresh.dir, golden_checkpoint, "--shots", "1", "--propagation", "bidirectional")) == 0
    assert FilmProject.open(fresh.dir).status()[1].state == "done"
    assert np.array_equal(decoded(fresh.segment_path(1)), forward)
