"""A film's shots rendered in process and as Ray tasks on this machine: frames/s with 1 and 2
workers, Ray's overhead against in-process rendering on the same number of cores, and the time from
the start to the first finished segment.

    python bench/film_scaling.py --checkpoint CK [--shots 6] [--frames-per-shot 8] [--size 112] \\
        [--resolution 96x64] [--workers 1 2] [--out bench/out/film_scaling.json]

The film is synthetic (tests/clips.make_shot_clip: hard cuts between panning colour fields) with one
reference exemplar. Each configuration renders a fresh project. In process: `film render` on the
main thread with torch threads = workers (the same cores). Ray: a local Ray on 127.0.0.1 with
num_cpus = workers (started once, its start time reported apart), `--workers N`, one thread per
task; its time includes each worker process loading the network once. "first segment" is when the
first shot's record appears in the project (polled every 20 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def first_record_watch(folder: Path, started: float) -> dict:
    """Polls folder/records in a thread; result["first"] = seconds to the first record."""
    result: dict = {"first": None, "stop": False}

    def watch() -> None:
        deadline = time.monotonic() + 3600
        while not result["stop"] and time.monotonic() < deadline:
            if any((folder / "records").glob("*.json")):
                result["first"] = time.perf_counter() - started
                return
            time.sleep(0.02)

    result["thread"] = threading.Thread(target=watch, daemon=True)
    result["thread"].start()
    return result


def make_project(root: Path, name: str, source: Path, shots: str, reference: Path) -> Path:
    from colormnet_core.__main__ import main

    folder = root / name
    assert main(["film", "init", str(source), "--project", str(folder), "--shots", shots]) == 0
    shutil.copy(reference, folder / "exemplars" / "reference.png")
    return folder


def timed_render(folder: Path, argv: list[str]) -> dict:
    from colormnet_core.__main__ import main

    started = time.perf_counter()
    watch = first_record_watch(folder, started)
    code = main(["film", "render", "--project", str(folder), *argv])
    elapsed = time.perf_counter() - started
    watch["stop"] = True
    watch["thread"].join(1)
    if code != 0:
        raise SystemExit(f"render failed with {code}: {argv}")
    return {"seconds": elapsed, "first_segment_s": watch["first"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--shots", type=int, default=6)
    ap.add_argument("--frames-per-shot", type=int, default=8)
    ap.add_argument("--size", default="112")
    ap.add_argument("--resolution", default="96x64")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "film_scaling.json")
    args = ap.parse_args()

    import numpy as np
    import ray
    import torch
    from PIL import Image

    from tests.clips import make_shot_clip, panning_field

    width, height = map(int, args.resolution.split("x"))
    root = Path(tempfile.mkdtemp(prefix="film_scaling-"))
    source = make_shot_clip(root / "film.mp4", shots=(args.frames_per_shot,) * args.shots, size=(width, height),
                            audio=False)
    reference = root / "reference.png"
    Image.fromarray(panning_field(1, height, width, seed=99)[0]).save(reference)
    shots = ",".join(f"{k * args.frames_per_shot}-{(k + 1) * args.frames_per_shot - 1}" for k in range(args.shots))
    frames = args.shots * args.frames_per_shot
    common = ["--checkpoint", args.checkpoint, "--size", args.size, "--device", "cpu"]
    rows = []
    for workers in args.workers:
        torch.set_num_threads(workers)
        folder = make_project(root, f"inprocess{workers}", source, shots, reference)
        r = timed_render(folder, common)
        rows.append({"mode": "in-process", "cores": workers, "threads": workers, **r})
        t0 = time.perf_counter()
        os.environ["OMP_NUM_THREADS"] = "1"
        ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})
        ray_start = time.perf_counter() - t0
        folder = make_project(root, f"ray{workers}", source, shots, reference)
        r = timed_render(folder, [*common, "--ray", "auto", "--workers", str(workers), "--threads", "1"])
        ray.shutdown()
        rows.append({"mode": "ray", "cores": workers, "workers": workers, "ray_start_s": ray_start, **r})
        a, b = decoded(root / f"inprocess{workers}"), decoded(folder)
        rows[-1]["frames_equal_in_process"] = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    for row in rows:
        row["frames_per_s"] = frames / row["seconds"]
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                    "torch": torch.__version__, "ray": ray.__version__, "frames": frames,
                                    "shots": args.shots, "size": args.size, "resolution": args.resolution,
                                    "rows": rows}, indent=1))
    shutil.rmtree(root, ignore_errors=True)


def decoded(folder: Path) -> dict:
    import av
    import numpy as np

    out = {}
    for path in sorted((folder / "segments").glob("*.mp4")):
        with av.open(str(path)) as container:
            out[path.name] = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return out


if __name__ == "__main__":
    main()
