"""The batch queue script against a small ComfyUI-like HTTP + websocket server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import shutil
import sys
import threading
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from colormnet_core.film import FilmProject, FilmSettings, SegmentResult, commit_shot, plan_jobs
from colormnet_core.film.render import sha256_of

from . import golden
from .clips import make_shot_clip, panning_field

spec = importlib.util.spec_from_file_location("queue_batch", golden.REPO / "scripts" / "queue_batch.py")
queue_batch = importlib.util.module_from_spec(spec)
sys.modules["queue_batch"] = queue_batch   # dataclasses look their module up while the class is built
spec.loader.exec_module(queue_batch)


class FakeComfy:
    """Accepts uploads and prompts; 'runs' a prompt by sending websocket events. Videos named
    flaky* fail their first run, broken* always fail."""

    def __init__(self) -> None:
        self.uploads, self.prompts, self.sockets, self.history, self.attempts = [], [], {}, {}, {}
        app = web.Application()
        app.router.add_post("/upload/image", self.upload)
        app.router.add_post("/prompt", self.prompt)
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/history/{pid}", self.get_history)
        self.app = app

    async def upload(self, request):
        form = await request.post()
        self.uploads.append(form["image"].filename)
        return web.json_response({"name": form["image"].filename, "subfolder": "", "type": "input"})

    async def prompt(self, request):
        body = await request.json()
        prompt, client = body["prompt"], body["client_id"]
        video = next((n["inputs"]["file"] for n in prompt.values() if n["class_type"] == "LoadVideo"), "")
        if video.startswith("invalid"):
            self.attempts[video] = self.attempts.get(video, 0) + 1
            errors = {"1": {"class_type": "LoadVideo", "errors": [
                {"message": "Value not in list", "details": f"file: '{video}' not in []"}]}}
            return web.json_response({"error": {"message": "Prompt outputs failed validation"},
                                      "node_errors": errors}, status=400)
        pid = uuid.uuid4().hex
        self.prompts.append(prompt)
        asyncio.get_running_loop().create_task(self.execute(pid, prompt, client))
        return web.json_response({"prompt_id": pid, "number": len(self.prompts), "node_errors": {}})

    async def execute(self, pid, prompt, client):
        await asyncio.sleep(0.05)
        ws = self.sockets[client]
        video = next(n["inputs"]["file"] for n in prompt.values() if n["class_type"] == "LoadVideo")
        self.attempts[video] = self.attempts.get(video, 0) + 1
        await ws.send_json({"type": "execution_start", "data": {"prompt_id": pid}})
        for i in range(3):
            await ws.send_json({"type": "progress", "data": {"value": i + 1, "max": 3, "prompt_id": pid, "node": "8"}})
        await ws.send_bytes(b"\x00\x00\x00\x01preview")
        if video.startswith("broken") or (video.startswith("flaky") and self.attempts[video] == 1):
            await ws.send_json({"type": "execution_error", "data": {
                "prompt_id": pid, "node_type": "ColorMNetColorize", "exception_message": "GPU ran out of memory"}})
            return
        prefix = next(n["inputs"]["filename_prefix"] for n in prompt.values() if n["class_type"] == "SaveVideo")
        self.history[pid] = {"outputs": {"10": {"images": [
            {"filename": prefix.split("/")[-1] + "_00001_.mp4", "subfolder": "colormnet", "type": "output"}]}}}
        await ws.send_json({"type": "executing", "data": {"node": None, "prompt_id": pid}})

    async def ws(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets[request.query["clientId"]] = ws
        async for _ in ws:
            pass
        return ws

    async def get_history(self, request):
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})


@pytest.fixture
def servers():
    """Two fake servers on 127.0.0.1 in a background event loop."""
    loop = asyncio.new_event_loop()
    fakes, runners, urls = [FakeComfy(), FakeComfy()], [], []

    async def start():
        for fake in fakes:
            runner = web.AppRunner(fake.app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield fakes, urls
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def write_jobs(tmp_path, rows):
    for name in {r[0] for r in rows} | {r[1] for r in rows}:
        (tmp_path / name).write_bytes(b"media")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("video,exemplar,frame\n" + "".join(f"{tmp_path / v},{tmp_path / e},{f}\n" for v, e, f in rows))
    return jobs


def test_batch_runs_every_video_retries_and_reports(servers, tmp_path, capsys):
    fakes, urls = servers
    jobs = write_jobs(tmp_path, [("a.mp4", "a.png", "0"), ("flaky.mp4", "f.png", "0"), ("b.mp4", "b.png", "3"),
                                 ("c.mp4", "c.png", "")])
    workflow = golden.REPO / "workflows" / "api" / "colormnet_basic.json"
    code = queue_batch.main(["--workflow", str(workflow), "--jobs", str(jobs), "--server", urls[0],
                             "--server", urls[1], "--retries", "1", "--timeout", "20"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 of 4 videos done, 0 failed" in out and "colormnet/flaky_00001_.mp4" in out
    prompts = [p for fake in fakes for p in fake.prompts]
    assert len(prompts) == 5                                                 # flaky ran twice
    assert all(fake.prompts for fake in fakes)                               # both servers took work
    b = next(p for p in prompts if any(n["inputs"].get("file") == "b.mp4" for n in p.values()))
    assert [n["inputs"]["frame"] for n in b.values() if n["class_type"] == "ColorMNetLoadExemplar"] == [3]
    assert [n["inputs"]["image"] for n in b.values() if n["class_type"] == "LoadImage"] == ["b.png"]
    assert [n["inputs"]["filename_prefix"] for n in b.values() if n["class_type"] == "SaveVideo"] == ["colormnet/b"]
    original = json.loads(workflow.read_text())
    loader = next(n for n in original.values() if n["class_type"] == "LoadVideo")
    assert loader["inputs"]["file"] == "colormnet_example.mp4"          # the file on disk is untouched


def test_batch_gives_up_after_the_retries_and_exits_nonzero(servers, tmp_path, capsys):
    _, urls = servers
    jobs = write_jobs(tmp_path, [("ok.mp4", "e.png", "0"), ("broken.mp4", "e.png", "0"), ("invalid.mp4", "e.png", "0")])
    workflow = golden.REPO / "workflows" / "api" / "colormnet_basic.json"
    code = queue_batch.main(["--workflow", str(workflow), "--jobs", str(jobs), "--server", urls[0], "--retries", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 of 3 videos done, 2 failed" in out
    rejected = next(l for l in out.splitlines() if l.startswith("failed") and "invalid.mp4 ->" in l)
    assert " 1 " in rejected and "node 1 (LoadVideo): Value not in list" in rejected   # not retried
    line = next(l for l in out.splitlines() if l.startswith("failed") and "broken.mp4" in l and "attempt" not in l)
    assert " 3 " in line and "GPU ran out of memory" in line


def test_unreachable_server_fails_cleanly(tmp_path, capsys):
    jobs = write_jobs(tmp_path, [("a.mp4", "a.png", "0")])
    workflow = golden.REPO / "workflows" / "api" / "colormnet_basic.json"
    code = queue_batch.main(["--workflow", str(workflow), "--jobs", str(jobs), "--server", "http://127.0.0.1:9",
                             "--retries", "0"])
    assert code == 1 and "0 of 1 videos done" in capsys.readouterr().out


def test_substitution_refuses_a_workflow_without_a_video_input():
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    with pytest.raises(ValueError, match="video and exemplar"):
        queue_batch.substitute(prompt, "v.mp4", "e.png", None, "v")


# -- film mode: a farm of fake servers sharing one project folder ------------------------------------

FARM_SHOTS = ((0, 3), (4, 7), (8, 11), (12, 15))
FARM_SETTINGS = {"size": "64"}   # what the fake Render Shot records; any fixed settings do
FARM_CHECKPOINT = "c" * 64
FARM_WORKFLOW = {   # the film workflow's nodes queue_batch.py touches, with the real node ids and inputs
    "2": {"class_type": "ColorMNetFilmProject", "inputs": {"project": "my_film", "threshold": 0.2,
                                                           "min_shot_length": 5}},
    "3": {"class_type": "ColorMNetFilmShot", "inputs": {"film": ["2", 0], "shot": 0}},
    "15": {"class_type": "ColorMNetRenderShot", "inputs": {"film": ["2", 0], "shot": ["3", 4],
                                                           "processing_size": "custom", "custom_size": 64}},
}


class FakeFilmComfy:
    """A ComfyUI whose Render Shot commits a prepared segment into the shared project, as the real node
    commits the one it renders (plan the job, remember the settings, partial file under the shot's lock,
    commit). dies_on_first: the first prompt starts the shot (a partial segment under the lock), then
    the server goes away mid-shot: websocket closed, port closed, nothing answers any more."""

    def __init__(self, output: Path, segments: dict[int, Path], dies_on_first: bool = False) -> None:
        self.output, self.segments, self.dies_on_first = output, segments, dies_on_first
        self.prompts: list[dict] = []
        self.rendered: list[int] = []
        self.sockets, self.history = {}, {}
        self.runner = None
        self.dead = False
        self.app = web.Application()
        self.app.router.add_post("/prompt", self.prompt)
        self.app.router.add_get("/ws", self.ws)
        self.app.router.add_get("/history/{pid}", self.get_history)
        self.app.router.add_get("/system_stats", self.system_stats)

    async def system_stats(self, request):
        if self.dead:   # a connection the client kept open may reach a dying server before its port closes
            return web.json_response({"error": "shutting down"}, status=503)
        return web.json_response({"system": {"comfyui_version": "fake"}})

    async def prompt(self, request):
        if self.dead:
            return web.json_response({"error": "shutting down"}, status=503)
        body = await request.json()
        pid = uuid.uuid4().hex
        self.prompts.append(body["prompt"])
        asyncio.get_running_loop().create_task(self.execute(pid, body["prompt"], body["client_id"]))
        return web.json_response({"prompt_id": pid, "number": len(self.prompts), "node_errors": {}})

    async def execute(self, pid, prompt, client):
        await asyncio.sleep(0.05)
        ws = self.sockets[client]
        (shot,) = [n["inputs"]["shot"] for n in prompt.values() if n["class_type"] == "ColorMNetFilmShot"]
        (name,) = [n["inputs"]["project"] for n in prompt.values() if n["class_type"] == "ColorMNetFilmProject"]
        await ws.send_json({"type": "execution_start", "data": {"prompt_id": pid}})
        await ws.send_json({"type": "progress", "data": {"value": 1, "max": 4, "prompt_id": pid, "node": "15"}})
        folder = self.output / "colormnet_films" / name
        if self.dies_on_first:
            await asyncio.to_thread(self.start_and_leave, folder, shot)
            await self.die()
            return
        try:
            await asyncio.to_thread(self.render, folder, shot)
        except Exception as e:  # noqa: BLE001 - reported to the client as ComfyUI reports a node's error
            await ws.send_json({"type": "execution_error", "data": {
                "prompt_id": pid, "node_type": "ColorMNetRenderShot", "exception_message": str(e)}})
            return
        self.rendered.append(shot)
        self.history[pid] = {"outputs": {"15": {"images": [
            {"filename": f"colormnet_shot_{shot}.mp4", "subfolder": "", "type": "temp"}]}}}
        await ws.send_json({"type": "executing", "data": {"node": None, "prompt_id": pid}})

    def job(self, folder: Path, shot: int):
        project = FilmProject.open(folder)
        settings = FilmSettings(**FARM_SETTINGS)
        (job,) = plan_jobs(project, settings, FARM_CHECKPOINT, shots=[shot])
        return project, job

    def render(self, folder: Path, shot: int) -> None:
        project, job = self.job(folder, shot)

        def copy(staged, partial):   # what Render Shot's render step would write
            shutil.copyfile(self.segments[shot], partial)
            return SegmentResult(partial, sha256_of(partial), staged.frames, partial.stat().st_size)

        commit_shot(project, job, copy)

    def start_and_leave(self, folder: Path, shot: int) -> None:
        # The lock is released on the way out, as the OS releases a killed process's lock.
        project, job = self.job(folder, shot)
        with project.shot_lock(shot):
            project.partial_segment_path(job).write_bytes(self.segments[shot].read_bytes()[:300])

    async def die(self) -> None:
        self.dead = True
        for ws in list(self.sockets.values()):
            await ws.close()
        await self.runner.cleanup()

    async def ws(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets[request.query["clientId"]] = ws
        async for _ in ws:
            pass
        return ws

    async def get_history(self, request):
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})


@pytest.fixture
def film(tmp_path):
    """A 4-shot project in the servers' shared output folder, with a reference exemplar, and one
    prepared segment per shot (as many frames as the shot)."""
    output = tmp_path / "output"
    source = make_shot_clip(tmp_path / "film.mp4", shots=tuple(last - first + 1 for first, last in FARM_SHOTS))
    project = FilmProject.init(source, output / "colormnet_films" / "farm", shots=list(FARM_SHOTS))
    Image.fromarray(panning_field(1, 64, 96, seed=5)[0]).save(project.dir / "exemplars" / "reference.png")
    segments = {i: make_shot_clip(tmp_path / f"segment{i}.mp4", shots=(last - first + 1,), audio=False)
                for i, (first, last) in enumerate(FARM_SHOTS)}
    workflow = tmp_path / "film_workflow.json"
    workflow.write_text(json.dumps(FARM_WORKFLOW))
    return project, output, segments, workflow


@contextlib.contextmanager
def farm(fakes):
    """The fake servers on 127.0.0.1 in a background event loop; yields their URLs."""
    loop = asyncio.new_event_loop()
    urls = []

    async def start():
        for fake in fakes:
            fake.runner = web.AppRunner(fake.app, shutdown_timeout=1)
            await fake.runner.setup()
            site = web.TCPSite(fake.runner, "127.0.0.1", 0)
            await site.start()
            urls.append(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield urls
    finally:
        for fake in fakes:
            if fake.runner is not None and not fake.dead:
                asyncio.run_coroutine_threadsafe(fake.runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def report_rows(out: str) -> dict[int, list[str]]:
    """The per-shot report's rows: shot index -> [status, seconds, server, attempts...]."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit() and parts[1] in ("done", "failed", "pending"):
            rows[int(parts[0])] = parts[1:]
    return rows


def test_film_farm_moves_a_dead_servers_shot_to_another_and_reports_who_rendered_what(film, capsys):
    project, output, segments, workflow = film
    dying, steady = FakeFilmComfy(output, segments, dies_on_first=True), FakeFilmComfy(output, segments)
    assert {s.state for s in project.status()} == {"pending"}
    with farm([dying, steady]) as (dying_url, steady_url):
        code = queue_batch.main(["--workflow", str(workflow), "--film", str(project.dir), "--project-name", "farm",
                                 "--server", dying_url, "--server", steady_url, "--retries", "1", "--timeout", "30"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 of 4 shots done, 0 not" in out
    assert [s.state for s in FilmProject.open(project.dir).status()] == ["done"] * 4
    assert not list((project.dir / "segments").glob("*.partial-*"))          # the dead server's leftover is gone
    (lost,) = [n["inputs"]["shot"] for p in dying.prompts for n in p.values() if n["class_type"] == "ColorMNetFilmShot"]
    assert sorted(steady.rendered) == [0, 1, 2, 3] and steady.rendered.count(lost) == 1
    projects = {n["inputs"]["project"] for p in steady.prompts for n in p.values()
                if n["class_type"] == "ColorMNetFilmProject"}
    assert projects == {"farm"}
    rows = report_rows(out)
    assert sorted(rows) == [0, 1, 2, 3]
    for shot, (status, _, server, *attempts) in rows.items():
        assert status == "done" and server == steady_url, out                # who rendered each shot
        tried = " ".join(attempts)
        assert (f"{dying_url}: the server closed the websocket" in tried) == (shot == lost), out
        assert f"{steady_url}: ok" in tried


def test_film_farm_with_every_server_dead_reports_the_shots_not_done(film, capsys):
    project, output, segments, workflow = film
    fakes = [FakeFilmComfy(output, segments, dies_on_first=True) for _ in range(2)]
    with farm(fakes) as urls:
        code = queue_batch.main(["--workflow", str(workflow), "--film", str(project.dir), "--project-name", "farm",
                                 "--server", urls[0], "--server", urls[1], "--timeout", "30"])
    out = capsys.readouterr().out
    assert code == 1
    assert "0 of 4 shots done, 4 not" in out
    rows = report_rows(out)
    assert all(row[0] == "failed" and row[2] == "-" for row in rows.values()), out
    tried = {n["inputs"]["shot"]: url for fake, url in zip(fakes, urls) for p in fake.prompts for n in p.values()
             if n["class_type"] == "ColorMNetFilmShot"}
    assert len(tried) == 2                                                   # one shot each, then gone
    for shot, row in rows.items():
        attempts = " ".join(row[3:])
        assert (f"{tried[shot]}: the server closed the websocket" in attempts) if shot in tried else \
            attempts == "[no server left]", out
    assert {s.state for s in FilmProject.open(project.dir).status()} == {"pending"}
