"""The batch queue script against a small ComfyUI-like HTTP + websocket server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import uuid

import pytest
from aiohttp import web

from . import golden

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
