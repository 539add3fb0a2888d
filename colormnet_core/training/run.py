"""A training run on disk: the stages in order, resumable checkpoints, exports and the time budget.

The run folder holds `last.ckpt` (the resumable state, replaced atomically), `run.json` (the
settings, checked on resume), `losses.jsonl`, `tensorboard/` when TensorBoard is installed, and the
exports `<name>_s<stages>_<step>.safetensors` (+ `.sha256`), named like the official
`<exp>_s2_<it>.pth` files. Stages run in order with the network carried from one to the next and a
fresh optimizer per stage, as the official `train.py` does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checkpoint import infer_network_config, load_model
from ..errors import InputError
from ..network import ColorMNet
from .config import RunConfig, StageConfig
from .datasets import ClipFolderDataset, PictureDataset
from .distributed import ProcessGroup, any_rank, barrier
from .families import PretrainedBackbones, official_initialisation
from .monitor import Monitor, cut_losses
from .state import LAST, DataPosition, load_training_state, save_training_state
from .trainer import Trainer

log = logging.getLogger(__name__)

STAGE_CODES = {"static": "0", "clips": "2"}


@dataclass(frozen=True)
class DataRoots:
    clips: Path | None = None          # root/<clip>/<frames>: stage 2
    pictures: Path | None = None       # colour pictures: stage 0


@dataclass(frozen=True)
class RunOutcome:
    finished: bool                     # every stage done
    reason: str                        # "finished", "time budget", "max steps" or "stop requested"
    stage: int
    step: int
    exports: tuple[Path, ...]
    checkpoint: Path | None


def stage_codes(run: RunConfig, upto: int) -> str:
    return "".join(STAGE_CODES[s.kind] for s in run.stages[:upto + 1])


def _settings(run: RunConfig, roots: DataRoots) -> dict:
    return {"run": asdict(run), "clips": str(roots.clips) if roots.clips else None,
            "pictures": str(roots.pictures) if roots.pictures else None}


def _stage_data(stage: StageConfig, roots: DataRoots):
    if stage.kind == "clips":
        if roots.clips is None:
            raise InputError("stage 2 trains on clips: give --clips DIR (one sub-folder of colour frames per clip).")
        return ClipFolderDataset(roots.clips, num_frames=stage.num_frames, max_skip=stage.max_skip[0], crop=stage.crop)
    if roots.pictures is None:
        raise InputError("stage 0 trains on pictures: give --pictures DIR (colour images).")
    return PictureDataset.from_folder(roots.pictures, num_frames=stage.num_frames, crop=stage.crop)


def _check_same_run(saved: dict, current: dict, folder: Path) -> None:
    current = json.loads(json.dumps(current))      # as it was saved: tuples become lists
    if saved["run"] != current["run"]:
        changed = sorted(k for k in current["run"] if saved["run"].get(k) != current["run"][k])
        raise InputError(f"the run in {folder} was started with other settings ({', '.join(changed)} differ): "
                         f"resume it with the same options, or start a new run in another --out folder.")


def train(out: Path, run: RunConfig, roots: DataRoots, *, group: ProcessGroup, init: Path | None = None,
          backbones: PretrainedBackbones | None = None, resume: bool = False, time_budget: float | None = None,
          max_steps: int | None = None,
          should_stop: Callable[[], bool] | None = None, progress: bool = True) -> RunOutcome:
    """Train (or resume) the run in `out`. Stops at a checkpoint when every stage is done, when
    `time_budget` seconds would be exceeded by another step, after `max_steps` steps of this call,
    or when `should_stop()` (e.g. a signal handler) says so."""
    started = time.monotonic()
    settings = _settings(run, roots)
    state = None
    if resume:
        state = load_training_state(out)
        _check_same_run(json.loads((out / "run.json").read_text()), settings, out)
        network = ColorMNet(infer_network_config(state["network"]))
        network.load_state_dict(state["network"])
    else:
        if (out / LAST).exists():
            raise InputError(f"{out} already holds a training run: add --resume to continue it, or choose another "
                             f"--out folder.")
        network = _initial_network(init, backbones, run.seed)
        if group.is_main:
            from ..film.records import write_json

            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "run.json", settings)
    if group.is_main:
        for stale in out.glob(".*.partial-*"):           # left by a kill while a checkpoint or export was written
            stale.unlink(missing_ok=True)
    position = DataPosition(**state["position"]) if state else DataPosition()
    if group.is_main:
        cut_losses(out, (position.stage, position.step) if state else None)
    exports: list[Path] = []
    steps_done = 0
    for index in range(position.stage, len(run.stages)):
        stage = run.stages[index]
        trainer = Trainer(network, stage, _stage_data(stage, roots), stage_index=index, seed=run.seed, group=group,
                          amp=run.amp, num_workers=run.num_workers)
        if state is not None and index == position.stage:
            trainer.load_state(state)
        monitor = Monitor(out if group.is_main else None, total=stage.total_steps, done=trainer.position.step,
                          description=f"stage {stage_codes(run, index)[-1]}", log_every=run.log_every,
                          progress=progress and group.is_main)
        state = None
        last_checkpoint = time.monotonic()
        try:
            while not trainer.done:
                result = trainer.step()
                steps_done += 1
                monitor.record(result.as_dict())
                step = trainer.position.step
                elapsed = time.monotonic() - started
                reasons = [time_budget is not None and elapsed + 1.5 * result.seconds > time_budget,
                           max_steps is not None and steps_done >= max_steps, bool(should_stop and should_stop())]
                stop = any(reasons)
                due = (step % run.checkpoint_every == 0
                       or time.monotonic() - last_checkpoint > 60 * run.checkpoint_minutes)
                due, stop = any_rank([due, stop], group)
                if group.is_main and (step % run.export_every == 0 or trainer.done):
                    exports.append(_export(trainer, out, run, index))
                if due or stop or trainer.done:
                    checkpoint = _checkpoint(trainer, out, settings, group)
                    last_checkpoint = time.monotonic()
                if stop and not trainer.done:
                    reason = next((r for r, hit in zip(("time budget", "max steps"), reasons) if hit),
                                  "stop requested")
                    monitor.note(f"stopped at stage {index} step {step} ({reason}); continue with --resume")
                    return RunOutcome(False, reason, index, step, tuple(exports), checkpoint)
        finally:
            monitor.close()
        network = trainer.tuned_network().requires_grad_(True)
    return RunOutcome(True, "finished", len(run.stages) - 1, run.stages[-1].total_steps, tuple(exports), out / LAST)


def _initial_network(init: Path | None, backbones: PretrainedBackbones | None, seed: int) -> ColorMNet:
    if init is not None:
        return load_model(init)
    if backbones is None:
        raise InputError("give --init CHECKPOINT to train on from a ColorMNet checkpoint (e.g. the official "
                         "weights), or --dinov2/--resnet50/--resnet18 to train from the pretrained backbones as the "
                         "official code does; without either, the frozen DINOv2 branch would stay random.")
    network = ColorMNet()
    official_initialisation(network, backbones, seed=seed)
    return network


def _export(trainer: Trainer, out: Path, run: RunConfig, index: int) -> Path:
    path = out / f"{run.name}_s{stage_codes(run, index)}_{trainer.position.step}.safetensors"
    trainer.export(path, metadata={"stages": stage_codes(run, index)})
    log.info("exported %s", path)
    return path


def _checkpoint(trainer: Trainer, out: Path, settings: dict, group: ProcessGroup) -> Path:
    if group.is_main:
        save_training_state(out, network=trainer.network, optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                            scaler=trainer.scaler, position=trainer.position, run=settings)
    barrier(group)
    return out / LAST


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
