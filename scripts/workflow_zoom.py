"""Open every shipped UI workflow in the real ComfyUI frontend and report the zoom it opens at.

Not a CI test: it needs the comfy-e2e harness (a real ComfyUI and headless Chromium), outside the repo,
imported at run time from --harness. For each workflow it loads the file as a user does (the Open
dialog's file input), reads the canvas scale the frontend chose and whether litegraph draws text at it
(it switches to low-quality drawing, without titles or widget text, below 0.6), and saves a screenshot
of what the user sees first (no fit-to-view of ours). With --thumbnails it also writes
workflows/<name>.jpg (the template browser's thumbnail) from that screenshot.

    python scripts/workflow_zoom.py --harness /path/to/comfy-e2e [--screenshots DIR] [--thumbnails]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIN_ZOOM = 0.6     # litegraph's low_quality threshold in frontend 1.27: below it no text is drawn
CANVAS = (65, 78, 1920, 1080)    # the graph canvas in a 1920x1080 window (right of the side bar, below the menus)
THUMBNAIL = (640, 416)           # the template browser's thumbnail size the shipped .jpg files have


def thumbnail(screenshot: Path, target: Path) -> None:
    """The canvas part of a screenshot, letterboxed into THUMBNAIL, as JPEG."""
    from PIL import Image

    with Image.open(screenshot) as shot:
        canvas = shot.convert("RGB").crop(CANVAS)
    canvas.thumbnail(THUMBNAIL, Image.LANCZOS)
    out = Image.new("RGB", THUMBNAIL, canvas.getpixel((2, canvas.height - 3)))
    out.paste(canvas, ((THUMBNAIL[0] - canvas.width) // 2, (THUMBNAIL[1] - canvas.height) // 2))
    out.save(target, quality=85)

PROBE = """() => { const c = window.app.canvas;
  return {scale: c.ds.scale, offset: [c.ds.offset[0], c.ds.offset[1]],
          low_quality: !!c.low_quality, threshold: c.low_quality_zoom_threshold ?? null,
          width: c.canvas.width, height: c.canvas.height}; }"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", required=True, help="the comfy-e2e folder (browser.py, comfy_host.py)")
    parser.add_argument("--screenshots", default=None, help="folder for the as-opened screenshots")
    parser.add_argument("--thumbnails", action="store_true", help="write workflows/<name>.jpg from them")
    parser.add_argument("--workflows", nargs="*", default=None, help="UI workflow files (default: all shipped)")
    args = parser.parse_args()
    sys.path.insert(0, args.harness)
    import comfy_host  # noqa: E402 - the harness, found at run time
    from browser import FrontendSession

    comfy_host.ensure_harness_python(need=("websocket", "playwright"))
    files = [Path(p) for p in args.workflows] if args.workflows else sorted(REPO.glob("workflows/*.json"))
    shots = Path(args.screenshots or tempfile.mkdtemp(prefix="workflow-zoom-"))
    shots.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    with comfy_host.ComfyHost(plugins=[f"{REPO}:comfyui-colormnet"]) as host, FrontendSession(host.url) as fe:
        fe.open()
        for path in files:
            fe.load_workflow(str(path), via="file")
            fe.page.wait_for_timeout(800)
            view = fe.page.evaluate(PROBE)
            shot = shots / f"{path.stem}.png"
            fe.screenshot(str(shot))
            ok = view["scale"] >= MIN_ZOOM and not view["low_quality"]
            rows.append((path.name, view["scale"], view["low_quality"], ok, shot))
            if not ok:
                failed.append(path.name)
            if args.thumbnails:
                thumbnail(shot, path.with_suffix(".jpg"))
    print(f"{'workflow':44s} {'opens at':>8s}  low-quality  result")
    for name, scale, low, ok, shot in rows:
        print(f"{name:44s} {scale * 100:7.1f}%  {str(low):11s}  {'PASS' if ok else 'FAIL'}  {shot}")
    print(json.dumps({"min_zoom": MIN_ZOOM, "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
