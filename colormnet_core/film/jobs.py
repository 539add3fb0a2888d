"""Shot jobs: everything one shot's segment is made from, and a fingerprint of it.

Staleness is by content, as in a build system: a segment is valid while the fingerprint of what
it was made from is unchanged. A job holds the shot's frame range, the source's fingerprint, the
exemplars that apply to the shot (pinned inside it, plus the references) by content hash, every
setting that changes the segment's bytes, and the checkpoint's sha256. The device and the key
batch are left out on purpose: they change no pixel beyond float rounding, and a film half
rendered on one GPU must be resumable on another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from ..bidirectional import BIDIRECTIONAL_VERSION
from ..config import MemoryConfig
from ..errors import InputError
from ..preprocess import ProcessingSize
from .source import ShotSpan

# Bump when the renderer's output for the same inputs changes (new encoder settings, new numerics):
# every segment rendered before then becomes stale.
RENDER_VERSION = 1

Propagation = Literal["forward", "bidirectional"]


@dataclass(frozen=True)
class FilmSettings:
    """What a render is made with. size: processing size text as `ProcessingSize.parse` reads it
    ("480", "long:854", "0.5mp"; None or "official" = each frame's own size); memory: MFP settings;
    precision: autocast dtype; gamut: "clip" or "keep_luminance"; crf: H.264 quality of the
    segments; propagation: "forward" (official) or "bidirectional"."""

    size: str | None = None
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    precision: str = "float32"
    gamut: str = "clip"
    crf: int = 18
    propagation: Propagation = "forward"

    def __post_init__(self) -> None:
        size = ProcessingSize.parse(self.size)   # raises with the accepted forms
        # One spelling per size ("480", "short:480" -> "short:480.0"), so equal settings compare equal.
        object.__setattr__(self, "size", None if size.mode == "official" else _size_text(size.mode, size.value))
        if self.precision not in ("float32", "bfloat16", "float16"):
            raise InputError(f"precision must be float32, bfloat16 or float16, not {self.precision!r}.")
        if self.gamut not in ("clip", "keep_luminance"):
            raise InputError(f"gamut must be clip or keep_luminance, not {self.gamut!r}.")
        if not 0 <= self.crf <= 51:
            raise InputError(f"crf must be between 0 (lossless) and 51, got {self.crf}.")
        if self.propagation not in ("forward", "bidirectional"):
            raise InputError(f"propagation must be forward or bidirectional, not {self.propagation!r}.")

    @property
    def processing_size(self) -> ProcessingSize:
        return ProcessingSize.parse(self.size)

    def to_json(self) -> dict:
        size = self.processing_size
        return {"size": None if size.mode == "official" else {"mode": size.mode, "value": size.value},
                "memory": _memory_json(self.memory), "precision": self.precision, "gamut": self.gamut,
                "crf": self.crf, "propagation": self.propagation}

    @classmethod
    def from_json(cls, data: dict) -> FilmSettings:
        size = data.get("size")
        text = None if size is None else _size_text(size["mode"], size["value"])
        return cls(size=text, memory=MemoryConfig(**data["memory"]), precision=data["precision"],
                   gamut=data["gamut"], crf=int(data["crf"]), propagation=data.get("propagation", "forward"))


def _size_text(mode: str, value: float) -> str:
    return {"short_side": f"short:{value}", "long_side": f"long:{value}", "megapixels": f"{value}mp"}[mode]


@dataclass(frozen=True)
class ExemplarFile:
    """A colour picture in the project's exemplars/ folder: pinned to `frame`, or a reference (None)."""

    path: str
    frame: int | None
    sha256: str

    def to_json(self) -> dict:
        return {"path": self.path, "frame": self.frame, "sha256": self.sha256}


@dataclass(frozen=True)
class ShotJob:
    """One shot's render, fully described (JSON-serialisable, so it can travel to another process).

    index: the shot's position in the film; first, last: its frames (inclusive, 0-based, film
    indices); source: the source video's path; span: where its frames are in the file (so a worker
    needs no project index); exemplars: pinned inside the shot, then references."""

    index: int
    first: int
    last: int
    source: str
    source_fingerprint: str
    span: ShotSpan
    exemplars: tuple[ExemplarFile, ...]
    settings: FilmSettings
    checkpoint_sha256: str

    @property
    def frames(self) -> int:
        return self.last - self.first + 1

    @property
    def fingerprint(self) -> str:
        """sha256 of what the segment is made from (not of where files are: paths are left out)."""
        made_from = {
            "render_version": RENDER_VERSION, "first": self.first, "last": self.last,
            "source": self.source_fingerprint, "checkpoint": self.checkpoint_sha256,
            "exemplars": [[e.frame, e.sha256] for e in self.exemplars], "settings": self.settings.to_json()}
        if self.settings.propagation == "bidirectional" and sum(e.frame is not None for e in self.exemplars) > 1:
            # Only such shots differ from forward; a new bidirectional design makes them (and only them) stale.
            made_from["bidirectional_version"] = BIDIRECTIONAL_VERSION
        return hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict:
        return {"index": self.index, "first": self.first, "last": self.last, "source": self.source,
                "source_fingerprint": self.source_fingerprint, "span": self.span.to_json(),
                "exemplars": [e.to_json() for e in self.exemplars], "settings": self.settings.to_json(),
                "checkpoint_sha256": self.checkpoint_sha256}

    @classmethod
    def from_json(cls, data: dict) -> ShotJob:
        return cls(int(data["index"]), int(data["first"]), int(data["last"]), data["source"],
                   data["source_fingerprint"], ShotSpan.from_json(data["span"]),
                   tuple(ExemplarFile(**e) for e in data["exemplars"]),
                   FilmSettings.from_json(data["settings"]), data["checkpoint_sha256"])


def _memory_json(memory: MemoryConfig) -> dict:
    """The memory settings as fingerprinted: proximity_bias only when set, so that projects rendered
    before it existed keep their fingerprints (it has no effect without references given at frames)."""
    data = dataclasses.asdict(memory)
    if not data.get("proximity_bias"):
        data.pop("proximity_bias", None)
    return data
