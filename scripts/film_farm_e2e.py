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
`queue_batch.py --film` against both, kills the first server seen rendering a shot (holding the shot's lock in
Render Shot, read from /proc/locks: Linux), and prints the
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


def held_shot_locks(project: Path) -> dict[int, str]:
    """{pid: lock file name} of the shot locks held now, read from /proc/locks (Linux): Render Shot holds
    its shot's lock from before the network is placed until the segment is committed."""
    inodes = {p.stat().st_ino: p.name for p in (project / "locks").glob("0*.lock")}
    held = {}
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return held
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[4].isdigit():
            inode = int(fields[5].rsplit(":", 1)[-1])
            if inode in inodes:
                held[int(fields[4])] = inodes[inode]
    return held


def kill_first_rendering(hosts, project: Path, stop: threading.Event, killed: list, after_s: float) -> None:
    """SIGKILL the first server seen holding a shot's lock (mid-shot, in Render Shot), `after_s` seconds
    later, and note whether the shot was still unrecorded then; bounded to 30 minutes."""
    deadline = time.monotonic() + 1800
    while not stop.is_set() and time.monotonic() < deadline:
        held = held_shot_locks(project)
        host = next((h for h in hosts if h.proc is not None and h.proc.pid in held), None)
        if host is not None:
            lock = held[host.proc.pid]
            time.sleep(after_s)
            still = held_shot_locks(project).get(host.proc.pid) == lock
            host.proc.kill()   # our own child, by its pid
            host.proc.wait(10)
            record = project / "records" / lock.replace(".lock", ".json")
            mid = still and not record.exists()
            killed.append((host.url, mid))
            print(f"[farm] killed {host.url} (pid {host.proc.pid}) while it rendered shot {lock.split('.')[0]}; "
                  f"mid-shot (lock still held, no record): {'yes' if mid else 'no'}", flush=True)
            return
        time.sleep(0.05)


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
    ap.add_argument("--kill-after", type=float, default=0.2,
                    help="seconds after the first server is seen rendering a shot before it is killed")
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
    killed: list[tuple[str, bool]] = []   # (server, killed mid-shot)
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
        print(f"[farm] {time.monotonic() - started:.1f} s; killed: {[url for url, _ in killed] or 'none'}; "
              f"project status: {json.dumps(states)}")
        ok = bool(killed) and all(mid for _, mid in killed) and run.returncode == 0 and set(states.values()) == {"done"}
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
