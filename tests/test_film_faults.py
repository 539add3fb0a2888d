"""What the fault campaign of issue 23 found, each as a test: done agrees with assemble (sha256), settings
count only once a shot commits, clean messages for full and read-only disks and damaged project files,
a source check that covers the whole file, film exemplar warnings, words that say what happened, the
lock before the source, no Ray probe left, and names and files that would break later."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import av
import pytest
import torch

from colormnet_core.__main__ import main
from colormnet_core.film import FilmError, FilmProject, FilmSettings, commit_shot, job_warnings, plan_jobs
from colormnet_core.film import records as records_module
from colormnet_core.film.distributed import clear_stale_probes
from colormnet_core.film.project import png_bytes
from colormnet_core.film.render import SegmentResult

from .clips import make_clip, make_shot_clip

SHOTS = [(0, 11), (12, 21), (22, 32)]
SETTINGS = FilmSettings(size="64")


def film(*args: str) -> int:
    return main(["film", *args])


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_shot_clip(tmp_path_factory.mktemp("faults") / "film.mp4")


@pytest.fixture
def fresh(tmp_path, clip):
    source = tmp_path / "film.mp4"
    shutil.copy(clip, source)
    return FilmProject.init(source, tmp_path / "project", shots=SHOTS)


@pytest.fixture
def committed(fresh, tmp_path):
    """`fresh` with shot 1 committed from a stand-in segment (the commit does not care how it was made)."""
    segment = make_clip(tmp_path / "segment.mp4", frames=10, size=(64, 48), audio_codec=None)

    def render(job, partial):
        shutil.copyfile(segment, partial)
        return SegmentResult(partial, records_module.verified_sha256(partial), job.frames, partial.stat().st_size)

    job = plan_jobs(fresh, SETTINGS, "c" * 64, shots=[1])[0]
    commit_shot(fresh, job, render, new_exemplars={12: png_bytes(torch.full((3, 64, 96), 90, dtype=torch.uint8))})
    return FilmProject.open(fresh.dir)


# -- 1. done agrees with what assemble checks ------------------------------------------------------------

def test_a_segment_damaged_in_place_is_not_done_anywhere(committed, tmp_path, capsys):
    segment = committed.segment_path(1)
    assert committed.status()[1].state == "done"
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF                                   # same size, one byte changed
    segment.write_bytes(bytes(data))
    assert FilmProject.open(committed.dir).status()[1].state == "damaged"
    assert film("status", "--project", str(committed.dir)) == 0
    assert "damaged (its segment is missing or changed on disk" in capsys.readouterr().out
    segment.unlink()
    assert FilmProject.open(committed.dir).status()[1].state == "damaged"
    committed.record_path(1).write_text("{not json")
    assert FilmProject.open(committed.dir).status()[1].state == "damaged"   # not "pending": it was rendered


# -- 2. settings count once a shot commits; a missing device is refused first -----------------------------

def test_a_render_that_commits_nothing_leaves_film_json_alone(fresh, golden_checkpoint, capsys):
    before = (fresh.dir / "film.json").read_bytes()
    assert film("render", "--project", str(fresh.dir), "--checkpoint", str(golden_checkpoint),
                "--device", "cuda:3") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda:3: this machine has" in err[0]
    assert film("render", "--project", str(fresh.dir), "--checkpoint", str(golden_checkpoint), "--size", "48",
                "--device", "cpu") == 3                            # every shot needs an exemplar: nothing commits
    assert (fresh.dir / "film.json").read_bytes() == before


def test_settings_are_those_of_the_last_commit(committed):
    assert committed.settings() == SETTINGS and committed.data["checkpoint_sha256"] == "c" * 64


# -- 3. full and read-only disks, damaged project files ---------------------------------------------------

def test_a_full_disk_while_writing_project_files_says_so(fresh, committed, monkeypatch, tmp_path):
    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records_module.os, "replace", full)
    with pytest.raises(FilmError, match=r"cannot write the project file \(film.json\): the disk holding .* is full"):
        fresh.remember_settings(FilmSettings(size="48"), "d" * 64)
    with pytest.raises(FilmError, match=r"cannot write shot 1's record .*is full.*nothing that was already saved"):
        records_module.write_json(fresh.record_path(1), {}, "shot 1's record")
    monkeypatch.undo()
    from colormnet_core.film import assemble

    monkeypatch.setattr(assemble, "_join", lambda *a: full())
    shutil.copy(committed.keyframe_path(0), committed.dir / "exemplars" / "reference.png")
    monkeypatch.setattr(assemble, "_require_all_done", lambda project: None)
    with pytest.raises(FilmError, match=r"cannot write the assembled film \(out.mp4\): the disk holding"):
        assemble.assemble_film(committed, tmp_path / "out.mp4")
    assert not list(tmp_path.glob("out*"))


def test_a_read_only_project_says_so_and_leaves_nothing(committed, monkeypatch):
    real_open = open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(committed.dir)) and args and args[0][0] in "wa":
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(records_module, "open", read_only, raising=False)
    lock = r"cannot write the lock of shot 1 .*read-only file system. Copy the project"
    with pytest.raises(FilmError, match=lock), committed.shot_lock(1):
        pass
    monkeypatch.undo()
    job = plan_jobs(committed, SETTINGS, "c" * 64, shots=[1])[0]
    original = records_module.write_atomic

    def no_history(path, data, what=None):
        if path.parent.name == "history":
            return read_only(path.with_name(".x"), "wb")
        return original(path, data, what)

    monkeypatch.setattr("colormnet_core.film.commit.write_atomic", no_history)
    before = sorted(p.name for p in committed.dir.rglob("*"))
    with pytest.raises(OSError, match="Read-only"):
        commit_shot(committed, job, lambda *a: None, new_exemplars={12: b"another picture"})
    assert sorted(p.name for p in committed.dir.rglob("*")) == before       # no journal, no partial left


@pytest.mark.parametrize("content, words", [
    ("[]", "holds a JSON list, not an object"),
    ('{"format": 1}', "'source' is not a file path; 'source_fingerprint' is not an object"),
    ("shots", "'shots' is not a list of [first, last] frame pairs"),
    ("gap", "'shots' shot 1 starts at frame 13"),
    ("settings", "'settings' cannot be read"),
])
def test_a_damaged_film_json_is_named(fresh, content, words, capsys):
    data = json.loads((fresh.dir / "film.json").read_text())
    if content == "shots":
        data["shots"] = "abc"
    elif content == "gap":
        data["shots"] = [[0, 11], [13, 32]]
    elif content == "settings":
        data["settings"] = {"size": "x"}
    text = json.dumps(data) if content in ("shots", "gap", "settings") else content
    (fresh.dir / "film.json").write_text(text)
    with pytest.raises(FilmError, match=words.replace("[", r"\[").replace("]", r"\]")):
        FilmProject.open(fresh.dir)
    assert film("status", "--project", str(fresh.dir)) == 1
    assert "Traceback" not in capsys.readouterr().err


# -- 4. the source check covers the whole file ------------------------------------------------------------

def test_a_same_size_change_to_frames_5_to_10_is_found(fresh):
    with av.open(str(fresh.source)) as container:
        packets = sorted((p.pts, p.pos) for p in container.demux(video=0) if p.size)
    positions = [pos for _, pos in packets[5:11]]             # frames 5-10 (presentation order)
    assert len(positions) == 6
    stat = fresh.source.stat()
    data = bytearray(fresh.source.read_bytes())
    for pos in positions:
        data[pos + 20] ^= 0x55
    fresh.source.write_bytes(bytes(data))
    os.utime(fresh.source, ns=(stat.st_atime_ns, stat.st_mtime_ns))    # even with its old modification time
    assert fresh.source.stat().st_size == stat.st_size
    with pytest.raises(FilmError, match="its video packets differ"):
        FilmProject.open(fresh.dir)


def test_an_unchanged_source_is_checked_by_its_stat_after_the_first_time(fresh, monkeypatch):
    from colormnet_core.film import project as project_module

    calls = []
    monkeypatch.setattr(project_module, "fingerprint_source", lambda *a, **k: calls.append(1))
    project_module._FINGERPRINTS_SEEN.clear()
    FilmProject.open(fresh.dir)
    assert calls == []                     # init noted the source's size and times: no pass over the file


# -- 5. exemplar checks in film projects ------------------------------------------------------------------

def test_film_jobs_warn_about_another_aspect_ratio_and_a_grey_exemplar(fresh, capsys, golden_checkpoint):
    grey = torch.full((3, 400, 150), 128, dtype=torch.uint8)
    (fresh.dir / "exemplars" / "000012.png").write_bytes(png_bytes(grey))
    job = plan_jobs(fresh, SETTINGS, "c" * 64, shots=[1])[0]
    warnings = " ".join(job_warnings(job))
    assert "shot 1: the exemplar pinned to frame 12 is 150x400" in warnings and "greyscale" in warnings
    assert film("render", "--project", str(fresh.dir), "--checkpoint", str(golden_checkpoint), "--size", "64",
                "--device", "cpu", "--shots", "0") == 3
    assert "warning: shot 1" not in capsys.readouterr().err     # only the shots being rendered are checked


# -- 8. words ---------------------------------------------------------------------------------------------

def test_status_counts_in_words_that_fit(committed, capsys):
    assert film("status", "--project", str(committed.dir)) == 0
    out = capsys.readouterr().out
    assert "shot    1  frames 12-21  done" in out and "1 done, 2 needing an exemplar (of 3 shots)" in out
    assert "[history:" not in out.splitlines()[1]


# -- 9. the lock before the source, no probe left ----------------------------------------------------------

def test_a_second_render_refuses_before_reading_the_source(fresh, golden_checkpoint, monkeypatch, capsys):
    checked = []
    monkeypatch.setattr(FilmProject, "check_source", lambda self: checked.append(1))
    with fresh.render_lock():
        assert film("render", "--project", str(fresh.dir), "--checkpoint", str(golden_checkpoint),
                    "--device", "cpu") == 1
    assert checked == [] and "is in use by pid" in capsys.readouterr().err


def test_probe_files_of_a_killed_ray_driver_are_removed(fresh):
    (fresh.dir / ".ray-probe-0123456789abcdef").write_text("token")
    clear_stale_probes(fresh.dir)
    assert not list(fresh.dir.glob(".ray-probe-*"))


# -- 12. names and files ----------------------------------------------------------------------------------

def test_a_png_renamed_mp4_is_refused_and_windows_names_too(tmp_path, fresh, capsys):
    fake = tmp_path / "film.png.mp4"
    shutil.copy(fresh.keyframe_path(0), fake)
    assert film("init", str(fake), "--project", str(tmp_path / "p")) == 1
    assert "is a single PNG image, not a video (renamed?)" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    for name in ("con", "film."):
        with pytest.raises(Exception, match="Windows"):
            FilmProject.init(fresh.source, tmp_path / name, shots=SHOTS)
    assert FilmProject.init(fresh.source, tmp_path / "映画 é", shots=SHOTS).frame_count == 33


# -- item 2 on the command line: status shows history, revert brings the previous exemplar back -----------

def test_film_revert_and_status_history_on_the_command_line(committed, capsys):
    assert film("revert", "--project", str(committed.dir), "--shot", "1") == 1
    assert "shot 1 has no earlier exemplar to go back to" in capsys.readouterr().err
    exemplar = committed.dir / "exemplars" / "000012.png"
    rendered_from = exemplar.read_bytes()
    exemplar.write_bytes(png_bytes(torch.full((3, 64, 96), 10, dtype=torch.uint8)))     # replaced by hand
    assert film("status", "--project", str(committed.dir), "--json") == 0
    shot = json.loads(capsys.readouterr().out)["shots"][1]
    assert shot["state"] == "stale" and shot["history"]["can_revert"]
    assert film("status", "--project", str(committed.dir)) == 0
    assert "[history: new exemplar not rendered yet; 1 earlier exemplar; `film revert`" in capsys.readouterr().out
    assert film("revert", "--project", str(committed.dir), "--shot", "1") == 0
    assert "restored with their segment; nothing was rendered" in capsys.readouterr().err
    assert exemplar.read_bytes() == rendered_from and FilmProject.open(committed.dir).status()[1].state == "done"
