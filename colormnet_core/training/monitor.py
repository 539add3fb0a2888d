"""What a training run shows: a progress bar with the ETA, a loss log, and TensorBoard when installed.

Only rank 0 monitors. `losses.jsonl` (one line per step: stage, step, loss, per-frame losses, lr,
seconds) is cut back to the checkpoint's step on resume and then appended to, so it holds each step
once whatever crashed in between. TensorBoard (`pip install tensorboard`) is optional: without it the
scalars go to the log file only.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

LOSSES = "losses.jsonl"


class Monitor:
    """Progress bar (tqdm, with rate and ETA), `losses.jsonl` and optional TensorBoard scalars."""

    def __init__(self, folder: Path | None, *, total: int, done: int, description: str, log_every: int = 100,
                 progress: bool = True) -> None:
        self.folder = folder
        self.log_every = log_every
        self.writer = None
        self.losses_file = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.losses_file = open(folder / LOSSES, "a", encoding="utf-8")   # noqa: SIM115 - closed in close()
            self.writer = _tensorboard(folder / "tensorboard")
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=description, unit="step", file=sys.stderr,
                            dynamic_ncols=True, smoothing=0.05)

    def record(self, entry: dict) -> None:
        """One finished step: {"stage", "step", "loss", "frames", "lr", "seconds"}."""
        if self.losses_file is not None:
            self.losses_file.write(json.dumps(entry) + "\n")
            self.losses_file.flush()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.1e}", refresh=False)
        step = entry["step"]
        if self.writer is not None and step % self.log_every == 0:
            stage = entry["stage"]
            self.writer.add_scalar(f"stage{stage}/loss", entry["loss"], step)
            self.writer.add_scalar(f"stage{stage}/lr", entry["lr"], step)
            self.writer.add_scalar(f"stage{stage}/seconds_per_step", entry["seconds"], step)
            for t, value in enumerate(entry["frames"], start=1):
                self.writer.add_scalar(f"stage{stage}/loss_frame{t}", value, step)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.losses_file is not None:
            self.losses_file.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:   # tensorboard is optional
        log.info("tensorboard is not installed: training scalars go to %s only (pip install tensorboard)", LOSSES)
        return None
    return SummaryWriter(str(folder))


def cut_losses(folder: Path, until: tuple[int, int] | None) -> None:
    """Keep the entries up to (stage, step) `until` (none for a new run): on resume, the steps done
    after the checkpoint are done, and logged, again."""
    from ..film.records import write_atomic

    kept = [] if until is None else [e for e in read_losses(folder) if (e["stage"], e["step"]) <= until]
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / LOSSES, "".join(json.dumps(e) + "\n" for e in kept).encode())


def read_losses(folder: Path) -> list[dict]:
    """The entries of `losses.jsonl` (tests, reports)."""
    path = folder / LOSSES
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:      # the line a kill cut short
            continue
    return entries
