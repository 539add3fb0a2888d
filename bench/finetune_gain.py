"""Issue 21: what `film finetune` gains on held-out pictures (PSNR, SSIM, CDC before and after) and its time.

The film is tests/finetune_film.py's: six shots of real footage (tiles of DAVIS blackswan), each with
its exemplar; the starting weights are the golden fixture's synthetic checkpoint (no trained weights
can be downloaded here). It runs the command a user runs and prints the report it writes:

    python bench/finetune_gain.py --steps 300 --size 112 [--device cpu] [--out DIR]

CPU threads: set OMP_NUM_THREADS (the figures in bench/RESULTS.md name theirs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colormnet_core.__main__ import main  # noqa: E402
from tests import golden  # noqa: E402
from tests.finetune_film import make_tile_film  # noqa: E402


def run(out: Path, steps: int, size: int, device: str, lr: float | None) -> dict:
    project = make_tile_film(out)
    command = ["film", "finetune", "--project", str(project.dir), "--steps", str(steps), "--size", str(size),
               "--device", device, "--checkpoint", str(golden.golden_weights())]
    if lr is not None:
        command += ["--lr", str(lr)]
    started = time.perf_counter()
    code = main(command)
    wall = time.perf_counter() - started
    if code:
        raise SystemExit(f"film finetune failed with status {code}")
    (report_path,) = (project.dir / "checkpoints").glob("finetuned-*.json")
    report = json.loads(report_path.read_text())
    report["wall_seconds_with_estimate"] = round(wall, 1)
    report["threads"] = torch.get_num_threads()
    report["command"] = "python -m colormnet_core " + " ".join(command)
    return report


def table(report: dict) -> str:
    before, after = report["before"], report["after"]
    rows = ["| | PSNR (dB) | SSIM | CDC |", "|---|---|---|---|"]
    for name, s in (("before", before), ("after", after)):
        rows.append(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['cdc']:.5f} |")
    rows.append(f"| change | {after['psnr'] - before['psnr']:+.2f} | {after['ssim'] - before['ssim']:+.4f} | "
                f"{after['cdc'] - before['cdc']:+.5f} |")
    return "\n".join(rows) + (f"\n\n{report['steps_done']} steps, {report['seconds']:.0f} s in finetune_network "
                              f"({report['threads']} threads), {before['pictures']} held-out picture(s), "
                              f"{before['frames']} frames scored")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--device", default="cpu")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--out", default=None, help="folder for the project (default: a temporary one)")
    p.add_argument("--json", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = run(out, args.steps, args.size, args.device, args.lr)
    print(json.dumps(result) if args.json else table(result))
