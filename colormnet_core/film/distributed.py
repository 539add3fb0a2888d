"""`film render --ray auto|ADDRESS`: a film's shot jobs as Ray tasks, on one machine or a cluster.

Ray (https://docs.ray.io) is optional: it is imported inside these functions only, never at import
time, and the nodes never use this module. Without it, `--ray` stops with the command that installs it.

How a render is split:
* one Ray task per shot job (`ShotJob.to_json()` is its whole description), asking for 1 CPU
  (`--cpus-per-task`) or 1 GPU when the device is CUDA, so Ray places it on any node that has one;
  the task body is `worker.render_shot_task`, which keeps the network loaded per worker process;
* at most `--workers` tasks are in flight; the rest wait in the driver, so a shot that finishes is
  committed (and counts as done) while the others still render;
* the driver (this process) is the only writer of the project's records: each shot in flight is a
  thread of the driver running `commit.commit_shot` (the same commit as `film render` and Render
  Shot) with the Ray task as its render step, so the sha256 and frame count of what a worker made
  are checked before the shot counts as done; a result that fails the check, or whose worker or
  node was lost, is rendered again, at most --ray-retries times (the report counts the attempts).

Where segments go (`--shared-folder auto|yes|no`). Users with a NAS mount the project on every node:
then a worker writes its segment straight into `segments/` under a temporary name the driver chose,
and only a sha256 crosses the network. Users without one would otherwise need a file server just for
this, so a worker can instead send the segment's bytes back (a segment is a few MB per minute of
film) and the driver writes them to the shot's partial file. `auto` (default) decides per task: the
driver writes a probe file with a random token into the project, and a task that reads the same token
at the same path writes there; any other node returns bytes. `no` also ships the inputs that live
only on the driver (source, exemplars, checkpoint) through Ray's object store, fetched once per node.

Faults. A worker process or a node that dies mid-shot makes the driver submit the shot again
(bounded by `--ray-retries`); its temporary file is never committed (its sha256 and frame count are
checked first) and is removed. Errors in the input (a bad exemplar, a missing source) are not
retried: the shot is reported failed and the others go on. A killed driver leaves only temporary
files and its probe file; `film render` run again removes them and renders the shots that have no
valid record.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Cancelled, ColorMNetError, InputError
from .commit import commit_shot
from .plan import plural
from .records import ProjectLocked
from .source import FilmError

log = logging.getLogger(__name__)

INSTALL_HINT = ('Ray is not installed. Install it with `pip install "ray[default]>=2.9"` (or `pip install '
                '"comfyui-colormnet[ray]"`) on the driver and on every node, or render without --ray.')


class RayUnavailable(InputError):
    """--ray was given but Ray is not importable or the cluster cannot be reached."""


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `film render` for rendering on a Ray cluster (all inert without --ray)."""
    g = parser.add_argument_group("Ray (optional; pip install \"ray[default]\"): render shots in parallel")
    g.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="render the shots as Ray tasks: 'auto' joins the cluster this machine belongs to "
                        "(or starts a local one on 127.0.0.1), ADDRESS (host:port) joins that cluster")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="shots rendered at once (default: as many as the cluster's CPUs or GPUs allow)")
    g.add_argument("--cpus-per-task", type=int, default=1, metavar="N",
                   help="CPUs Ray reserves for each shot (default 1)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads per shot (default: --cpus-per-task)")
    g.add_argument("--shared-folder", choices=["auto", "yes", "no"], default="auto",
                   help="auto: workers that see the project folder write segments into it, others send "
                        "them back; yes: every worker must see it; no: segments come back to this machine "
                        "and the source, exemplars and checkpoint are shipped to the nodes")
    g.add_argument("--ray-retries", type=int, default=3, metavar="N",
                   help="times a shot is rendered again after its worker or node was lost (default 3)")
    g.add_argument("--shot-timeout", type=float, default=None, metavar="SECONDS",
                   help="cancel and render again a shot that takes longer than this (default: no limit)")


@dataclass
class ShotOutcome:
    """What happened to one shot: done (committed), or failed with a message; where it ran."""

    index: int
    done: bool = False
    busy: bool = False         # another process holds the shot's lock: left to it
    error: str = ""
    attempts: int = 0
    host: str = ""
    node: str = ""
    pid: int = 0
    seconds: float = 0.0
    finished_at: float = 0.0   # seconds since the render started


@dataclass
class RayOutcome:
    """The render's result: per-shot outcomes in job order and the worker processes' model loads."""

    shots: list[ShotOutcome] = field(default_factory=list)
    model_loads: dict[int, int] = field(default_factory=dict)   # worker pid -> networks loaded

    @property
    def done(self) -> list[int]:
        return [s.index for s in self.shots if s.done]

    @property
    def failed(self) -> dict[int, str]:
        return {s.index: s.error for s in self.shots if not s.done and not s.busy}

    @property
    def busy(self) -> list[int]:
        return [s.index for s in self.shots if s.busy]


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None
    return ray


def connect(address: str, *, num_cpus: int | None = None):
    """Join the cluster at `address` ("auto": the one this machine belongs to, else a new local Ray
    bound to 127.0.0.1 with no dashboard). Returns the ray module."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    # Our package must be importable on the workers: on one machine, through the driver's path.
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}
    if address == "auto":
        try:
            ray.init(address="auto", runtime_env=runtime_env, log_to_driver=False)
            return ray
        except ConnectionError:
            log.info("no running Ray cluster found; starting a local one on 127.0.0.1")
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
        return ray
    # A cluster on this machine's loopback (tests, one-box farms): the driver joins it as 127.0.0.1 too,
    # else Ray would advertise the machine's outside address and look for the cluster there.
    local = {"_node_ip_address": "127.0.0.1"} if _is_loopback(address) else {}
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, **local)
    except ConnectionError as e:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {e}. Start it with `ray start --head` "
                             f"there, check the address, or use --ray auto for a local one.") from None
    return ray


def _is_loopback(address: str) -> bool:
    return address.removeprefix("ray://").rpartition(":")[0] in ("127.0.0.1", "localhost")


def _stage(ray, path: Path, key: str) -> dict:
    """Put a file's bytes in the object store once; tasks fetch it per node (see worker.fetch_staged)."""
    data = path.read_bytes()
    return {"key": key, "suffix": path.suffix, "size": len(data), "ref": [ray.put(data)]}


def _staged_inputs(ray, jobs, checkpoint: Path) -> dict:
    """The source, the exemplars and the checkpoint, staged for nodes that cannot read the driver's disk."""
    job = jobs[0]
    staged = {"source": _stage(ray, Path(job.source), job.source_fingerprint),
              "checkpoint": _stage(ray, checkpoint, job.checkpoint_sha256), "exemplars": {}}
    for e in {e.sha256: e for j in jobs for e in j.exemplars}.values():
        staged["exemplars"][e.sha256] = _stage(ray, Path(e.path), e.sha256)
    return staged


class _Probe:
    """A file with a random token in the project: a task that reads the token shares the folder."""

    def __init__(self, project_dir: Path) -> None:
        self.path = project_dir / f".ray-probe-{secrets.token_hex(8)}"
        self.token = secrets.token_hex(16)
        self.path.write_text(self.token)

    def as_spec(self) -> dict:
        return {"path": str(self.path), "token": self.token}

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def render_with_ray(project, jobs, args: argparse.Namespace, *, checkpoint: Path | None = None,
                    on_done=None) -> RayOutcome:
    """Render `jobs` (list[ShotJob] of `project`) as Ray tasks and commit each result as it arrives.

    args: the parsed `film render` options (`add_ray_arguments` plus `device`, `key_batch` and
    `checkpoint` where present). checkpoint: the checkpoint's path on the driver (default
    args.checkpoint). on_done(ShotOutcome) is called after each shot is committed or has failed.
    Returns a RayOutcome; never raises for a single shot's failure (it is in the outcome)."""
    if not jobs:
        return RayOutcome()
    checkpoint = Path(checkpoint if checkpoint is not None else args.checkpoint)
    if _is_loopback(args.ray):
        # Ray reads this once, at its import: with it, "127.0.0.1" stays loopback instead of being
        # replaced by the machine's outside address (where a loopback-only cluster does not listen).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    joined = not ray.is_initialized()
    connect(args.ray, num_cpus=_local_cpus(args))
    try:
        return _render(ray, project, jobs, args, checkpoint, on_done)
    finally:
        if joined:
            ray.shutdown()   # leaves the cluster (and stops a local Ray that --ray auto started)


def _render(ray, project, jobs, args, checkpoint: Path, on_done) -> RayOutcome:
    from .worker import render_shot_task

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1 (got {args.workers}).")
    device, resources = task_resources(args, ray)
    # Ray itself does not retry (max_retries=0): the driver resubmits a shot whose worker or node was
    # lost, so it knows how many attempts each shot took.
    task = ray.remote(render_shot_task).options(max_retries=0, retry_exceptions=False, **resources)
    shared = getattr(args, "shared_folder", "auto")
    staged = _staged_inputs(ray, jobs, checkpoint) if shared == "no" else {}
    clear_stale_probes(project.dir)
    probe = _Probe(project.dir) if shared != "no" else None
    spec_base = {"checkpoint": str(checkpoint), "device": device, "staged": staged,
                 "threads": args.threads or args.cpus_per_task, "key_batch": getattr(args, "key_batch", 1) or 1,
                 "probe": probe.as_spec() if probe else None}
    driver = _Driver(ray, project, task, spec_base, args, on_done)
    try:
        return driver.run(jobs)
    finally:
        driver.cancel_all()
        if probe is not None:
            probe.remove()


def clear_stale_probes(folder: Path) -> None:
    """Remove the probe files a killed driver left (call holding the project's render lock: then no
    other driver of this project is running)."""
    for leftover in folder.glob(".ray-probe-*"):
        leftover.unlink(missing_ok=True)


class _Attempt(FilmError):
    """One attempt at a shot did not give a segment; `retry`: worth another attempt (a lost worker or
    node, a timeout, a torn file) or not (an error in the input fails the same way everywhere)."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class _Driver:
    """One thread per shot in flight (at most `workers`), each running `commit_shot` with a Ray task as
    its render: the shot's lock is held while the task is away, and only this process writes records."""

    POLL_S = 0.5

    def __init__(self, ray, project, task, spec_base, args, on_done) -> None:
        self.ray, self.project, self.task, self.spec_base = ray, project, task, spec_base
        self.workers = args.workers or _capacity(ray, task_resources(args, ray)[1])
        self.retries = max(0, args.ray_retries)
        self.shot_timeout = getattr(args, "shot_timeout", None) or None
        self.require_shared = getattr(args, "shared_folder", "auto") == "yes"
        self.on_done = on_done
        self.outcome = RayOutcome()
        self.stopping = threading.Event()
        self.live: set = set()            # refs of tasks in flight
        self.lock = threading.Lock()      # guards live, outcome.model_loads and on_done
        self.started = time.perf_counter()

    def cancel_all(self) -> None:
        """Stop the tasks still running (Ctrl-C, an error); their threads then roll back and unlock."""
        self.stopping.set()
        with self.lock:
            for ref in list(self.live):
                self.ray.cancel(ref, force=True)

    def run(self, jobs) -> RayOutcome:
        shots = {job.index: ShotOutcome(job.index) for job in jobs}
        self.outcome.shots = [shots[job.index] for job in jobs]
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="colormnet-shot")
        try:
            futures = [pool.submit(self.render_shot, job, shots[job.index]) for job in jobs]
            for future in as_completed(futures):
                future.result()
        except BaseException:
            self.cancel_all()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return self.outcome

    def render_shot(self, job, shot: ShotOutcome) -> None:
        """Commit one shot through `commit_shot`, attempting it up to 1 + retries times."""
        try:
            while not self.stopping.is_set():
                try:
                    commit_shot(self.project, job, lambda staged, partial: self.remote(staged, partial, shot))
                    shot.done, shot.error = True, ""
                    return
                except ProjectLocked:
                    shot.busy, shot.error = True, "another process is rendering it"
                    return
                except _Attempt as e:
                    shot.error = str(e)
                    if not e.retry or shot.attempts > self.retries:
                        return
                except ColorMNetError as e:   # the file is not what the worker reported: torn or replaced
                    shot.error = str(e)
                    if shot.attempts > self.retries:
                        return
                log.warning("shot %d: %s; rendering it again", job.index, shot.error)
        finally:
            with self.lock:
                shot.finished_at = time.perf_counter() - self.started
                if self.on_done is not None and not self.stopping.is_set():
                    self.on_done(shot)

    def remote(self, job, partial: Path, shot: ShotOutcome):
        """The render step of `commit_shot`: run the shot as a Ray task and put its segment at `partial`
        (or at the worker's own attempt name beside it, in a shared folder)."""
        from .render import SegmentResult

        shot.attempts += 1
        ref = self.task.remote(job.to_json(), {**self.spec_base, "partial": str(partial)})
        with self.lock:
            self.live.add(ref)
        try:
            out = self.wait(ref, job)
        finally:
            with self.lock:
                self.live.discard(ref)
        shot.host, shot.node, shot.pid, shot.seconds = out["host"], out["node"], out["pid"], out["seconds"]
        with self.lock:
            self.outcome.model_loads[out["pid"]] = out["loads"]
        if out["frames"] != job.frames:
            raise _Attempt(f"the segment has {out['frames']} frames, the shot {job.frames}", retry=True)
        if out["shared"]:
            return SegmentResult(Path(out["path"]), out["sha256"], out["frames"], out["bytes"])
        if self.require_shared:
            raise _Attempt(f"node {out['host']} does not see the project folder {self.project.dir} "
                           f"(--shared-folder yes): mount it there, or use --shared-folder auto", retry=False)
        with open(partial, "wb") as f:
            f.write(out["data"])
            f.flush()
            os.fsync(f.fileno())
        return SegmentResult(partial, out["sha256"], out["frames"], len(out["data"]))

    def wait(self, ref, job) -> dict:
        """The task's result; a task over --shot-timeout is cancelled. _Attempt when it gave none."""
        ray = self.ray
        since = time.monotonic()
        while True:
            ready, _ = ray.wait([ref], num_returns=1, timeout=self.POLL_S)
            if ready:
                break
            if self.stopping.is_set() or (self.shot_timeout and time.monotonic() - since > self.shot_timeout):
                if not self.stopping.is_set():
                    log.warning("shot %d: no result after %.0f s; cancelling it", job.index, time.monotonic() - since)
                ray.cancel(ref, force=True)
        try:
            return ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            if self.stopping.is_set():
                raise Cancelled("the render was stopped") from None
            raise _Attempt(f"cancelled after --shot-timeout {self.shot_timeout:.0f} s", retry=True) from None
        except ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            message = str(cause) if isinstance(cause, ColorMNetError) else f"{type(cause).__name__}: {cause}"
            raise _Attempt(message, retry=False) from None
        except ray.exceptions.RayError as e:   # its worker process or node was lost
            raise _Attempt(f"its worker or node was lost ({type(e).__name__})", retry=True) from None


def _local_cpus(args) -> int | None:
    """CPUs for a local Ray started by --ray auto: enough for --workers tasks, else all."""
    return args.workers * args.cpus_per_task if args.workers else None


def task_resources(args, ray) -> tuple[str, dict]:
    """(device name for the workers, Ray resources per task): 1 GPU per task on CUDA, else CPUs."""
    device = getattr(args, "device", "auto") or "auto"
    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device.startswith("cuda"):
        if not gpus:
            raise InputError("--device cuda, but the Ray cluster has no GPU: add GPU nodes or use --device cpu.")
        # Ray hands each task its own GPU through CUDA_VISIBLE_DEVICES: inside, it is always cuda:0.
        return "cuda", {"num_gpus": 1, "num_cpus": args.cpus_per_task}
    if device == "mps":
        raise InputError("--ray renders on CPUs or CUDA GPUs; use --device cpu or cuda (or render without --ray).")
    return "cpu", {"num_cpus": args.cpus_per_task}


def _capacity(ray, resources: dict) -> int:
    """How many tasks of this shape the cluster runs at once now."""
    total = ray.cluster_resources()
    if "num_gpus" in resources:
        return max(1, int(total.get("GPU", 0)))
    return max(1, int(total.get("CPU", 1) // resources["num_cpus"]))


def print_outcome(outcome: RayOutcome, file=None) -> None:
    """The per-shot report: where each shot rendered, how long, how many attempts, or why it failed."""
    file = file or sys.stderr
    for s in outcome.shots:
        where = f"{s.host} (node {s.node[:8]}, pid {s.pid})" if s.host else "-"
        state = "done" if s.done else "busy (left to the process rendering it)" if s.busy else f"FAILED: {s.error}"
        print(f"shot {s.index:4d}  {state}  on {where}  {s.seconds:.1f} s, {plural(s.attempts, 'attempt')}",
              file=file)
    loads = sum(outcome.model_loads.values())
    print(f"{len(outcome.done)} of {plural(len(outcome.shots), 'shot')} done on "
          f"{plural(len(outcome.model_loads), 'worker process', 'worker processes')}; the network was loaded "
          f"{plural(loads, 'time')}", file=file)


def render_jobs_with_ray(project, todo, args, checkpoint: Path, failed: list, busy: list) -> int:
    """`film render --ray`: what the command runs instead of its in-process loop (same contract: fills
    `failed` with (job, reason) and `busy` with jobs; returns 130 on Ctrl-C, else 0), with a film-wide
    progress bar that advances as shots are committed, then the per-shot report."""
    from tqdm import tqdm

    by_index = {job.index: job for job in todo}
    with tqdm(total=sum(job.frames for job in todo), unit="frame", file=sys.stderr, desc="film (ray)") as bar:
        def on_done(shot: ShotOutcome) -> None:
            bar.update(by_index[shot.index].frames)
            bar.set_postfix_str(f"shot {shot.index} {'done on ' + shot.host if shot.done else 'not done'}")

        try:
            outcome = render_with_ray(project, todo, args, checkpoint=checkpoint, on_done=on_done)
        except KeyboardInterrupt:
            print("\nstopped; the shots committed so far are kept. Run `film render` again to continue.",
                  file=sys.stderr)
            return 130
    print_outcome(outcome)
    failed.extend((by_index[i], reason) for i, reason in outcome.failed.items())
    busy.extend(by_index[i] for i in outcome.busy)
    return 0
