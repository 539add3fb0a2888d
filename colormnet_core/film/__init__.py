"""Film projects: a long video rendered shot by shot, resumable after any crash, re-rendering only
what changed, and assembled without re-encoding. See project.py for the folder's layout."""

from __future__ import annotations

from .assemble import assemble_film
from .checks import check_project_name
from .commit import Committed, commit_shot
from .history import Reverted, ShotHistory, revert_shot, shot_history
from .jobs import ExemplarFile, FilmSettings, ShotJob
from .plan import STATE_WORDS, ShotState, plan_jobs, shot_states
from .project import FilmProject
from .records import ProjectLocked
from .render import SegmentResult, job_warnings, render_job
from .source import FilmError, ShotSpan

__all__ = ["STATE_WORDS", "Committed", "ExemplarFile", "FilmError", "FilmProject", "FilmSettings", "ProjectLocked",
           "Reverted", "SegmentResult", "ShotHistory", "ShotJob", "ShotSpan", "ShotState", "assemble_film",
           "check_project_name", "commit_shot", "job_warnings", "plan_jobs", "render_job", "revert_shot",
           "shot_history", "shot_states"]
