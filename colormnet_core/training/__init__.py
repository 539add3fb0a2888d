"""Training: the official ColorMNet training (stages, losses, schedule), resumable, on 1..N processes.

    config.py        stages and run settings (official numbers)
    datasets.py      clips from folders of colour frames; pseudo-sequences from pictures
    augment.py       the official augmentations
    draws.py         the random choices inside a step (reference frames, deep updates)
    forward.py       one batch of clips through the network and its L1 loss
    families.py      what each checkpoint family freezes
    trainer.py       Trainer: optimizer, scheduler, AMP, data schedule, one step at a time
    finetune.py      fine-tuning on a film's own pictures, with held-out scores before and after
    holdout.py       those scores: held-out sequences colorized from their first frame, PSNR/SSIM/CDC
    state.py         resumable checkpoints, inference exports
    distributed.py   torchrun process groups
    monitor.py       progress bar, losses.jsonl, TensorBoard
    run.py           a run folder: stages, checkpoints, exports, time budget, resume
    cli.py           python -m colormnet_core train
"""

from .config import CLIPS_STAGE, OFFICIAL_SEED, STATIC_STAGE, RunConfig, StageConfig, parse_duration
from .datasets import ClipFolderDataset, PictureDataset
from .draws import FixedDraws, FixedStepDraws, KeyedDraws
from .families import frozen_modules, prepare_for_training
from .finetune import (
    FinetuneConfig,
    FinetuneResult,
    FinetuneStep,
    HoldoutScores,
    check_finetune_data,
    estimate_finetune_seconds,
    finetune_network,
)
from .forward import ClipBatch, ClipLoss, clip_loss
from .trainer import StepResult, Trainer

__all__ = ["CLIPS_STAGE", "OFFICIAL_SEED", "STATIC_STAGE", "ClipBatch", "ClipFolderDataset", "ClipLoss",
           "FinetuneConfig", "FinetuneResult", "FinetuneStep", "FixedDraws", "FixedStepDraws", "HoldoutScores",
           "KeyedDraws", "PictureDataset", "RunConfig", "StageConfig", "StepResult", "Trainer", "check_finetune_data",
           "clip_loss", "estimate_finetune_seconds", "finetune_network", "frozen_modules", "parse_duration",
           "prepare_for_training"]
