"""Which shots to render: shot jobs from a project, and each shot's state.

States: `done` (the segment on disk was made from exactly this job and has the recorded sha256),
`stale` (its record was made from something else: another exemplar, size, checkpoint...),
`damaged` (the record matches but the segment is missing or changed on disk, or the record cannot
be read), `pending` (never rendered), `needs_exemplar` (nothing gives its first frame colours: no
exemplar pinned to it and no reference; its keyframe is the picture to colour).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .checkpoints import checkpoint_reason, judged_checkpoint_sha256
from .jobs import ExemplarFile, FilmSettings, ShotJob
from .records import record_of, segment_state
from .source import span

State = Literal["done", "stale", "damaged", "pending", "needs_exemplar"]
STATES: tuple[State, ...] = ("done", "stale", "damaged", "pending", "needs_exemplar")
STATE_WORDS = {"done": "done", "stale": "stale (made from other exemplars, settings or checkpoint)",
               "damaged": "damaged (its segment is missing or changed on disk, or its record unreadable)",
               "pending": "not rendered yet", "needs_exemplar": "needs an exemplar"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 shot', '3 shots' ('1 worker process', '2 worker processes' with many=...)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


@dataclass(frozen=True)
class ShotState:
    index: int
    first: int
    last: int
    state: State
    keyframe: Path
    reason: str = ""          # for a stale shot: what its segment was made from that differs now

    def to_json(self) -> dict:
        return {"index": self.index, "first": self.first, "last": self.last, "state": self.state,
                "keyframe": str(self.keyframe), "reason": self.reason}


def has_colour_source(job: ShotJob) -> bool:
    """A shot renders when an exemplar is pinned to its first frame or a reference applies."""
    return any(e.frame == job.first or e.frame is None for e in job.exemplars)


def plan_jobs(project, settings: FilmSettings, checkpoint_sha256: str, shots: list[int] | None = None,
              files: list[ExemplarFile] | None = None) -> list[ShotJob]:
    """The jobs of `shots` (default: all), in film order. Exemplar files are checked once here."""
    files = project.exemplar_files() if files is None else files
    indices = range(len(project.shots)) if shots is None else [project.shot_index(i) for i in shots]
    return [ShotJob(i, project.shots[i].first, project.shots[i].last, str(project.source),
                    project.source_fingerprint, span(project.index, *project.shots[i]),
                    project.exemplars_for(i, files), settings, checkpoint_sha256) for i in indices]


def stale_reason(project, job: ShotJob) -> str:
    """Why shot `job.index`'s recorded segment does not match `job` (checkpoint, settings, exemplars...)."""
    made = (record_of(project, job.index) or {}).get("job") or {}
    now = job.to_json()
    reasons = []
    if made.get("checkpoint_sha256") != now["checkpoint_sha256"]:
        why = checkpoint_reason(project, now["checkpoint_sha256"])
        reasons.append(f"checkpoint changed{': ' + why if why else ''} (segment made with sha256 "
                       f"{str(made.get('checkpoint_sha256'))[:12]}, now {now['checkpoint_sha256'][:12]})")
    old_settings, new_settings = made.get("settings") or {}, now["settings"]
    changed = sorted(k for k in set(old_settings) | set(new_settings) if old_settings.get(k) != new_settings.get(k))
    if changed:
        reasons.append("settings changed: " + ", ".join(changed))
    if made.get("exemplars") != now["exemplars"]:
        reasons.append("exemplars changed")
    if made.get("source_fingerprint") != now["source_fingerprint"] or made.get("span") != now["span"]:
        reasons.append("source changed")
    return "; ".join(reasons) or "segment missing or incomplete"


def state_of(project, job: ShotJob) -> State:
    if not has_colour_source(job):
        return "needs_exemplar"
    return segment_state(project, job.index, job.fingerprint)


def shot_states(project, settings: FilmSettings | None = None, checkpoint_sha256: str | None = None,
                shots: list[int] | None = None) -> list[ShotState]:
    """Every shot's state against `settings` and the checkpoint (default: the project's own checkpoint
    when `film finetune` set one, else the last render's; before any render, shots with an exemplar
    are pending)."""
    settings = settings or project.settings() or FilmSettings()
    checkpoint_sha256 = checkpoint_sha256 or judged_checkpoint_sha256(project) or "not rendered yet"
    states = []
    for job in plan_jobs(project, settings, checkpoint_sha256, shots):
        state = state_of(project, job)
        states.append(ShotState(job.index, job.first, job.last, state, project.keyframe_path(job.index),
                                stale_reason(project, job) if state == "stale" else ""))
    return states
