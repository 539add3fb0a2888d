"""Fine-tuning a film project's network on the project's own exemplars (`film finetune`).

What it learns from: every colour picture in exemplars/ (pinned exemplars and references), plus, when
the user has them, colour frames of the film (`--colour-frames DIR`: each sub-folder of DIR is a clip
of consecutive frames, loose images are stills). `training.finetune` does the training and the
held-out scores; this module picks the starting checkpoint, writes the result into the project and
makes it the project's checkpoint (`checkpoints.py`), crash-safely:

1. the tuned weights go to `checkpoints/finetuned-<sha8>.safetensors` (temporary name, fsync, rename,
   then its `.sha256` sidecar: `training.state.export_weights`);
2. film.json's "checkpoint" entry is replaced last, atomically. A kill before 2 leaves the project as
   it was (and at most an unused file); a cancel or Ctrl-C during training writes nothing.

The project-wide render lock is held throughout: a render of the same project would otherwise use the
checkpoint that is about to be replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoint import WEIGHTS_LICENSE, load_model, sha256_file
from ..download import find_checkpoint
from ..errors import InputError
from ..network import ColorMNet
from ..training.finetune import FinetuneConfig, FinetuneResult, FinetuneStep, finetune_network
from ..video_io import IMAGE_SUFFIXES, read_image
from .checkpoints import CHECKPOINTS_DIR, ProjectCheckpoint, checkpoint_file, project_checkpoint, switch_checkpoint
from .records import write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneInputs:
    """What a project fine-tune learns from, loaded: pictures `3 x H x W` uint8, colour frames
    (stills `3 x H x W`, clips `T x 3 x H x W`), and where they came from."""

    pictures: list[Tensor]
    colour_frames: list[Tensor]
    start: ProjectCheckpoint

    def describe(self) -> str:
        clips = sum(f.dim() == 4 for f in self.colour_frames)
        stills = len(self.colour_frames) - clips
        extra = [f"{clips} colour clip(s)"] * bool(clips) + [f"{stills} colour still(s)"] * bool(stills)
        return f"{len(self.pictures)} exemplar picture(s)" + "".join(f" + {e}" for e in extra)


@dataclass(frozen=True)
class ProjectFinetune:
    result: FinetuneResult
    checkpoint: ProjectCheckpoint | None        # the new project checkpoint (None: cancelled, nothing written)


def _shrunk(rgb: Tensor, size: int) -> Tensor:
    """`rgb` with its short side at most 2 x `size` (training crops are `size` pixels; a film's 4K frames
    would only cost memory)."""
    limit = 2 * size
    h, w = rgb.shape[-2:]
    if min(h, w) <= limit:
        return rgb
    scale = limit / min(h, w)
    out = F.interpolate(rgb.unsqueeze(0).float(), size=(round(h * scale), round(w * scale)), mode="bilinear",
                        antialias=True, align_corners=False)
    return out.squeeze(0).round().clamp(0, 255).to(torch.uint8)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def read_colour_frames(folder: str | Path, size: int) -> list[Tensor]:
    """`folder`'s colour frames: one `T x 3 x H x W` clip per sub-folder (frames sorted by name, one size),
    then every loose image as a `3 x H x W` still. InputError when there is nothing or sizes differ."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--colour-frames {folder} is not a folder: give a folder of colour frames of the film "
                         f"(sub-folders of consecutive frames are used as clips, loose images as stills).")
    out: list[Tensor] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        frames = [_shrunk(read_image(p), size) for p in _images(sub)]
        if not frames:
            continue
        if len({tuple(f.shape) for f in frames}) > 1:
            raise InputError(f"the frames in {sub} have different sizes: a clip's frames come from one video; "
                             f"put frames of other sizes into another sub-folder.")
        out.append(torch.stack(frames))
    out += [_shrunk(read_image(p), size) for p in _images(folder)]
    if not out:
        raise InputError(f"{folder} holds no colour frames ({', '.join(sorted(IMAGE_SUFFIXES))}), neither loose nor in "
                         f"sub-folders.")
    return out


def starting_checkpoint(project, explicit: str | Path | None = None) -> ProjectCheckpoint:
    """What the fine-tune starts from: `explicit`, else the project's own checkpoint, else the download."""
    own = project_checkpoint(project)
    if explicit is not None:
        path = find_checkpoint(explicit)
    elif own is not None:
        path = checkpoint_file(project)
        return ProjectCheckpoint(path, own.sha256, own.reason)
    else:
        path = find_checkpoint(None)
    sha = sha256_file(path)
    reason = own.reason if own is not None and own.sha256 == sha else f"{path.name} (before fine-tuning)"
    return ProjectCheckpoint(path, sha, reason)


def project_inputs(project, config: FinetuneConfig, *, colour_frames: str | Path | None = None,
                   checkpoint: str | Path | None = None) -> FinetuneInputs:
    """The project's exemplar pictures, the colour frames, and the starting checkpoint."""
    pictures = [_shrunk(read_image(e.path), config.size) for e in project.exemplar_files()]
    frames = read_colour_frames(colour_frames, config.size) if colour_frames is not None else []
    return FinetuneInputs(pictures, frames, starting_checkpoint(project, checkpoint))


def finetune_project(project, inputs: FinetuneInputs, config: FinetuneConfig, *, device: torch.device,
                     network: ColorMNet | None = None, on_step: Callable[[FinetuneStep], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> ProjectFinetune:
    """Fine-tune the starting checkpoint (`network`: it, already loaded), write the result into the project
    and make it the project's checkpoint (see the module docstring). The caller holds the render lock."""
    network = network if network is not None else load_model(inputs.start.path, device=device)
    result = finetune_network(network, inputs.pictures, config, device=device, colour_frames=inputs.colour_frames,
                              on_step=on_step, should_stop=should_stop)
    if result.cancelled:
        return ProjectFinetune(result, None)
    metadata = {"finetuned_from_sha256": inputs.start.sha256, "finetune_steps": str(result.steps_done),
                "finetune_pictures": str(len(inputs.pictures)),
                "finetune_colour_frames": str(len(inputs.colour_frames)),
                "finetune_size": str(config.size), "finetune_learning_rate": repr(config.learning_rate),
                "finetune_seed": str(config.seed), "licence": f"derived from weights licensed {WEIGHTS_LICENSE}"}
    from ..training.state import export_weights

    folder = project.dir / CHECKPOINTS_DIR
    digest = export_weights(result.network, folder / "finetuned-{sha8}.safetensors", metadata=metadata,
                            source=f"fine-tuned by `film finetune` from sha256 {inputs.start.sha256}")
    path = folder / f"finetuned-{digest[:8]}.safetensors"
    reason = (f"fine-tuned from {inputs.start.sha256[:12]}: {result.steps_done} steps on "
              f"{inputs.describe()}")
    new = ProjectCheckpoint(path, digest, reason)
    write_json(path.with_suffix(".json"), finetune_report(result, config, inputs, digest), "the fine-tune report")
    switch_checkpoint(project, new, inputs.start)
    return ProjectFinetune(result, new)


def finetune_report(result: FinetuneResult, config: FinetuneConfig, inputs: FinetuneInputs, digest: str) -> dict:
    """What `checkpoints/finetuned-<sha8>.json` records beside the weights: where they came from, the
    settings, the held-out scores before and after, the time and the loss curve."""
    return {"sha256": digest, "finetuned_from": {"path": str(inputs.start.path), "sha256": inputs.start.sha256},
            "inputs": inputs.describe(), "config": asdict(config), "steps_done": result.steps_done,
            "seconds": round(result.seconds, 3), "before": None if result.before is None else asdict(result.before),
            "after": None if result.after is None else asdict(result.after), "losses": list(result.losses),
            "licence": f"derived from weights licensed {WEIGHTS_LICENSE}"}
