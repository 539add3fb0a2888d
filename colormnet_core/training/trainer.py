"""`Trainer`: one training stage of one process (or one torchrun rank), one optimizer step at a time.

The official optimisation (`model/trainer.py`): AdamW (lr 2e-5, weight decay 0.05) over the
trainable parameters, MultiStepLR (x0.1 at step 120k), one scheduler step per optimizer step, the
network in eval mode throughout, fp16 autocast with a GradScaler on CUDA and plain fp32 elsewhere.
Data follow the official schedule: the frame-gap limit grows 5 -> 10 -> 15 and falls back to 5 at
10/30/90 % of the main phase, the fine-tune phase drops rotation and shear, and each change of the
data phase starts a new epoch (the official renews its loader).

Typical use (a fine-tune in a UI, a research loop):

    trainer = Trainer(load_model(path), CLIPS_STAGE, ClipFolderDataset(root))
    while not trainer.done and not cancelled():
        result = trainer.step()          # StepResult: loss, per-frame losses, lr, seconds
    trainer.export(Path("tuned.safetensors"))

`run.py` adds checkpoints, exports, the time budget and resume around it for the command line.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from ..network import ColorMNet
from .config import OFFICIAL_SEED, StageConfig
from .datasets import KeyedSampler
from .distributed import ProcessGroup, mean_over_ranks
from .draws import DrawSource, KeyedDraws
from .families import prepare_for_training
from .forward import ClipBatch, ClipObjective
from .state import DataPosition, export_weights, restore_rng_states


class TrainingData(Protocol):
    """Items `(image T x 3 x H x W, ab T x 2 x H x W)` indexed by `(index, item seed)`, per data phase."""

    def __len__(self) -> int: ...

    def phase(self, *, max_skip: int, finetune: bool) -> Dataset: ...


@dataclass(frozen=True)
class StepResult:
    """One optimizer step: loss (mean over every process's clips), per-frame L1, the lr it used."""

    stage: int
    step: int              # 1-based: the number of steps done in the stage after this one
    loss: float
    frames: tuple[float, ...]
    lr: float
    seconds: float

    def as_dict(self) -> dict:
        return {**asdict(self), "frames": list(self.frames)}


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> ClipBatch:
    return ClipBatch(torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]))


def derived_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one purpose of a run (e.g. the draws of stage 1), from the run seed."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def _quiet_worker(_: int) -> None:
    torch.set_num_threads(1)      # data workers decode and augment; the training process owns the cores


class Trainer:
    """One stage of training. `network` is trained in place (its frozen parts per `families`;
    `unlock_backbone`: CMNET2's switch that trains the DINOv3 ViT too)."""

    def __init__(self, network: ColorMNet, stage: StageConfig, data: TrainingData | None = None, *,
                 stage_index: int = 0, seed: int = OFFICIAL_SEED, group: ProcessGroup | None = None,
                 amp: bool | None = None, num_workers: int = 0, draws: DrawSource | None = None,
                 unlock_backbone: bool = False) -> None:
        self.group = group = group or ProcessGroup()
        self.stage, self.stage_index, self.data, self.num_workers = stage, stage_index, data, num_workers
        if stage.batch_size % group.world_size:
            raise InputError(f"the batch size ({stage.batch_size}) must be divisible by the number of processes "
                             f"({group.world_size}), as in the official trainer.")
        self.local_batch = stage.batch_size // group.world_size
        if data is not None and len(data) < stage.batch_size:
            raise InputError(f"{len(data)} training item(s) cannot fill a batch of {stage.batch_size}: add clips or "
                             f"pictures, or lower --batch-size.")
        self.amp = group.device.type == "cuda" if amp is None else amp
        if self.amp and group.device.type != "cuda":
            raise InputError("mixed precision (fp16 autocast) needs a CUDA GPU; on a CPU train in fp32 (--amp off).")
        self.network = network.to(group.device)
        parameters = prepare_for_training(self.network, unlock_backbone=unlock_backbone)
        objective = ClipObjective(self.network, num_ref_frames=stage.num_ref_frames)
        self.model: nn.Module = objective
        if group.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                objective, device_ids=[group.device.index] if group.device.type == "cuda" else None,
                broadcast_buffers=False, find_unused_parameters=True)
        self.optimizer = torch.optim.AdamW(parameters, lr=stage.lr, weight_decay=stage.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(stage.lr_milestones), stage.gamma)
        self.scaler = torch.amp.GradScaler(group.device.type, enabled=self.amp)
        self.draws = draws or KeyedDraws(derived_seed(seed, 1, stage_index), stage.num_ref_frames,
                                         stage.deep_update_prob)
        self.data_seed = derived_seed(seed, 2, stage_index)
        self.position = DataPosition(stage=stage_index)
        self._batches = None

    # -- stepping --------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.position.step >= self.stage.total_steps

    def train_step(self, batch: ClipBatch) -> StepResult:
        """One optimizer step on `batch` (this process's share of the global batch)."""
        started = time.perf_counter()
        device = self.group.device
        draws = self.draws.for_step(self.position.step)
        lr = self.optimizer.param_groups[0]["lr"]
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.amp):
            loss = self.model(batch.to(device), draws, self.group.rank * self.local_batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        frames = mean_over_ranks(loss.frames.double(), self.group)   # reported in float64: no extra rounding
        total = mean_over_ranks(loss.total.detach().double(), self.group)
        self.position = replace(self.position, step=self.position.step + 1,
                                consumed=self.position.consumed + self.stage.batch_size)
        result = StepResult(self.stage_index, self.position.step, float(total), tuple(frames.tolist()), lr,
                            time.perf_counter() - started)
        return result

    def step(self) -> StepResult:
        """The next global batch of the schedule, and one optimizer step on it."""
        if self.data is None:
            raise InputError("this Trainer has no training data: give `data`, or call train_step(batch).")
        if self.done:
            raise InputError(f"stage {self.stage_index} is finished ({self.stage.total_steps} steps).")
        return self.train_step(self._next_batch())

    def _next_batch(self) -> ClipBatch:
        step, pos = self.position.step, self.position
        phase = (self.stage.max_skip_at(step), self.stage.in_finetune(step))
        if (pos.max_skip, pos.finetune) != phase:
            # The official renews its data loader when the phase changes, which starts a new epoch.
            self.position = replace(pos, epoch=pos.epoch + (pos.max_skip > 0), consumed=0, max_skip=phase[0],
                                    finetune=phase[1])
            self._batches = None
        for _ in range(2):
            if self._batches is None:
                self._batches = iter(self._loader())
            try:
                return next(self._batches)
            except StopIteration:
                self.position = replace(self.position, epoch=self.position.epoch + 1, consumed=0)
                self._batches = None
        raise InputError("the training data gave no batch: it has fewer items than a batch.")

    def _loader(self) -> DataLoader:
        pos, group = self.position, self.group
        dataset = self.data.phase(max_skip=pos.max_skip, finetune=pos.finetune)
        sampler = KeyedSampler(len(dataset), batch_size=self.stage.batch_size, seed=self.data_seed, epoch=pos.epoch,
                               rank=group.rank, world_size=group.world_size,
                               start=pos.consumed // self.stage.batch_size)
        return DataLoader(dataset, batch_size=self.local_batch, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate, drop_last=True, pin_memory=group.device.type == "cuda",
                          worker_init_fn=_quiet_worker if self.num_workers else None)

    # -- state -----------------------------------------------------------------------------------

    def load_state(self, state: dict) -> None:
        """Continue from a `state.save_training_state` checkpoint of this stage."""
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_states(state["rng"])
        self.position = DataPosition(**state["position"])
        self._batches = None

    def tuned_network(self) -> ColorMNet:
        """The trained network, ready for inference (eval mode, nothing requiring gradients). This ends
        the training: build a new Trainer to train it further."""
        return self.network.eval().requires_grad_(False)

    def export(self, path: Path, *, metadata: dict[str, str] | None = None) -> str:
        """Write the network as an inference checkpoint (.safetensors, official names, + .sha256)."""
        info = {"trained_stage": str(self.stage_index), "trained_steps": str(self.position.step), **(metadata or {})}
        return export_weights(self.network, path, metadata=info)
