"""Manual end-to-end check of the film workflow in a real ComfyUI (issue 23): a finished film re-queued
runs no image-model node, Cancel during a redo keeps the shot's previous exemplar and segment, revert
renders nothing, and status text reaches only the prompt's own client. Not a CI test: it needs the
comfy-e2e harness (a real ComfyUI, outside the repo), imported at run time from --harness.

    python scripts/make_film_clip.py film3.mp4          # three shots of 8 frames, with sound
    python scripts/film_e2e.py --harness /path/to/comfy-e2e --checkpoint golden_weights.safetensors \\
        --sd15 sd15_random.safetensors --film film3.mp4 [--plugin DIR] [--keep] [--report out.json]

--plugin: the plugin folder to run (default: this repository; give the unpacked `comfy node pack`
archive to check that the shipped workflows run from it). Steps, on workflows/api/colormnet_film_sd15.json
(KSampler at 1 step, Render Shot at processing size 112, to keep it short on a CPU):
  1. shots 0, 1, 2 queued (the image model colours each keyframe), shot 3 (past the end: nothing), assemble;
  2. shots 0, 1, 2 queued again: the websocket's `executing` events must name no image-model node, and the
     film assembled again must decode to the same frames;
  3. shot 1 with done_shot=redo, /interrupt while Render Shot renders: shot 1 still done with the same
     exemplar and segment bytes, nothing temporary left;
  4. shot 1 redone to the end (new exemplar), then done_shot=revert: no image-model node runs, and the
     previous exemplar and segment are back (the film assembles to the frames of step 1);
  5. a second websocket client, connected throughout, must receive none of the nodes' status texts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_MODEL = {"CheckpointLoaderSimple", "CLIPTextEncode", "VAEEncode", "KSampler", "VAEDecode",
               "ColorMNetLoadExemplar", "ColorMNetEncode", "ColorMNetMemory"}
TEXT_FRAME = 3      # ComfyUI's BinaryEventTypes.TEXT (status text on a node)


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


class Listener(threading.Thread):
    """A second browser: a websocket client of its own, counting the binary text frames it receives."""

    def __init__(self, host) -> None:
        super().__init__(daemon=True)
        self.ws = host.ws_connect(f"other-{uuid.uuid4().hex[:8]}")
        self.texts = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import websocket

        self.ws.settimeout(0.5)
        while not self.stop.is_set():
            try:
                message = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:   # noqa: BLE001 - the server went away: stop listening
                return
            if isinstance(message, (bytes, bytearray)) and int.from_bytes(message[:4], "big") == TEXT_FRAME:
                self.texts += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", required=True)
    parser.add_argument("--checkpoint", required=True, help="ColorMNet weights (the fixture's will do)")
    parser.add_argument("--sd15", required=True, help="an SD 1.5 checkpoint (scripts/make_sd15_checkpoint.py)")
    parser.add_argument("--film", required=True, help="a three-shot film (scripts/make_film_clip.py)")
    parser.add_argument("--plugin", default=str(REPO))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--report", default=None)
    parser.add_argument("--timeout", type=float, default=1500)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # so the server is stopped on the way out
    sys.path.insert(0, args.harness)
    import comfy_host  # noqa: E402 - the harness, found at run time

    comfy_host.ensure_harness_python(need=("websocket",))
    plugin = Path(args.plugin).resolve()
    sys.path.insert(0, str(plugin))
    import av  # noqa: E402

    from colormnet_core.film import FilmProject  # noqa: E402

    links = Path(tempfile.mkdtemp(prefix="film-e2e-models-"))
    workflow = json.loads((plugin / "workflows" / "api" / "colormnet_film_sd15.json").read_text())
    assemble = json.loads((plugin / "workflows" / "api" / "colormnet_film_assemble.json").read_text())
    by_type = {node["class_type"]: node_id for node_id, node in workflow.items()}
    (links / by_type_input(workflow, "ColorMNetModelLoader", "checkpoint")).symlink_to(Path(args.checkpoint).resolve())
    (links / by_type_input(workflow, "CheckpointLoaderSimple", "ckpt_name")).symlink_to(Path(args.sd15).resolve())
    workflow[by_type["KSampler"]]["inputs"]["steps"] = 1
    workflow[by_type["LoadVideo"]]["inputs"]["file"] = Path(args.film).name
    render_inputs = workflow[by_type["ColorMNetRenderShot"]]["inputs"]
    render_inputs.update(processing_size="custom", custom_size=112)
    image_model_ids = {i for i, node in workflow.items() if node["class_type"] in IMAGE_MODEL}
    rows, failures = [], []

    def check(name: str, ok: bool, detail: str) -> None:
        rows.append((name, "PASS" if ok else "FAIL", detail))
        if not ok:
            failures.append(name)
        print(f"[film-e2e] {name}: {'PASS' if ok else 'FAIL'} {detail}", flush=True)

    host = comfy_host.ComfyHost(plugins=[f"{plugin}:comfyui-colormnet"], inputs_dir=str(plugin / "workflows" / "media"),
                                models=[("colormnet", str(links / p.name)) if "DINO" in p.name else
                                        ("checkpoints", str(links / p.name)) for p in links.iterdir()],
                                input_files=[str(Path(args.film).resolve())], keep=args.keep)
    with host:
        client = f"film-e2e-{uuid.uuid4().hex[:8]}"
        ws = host.ws_connect(client)
        other = Listener(host)
        other.start()
        mine = {"texts": 0}
        project_dir = Path(host.d("output")) / "colormnet_films" / "colormnet_example"

        def queue(prompt: dict, on_event=None) -> dict:
            started = time.monotonic()
            status, reply = host.post_json("/prompt", {"prompt": prompt, "client_id": client})
            if status != 200:
                return {"id": None, "status": f"rejected (HTTP {status})", "executed": [],
                        "errors": [json.dumps(reply)[:600]], "seconds": 0}
            prompt_id = reply["prompt_id"]
            events, finished = comfy_host.wait_ws_events(ws, prompt_id, args.timeout, on_event=on_event)
            mine["texts"] += sum(1 for e in events if e["type"] == "<binary>")
            executed = [e["data"]["node"] for e in events if e["type"] == "executing" and e["data"].get("node")]
            status = next((e["type"] for e in events if e["type"] in ("execution_success", "execution_error",
                                                                      "execution_interrupted")), "unfinished")
            errors = [e["data"].get("exception_message") for e in events if e["type"] == "execution_error"]
            return {"id": prompt_id, "status": status, "executed": executed, "errors": errors,
                    "seconds": round(time.monotonic() - started, 2)}

        def film(shot: int, seed: int = 7, done_shot: str = "skip", on_event=None) -> dict:
            prompt = json.loads(json.dumps(workflow))
            prompt[by_type["ColorMNetFilmShot"]]["inputs"]["shot"] = shot
            prompt[by_type["KSampler"]]["inputs"]["seed"] = seed
            prompt[by_type["ColorMNetRenderShot"]]["inputs"]["done_shot"] = done_shot
            return queue(prompt, on_event)

        def assembled() -> list:
            before = set(Path(host.d("output")).rglob("film_*.mp4"))
            run = queue(json.loads(json.dumps(assemble)))
            new = sorted(set(Path(host.d("output")).rglob("film_*.mp4")) - before)
            if run["status"] != "execution_success" or not new:
                return []
            with av.open(str(new[-1])) as container:
                return [frame.to_ndarray(format="rgb24").tobytes() for frame in container.decode(video=0)]

        def shot1() -> tuple:
            project = FilmProject.open(project_dir)
            state = project.status()[1].state
            exemplar = project.dir / "exemplars" / f"{project.shots[1].first:06d}.png"
            return state, sha(exemplar), sha(project.segment_path(1))

        # 1. the first pass
        first = [film(i) for i in range(4)]
        check("first pass: shots 0-2 rendered, shot 3 a no-op",
              all(r["status"] == "execution_success" for r in first)
              and all(image_model_ids & set(r["executed"]) for r in first[:3]),
              "; ".join(f"shot {i}: {r['status']} {r['seconds']} s, {len(r['executed'])} nodes ran"
                        for i, r in enumerate(first)) + "; " + "; ".join(e for r in first for e in r["errors"]))
        frames = assembled()
        check("assemble after the first pass", len(frames) > 0, f"{len(frames)} frames")
        # 2. the finished film queued again
        again = [film(i) for i in range(3)]
        ran = sorted({workflow[n]["class_type"] for r in again for n in r["executed"] if n in workflow})
        check("re-queued finished film: no image-model node executed",
              all(r["status"] == "execution_success" for r in again)
              and not any(image_model_ids & set(r["executed"]) for r in again),
              f"executing events named {ran}; " + ", ".join(f"{r['seconds']} s" for r in again))
        check("assembled film unchanged after the re-queue", assembled() == frames and len(frames) > 0,
              f"{len(frames)} frames compared")
        # 3. Cancel during a redo
        before = shot1()
        render_id = by_type["ColorMNetRenderShot"]
        sent = {"at": None}

        def interrupt_mid_render(event) -> None:
            data = event.get("data") or {}
            if event["type"] == "progress" and data.get("node") == render_id and data.get("value", 0) >= 2 \
                    and sent["at"] is None:
                sent["at"] = data.get("value")
                host.post_json("/interrupt", {})

        cancelled = film(1, seed=8, done_shot="redo with the new exemplar", on_event=interrupt_mid_render)
        after = shot1()
        leftovers = [str(p.relative_to(project_dir)) for p in project_dir.rglob("*")
                     if "partial" in p.name or p.name.endswith(".journal.json")]
        check("Cancel during a redo keeps the previous exemplar and segment",
              cancelled["status"] == "execution_interrupted" and after == before and before[0] == "done"
              and not leftovers,
              f"{cancelled['status']} at frame {sent['at']}; shot 1 {after[0]}, exemplar and segment "
              f"{'unchanged' if after[1:] == before[1:] else 'CHANGED'}; leftovers {leftovers}")
        # 4. redo to the end, then revert
        redone = film(1, seed=9, done_shot="redo with the new exemplar")
        changed = shot1()
        check("redo renders a new exemplar", redone["status"] == "execution_success" and changed[0] == "done"
              and changed[1] != before[1] and changed[2] != before[2], f"{redone['seconds']} s")
        reverted = film(1, done_shot="revert to the previous exemplar")
        back = shot1()
        check("revert restores the previous exemplar and segment without the image model",
              reverted["status"] == "execution_success" and back == before
              and not image_model_ids & set(reverted["executed"]),
              f"{reverted['seconds']} s; executing named "
              f"{sorted({workflow[n]['class_type'] for n in reverted['executed'] if n in workflow})}")
        check("the film assembles to the first pass's frames after the revert", assembled() == frames,
              f"{len(frames)} frames compared")
        # 5. status text only to the prompt's client
        other.stop.set()
        other.join(5)
        check("status text only to the prompt's own client", other.texts == 0 and mine["texts"] > 0,
              f"the other client got {other.texts} text frames, the prompt's client {mine['texts']} binary frames")
        ws.close()
    print("== film e2e summary ==")
    for name, result, detail in rows:
        print(f"  {result:4s}  {name}: {detail}")
    print(f"RESULT: {'PASS' if not failures else 'FAIL (' + '; '.join(failures) + ')'}")
    if args.report:
        Path(args.report).write_text(json.dumps({"rows": rows, "failures": failures}, indent=1))
    return 1 if failures else 0


def by_type_input(workflow: dict, class_type: str, name: str) -> str:
    return next(n["inputs"][name] for n in workflow.values() if n["class_type"] == class_type)


if __name__ == "__main__":
    sys.exit(main())
