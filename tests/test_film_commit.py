"""The one commit path of film shots (colormnet_core/film/commit.py): kill -9 after every step of the
sequence, Cancel during a redo, exemplar history and revert. The render step is a stand-in that copies a
prepared segment (the commit does not care how a segment was made), so no network runs here."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from colormnet_core.errors import Cancelled
from colormnet_core.film import FilmProject, FilmSettings, commit, commit_shot, plan_jobs, revert_shot, shot_history
from colormnet_core.film.commit import STEPS, recover_all
from colormnet_core.film.project import png_bytes
from colormnet_core.film.render import SegmentResult

from .clips import make_clip, make_shot_clip

SETTINGS = FilmSettings(size="64")
CHECKPOINT = "c" * 64
SHOTS = [(0, 11), (12, 21), (22, 32)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("commit_media")
    clip = make_shot_clip(root / "film.mp4", audio=False)
    # Two stand-in renders of shot 1 (10 frames), and two exemplars for its first frame.
    segment_a = make_clip(root / "a.mp4", frames=10, size=(96, 64), audio_codec=None)
    segment_b = make_clip(root / "b.mp4", frames=10, size=(64, 48), audio_codec=None)
    exemplar_a = png_bytes(torch.full((3, 64, 96), 200, dtype=torch.uint8))
    exemplar_b = png_bytes(torch.full((3, 64, 96), 40, dtype=torch.uint8))
    return clip, segment_a, segment_b, exemplar_a, exemplar_b


def copy_render(segment: Path, calls: list | None = None):
    def render(job, partial: Path) -> SegmentResult:
        if calls is not None:
            calls.append(job)
        shutil.copyfile(segment, partial)
        return SegmentResult(partial, sha(partial), job.frames, partial.stat().st_size)
    return render


def job_of(project, shot: int = 1):
    return plan_jobs(project, SETTINGS, CHECKPOINT, shots=[shot])[0]


@pytest.fixture
def done_with_a(tmp_path, media):
    """A project whose shot 1 is done with exemplar A and segment A (committed through commit_shot)."""
    clip, segment_a, _, exemplar_a, _ = media
    project = FilmProject.init(clip, tmp_path / "project", shots=SHOTS)
    committed = commit_shot(project, job_of(project), copy_render(segment_a), new_exemplars={12: exemplar_a})
    assert committed.rendered and project.status(SETTINGS, CHECKPOINT)[1].state == "done"
    return project


def shot_one(project) -> tuple[str, str | None, str | None]:
    """(state, sha256 of exemplars/000012.png, sha256 of the segment) of shot 1, as `status` sees it."""
    project = FilmProject.open(project.dir)
    state = project.status(SETTINGS, CHECKPOINT)[1].state
    exemplar = project.dir / "exemplars" / "000012.png"
    segment = project.segment_path(1)
    return state, sha(exemplar) if exemplar.exists() else None, sha(segment) if segment.exists() else None


def leftovers(project) -> list[str]:
    return sorted(str(p.relative_to(project.dir)) for p in project.dir.rglob("*")
                  if "partial" in p.name or p.name.endswith(".journal.json"))


def redo_killed_after(step: str, project: FilmProject, segment: Path, exemplar: bytes) -> int:
    """The redo of shot 1 (exemplar B replacing A, as Render Shot does it) in a forked process that kills
    itself with SIGKILL right after `step`: a real kill -9 (nothing flushed, no handler runs, locks die
    with the process) without a new interpreter's imports. Returns the signal that ended the process."""
    pid = os.fork()
    if pid == 0:   # the child: never returns into pytest
        try:
            def die(name, index):
                if name == step:
                    os.kill(os.getpid(), signal.SIGKILL)

            commit.fault_hook = die
            commit_shot(FilmProject.open(project.dir), job_of(project), copy_render(segment),
                        new_exemplars={12: exemplar})
        finally:
            os._exit(3)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the redo killed after {step!r} did not end within 120 s")


@pytest.mark.slow
def test_kill_9_after_every_step_of_a_redo_never_counts_a_wrong_segment_done(done_with_a, media, tmp_path):
    """A redo of shot 1 (exemplar B replacing A, as Render Shot does it) killed after each step: the shot
    is never done with a segment that is not its exemplar's; after recovery it is done with A (killed
    before the record) or with B (after), and nothing temporary is left."""
    _, segment_a, segment_b, exemplar_a, exemplar_b = media
    pairs = {("done", hashlib.sha256(exemplar_a).hexdigest(), sha(segment_a)),
             ("done", hashlib.sha256(exemplar_b).hexdigest(), sha(segment_b))}
    for step in STEPS[:-1]:   # "released" comes after the process let go of everything
        project = FilmProject.open(shutil.copytree(done_with_a.dir, tmp_path / step))
        assert redo_killed_after(step, project, segment_b, exemplar_b) == signal.SIGKILL, step
        seen = shot_one(project)
        assert seen[0] != "done" or seen in pairs, (step, seen)         # done is never wrong
        recover_all(project)
        expected = "b" if STEPS.index(step) >= STEPS.index("recorded") else "a"
        exemplar, segment = (exemplar_b, segment_b) if expected == "b" else (exemplar_a, segment_a)
        assert shot_one(project) == ("done", hashlib.sha256(exemplar).hexdigest(), sha(segment)), step
        assert leftovers(project) == [], step
        history = sorted(p.name for p in (project.dir / "exemplars" / "history").iterdir())
        assert len(history) == (2 if expected == "b" else 1), (step, history)   # a killed redo left no B
        assert [s.state for s in project.status(SETTINGS, CHECKPOINT)][::2] == ["needs_exemplar"] * 2


def test_cancel_during_a_redo_keeps_the_shot_done_with_its_previous_exemplar(done_with_a, media):
    _, segment_a, _, exemplar_a, exemplar_b = media
    before = shot_one(done_with_a)

    def cancelled(job, partial):
        partial.write_bytes(b"half a segment")
        raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        commit_shot(done_with_a, job_of(done_with_a), cancelled, new_exemplars={12: exemplar_b})
    assert shot_one(done_with_a) == before == ("done", hashlib.sha256(exemplar_a).hexdigest(), sha(segment_a))
    assert leftovers(done_with_a) == []
    assert [p.name for p in (done_with_a.dir / "exemplars" / "history").iterdir()] == [
        f"000012-{hashlib.sha256(exemplar_a).hexdigest()[:16]}.png"]            # B left nothing behind


def test_a_done_shot_is_not_rendered_again_and_revert_brings_back_the_previous_one_without_rendering(
        done_with_a, media):
    _, segment_a, segment_b, exemplar_a, exemplar_b = media
    calls = []
    again = commit_shot(done_with_a, job_of(done_with_a), copy_render(segment_b, calls), new_exemplars={12: exemplar_a})
    assert not again.rendered and calls == []
    commit_shot(done_with_a, job_of(done_with_a), copy_render(segment_b), new_exemplars={12: exemplar_b})
    assert shot_one(done_with_a) == ("done", hashlib.sha256(exemplar_b).hexdigest(), sha(segment_b))
    history = shot_history(done_with_a, 1)
    assert history.previous_segment and len(history.earlier) == 1 and history.can_revert
    outcome = revert_shot(done_with_a, 1, SETTINGS, CHECKPOINT)
    assert outcome.state == "done" and "nothing was rendered" in outcome.message
    assert shot_one(done_with_a) == ("done", hashlib.sha256(exemplar_a).hexdigest(), sha(segment_a))
    # And back again: the segment of B was kept in its turn.
    assert revert_shot(done_with_a, 1, SETTINGS, CHECKPOINT).state == "done"
    assert shot_one(done_with_a)[1:] == (hashlib.sha256(exemplar_b).hexdigest(), sha(segment_b))


def test_an_exemplar_replaced_by_hand_is_kept_and_revert_restores_it_without_rendering(done_with_a, media):
    _, segment_a, _, exemplar_a, exemplar_b = media
    (done_with_a.dir / "exemplars" / "000012.png").write_bytes(exemplar_b)      # by hand, not rendered
    assert shot_one(done_with_a)[0] == "stale"
    assert shot_history(done_with_a, 1).uncommitted
    outcome = revert_shot(done_with_a, 1, SETTINGS, CHECKPOINT)
    assert outcome.state == "done"
    assert shot_one(done_with_a) == ("done", hashlib.sha256(exemplar_a).hexdigest(), sha(segment_a))
    names = {p.name for p in (done_with_a.dir / "exemplars" / "history").iterdir()}
    assert f"000012-{hashlib.sha256(exemplar_b).hexdigest()[:16]}.png" in names   # the hand-made one is kept


def test_revert_with_other_settings_restores_the_exemplar_and_says_to_render(done_with_a, media):
    _, _, segment_b, exemplar_a, exemplar_b = media
    commit_shot(done_with_a, job_of(done_with_a), copy_render(segment_b), new_exemplars={12: exemplar_b})
    other = FilmSettings(size="48")
    outcome = revert_shot(done_with_a, 1, other, CHECKPOINT)
    assert outcome.state == "stale" and "render the shot again" in outcome.message
    assert sha(done_with_a.dir / "exemplars" / "000012.png") == hashlib.sha256(exemplar_a).hexdigest()
    fresh = FilmProject.init(done_with_a.source, done_with_a.dir.parent / "other", shots=SHOTS)
    with pytest.raises(Exception, match="never been rendered"):
        revert_shot(fresh, 1)
