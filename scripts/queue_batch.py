"""Queue many videos through one or more ComfyUI servers with an API-format workflow.

    python scripts/queue_batch.py --workflow workflows/api/colormnet_basic.json --jobs jobs.csv \
        --server http://127.0.0.1:8188 [--server http://gpu2:8188] [--retries 2] [--timeout 3600]

jobs.csv has a header and one row per video: `video,exemplar[,frame]` (local paths are uploaded to
the server's input folder; names without a folder are taken as already there). For every job the
script sets the video of every LoadVideo / ColorMNetColorizeVideo node, the image of every LoadImage
that feeds a ColorMNetLoadExemplar, that exemplar's frame (if given), and an output prefix
`colormnet/<video stem>`; it POSTs /prompt, follows the run over the websocket, retries failures up to
--retries times, prints a per-video report and exits 1 if any video failed. Needs aiohttp (ComfyUI's
own environment has it).

Film mode (a film project, see `python -m colormnet_core film`), over servers that share the project folder:

    python scripts/queue_batch.py --film output/films/myfilm --workflow workflows/api/colormnet_film_sd15.json \
        --server http://127.0.0.1:8188 --server http://gpu2:8188 [--project-name films/myfilm]

queues one prompt per shot that is not done (the workflow's ColorMNetFilmShot `shot` set to its index,
the ColorMNetFilmProject's project name set when --project-name is given), each server rendering one
shot at a time. When a server stops answering mid-shot, that server is dropped and its shot goes to
another one; a shot counts as done only when the project's record says so. Prints which server
rendered which shot; exits 1 if any shot is not done.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import csv
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


@dataclass
class Job:
    video: str
    exemplar: str
    frame: int | None = None
    attempts: int = 0
    status: str = "pending"
    error: str = ""
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    server: str = ""


def read_jobs(path: Path) -> list[Job]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"video", "exemplar"} <= set(rows[0]):
        raise SystemExit(f"{path}: needs a header with at least the columns video,exemplar")
    return [Job(r["video"].strip(), r["exemplar"].strip(),
                int(r["frame"]) if (r.get("frame") or "").strip() else None) for r in rows]


def substitute(workflow: dict, video: str, exemplar: str, frame: int | None, stem: str) -> dict:
    """A copy of the API workflow with this job's inputs; raises if the workflow has no place for them."""
    prompt = copy.deepcopy(workflow)
    exemplar_sources = {str(node["inputs"]["image"][0]) for node in prompt.values()
                        if node["class_type"] == "ColorMNetLoadExemplar"
                        and isinstance(node["inputs"].get("image"), list)}
    placed = {"video": 0, "exemplar": 0}
    for node_id, node in prompt.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "LoadVideo":
            inputs["file"] = video
            placed["video"] += 1
        elif kind == "ColorMNetColorizeVideo":
            inputs["video"] = video
            inputs["filename_prefix"] = f"colormnet/{stem}"
            placed["video"] += 1
        elif kind == "LoadImage" and node_id in exemplar_sources:
            inputs["image"] = exemplar
            placed["exemplar"] += 1
        elif kind == "ColorMNetLoadExemplar" and frame is not None:
            inputs["frame"] = frame
        elif kind in ("SaveVideo", "SaveImage", "SaveAnimatedWEBP", "SaveWEBM"):
            inputs["filename_prefix"] = f"colormnet/{stem}"
    missing = [k for k, n in placed.items() if n == 0]
    if missing:
        raise ValueError(f"the workflow has no node to take the job's {' and '.join(missing)}")
    return prompt


class Rejected(ValueError):
    """The server refused the prompt at validation: the same prompt would be refused again."""


def rejection_message(answer: dict) -> str:
    details = []
    for node_id, info in (answer.get("node_errors") or {}).items():
        for error in info.get("errors", []):
            details.append(f"node {node_id} ({info.get('class_type', '?')}): {error.get('message', '')} "
                           f"{error.get('details', '')}".strip())
    return "; ".join(details) or json.dumps(answer.get("error", answer))[:500]


class Server:
    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    async def upload(self, path: str) -> str:
        local = Path(path)
        if not local.is_file():
            return path   # a name already in the server's input folder
        form = aiohttp.FormData()
        form.add_field("image", local.read_bytes(), filename=local.name)
        form.add_field("type", "input")
        form.add_field("overwrite", "true")
        async with self.session.post(f"{self.url}/upload/image", data=form) as r:
            if r.status != 200:
                raise RuntimeError(f"upload of {local.name} failed: HTTP {r.status} {await r.text()}")
            answer = await r.json()
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    async def run(self, prompt: dict) -> list[str]:
        async with self.session.ws_connect(f"{self.url}/ws?clientId={self.client_id}") as ws:
            body = {"prompt": prompt, "client_id": self.client_id}
            async with self.session.post(f"{self.url}/prompt", json=body) as r:
                answer = await r.json()
                if r.status == 400:
                    raise Rejected(f"rejected: {rejection_message(answer)}")
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {json.dumps(answer)[:500]}")
            prompt_id = answer["prompt_id"]
            deadline = time.monotonic() + self.timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"no result after {self.timeout:.0f} s")
                msg = await ws.receive(timeout=remaining)
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    raise RuntimeError("the server closed the websocket")
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue   # binary previews
                event = json.loads(msg.data)
                data = event.get("data", {})
                if data.get("prompt_id") != prompt_id:
                    continue
                if event["type"] == "execution_error":
                    raise RuntimeError(f"{data.get('node_type')}: {data.get('exception_message', '').strip()}")
                if event["type"] == "execution_interrupted":
                    raise RuntimeError("interrupted on the server")
                if event["type"] == "executing" and data.get("node") is None:
                    break
        async with self.session.get(f"{self.url}/history/{prompt_id}") as r:
            history = (await r.json()).get(prompt_id, {})
        files = []
        for output in history.get("outputs", {}).values():
            for item in output.get("images", []) + output.get("gifs", []):
                files.append(f"{item.get('subfolder', '')}/{item['filename']}".lstrip("/"))
        return files


async def worker(server: Server, queue: asyncio.Queue, workflow: dict, retries: int) -> None:
    while True:
        try:
            job = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        started = time.monotonic()
        while True:
            job.attempts += 1
            job.server = server.url
            try:
                video = await server.upload(job.video)
                exemplar = await server.upload(job.exemplar)
                prompt = substitute(workflow, video, exemplar, job.frame, Path(job.video).stem)
                job.outputs = await server.run(prompt)
                job.status, job.error = "ok", ""
                break
            except (RuntimeError, ValueError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                job.status, job.error = "failed", str(e) or type(e).__name__
                if isinstance(e, ValueError) or job.attempts > retries:
                    break
                print(f"  retry {job.video} ({job.attempts}/{retries}): {job.error}", file=sys.stderr)
        job.seconds = time.monotonic() - started
        print(f"{job.status:6s} {job.video} ({job.attempts} attempt(s), {job.seconds:.1f} s) {job.error}", flush=True)


async def run_batch(workflow: dict, jobs: list[Job], servers: list[str], retries: int, timeout: float) -> list[Job]:
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(Server(url, session, timeout), queue, workflow, retries) for url in servers))
    return jobs


def report(jobs: list[Job]) -> str:
    lines = [f"{'status':6s}  {'attempts':8s}  {'seconds':>8s}  video -> outputs / error"]
    for j in jobs:
        detail = ", ".join(j.outputs) if j.status == "ok" else j.error
        lines.append(f"{j.status:6s}  {j.attempts:8d}  {j.seconds:8.1f}  {j.video} -> {detail}")
    ok = sum(j.status == "ok" for j in jobs)
    lines.append(f"{ok} of {len(jobs)} videos done, {len(jobs) - ok} failed")
    return "\n".join(lines)


def film_prompt(workflow: dict, shot: int, project_name: str | None) -> dict:
    """A copy of the film workflow that renders `shot`: found by class_type, so any film workflow works."""
    prompt = copy.deepcopy(workflow)
    shots = [n for n in prompt.values() if n["class_type"] == "ColorMNetFilmShot"]
    if not shots:
        raise ValueError("the workflow has no ColorMNetFilmShot node; use a film workflow "
                         "(workflows/api/colormnet_film_*.json)")
    for node in shots:
        node["inputs"]["shot"] = shot
    if project_name is not None:
        projects = [n for n in prompt.values() if n["class_type"] == "ColorMNetFilmProject"]
        for node in projects:
            names = [k for k, v in node["inputs"].items() if "project" in k and isinstance(v, str)]
            if not names:
                raise ValueError(f"the ColorMNetFilmProject node has no text input for the project name "
                                 f"(inputs: {', '.join(node['inputs'])})")
            node["inputs"][names[0]] = project_name
    return prompt


@dataclass
class ShotRun:
    """One film shot's way through the farm: which servers tried it, which one rendered it."""

    index: int
    status: str = "pending"
    attempts: list[str] = field(default_factory=list)   # "<server>: <result>" per attempt
    server: str = ""
    seconds: float = 0.0


async def alive(server: Server) -> bool:
    try:
        async with server.session.get(f"{server.url}/system_stats", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


async def film_worker(server: Server, queue: asyncio.Queue, workflow: dict, project_name: str | None,
                      is_done, retries: int, state: dict) -> None:
    """Render shots from the queue on one server until it is empty or this server dies."""
    while True:
        if queue.empty():
            if not state["in_flight"]:
                return
            await asyncio.sleep(0.2)   # a shot on another server may still come back here
            continue
        shot = queue.get_nowait()
        state["in_flight"] += 1   # until the shot is done, failed or back in the queue
        try:
            gone = await film_attempt(server, shot, queue, workflow, project_name, is_done, retries, state)
        finally:
            state["in_flight"] -= 1
        if gone:
            return   # this server is down: the others take its shot and the rest


async def film_attempt(server: Server, shot: ShotRun, queue: asyncio.Queue, workflow: dict,
                       project_name: str | None, is_done, retries: int, state: dict) -> bool:
    """One try of `shot` on `server`; requeues it if it may still succeed. True if the server is down."""
    started = time.monotonic()
    try:
        await server.run(film_prompt(workflow, shot.index, project_name))
        result = "ok"
    except (RuntimeError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        result = str(e) or type(e).__name__
    if result == "ok" and not is_done(shot.index):
        result = "the prompt finished but the project has no valid record of the shot"
    shot.attempts.append(f"{server.url}: {result}")
    shot.seconds += time.monotonic() - started
    if result == "ok":
        shot.status, shot.server = "done", server.url
        print(f"done   shot {shot.index} on {server.url} ({shot.seconds:.1f} s)", flush=True)
        return False
    server_alive = await alive(server)
    if not server_alive:
        state["dead"].add(server.url)
    # Attempts on servers that died do not count against the shot: the shot was not at fault.
    failures = sum(1 for a in shot.attempts if not a.startswith(tuple(state["dead"])))
    if (not server_alive and len(state["dead"]) < state["servers"]) or (server_alive and failures <= retries):
        print(f"  again shot {shot.index}: {result}" + ("" if server_alive else f" ({server.url} is down)"),
              file=sys.stderr, flush=True)
        queue.put_nowait(shot)
    else:
        shot.status = "failed"
        print(f"failed shot {shot.index}: {result}", flush=True)
    return not server_alive


async def run_film(workflow: dict, shots: list[int], servers: list[str], *, is_done, project_name: str | None,
                   retries: int, timeout: float) -> list[ShotRun]:
    """Queue `shots` over `servers`; is_done(shot) says whether the project records the shot as done."""
    runs = [ShotRun(i) for i in shots]
    queue: asyncio.Queue = asyncio.Queue()
    for run in runs:
        queue.put_nowait(run)
    state = {"dead": set(), "in_flight": 0, "servers": len(servers)}
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(film_worker(Server(url, session, timeout), queue, workflow, project_name, is_done,
                                           retries, state) for url in servers))
    for run in runs:
        if run.status == "pending":
            run.status = "failed"
            run.attempts.append("no server left")
    return runs


def film_report(runs: list[ShotRun]) -> str:
    lines = [f"{'shot':>4s}  {'status':6s}  {'seconds':>8s}  server / attempts"]
    for r in runs:
        lines.append(f"{r.index:4d}  {r.status:6s}  {r.seconds:8.1f}  {r.server or '-'}  [{'; '.join(r.attempts)}]")
    done = sum(r.status == "done" for r in runs)
    lines.append(f"{done} of {len(runs)} shots done, {len(runs) - done} not")
    return "\n".join(lines)


def film_main(args: argparse.Namespace, workflow: dict) -> int:
    """--film: the project's shots that are not done, one prompt each, over the servers."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from colormnet_core.film import FilmProject

    def states() -> dict[int, str]:
        return {s.index: s.state for s in FilmProject.open(args.film).status()}

    todo = [i for i, state in states().items() if state != "done"]
    print(f"{len(todo)} shot(s) to render: {todo}", file=sys.stderr)
    runs = asyncio.run(run_film(workflow, todo, args.server or ["http://127.0.0.1:8188"],
                                is_done=lambda i: states().get(i) == "done", project_name=args.project_name,
                                retries=args.retries, timeout=args.timeout))
    print(film_report(runs))
    return 0 if all(r.status == "done" for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", required=True, type=Path, help="API-format workflow (workflows/api/*.json)")
    parser.add_argument("--jobs", type=Path, help="CSV with columns video,exemplar[,frame]")
    parser.add_argument("--film", type=Path, help="film project folder the servers share: render its shots")
    parser.add_argument("--project-name", default=None,
                        help="--film: the project name the servers' Film Project node opens (default: the workflow's)")
    parser.add_argument("--server", action="append", default=None, help="ComfyUI URL; repeat for several")
    parser.add_argument("--retries", type=int, default=2, help="extra attempts per failed video")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one video may take")
    args = parser.parse_args(argv)
    workflow = json.loads(args.workflow.read_text())
    if "nodes" in workflow:
        raise SystemExit(f"{args.workflow} is a UI-format workflow; use its API twin (workflows/api/) or "
                         f"export with 'Export (API)' in ComfyUI.")
    if (args.jobs is None) == (args.film is None):
        parser.error("give either --jobs (videos) or --film (a film project's shots)")
    if args.film is not None:
        return film_main(args, workflow)
    jobs = read_jobs(args.jobs)
    done = asyncio.run(run_batch(workflow, jobs, args.server or ["http://127.0.0.1:8188"], args.retries, args.timeout))
    print(report(done))
    return 0 if all(j.status == "ok" for j in done) else 1


if __name__ == "__main__":
    sys.exit(main())
