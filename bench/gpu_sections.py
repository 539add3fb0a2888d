"""The sections of bench/gpu_check.py (see its docstring): each fills its part of the report.

Every section takes the run's `Context` and its own report entry (a dict with "status" and "rows"),
sets the status ("passed"/"failed" for checks, "done" for measurements, "skipped" with a reason),
and rewrites the report after each row, so that a run cut short keeps every finished row.
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from gpu_check import GOAL_FLAT, GOAL_FPS, GOAL_VRAM_BYTES, Budget, Report, Settings, has_module, nvidia_smi, say, tf32

from tests import golden

# Per-frame seconds for half a megapixel of processing, before anything was measured (estimates only:
# they decide what is tried first when the budget is short, never what is reported).
PRIOR_FRAME_S = {"cuda": {"float32": 0.08, "bfloat16": 0.05, "float16": 0.05},
                 "cpu": {"float32": 20.0, "bfloat16": 40.0, "float16": 400.0}}
PRIOR_LOAD_S = {"cuda": 20.0, "cpu": 15.0}     # expanding the fixture weights, building, moving the network
PRIOR_COMPILE_S = 150.0                        # torch.compile's first build of the four stages
RESERVE_S = 5.0                                # kept for the goals and the last write


@dataclass
class Context:
    args: object
    device: torch.device
    settings: Settings
    long_frames: int
    report: Report
    budget: Budget
    sections: set
    networks: dict = field(default_factory=dict)      # checkpoint path -> network (on the CPU when inactive)
    active: Path | None = None                        # the one network on the device
    measured: dict = field(default_factory=dict)      # (checkpoint, precision) -> s/frame per half megapixel
    compiled: set = field(default_factory=set)        # (checkpoint, resolution, precision, key batch) built
    film_project: Path | None = None                  # the film section's project (the Ray section compares)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gpu_check_")))

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def fixture(self) -> Path:
        return golden.golden_weights()

    @property
    def checkpoints(self) -> list[Path]:
        return list(self.args.checkpoint or [self.fixture])

    def network(self, path: Path | None = None):
        """The network of `path` (default the fixture's) on the device, float32, eval mode; the
        previously active one goes back to the CPU, so only one counts in the device's memory."""
        from colormnet_core.checkpoint import load_model

        path = Path(path or self.fixture)
        if self.active is not None and self.active != path:
            self.networks[self.active].to("cpu")
            _free(self.device)
        if path not in self.networks:
            started = time.perf_counter()
            self.networks[path] = net = load_model(path)
            self.report.data["environment"].setdefault("checkpoints", {})[str(path)] = {
                **describe(path, net), "load_s": round(time.perf_counter() - started, 1)}
        self.active = path
        return self.networks[path].to(self.device)

    def frame_seconds(self, pixels: int, precision: str = "float32", checkpoint: Path | None = None) -> float:
        """Estimated seconds per frame of `pixels` processing pixels (measured where possible)."""
        per_half_mp = self.measured.get((checkpoint, precision)) or PRIOR_FRAME_S[_kind(self.device)][precision]
        return per_half_mp * max(pixels, 112 * 112) / 0.5e6

    def write(self) -> None:
        self.report.write(self.budget)


def _kind(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" else "cpu"


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _padded(width: int, height: int, processing: str | None) -> tuple[int, int]:
    """(height, width) the network sees for a width x height input at a processing size."""
    from colormnet_core.preprocess import Geometry, ProcessingSize

    geometry = Geometry.plan(height, width, ProcessingSize.parse(processing))
    return tuple(geometry.padding.pad(torch.zeros(1, 1, *geometry.processing_size)).shape[-2:])


def _pixels(width: int, height: int, processing: str | None = None) -> int:
    return math.prod(_padded(width, height, processing))


def describe(path: Path, net) -> dict:
    """A checkpoint as the report names it: file, size, parameters and the backbone family (the timm
    architectures the loader built for it)."""
    archs = sorted({m.pretrained_cfg.get("architecture") for m in net.modules()
                    if isinstance(getattr(m, "pretrained_cfg", None), dict)} - {None})
    family = next((a for a in archs if "dino" in a), archs[0] if archs else type(net).__name__)
    return {"name": path.name, "bytes": path.stat().st_size, "family": family, "timm_architectures": archs,
            "parameters": sum(p.numel() for p in net.parameters())}


# -- golden ----------------------------------------------------------------------------------------


def golden_section(ctx: Context, section: dict) -> None:
    from colormnet_core.color import to_uint8_truncate

    net = ctx.network()
    section["summary"] = ("float32 with TF32 off; ab max / ab mean: the largest per-frame max and mean |ab - official| "
                          "(normalised ab); tolerances and near-tie rule of tests/golden.py (CI): ab max <= 5e-5 "
                          "and mean <= 5e-6 per frame, PNG within 1 level on <= 0.1 % of values, except at a "
                          "near-tie top-k flip and its aftermath.")
    failed = False
    for name in ctx.settings.golden_configs:
        if not ctx.budget.allows(RESERVE_S + (ctx.settings.golden_frames or 12) * ctx.frame_seconds(224 * 336)):
            section["rows"].append({"config": name, "result": "skipped: time budget"})
            ctx.report.note(f"golden {name}: skipped (time budget)")
            continue
        with tf32(False):
            run = golden.run_config(net, name, count=ctx.settings.golden_frames, record_ties=True, key_batch=1,
                                    device=ctx.device)
        expected = golden.expected_ab(name)
        ab = torch.stack([(r.ab.float() - expected[f"{r.index:05d}"]).abs().max() for r in run.results])
        ab_mean = torch.stack([(r.ab.float() - expected[f"{r.index:05d}"]).abs().mean() for r in run.results])
        png = torch.stack([(to_uint8_truncate(r.rgb).int() - golden.expected_png(name, r.index).int()).abs()
                           for r in run.results])
        checks = {}
        for check, function in golden.CHECKS.items():
            try:
                function(run)
                checks[check] = "passed"
            except golden.ParityError as e:
                checks[check] = f"FAILED: {e}"
        ok = all(v == "passed" for v in checks.values())
        failed |= not ok
        section["rows"].append({
            "config": name, "frames": len(run.results), "ab_max": float(ab.max()), "ab_mean": float(ab_mean.max()),
            "png_max_levels": int(png.max()), "png_differing_pct": round(100 * (png > 0).float().mean().item(), 4),
            "tie_frames": sorted(golden.tie_flips(run)) or "-",
            "min_gap": min(run.reads.values()) if run.reads else None,
            "checks": "all passed" if ok else "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "passed"),
            "result": "passed" if ok else "FAILED"})
        say(f"golden {name}: {'passed' if ok else 'FAILED'} (ab max {float(ab.max()):.2e})")
        ctx.write()
    ran = [r for r in section["rows"] if "frames" in r]
    section["status"] = "failed" if failed else ("passed" if ran else "skipped")
    if not ran:
        section["reason"] = "time budget"


# -- film, shots, propagation, Ray -------------------------------------------------------------------


def record_checks(section: dict, checks: dict[str, bool], summary: str) -> None:
    """A check section's outcome: one row per named check, its summary, passed only if all passed."""
    section["rows"] = [{"check": k, "result": "passed" if v else "FAILED"} for k, v in checks.items()]
    section["summary"] = summary
    section["status"] = "passed" if all(checks.values()) else "failed"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.mp4"))}


def _decoded(path: Path) -> torch.Tensor:
    import av

    with av.open(str(path)) as container:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)])


def _film_project(ctx: Context, name: str) -> Path:
    """A fresh project over the synthetic film (made once), every shot's keyframe as its exemplar."""
    from colormnet_core.__main__ import main as cli
    from tests.clips import make_shot_clip

    source = ctx.tmp / "film.mp4"
    if not source.exists():
        make_shot_clip(source, shots=ctx.settings.film_shots, size=ctx.settings.film_size)
    starts = [sum(ctx.settings.film_shots[:i]) for i in range(len(ctx.settings.film_shots) + 1)]
    ranges = ",".join(f"{a}-{b - 1}" for a, b in zip(starts, starts[1:]))
    project = ctx.tmp / name
    if cli(["film", "init", str(source), "--project", str(project), "--shots", ranges]) != 0:
        raise RuntimeError("film init failed (see the log)")
    for keyframe in (project / "keyframes").glob("*.png"):
        shutil.copy(keyframe, project / "exemplars")
    return project


def _render_args(ctx: Context, project: Path) -> list[str]:
    size = ["--size", ctx.settings.film_processing] if ctx.settings.film_processing else []
    return ["film", "render", "--project", str(project), "--checkpoint", str(ctx.fixture), "--device",
            str(ctx.device), "--crf", "0", *size]


def film_section(ctx: Context, section: dict) -> None:
    if not has_module("av"):
        section.update(status="skipped", reason="PyAV (av) is not installed here, so no video files; the shots "
                                                "section runs the same per-shot sessions without them")
        return
    from colormnet_core.__main__ import main as cli
    from colormnet_core.film import FilmProject

    golden.golden_weights()     # expanded here once; the CLI loads them itself
    project = _film_project(ctx, "film")
    codes = {"render": cli(_render_args(ctx, project))}
    states = [s.state for s in FilmProject.open(project).status()]
    before = _digests(project / "segments")
    codes["render again"] = cli(_render_args(ctx, project))       # nothing changed: nothing to render
    unchanged = _digests(project / "segments") == before
    codes["assemble"] = cli(["film", "assemble", "--project", str(project), "--output", str(ctx.tmp / "film_out.mp4")])
    frames = _decoded(ctx.tmp / "film_out.mp4") if codes["assemble"] == 0 else torch.zeros(0)
    spread = (frames.amax(-1).float() - frames.amin(-1).float()).mean().item() if len(frames) else 0.0
    total = sum(ctx.settings.film_shots)
    checks = {"exit codes 0": all(c == 0 for c in codes.values()), "every shot done": set(states) == {"done"},
              "second render changes nothing": unchanged, f"assembled film has {total} frames": len(frames) == total,
              "output in colour (mean channel spread > 2 levels)": spread > 2}
    record_checks(section, checks,
                  f"{len(ctx.settings.film_shots)} shots {ctx.settings.film_shots} at {ctx.settings.film_size[0]}x"
                  f"{ctx.settings.film_size[1]}, processing {ctx.settings.film_processing or 'official'}, rendered "
                  f"with --device {ctx.device}; exit codes {codes}; shot states {states}; mean channel spread "
                  f"{spread:.1f} levels.")
    ctx.film_project = project


def shots_section(ctx: Context, section: dict) -> None:
    import clip

    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.preprocess import ProcessingSize
    from colormnet_core.session import ColorizeSession
    from colormnet_core.shots import Shot

    net, n = ctx.network(), ctx.settings.shot_frames
    size = ProcessingSize.parse(ctx.settings.small_processing)
    frames, exemplar = golden.frames(), golden.exemplar()
    _, swan, swan_exemplar = clip.load(tuple(frames.shape[-1:-3:-1]), golden.BLACKSWAN)
    shots = [(frames[:n], exemplar), (torch.stack(swan[:n]), swan_exemplar),
             (frames[:n].flip(-1), exemplar.flip(-1))]
    video = torch.cat([f for f, _ in shots])
    exemplars = EncodedExemplars(tuple(Exemplar(e, k * n) for k, (_, e) in enumerate(shots)))
    together = list(ColorizeSession(net, exemplars, device=ctx.device, size=size,
                                    shots=[Shot(k * n, k * n + n - 1) for k in range(3)]).run(video))
    alone = [r for f, e in shots
             for r in ColorizeSession(net, EncodedExemplars((Exemplar(e, 0),)), device=ctx.device, size=size).run(f)]
    diff = max((a.ab - b.ab).abs().max().item() for a, b in zip(together, alone))
    checks = {f"{3 * n} frames": len(together) == len(alone) == 3 * n,
              "shot labels": [r.shot for r in together] == [k for k in range(3) for _ in range(n)],
              "confidence 1 at every shot's exemplar": all(together[k * n].confidence == 1.0 for k in range(3)),
              "each shot equals its own session (ab <= 5e-5)": diff <= 5e-5}
    record_checks(section, checks,
                  f"3 shots of {n} frames (golden, blackswan, golden mirrored), exemplar pinned to each shot's "
                  f"first frame, reset at cuts, on {ctx.device}; largest |ab| difference to the shots run alone "
                  f"{diff:.2e}.")


def propagation_section(ctx: Context, section: dict) -> None:
    import propagation as propagation_bench

    from colormnet_core.color import rgb_to_lab
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.preprocess import ProcessingSize
    from colormnet_core.propagation import colorize_shot

    net = ctx.network()
    count, step, keys = ctx.settings.pan
    truth = propagation_bench.pan(count, step)            # T x 3 x H x W: every frame is its own ground truth
    exemplars = EncodedExemplars(tuple(Exemplar(truth[k], k) for k in keys))
    options = dict(device=ctx.device, size=ProcessingSize.parse(ctx.settings.small_processing))
    forward = list(colorize_shot(net, truth, exemplars, propagation="forward", **options))
    # Streamed (not indexable) with a zero RAM limit: the stretch's frames and chroma go through the spill files.
    both = list(colorize_shot(net, iter(list(truth)), exemplars, propagation="bidirectional", ram_limit=0,
                              spill_dir=ctx.tmp, **options))
    inner = [t for t in range(count) if t not in keys]
    moved = max((forward[t].ab.cpu() - both[t].ab.cpu()).abs().max().item() for t in inner)
    target = rgb_to_lab(truth.double() / 255)[:, 1:]
    error = {name: (propagation_bench.chroma(torch.stack([r.rgb.cpu() for r in results])) - target)
             .abs().mean().item() for name, results in (("forward", forward), ("bidirectional", both))}
    checks = {f"{count} frames each": len(forward) == len(both) == count,
              "finite, in [0, 1]": all(bool(torch.isfinite(r.rgb).all()) and r.rgb.min() >= 0 and r.rgb.max() <= 1
                                       for r in forward + both),
              "exemplar frames keep the forward pass's bits": all(torch.equal(forward[k].rgb, both[k].rgb)
                                                                  for k in keys),
              "the backward pass changed the frames between exemplars": moved > 0}
    record_checks(section, checks,
                  f"a {count}-frame pan over the blackswan exemplar (step {step} px), exemplars at {keys}, on "
                  f"{ctx.device}; mean |ab| error to the true colours (Lab units): forward {error['forward']:.3f}, "
                  f"bidirectional {error['bidirectional']:.3f}; largest change between exemplars {moved:.3f} "
                  f"(normalised ab).")


def ray_section(ctx: Context, section: dict) -> None:
    if ctx.args.quick:
        section.update(status="skipped", reason="--quick: tests/test_film_ray.py runs `film render --ray` on a CPU")
        return
    if not has_module("ray"):
        section.update(status="skipped", reason="Ray is not installed here (`import ray` fails): the Ray path was "
                                                "not run")
        return
    if not has_module("av"):
        section.update(status="skipped", reason="PyAV (av) is not installed here: a film project needs it")
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # a local Ray keeps to 127.0.0.1
    import ray

    from colormnet_core.__main__ import main as cli
    from colormnet_core.film import FilmProject

    ctx.network()
    if ctx.active is not None:                 # the Ray worker loads its own network: leave it the device
        ctx.networks[ctx.active].to("cpu")
        ctx.active = None
        _free(ctx.device)
    project = _film_project(ctx, "film_ray")
    try:
        code = cli([*_render_args(ctx, project), "--ray", "auto", "--workers", "1"])
    finally:
        if ray.is_initialized():
            ray.shutdown()
    states = [s.state for s in FilmProject.open(project).status()]
    compared = "no in-process render to compare"
    reference = ctx.film_project
    if reference is not None and code == 0:
        diffs = [(_decoded(project / "segments" / name).int() - _decoded(reference / "segments" / name).int())
                 .abs().max().item() for name in _digests(reference / "segments")]
        compared = f"largest difference to the in-process render: {max(diffs)} levels"
    checks = {"exit code 0": code == 0, "every shot done": set(states) == {"done"}}
    record_checks(section, checks, f"`film render --ray auto --workers 1 --device {ctx.device}`: {compared}.")


# -- precision -------------------------------------------------------------------------------------


def precision_section(ctx: Context, section: dict) -> None:
    import precision as precision_bench

    from colormnet_core.preprocess import ProcessingSize

    net = ctx.network()
    processing = ctx.settings.precision_processing
    size = ProcessingSize.parse(processing)
    others = list(ctx.settings.reduced) + (["float32 + TF32"] if ctx.cuda else [])
    left_out = sorted({"bfloat16", "float16"} - set(ctx.settings.reduced))
    section["summary"] = ("8-bit levels (the official truncation) against float32 with TF32 off, all frames and "
                          "channels; fp16 and bf16 are autocast as the session runs them"
                          + ("; 'float32 + TF32' is torch's default on CUDA (TF32 convolutions)" if ctx.cuda else "")
                          + (f"; not in this run's settings: {', '.join(left_out)} (--quick on a CPU, where float16 "
                             f"autocast runs ~50x slower than float32)" if left_out else "") + ".")
    for name in ("golden", "blackswan"):
        frames, exemplar = precision_bench.inputs(name, ctx.settings.precision_frames, None, golden.BLACKSWAN)
        height, width = _padded(frames[0].shape[-1], frames[0].shape[-2], processing)
        estimate = len(frames) * sum(ctx.frame_seconds(height * width, p) for p in ("float32", *ctx.settings.reduced))
        if not ctx.budget.allows(RESERVE_S + estimate):
            section["rows"].append({"input": name, "precision": "skipped: time budget"})
            ctx.report.note(f"precision {name}: skipped (time budget, needs about {estimate:.0f} s)")
            continue
        started = time.perf_counter()
        with tf32(False):
            reference = torch.stack(precision_bench.run(net, frames, exemplar, "float32", ctx.device, size))
        common = {"input": name, "frames": len(frames), "size": f"{width}x{height}"}
        section["rows"].append({**common, "precision": "float32 (reference)", "max_levels": 0,
                                "seconds": round(time.perf_counter() - started, 1)})
        for precision in others:
            started = time.perf_counter()
            with tf32(precision.endswith("TF32")):
                levels = torch.stack(precision_bench.run(net, frames, exemplar, precision.split()[0], ctx.device, size))
            section["rows"].append({**common, "precision": precision, **precision_bench.level_stats(levels, reference),
                                    "seconds": round(time.perf_counter() - started, 1)})
            ctx.write()
    section["status"] = "done"


# -- speed and memory ------------------------------------------------------------------------------


def speed_plan(ctx: Context) -> list[dict]:
    """Runs in priority order, per checkpoint: the goal configuration (960x536 bf16, key batch 1), its
    long run (VRAM flat in length), the goal configuration through torch.compile (its first build alone
    takes minutes), the grid (goal resolution first; bf16, fp16, fp32), the official default's (fp16)
    long run, then the other torch.compile runs."""
    s = ctx.settings
    goal_res, goal_prec = s.resolutions[-1], ("bfloat16" if "bfloat16" in s.precisions else s.precisions[0])
    precisions = sorted(s.precisions, key=lambda p: (p != goal_prec, p != "float16"))
    compiling = True in s.compile_modes
    runs: list[tuple] = []
    for c, checkpoint in enumerate(ctx.checkpoints):
        def add(tier, res, prec, kb, compiled, frames, checkpoint=checkpoint, c=c):
            runs.append((tier, c, dict(checkpoint=checkpoint, resolution=res, precision=prec, key_batch=kb,
                                       compile=compiled, frames=frames)))
        add(0, goal_res, goal_prec, 1, False, s.short_frames)
        add(1, goal_res, goal_prec, 1, False, ctx.long_frames)
        if compiling:
            add(2, goal_res, goal_prec, 1, True, s.short_frames)
        for res in reversed(s.resolutions):
            for prec in precisions:
                for kb in s.key_batches:
                    if (res, prec, kb) != (goal_res, goal_prec, 1):
                        add(3, res, prec, kb, False, s.short_frames)
        if "float16" in s.precisions and goal_prec != "float16":
            add(4, goal_res, "float16", 1, False, ctx.long_frames)
        if compiling:
            for res, prec, kb in ((goal_res, goal_prec, max(s.key_batches)), (goal_res, "float16", 1),
                                  (s.resolutions[0], goal_prec, 1)):
                if prec in s.precisions:
                    add(5, res, prec, kb, True, s.short_frames)
    seen, ordered = set(), []
    for _, _, run in sorted(runs, key=lambda r: (r[0], r[1])):
        key = tuple(sorted((k, str(v)) for k, v in run.items()))
        if key not in seen:
            seen.add(key)
            ordered.append(run)
    return ordered


def speed_estimate(ctx: Context, run: dict) -> float:
    width, height = map(int, run["resolution"].split("x"))
    seconds = 3 + run["frames"] * ctx.frame_seconds(width * height, run["precision"], run["checkpoint"])
    if run["checkpoint"] not in ctx.networks:
        seconds += PRIOR_LOAD_S[_kind(ctx.device)]
    built = (run["checkpoint"], run["resolution"], run["precision"], run["key_batch"]) in ctx.compiled
    if run["compile"] and not built:
        seconds += PRIOR_COMPILE_S if not ctx.compiled else PRIOR_COMPILE_S / 2
    return seconds


def speed_section(ctx: Context, section: dict) -> None:
    s = ctx.settings
    if True in s.compile_modes:
        import torch._dynamo

        for name in ("cache_size_limit", "recompile_limit"):   # the grid's shapes and dtypes exceed the default 8
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 64)
    section["summary"] = (f"synthetic frames (bench/clip.py), exemplar at frame 0, default memory settings; "
                          f"s/frame over the frames after the first {s.warm_frames}; peak alloc/reserved: "
                          f"torch.cuda.max_memory_allocated/reserved (the network included); driver peak: the "
                          f"largest total - free of cudaMemGetInfo after any frame (the whole GPU, CUDA context "
                          f"included). torch.compile runs are preceded by an untimed build run."
                          + ("" if True in s.compile_modes else " torch.compile: not in this run's settings "
                             "(--quick: inductor's build takes minutes on a CPU)."))
    for run in speed_plan(ctx):
        label = {**run, "checkpoint": Path(run["checkpoint"]).name}
        estimate = speed_estimate(ctx, run)
        if not ctx.budget.allows(RESERVE_S + estimate):
            section["rows"].append({**label, "status": f"skipped: time budget (needs ~{estimate:.0f} s, "
                                                       f"{max(ctx.budget.left(), 0):.0f} s left)"})
            continue
        say(f"speed {label} (estimate {estimate:.0f} s)")
        try:
            section["rows"].append({**label, **speed_run(ctx, run)})
        except Exception as e:       # one configuration failing (e.g. out of memory) does not end the grid
            section["rows"].append({**label, "status": f"error: {type(e).__name__}: {str(e)[:200]}"})
            _free(ctx.device)
        ctx.write()
    skipped = [r for r in section["rows"] if r.get("status", "").startswith("skipped")]
    if skipped:
        ctx.report.note(f"speed: {len(skipped)} of {len(section['rows'])} runs skipped for the time budget: "
                        + "; ".join(f"{r['resolution']} {r['precision']} key batch {r['key_batch']} compile "
                                    f"{'on' if r['compile'] else 'off'} {r['frames']} frames" for r in skipped))
    done = [r for r in section["rows"] if r.get("status", "").startswith(("done", "cut short"))]
    section["status"] = "done" if done else "skipped"
    if not done:
        section["reason"] = "no speed run fitted the time budget"


def speed_run(ctx: Context, run: dict) -> dict:
    import clip

    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.session import ColorizeSession

    s, device = ctx.settings, ctx.device
    net = ctx.network(run["checkpoint"])
    width, height = map(int, run["resolution"].split("x"))
    frames = clip.synthetic((width, height), 24)
    exemplars = EncodedExemplars((Exemplar(frames[0], 0),))
    options = dict(device=device, precision=run["precision"], key_batch=run["key_batch"], compile=run["compile"])
    build_s = None
    if run["compile"]:
        # Build (and rebuild for the last frame's and the last key batch's variants) outside the timing.
        started = time.perf_counter()
        warm = 12 + (run["frames"] - 12) % run["key_batch"]
        for _ in ColorizeSession(net, exemplars, **options).run(clip.play(frames, warm)):
            pass
        build_s = round(time.perf_counter() - started, 1)
        ctx.compiled.add((run["checkpoint"], run["resolution"], run["precision"], run["key_batch"]))
    _free(device)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(device)
    session = ColorizeSession(net, exemplars, **options)
    marks, driver_peak, status = [], 0, "done"
    started = time.perf_counter()
    for _ in session.run(clip.play(frames, run["frames"])):
        marks.append(time.perf_counter())
        if ctx.cuda:
            free, total = torch.cuda.mem_get_info(device)
            driver_peak = max(driver_peak, total - free)
        if ctx.budget.left() < RESERVE_S and len(marks) > s.warm_frames + 1 and len(marks) < run["frames"]:
            status = f"cut short at {len(marks)} frames (time budget)"
            break
    timed = len(marks) - s.warm_frames
    per_frame = (marks[-1] - marks[s.warm_frames - 1]) / timed if timed > 0 else None
    stats = session.memory.stats
    result = {"processing": "x".join(map(str, session.geometry.processing_size[::-1])), "frames": len(marks),
              "s_per_frame": round(per_frame, 5) if per_frame else None,
              "fps": float(f"{1 / per_frame:.4g}") if per_frame else None,
              "first_frame_s": round(marks[0] - started, 3), "build_s": build_s,
              "memory_elements": f"{stats.permanent}+{stats.working}+{stats.long_term}", "status": status}
    if ctx.cuda:
        result.update(peak_alloc_mib=round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                      peak_reserved_mib=round(torch.cuda.max_memory_reserved(device) / 2**20, 1),
                      driver_peak_mib=round(driver_peak / 2**20, 1),
                      smi_used_mib=nvidia_smi("--query-gpu=memory.used"))
    if per_frame and not run["compile"]:
        pixels = math.prod(_padded(width, height, None))
        ctx.measured[(run["checkpoint"], run["precision"])] = per_frame * 0.5e6 / pixels
    del session
    _free(device)
    return result


def goals(ctx: Context) -> None:
    """The issue's goals against the speed rows: frames/s and peak VRAM at the goal configuration,
    and VRAM at the long runs against the short ones."""
    rows = ctx.report.data["sections"].get("speed", {}).get("rows", [])
    done = [r for r in rows if r.get("status") == "done"]
    res = ctx.settings.resolutions[-1]
    out = []
    judged = ctx.cuda
    candidates = [r for r in done if r["resolution"] == res and r["precision"] == "bfloat16"
                  and r["frames"] == ctx.settings.short_frames and r.get("fps")]
    if candidates:
        best = max(candidates, key=lambda r: r["fps"])
        where = f"key batch {best['key_batch']}, compile {'on' if best['compile'] else 'off'}, {best['checkpoint']}"
        out.append({"goal": f"frames/s at {res}, bf16", "target": f">= {GOAL_FPS:g} (on an H100)",
                    "measured": f"{best['fps']} ({where})",
                    "met": best["fps"] >= GOAL_FPS if judged else "n/a (no GPU)"})
        if judged:
            driver = best.get("driver_peak_mib", 0) * 2**20
            out.append({"goal": "peak VRAM of that run (driver figure; torch's peak allocation beside it)",
                        "target": f"<= {GOAL_VRAM_BYTES / 1e9:g} GB ({GOAL_VRAM_BYTES / 2**20:.0f} MiB)",
                        "measured": f"{best.get('driver_peak_mib')} MiB (allocated {best.get('peak_alloc_mib')} MiB)",
                        "met": driver <= GOAL_VRAM_BYTES})
    else:
        out.append({"goal": f"frames/s at {res}, bf16", "target": f">= {GOAL_FPS:g}", "measured": "not run",
                    "met": None})
    for long in [r for r in done if r["frames"] == ctx.long_frames]:
        key = ("checkpoint", "resolution", "precision", "key_batch", "compile")
        short = next((r for r in done if r["frames"] == ctx.settings.short_frames
                      and all(r[k] == long[k] for k in key)), None)
        name = (f"VRAM at {long['frames']} vs {ctx.settings.short_frames} frames ({long['resolution']}, "
                f"{long['precision']}, {long['checkpoint']})")
        if short is None or not judged:
            out.append({"goal": name, "target": f"<= {GOAL_FLAT}x", "met": "n/a (no GPU)" if not judged else None,
                        "measured": "no matching short run" if short is None else "no device memory on a CPU"})
            continue
        alloc = long["peak_alloc_mib"] / short["peak_alloc_mib"]
        driver = long["driver_peak_mib"] / short["driver_peak_mib"]
        out.append({"goal": name, "target": f"<= {GOAL_FLAT}x", "met": max(alloc, driver) <= GOAL_FLAT,
                    "measured": f"allocated {alloc:.3f}x, driver {driver:.3f}x"})
    ctx.report.data["goals"] = {"rows": out}


# -- profile ---------------------------------------------------------------------------------------


def profile_section(ctx: Context, section: dict) -> None:
    import functools

    import clip
    import profile_stages

    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.session import ColorizeSession

    s, device = ctx.settings, ctx.device
    net = ctx.network()
    res, precision = s.resolutions[-1], ("bfloat16" if ctx.cuda else "float32")
    frames = clip.synthetic(tuple(map(int, res.split("x"))), 24)

    def annotate(stage, function):
        @functools.wraps(function)
        def annotated(*args, **kwargs):
            with torch.profiler.record_function(f"stage: {stage}"):
                return function(*args, **kwargs)
        return annotated

    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if ctx.cuda else [])
    restore = profile_stages.instrument(net, annotate)
    try:
        session = ColorizeSession(net, EncodedExemplars((Exemplar(frames[0], 0),)), device=device, precision=precision)
        outputs = session.run(clip.play(frames, s.warm_frames + s.profile_frames))
        for _ in range(s.warm_frames):
            next(outputs)
        with torch.profiler.profile(activities=activities) as prof:
            started = time.perf_counter()
            for _ in range(s.profile_frames):
                next(outputs)
            wall = (time.perf_counter() - started) / s.profile_frames * 1000
        outputs.close()
    finally:
        restore()
    events = prof.key_averages()

    def device_us(event, name="device_time_total"):
        return getattr(event, name, getattr(event, name.replace("device", "cuda"), 0)) or 0

    busy = sum(device_us(e, "self_device_time_total") for e in events) / 1000 / s.profile_frames
    stages = [e for e in events if e.key.startswith("stage: ")]
    total = busy if ctx.cuda else wall
    for e in sorted(stages, key=lambda e: -(device_us(e) if ctx.cuda else e.cpu_time_total)):
        device_ms, cpu_ms = device_us(e) / 1000 / s.profile_frames, e.cpu_time_total / 1000 / s.profile_frames
        section["rows"].append({"stage": e.key[len("stage: "):], "device_ms": round(device_ms, 3),
                                "cpu_ms": round(cpu_ms, 3),
                                "share_pct": round(100 * (device_ms if ctx.cuda else cpu_ms) / total, 1)})
    try:
        table = events.table(sort_by="self_device_time_total" if ctx.cuda else "self_cpu_time_total", row_limit=20)
    except (KeyError, AttributeError, ValueError):    # older torch names device time "cuda"
        table = events.table(sort_by="self_cuda_time_total", row_limit=20)
    section["details"] = table.splitlines()
    section["summary"] = (f"{s.profile_frames} frames at {res}, {precision}, key batch 1, after {s.warm_frames} "
                          f"untimed: wall {wall:.1f} ms/frame" + (f", device busy {busy:.1f} ms/frame" if ctx.cuda
                                                                  else "") + "; share of "
                          + ("device" if ctx.cuda else "wall") + " time per stage (stages of bench/profile_stages.py).")
    section["status"] = "done"


# -- plan ------------------------------------------------------------------------------------------


def plan(ctx: Context) -> list[tuple]:
    """(section, function, estimated seconds) in run order."""
    s = ctx.settings
    load = PRIOR_LOAD_S[_kind(ctx.device)]
    golden_frames = (s.golden_frames or 12) * len(s.golden_configs)
    film_w, film_h = s.film_size
    film = sum(s.film_shots) * ctx.frame_seconds(_pixels(film_w, film_h, s.film_processing)) + 2 * load
    small = ctx.frame_seconds(_pixels(224, 160, s.small_processing))
    precision_frames = (s.precision_frames or 12) + (s.precision_frames or 16)
    precision = precision_frames * sum(ctx.frame_seconds(_pixels(416, 240, s.precision_processing), p)
                                       for p in ("float32", *s.reduced))
    first_speed = speed_plan(ctx)[:1]
    return [
        ("golden", golden_section, load + golden_frames * ctx.frame_seconds(224 * 336) + 5),
        ("film", film_section, film + 5),
        ("shots", shots_section, 6 * s.shot_frames * small + 3),
        ("propagation", propagation_section, 3 * s.pan[0] * small + 3),
        # No estimate where the section will say why it cannot run (--quick, no Ray, no PyAV).
        ("ray", ray_section, 0 if ctx.args.quick or not (has_module("ray") and has_module("av"))
         else 30 + sum(s.film_shots) * ctx.frame_seconds(_pixels(film_w, film_h, s.film_processing))),
        ("precision", precision_section, precision + 3),
        ("profile", profile_section, (s.warm_frames + s.profile_frames)
         * ctx.frame_seconds(_pixels(*map(int, s.resolutions[-1].split("x")))) + 10),
        ("speed", speed_section, speed_estimate(ctx, first_speed[0]) if first_speed else 0),
    ]


def cleanup(ctx: Context) -> None:
    shutil.rmtree(ctx.tmp, ignore_errors=True)
