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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", required=True, type=Path, help="API-format workflow (workflows/api/*.json)")
    parser.add_argument("--jobs", required=True, type=Path, help="CSV with columns video,exemplar[,frame]")
    parser.add_argument("--server", action="append", default=None, help="ComfyUI URL; repeat for several")
    parser.add_argument("--retries", type=int, default=2, help="extra attempts per failed video")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one video may take")
    args = parser.parse_args(argv)
    workflow = json.loads(args.workflow.read_text())
    if "nodes" in workflow:
        raise SystemExit(f"{args.workflow} is a UI-format workflow; use its API twin (workflows/api/) or "
                         f"export with 'Export (API)' in ComfyUI.")
    jobs = read_jobs(args.jobs)
    done = asyncio.run(run_batch(workflow, jobs, args.server or ["http://127.0.0.1:8188"], args.retries, args.timeout))
    print(report(done))
    return 0 if all(j.status == "ok" for j in done) else 1


if __name__ == "__main__":
    sys.exit(main())
