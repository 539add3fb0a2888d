"""Issue 22 in one prepared run: correctness, precision, speed and memory on a GPU (or, shrunk, a CPU).

    python bench/gpu_check.py --out DIR [--device auto|cuda|cpu] [--budget 480] [--quick]
        [--checkpoint PATH ...] [--sections golden,film,...] [--profile] [--long-frames 1000] [--threads N]

Sections, in this order (the order is the priority when the time budget runs short):
  golden       the golden fixture's four configurations in float32 (TF32 off) against the official
               outputs, with CI's tolerances and near-tie rule (tests/golden.py)
  film         a film project of a few shots (`film init/render/assemble`) rendered on the device;
               needs PyAV
  shots        the same per-shot reset without video files: a 3-shot clip in one session against
               each shot alone
  propagation  bidirectional propagation between three exemplars, streamed and spilled to disk
  ray          `film render --ray auto` (a local Ray on 127.0.0.1); needs Ray and PyAV
  precision    fp16 autocast (the official CUDA default), bf16 (and float32 with TF32 on CUDA) in
               8-bit levels against float32, on the golden inputs and the blackswan clip
  profile      (--profile) torch.profiler over a few frames: device and CPU time per stage
  speed        s/frame and peak VRAM (torch's peak allocation and the driver's figure) per checkpoint,
               resolution, precision, key batch, torch.compile, and 100 against --long-frames frames;
               last, as it takes whatever time is left

--checkpoint (repeatable; default the fixture weights, which have the official architecture) names
the checkpoints the speed section measures; each is loaded with `load_model`, which recognises its
family, so another backbone family needs only its checkpoint here. There are no real weights on the
GPU machine: the fixture's are expanded there (tests/golden.py).

The budget (seconds from the start) is shared: every section and every speed run is estimated first
and skipped when it would not fit, and long runs stop early when the budget ends; each skip and cut
is recorded with its reason, never silent. DIR/gpu_check.json and DIR/gpu_check.md are rewritten
after every section and speed run, so a run killed on the way still leaves what was done.

--quick shrinks every section (tiny sizes and frame counts, one golden configuration on a prefix of
its frames, no torch.compile on a CPU) so that `--device cpu --quick` runs in CI (tests/test_gpu_check.py).

Exit status: 0 when every check that ran passed; 1 when a correctness check (golden, film, shots,
propagation, ray) failed; 2 when no check failed but a section stopped with an error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SECTIONS = ("golden", "film", "shots", "propagation", "ray", "precision", "profile", "speed")
CORRECTNESS = ("golden", "film", "shots", "propagation", "ray")
JSON_NAME, MARKDOWN_NAME = "gpu_check.json", "gpu_check.md"
GOAL_FPS, GOAL_VRAM_BYTES, GOAL_FLAT = 60.0, 2e9, 1.1   # issue 22: >= 60 frames/s, <= 2 GB, 1000 vs 100 <= 1.1x


@dataclass(frozen=True)
class Settings:
    """Sizes of every section; FULL for a GPU, QUICK for CI on a CPU. Processing sizes as
    `ProcessingSize.parse` reads them (None: official, the frame's own size)."""

    golden_configs: tuple[str, ...] = ("A_release", "B_consolidation", "C_any_exemplar", "D_no_longterm")
    golden_frames: int | None = None                 # None: all 12
    film_shots: tuple[int, ...] = (8, 6, 8)          # frames per shot of the synthetic film
    film_size: tuple[int, int] = (320, 176)          # its width, height
    film_processing: str | None = None
    shot_frames: int = 6                             # frames per shot of the in-memory 3-shot clip
    small_processing: str | None = None              # shots and propagation
    pan: tuple[int, int, tuple[int, ...]] = (17, 2, (0, 8, 16))   # frames, step, exemplar frames
    precision_frames: int | None = None              # None: all (golden 12, blackswan 16)
    reduced: tuple[str, ...] = ("bfloat16", "float16")   # precisions compared with float32
    precision_processing: str | None = None
    resolutions: tuple[str, ...] = ("854x480", "960x536")
    precisions: tuple[str, ...] = ("float32", "bfloat16", "float16")
    key_batches: tuple[int, ...] = (1, 4, 8)
    compile_modes: tuple[bool, ...] = (False, True)
    short_frames: int = 100
    warm_frames: int = 8                             # not timed; a multiple of every key batch
    profile_frames: int = 8


FULL = Settings()
QUICK = Settings(golden_configs=("A_release",), golden_frames=2, film_shots=(3, 3, 3), film_size=(96, 64),
                 film_processing="64", shot_frames=2, small_processing="64", pan=(5, 2, (0, 2, 4)),
                 # float16 autocast on a CPU runs ~50x slower than float32 (no fast kernels): not in CI
                 precision_frames=2, precision_processing="64", reduced=("bfloat16",), resolutions=("112x64",),
                 precisions=("float32", "bfloat16"), key_batches=(1, 2), compile_modes=(False,), short_frames=4,
                 warm_frames=2, profile_frames=2)


class Budget:
    """Seconds left of the run's budget, counted from the script's start."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, estimate: float) -> bool:
        return self.left() >= estimate


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Report:
    """The run's one JSON document and its Markdown rendering, both rewritten by `write()`
    (temporary file, then rename: a reader never sees half a file)."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data: dict = {
            "script": "bench/gpu_check.py", "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "environment": {}, "plan": [], "sections": {}, "goals": {}, "notes": [], "elapsed_s": 0.0,
            "exit_code": None,
        }

    def section(self, name: str) -> dict:
        return self.data["sections"].setdefault(name, {"status": "pending", "rows": []})

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        say(f"note: {text}")

    def write(self, budget: Budget | None = None) -> None:
        if budget is not None:
            self.data["elapsed_s"] = round(budget.elapsed(), 1)
        for name, text in ((JSON_NAME, json.dumps(self.data, indent=1, default=str)),
                           (MARKDOWN_NAME, markdown(self.data))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)


@contextlib.contextmanager
def tf32(enabled: bool):
    """CUDA matmuls and cuDNN convolutions in TF32 (enabled) or true float32, restored afterwards.
    torch's defaults: matmuls float32, convolutions TF32."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def nvidia_smi(query: str) -> str | None:
    """`nvidia-smi --query-...` output (csv, no header, no units), or None where it is absent."""
    try:
        run = subprocess.run(["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def environment(device) -> dict:
    import torch

    # Versions of what the sections import, read without failing here: a broken or missing package
    # shows in the report, and the sections that need it fail with their own error.
    env = {"device": str(device), "python": platform.python_version(), "torch": torch.__version__,
           "timm": _version("timm"), "numpy": _version("numpy"), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
           "pyav": _version("av"), "ray": _version("ray")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(name=props.name, capability=f"{props.major}.{props.minor}",
                   multiprocessors=props.multi_processor_count, memory_mib=round(props.total_memory / 2**20),
                   cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), driver=nvidia_smi("--query-gpu=driver_version"),
                   tf32_default={"matmul": torch.backends.cuda.matmul.allow_tf32,
                                 "cudnn_conv": torch.backends.cudnn.allow_tf32},
                   cudnn_benchmark=torch.backends.cudnn.benchmark)
    else:
        env["name"] = platform.processor() or "cpu"
    return env


def _version(name: str) -> str | None:
    if not has_module(name):
        return None
    try:
        return getattr(__import__(name), "__version__", "present")
    except Exception as e:   # present but broken: say how
        return f"import fails: {type(e).__name__}: {e}"


def run_section(ctx, name: str, function, estimate: float) -> None:
    """Run one section within the budget, recording its status, time and any error."""
    section = ctx.report.section(name)
    if name not in ctx.sections:
        section.update(status="skipped", reason="not asked for (--sections / --profile)")
    elif not ctx.budget.allows(estimate):
        section.update(status="skipped", reason=f"time budget: needs about {estimate:.0f} s, "
                                                f"{max(ctx.budget.left(), 0):.0f} s left")
    else:
        say(f"== {name} (estimate {estimate:.0f} s, {ctx.budget.left():.0f} s left)")
        started, cpu = time.monotonic(), time.process_time()
        section["status"] = "running"
        try:
            function(ctx, section)
        except Exception as e:
            section.update(status="error", error=f"{type(e).__name__}: {e}",
                           traceback=traceback.format_exc().splitlines()[-12:])
            say(traceback.format_exc())
        section["seconds"] = round(time.monotonic() - started, 1)
        section["cpu_s"] = round(time.process_time() - cpu, 1)      # this process, all threads
    if section["status"] == "skipped" and name in ctx.sections:
        ctx.report.note(f"{name}: skipped ({section['reason']})")
    ctx.report.write(ctx.budget)


def exit_code(data: dict) -> int:
    """1 when a correctness section failed, 2 when none failed but a section stopped with an error, else 0."""
    sections = data["sections"]
    if any(sections.get(name, {}).get("status") == "failed" for name in CORRECTNESS):
        return 1
    return 2 if any(s.get("status") == "error" for s in sections.values()) else 0


# -- Markdown --------------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(key)) for _, key in columns) + " |" for row in rows]
    return lines


COLUMNS = {
    "golden": [("config", "config"), ("frames", "frames"), ("ab max", "ab_max"), ("ab mean", "ab_mean"),
               ("PNG max levels", "png_max_levels"), ("PNG values differing %", "png_differing_pct"),
               ("near-tie frames", "tie_frames"), ("smallest top-k gap", "min_gap"), ("checks", "checks"),
               ("result", "result")],
    "precision": [("input", "input"), ("precision", "precision"), ("frames", "frames"), ("size", "size"),
                  ("max levels", "max_levels"), ("> 0 %", "over_0_pct"), ("> 1 %", "over_1_pct"),
                  ("> 2 %", "over_2_pct"), ("> 8 %", "over_8_pct"), ("mean levels", "mean_levels"),
                  ("s", "seconds")],
    "speed": [("checkpoint", "checkpoint"), ("input", "resolution"), ("processing", "processing"),
              ("precision", "precision"), ("key batch", "key_batch"), ("compile", "compile"), ("frames", "frames"),
              ("s/frame", "s_per_frame"), ("frames/s", "fps"), ("first frame s", "first_frame_s"),
              ("peak alloc MiB", "peak_alloc_mib"), ("peak reserved MiB", "peak_reserved_mib"),
              ("driver peak MiB", "driver_peak_mib"), ("memory elements", "memory_elements"), ("status", "status")],
    "profile": [("stage", "stage"), ("device ms/frame", "device_ms"), ("CPU ms/frame", "cpu_ms"),
                ("share %", "share_pct")],
}


def markdown(data: dict) -> str:
    env = data["environment"]
    lines = [f"# GPU check (issue 22): {env.get('name', '?')} ({env.get('device', '?')})", "",
             f"Started {data['started']}, {data['elapsed_s']} s of a {data['args'].get('budget')} s budget"
             f"{', --quick' if data['args'].get('quick') else ''}; torch {env.get('torch')}, "
             f"CUDA {env.get('cuda', '-')}, driver {env.get('driver', '-')}, PyAV {env.get('pyav') or 'absent'}, "
             f"Ray {env.get('ray') or 'absent'}. "
             f"Exit code {data['exit_code'] if data['exit_code'] is not None else '(running)'}.", ""]
    if data["goals"]:
        lines += ["## Goals", ""] + _table(data["goals"]["rows"], [("goal", "goal"), ("target", "target"),
                                                                    ("measured", "measured"), ("met", "met")]) + [""]
    lines += ["## Sections", ""]
    lines += _table([{"section": name, **s} for name, s in data["sections"].items()],
                    [("section", "section"), ("status", "status"), ("s", "seconds"), ("CPU s", "cpu_s"),
                     ("reason", "reason"),
                     ("error", "error")]) + [""]
    for name, section in data["sections"].items():
        if not section.get("rows") and not section.get("details"):
            continue
        lines += [f"## {name}", ""]
        if section.get("summary"):
            lines += [section["summary"], ""]
        if section.get("rows"):
            columns = COLUMNS.get(name) or [(key, key) for key in section["rows"][0]]
            lines += _table(section["rows"], columns) + [""]
        if section.get("details"):
            lines += ["```", *section["details"], "```", ""]
    if data["notes"]:
        lines += ["## Notes", ""] + [f"- {note}" for note in data["notes"]] + [""]
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda, cuda:1, cpu")
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole run (default 480)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and frame counts (CI on a CPU)")
    parser.add_argument("--checkpoint", action="append", type=Path, default=None,
                        help="a checkpoint for the speed section (repeatable; default: the fixture weights)")
    parser.add_argument("--sections", default=",".join(s for s in SECTIONS if s != "profile"),
                        help=f"comma-separated, from {','.join(SECTIONS)} (default all but profile)")
    parser.add_argument("--profile", action="store_true", help="add the profile section")
    parser.add_argument("--long-frames", type=int, default=None,
                        help="frames of the long speed runs (default 1000; --quick: 8)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget)
    import gpu_sections
    import torch

    from colormnet_core.cli import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    settings = QUICK if args.quick else FULL
    long_frames = args.long_frames or (2 * settings.short_frames if args.quick else 1000)
    report = Report(args.out, args)
    report.data["environment"] = environment(device)
    report.data["settings"] = {**asdict(settings), "long_frames": long_frames}
    sections = set(args.sections.split(",")) | ({"profile"} if args.profile else set())
    ctx = gpu_sections.Context(args=args, device=device, settings=settings, long_frames=long_frames,
                               report=report, budget=budget, sections=sections)
    plan = gpu_sections.plan(ctx)
    report.data["plan"] = [{"section": name, "estimate_s": round(estimate)} for name, _, estimate in plan]
    say(f"gpu_check on {report.data['environment'].get('name')} ({device}), budget {args.budget:.0f} s; plan:")
    for name, _, estimate in plan:
        say(f"  {name:12s} ~{estimate:5.0f} s" + ("" if name in sections else "  (not asked for)"))
    say(f"  {'total':12s} ~{sum(e for n, _, e in plan if n in sections):5.0f} s (the budget decides what runs)")
    report.write(budget)
    try:
        for name, function, estimate in plan:
            run_section(ctx, name, function, estimate)
        gpu_sections.goals(ctx)
    finally:
        gpu_sections.cleanup(ctx)
        report.data["exit_code"] = code = exit_code(report.data)
        report.write(budget)
    say(markdown(report.data))
    return code


if __name__ == "__main__":
    sys.exit(main())
