"""Manual end-to-end check of `queue_batch.py --film` on a farm of two real ComfyUI servers that share
one project folder; one server is killed (SIGKILL) while it renders a shot, and every shot must
still end done. Not a CI test: it needs the comfy-e2e harness (a real ComfyUI), outside the repo.

    flock /tmp/e2e.lock python scripts/film_farm_e2e.py --harness /path/to/comfy-e2e \\
        --checkpoint .cache/golden_weights.safetensors --workflow workflows/api/colormnet_film_sd15.json \\
        [--model checkpoints=sd15_random.safetensors] [--shots 4] [--frames 12] [--keep]

What it does: makes a 4-shot film (tests/clips.make_shot_clip) and a project for it with
`film init` in a folder that both servers use as their output directory (`--output-directory`), puts
a reference exemplar in it (so workflows without an image model also have one), starts two servers
on 127.0.0.1 with this repository as the plugin (harness `comfy_host.ComfyHost`), runs
`queue_batch.py --film` against both, kills the first server seen writing a shot's segment (Render
Shot holds the shot's lock, whose file names its pid, and a partial segment exists), and prints the
script's per-shot report, the project's status and PASS/FAIL.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rendering_pid(project: Path) -> int | None:
    """The pid of a process writing a shot's segment now: a partial segment exists only while Render
    Shot holds that shot's lock, and the lock file names its holder ("pid N on HOST since ...")."""
    for partial in sorted((project / "segments").glob("*.partial-*")):
        lock = project / "locks" / f"{partial.name.split('.')[0]}.lock"
        try:
            words = lock.read_text().split()
        except OSError:
            continue
        if len(words) > 1 and words[0] == "pid" and words[1].isdigit():
            return int(words[1])
    return None


def kill_first_rendering(hosts, project: Path, stop: threading.Event, killed: list, after_s: float) -> None:
    """SIGKILL the first server seen writing a shot's segment (mid-shot, in Render Shot), after `after_s`
    seconds; bounded to 30 minutes."""
    deadline = time.monotonic() + 1800
    while not stop.is_set() and time.monotonic() < deadline:
        pid = rendering_pid(project)
        host = next((h for h in hosts if h.proc is not None and h.proc.pid == pid), None)
        if host is not None:
            time.sleep(after_s)
            shots = sorted(p.name for p in (project / "segments").glob("*.partial-*"))
            host.proc.kill()   # our own child, by its pid
            host.proc.wait(10)
            killed.append(host.url)
            print(f"[farm] killed {host.url} (pid {pid}) while it wrote {', '.join(shots) or 'a segment'}",
                  flush=True)
            return
        time.sleep(0.1)


def farm_workflow(workflow: dict, models: list[str], steps: int) -> dict:
    """The film workflow for this farm: the film's file in Load Video, the model files given, few steps."""
    names = {spec.partition("=")[0].split("/")[0]: Path(spec.partition("=")[2]).name for spec in models}
    for node in workflow.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "LoadVideo":
            inputs["file"] = "film.mp4"
        elif kind == "ColorMNetModelLoader":
            inputs["checkpoint"] = names["colormnet"]
        elif kind == "CheckpointLoaderSimple" and "checkpoints" in names:
            inputs["ckpt_name"] = names["checkpoints"]
        elif kind == "KSampler":
            inputs["steps"] = steps
        elif kind == "ColorMNetRenderShot":   # the smallest size: a CPU farm check, not a quality check
            inputs["processing_size"], inputs["custom_size"] = "custom", 112
    return workflow


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--harness", required=True, type=Path, help="the comfy-e2e folder (has comfy_host.py)")
    ap.add_argument("--checkpoint", required=True, type=Path, help="ColorMNet weights for models/colormnet")
    ap.add_argument("--workflow", required=True, type=Path, help="API-format film workflow")
    ap.add_argument("--model", action="append", default=[], metavar="SUBDIR=FILE", help="more model files")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--frames", type=int, default=12, help="frames per shot (enough for the kill to land mid-shot)")
    ap.add_argument("--steps", type=int, default=2,
                    help="sampler steps of the image model (few: its weights are random)")
    ap.add_argument("--kill-after", type=float, default=0.5,
                    help="seconds after the first server is seen writing a segment before it is killed")
    ap.add_argument("--keep", action="store_true", help="keep the servers' folders and the project")
    args = ap.parse_args()
    sys.path.insert(0, str(args.harness))
    from comfy_host import ComfyHost
    from PIL import Image

    from colormnet_core.__main__ import main as cli
    from colormnet_core.film import FilmProject
    from tests.clips import make_shot_clip, panning_field

    work = Path(tempfile.mkdtemp(prefix="film-farm-"))
    shared, inputs = work / "output", work / "input"   # both servers' output and input folders
    shared.mkdir()
    inputs.mkdir()
    source = make_shot_clip(inputs / "film.mp4", shots=(args.frames,) * args.shots)
    project = shared / "colormnet_films" / "farm"      # where the Film Project node looks for "farm"
    n = args.frames
    ranges = ",".join(f"{n * k}-{n * k + n - 1}" for k in range(args.shots))
    project.parent.mkdir(parents=True)
    if cli(["film", "init", str(source), "--project", str(project), "--shots", ranges]) != 0:
        return 2
    Image.fromarray(panning_field(1, 64, 96, seed=99)[0]).save(project / "exemplars" / "reference.png")
    models = [f"colormnet={args.checkpoint.resolve()}", *args.model]
    workflow = farm_workflow(json.loads(args.workflow.read_text()), models, args.steps)
    (work / "workflow.json").write_text(json.dumps(workflow, indent=1))
    hosts = [ComfyHost(plugins=[f"{REPO}:comfyui-colormnet"], models=models, keep=args.keep,
                       extra_args=["--output-directory", str(shared), "--input-directory", str(inputs)])
             for _ in range(2)]
    killed: list[str] = []
    stop = threading.Event()
    try:
        for host in hosts:
            host.start()
        watcher = threading.Thread(target=kill_first_rendering, args=(hosts, project, stop, killed, args.kill_after),
                                   daemon=True)
        watcher.start()
        started = time.monotonic()
        run = subprocess.run([sys.executable, str(REPO / "scripts" / "queue_batch.py"), "--film", str(project),
                              "--project-name", "farm", "--workflow", str(work / "workflow.json"),
                              "--server", hosts[0].url, "--server", hosts[1].url, "--timeout", "900"],
                             capture_output=True, text=True, timeout=1800)
        stop.set()
        print(run.stderr[-4000:], run.stdout, sep="\n")
        states = {s.index: s.state for s in FilmProject.open(project).status()}
        print(f"[farm] {time.monotonic() - started:.1f} s; killed: {killed or 'none'}; project status: "
              f"{json.dumps(states)}")
        ok = killed and run.returncode == 0 and set(states.values()) == {"done"}
        print("RESULT:", "PASS" if ok else "FAIL")
        if not ok:
            for host in hosts:
                print(f"--- {host.url} log tail ---\n{host.log_tail(40)}")
        return 0 if ok else 1
    finally:
        stop.set()
        for host in hosts:
            host.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"[farm] kept {work}")


if __name__ == "__main__":
    sys.exit(main())
