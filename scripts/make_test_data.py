"""Rebuilds the repository's test data (tests/data) and example media (workflows/media) from a source
folder laid out like the project's `shared/` (default: ../shared beside the repository).

Only maintainers run this; the tests and workflows use what it wrote, committed in the repository.

    python scripts/make_test_data.py [--shared DIR]

What it writes (see tests/data/README.md for sources and licences):
* tests/data/golden/: the golden fixture's compressed weights, inputs, configs, stats, PNGs, and its float
  tensors (ab per frame, intermediates) packed losslessly as `.f32.xz` (see `pack_tensors`);
* tests/data/spec/: the official state-dict manifest and the ComfyUI /object_info snapshot;
* tests/data/blackswan/: 16 frames of the real clip at 416x240 (grey PNG) and its colour exemplar;
* workflows/media/: the example clips (416x240, 12 fps, H.264) and their exemplars, for the workflows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.golden import CONFIG_NAMES, pack_tensors  # noqa: E402

EXAMPLE_SIZE = (416, 240)      # width, height: the clip's aspect (832x480) halved
EXAMPLE_FRAMES = 24
TEST_CLIP_FRAMES = 16


def copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def golden(shared: Path, out: Path) -> None:
    src = shared / "fixtures" / "golden"
    for name in ("weights_base.safetensors", "configs.json"):
        copy(src / name, out / name)
    for path in sorted((src / "inputs").rglob("*.png")):
        copy(path, out / path.relative_to(src))
    for config in CONFIG_NAMES:
        copy(src / config / "stats.json", out / config / "stats.json")
        for png in sorted((src / config / "png").glob("*.png")):
            copy(png, out / config / "png" / png.name)
        pack_tensors(load_file(src / config / "ab.safetensors"), out / config / "ab.f32.xz")
    pack_tensors(load_file(src / "A_release" / "intermediates.safetensors"),
                 out / "A_release" / "intermediates.f32.xz")


def spec(shared: Path, out: Path) -> None:
    copy(shared / "spec" / "official_state_dict.tsv", out / "official_state_dict.tsv")
    info = json.loads((shared / "spec" / "comfyui_object_info.json").read_text())
    (out / "comfyui_object_info.json").write_text(json.dumps(info, separators=(",", ":"), sort_keys=True))


def resized(path: Path) -> np.ndarray:
    return cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), EXAMPLE_SIZE, interpolation=cv2.INTER_AREA)


def blackswan(shared: Path, out: Path) -> None:
    src = shared / "data" / "blackswan"
    frames = sorted((src / "frames").glob("*.png"))[:TEST_CLIP_FRAMES]
    (out / "frames").mkdir(parents=True, exist_ok=True)
    for path in frames:
        cv2.imwrite(str(out / "frames" / path.name), cv2.cvtColor(resized(path), cv2.COLOR_BGR2GRAY))
    (out / "exemplar").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "exemplar" / "00000.png"), resized(src / "exemplar" / "00000.png"))


def write_h264(path: Path, frames: list[np.ndarray], fps: int = 12, audio: bool = True) -> None:
    """BGR frames -> H.264 yuv420p mp4 (browser-playable), with a quiet synthetic AAC track (a 220 Hz
    tone fading in and out, made here) so the examples show that audio is carried through."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = EXAMPLE_SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        sound = container.add_stream("aac", rate=44100) if audio else None
        for bgr in frames:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            rate, seconds = 44100, len(frames) / fps
            t = np.arange(int(rate * seconds)) / rate
            wave = (0.1 * np.sin(2 * np.pi * 220 * t) * np.sin(np.pi * t / seconds)).astype(np.float32)
            step = 1024
            for start in range(0, wave.size, step):
                chunk = av.AudioFrame.from_ndarray(wave[None, start:start + step], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = rate, start
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)


def example_media(shared: Path, out: Path) -> None:
    """The basic clip (24 frames) and an honest two-shot clip for keyframes: blackswan frames 0-11, then
    the same frames mirrored, so frame 12's colour version is the mirrored colour frame 0 (a true
    exemplar for it, not a guess)."""
    src = shared / "data" / "blackswan"
    out.mkdir(parents=True, exist_ok=True)
    frames = [resized(p) for p in sorted((src / "frames").glob("*.png"))[:EXAMPLE_FRAMES]]
    write_h264(out / "colormnet_example.mp4", frames)
    half = EXAMPLE_FRAMES // 2
    write_h264(out / "colormnet_example_two_shots.mp4", frames[:half] + [f[:, ::-1] for f in frames[:half]])
    exemplar = resized(src / "exemplar" / "00000.png")
    cv2.imwrite(str(out / "colormnet_example_exemplar.png"), exemplar)
    cv2.imwrite(str(out / "colormnet_example_exemplar_mirrored.png"), np.ascontiguousarray(exemplar[:, ::-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = parser.parse_args()
    data = REPO / "tests" / "data"
    golden(args.shared, data / "golden")
    spec(args.shared, data / "spec")
    blackswan(args.shared, data / "blackswan")
    example_media(args.shared, REPO / "workflows" / "media")
    total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    print(f"tests/data: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
