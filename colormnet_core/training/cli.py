"""`python -m colormnet_core train`: the official training, resumable, on one or many processes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import torch

from ..errors import InputError
from .config import OFFICIAL_SEED, RunConfig, parse_duration
from .families import PretrainedBackbones

log = logging.getLogger(__name__)


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune ColorMNet the official way (resumable; torchrun for several GPUs)",
        description="Train ColorMNet with the official stages, losses and schedule. Stage 2 (official) trains on "
                    "clips: --clips DIR with one sub-folder of colour frames per clip (the grey input is made from "
                    "them). Stage 0 trains on pseudo-sequences made from single colour pictures (--pictures DIR). "
                    "Start from a checkpoint with --init (e.g. the official weights, CC BY-NC-SA 4.0). Stop any "
                    "time (Ctrl-C, kill, --time-budget) and continue with --resume. Several GPUs or machines: "
                    "torchrun --nproc_per_node N -m colormnet_core train ...")
    p.add_argument("--out", required=True, help="run folder: checkpoints, exports (.safetensors), losses.jsonl")
    p.add_argument("--clips", default=None, help="stage 2 data: folder of clip folders of colour frames")
    p.add_argument("--pictures", default=None, help="stage 0 data: folder of colour pictures")
    p.add_argument("--stages", default="2", help="official stage codes in order: 2 (clips, default), 0 (pictures), 02")
    p.add_argument("--init", default=None, help="start from this checkpoint (.pth or .safetensors)")
    p.add_argument("--dinov2", default=None, help="from scratch: DINOv2 ViT-S/14 (dinov2_vits14_pretrain.pth)")
    p.add_argument("--resnet50", default=None, help="from scratch: ImageNet ResNet-50 (resnet50-0676ba61.pth)")
    p.add_argument("--resnet18", default=None, help="from scratch: ImageNet ResNet-18 (resnet18-5c106cde.pth)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--time-budget", default=None, help="stop at a checkpoint within: 8h, 30m, 90s")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                   help="fp16 autocast + GradScaler: auto = on CUDA (official), off on the CPU")
    p.add_argument("--iterations", type=int, default=None, help="main-phase steps per stage (official 150000)")
    p.add_argument("--finetune-iterations", type=int, default=None, help="fine-tune steps (official 10000 in stage 2)")
    p.add_argument("--lr-steps", type=int, nargs="*", default=None, help="MultiStepLR milestones (official 120000)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (official 2e-5 in stage 2)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch, split over processes (official 2)")
    p.add_argument("--num-frames", type=int, default=None, help="frames per training clip (official 8)")
    p.add_argument("--crop", type=int, default=None, help="square training crop, a multiple of 112 (official 448)")
    p.add_argument("--seed", type=int, default=OFFICIAL_SEED)
    p.add_argument("--num-workers", type=int, default=2, help="data-loading processes per training process")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between resumable checkpoints")
    p.add_argument("--checkpoint-minutes", type=float, default=15.0, help="... or minutes, whichever is first")
    p.add_argument("--export-every", type=int, default=2500, help="steps between .safetensors exports")
    p.add_argument("--max-steps", type=int, default=None, help="stop (at a checkpoint) after this many steps")
    p.add_argument("--name", default="colormnet", help="export file names: NAME_s<stages>_<step>.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(handler=run_train)


def _run_config(args: argparse.Namespace) -> RunConfig:
    overrides = {k: v for k, v in {
        "iterations": args.iterations, "finetune": args.finetune_iterations, "lr": args.lr,
        "batch_size": args.batch_size, "num_frames": args.num_frames, "crop": args.crop,
        "lr_milestones": tuple(args.lr_steps) if args.lr_steps is not None else None}.items() if v is not None}
    amp = {"auto": None, "on": True, "off": False}[args.amp]
    base = RunConfig(seed=args.seed, amp=amp, checkpoint_every=args.checkpoint_every,
                     checkpoint_minutes=args.checkpoint_minutes, export_every=args.export_every,
                     num_workers=args.num_workers, name=args.name)
    return base.with_stages(args.stages, **overrides)


class _StopOnSignal:
    """First SIGINT/SIGTERM: finish the step, checkpoint, exit. A second SIGINT: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (a checkpoint follows); press Ctrl-C again to abort at once",
              file=sys.stderr)

    def __call__(self) -> bool:
        return self.requested

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .run import DataRoots, default_device, train

    run = _run_config(args)
    device = default_device() if args.device == "auto" else torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda but no CUDA GPU is available: use --device cpu (slow) or a machine with a GPU.")
    budget = parse_duration(args.time_budget) if args.time_budget else None
    roots = DataRoots(Path(args.clips) if args.clips else None, Path(args.pictures) if args.pictures else None)
    named = [args.dinov2, args.resnet50, args.resnet18]
    if any(named) and not all(named):
        raise InputError("training from scratch needs all three of --dinov2, --resnet50 and --resnet18.")
    backbones = PretrainedBackbones(*map(Path, named)) if all(named) else None
    group = distributed.start(device)
    stopper = _StopOnSignal()
    try:
        outcome = train(Path(args.out), run, roots, group=group, init=Path(args.init) if args.init else None,
                        backbones=backbones, resume=args.resume, time_budget=budget, max_steps=args.max_steps,
                        should_stop=stopper, progress=not args.no_progress)
    finally:
        stopper.restore()
        distributed.stop(group)
    if group.is_main:
        for path in outcome.exports:
            print(path)
        state = ("finished" if outcome.finished else
                 f"stopped ({outcome.reason}) at stage {outcome.stage} step {outcome.step}; continue with --resume")
        print(f"training {state}; checkpoint {outcome.checkpoint}", file=sys.stderr)
    return 0
