"""Film projects: a long video rendered shot by shot, resumable after any crash, re-rendering only
what changed, and assembled without re-encoding. See project.py for the folder's layout."""

from __future__ import annotations

from .assemble import assemble_film
from .jobs import ExemplarFile, FilmSettings, ShotJob
from .plan import ShotState, plan_jobs, shot_states
from .project import FilmProject
from .records import ProjectLocked
from .render import SegmentResult, render_job
from .source import FilmError, ShotSpan

__all__ = ["ExemplarFile", "FilmError", "FilmProject", "FilmSettings", "ProjectLocked", "SegmentResult",
           "ShotJob", "ShotSpan", "ShotState", "assemble_film", "plan_jobs", "render_job", "shot_states"]
