"""The VIDEO nodes called directly (no server): VIDEO in (the standalone stand-in for Load Video's),
H.264 VIDEO out with the source's audio, nothing left behind on bad input or Cancel."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

from .clips import frame_pixels, make_clip, probe
from .plugin import load_plugin, submodule


@pytest.fixture(scope="module")
def nodes():
    return load_plugin().NODE_CLASS_MAPPINGS


def memory_for(nodes, size=(64, 48)):
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    exemplar = torch.rand(1, size[1], size[0], 3)
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(exemplar, 0)
    (encoded,) = nodes["ColorMNetEncode"]().encode(model, exemplars)
    (memory,) = nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)
    return model, memory


def test_video_node_takes_and_returns_comfyui_video(nodes):
    video_node = nodes["ColorMNetVideo"]
    spec = video_node.INPUT_TYPES()["required"]
    assert spec["video"][0] == "VIDEO" and video_node.RETURN_TYPES[0] == "VIDEO"   # old links: slot 0
    assert video_node.INPUT_TYPES()["optional"]["shots"][1]["default"] == "none (official)"
    assert spec["crf"][1]["default"] == 18 and "Save Video" in video_node.DESCRIPTION
    assert load_plugin().NODE_DISPLAY_NAME_MAPPINGS["ColorMNetVideo"] == "ColorMNet Colorize Video"
    assert nodes["ColorMNetColorizeVideo"].DEPRECATED is True          # kept for saved workflows


def test_video_node_refuses_a_renamed_image_and_leaves_nothing(nodes, folders):
    cv2.imwrite(str(folders / "still.png"), np.zeros((48, 64, 3), np.uint8))
    shutil.copy(folders / "still.png", folders / "input" / "film.mp4")
    video = submodule("nodes.video")
    errors = submodule("colormnet_core.errors")
    with pytest.raises(errors.InputError, match="film.mp4 is a single PNG image, not a video"):
        nodes["ColorMNetVideo"]().colorize(None, None, video.VideoFile(folders / "input" / "film.mp4"),
                                           "official (no resize)", True, 2)
    assert list((folders / "temp").iterdir()) == []


@pytest.mark.slow
def test_video_node_writes_h264_with_the_source_audio(nodes, folders, monkeypatch):
    clip = make_clip(folders / "input" / "film.mp4", frames=5, fps=10, audio_seconds=0.5)
    host, video = submodule("nodes.host"), submodule("nodes.video")
    shown = []
    monkeypatch.setattr(host, "show_text", lambda node_id, lines, notes=(): shown.append((node_id, lines)))
    model, memory = memory_for(nodes)      # its exemplar (noise) is pinned to frame 0 (a gradient)
    out = nodes["ColorMNetVideo"]().colorize(model, memory, video.VideoFile(clip), "custom", True, 2, 18,
                                             custom_size=64, unique_id="7")
    lines = [lines for node_id, lines in shown if node_id == "7"][-1]   # the text after the run
    assert any("pinned to frame 0 does not match that frame's brightness" in line for line in lines), shown
    result = out["result"][0]   # then confidence_plot, report
    assert isinstance(result, video.VideoFile) and result.path.parent == folders / "temp"
    assert out["ui"] == {"images": [{"filename": result.path.name, "subfolder": "", "type": "temp"}],
                         "animated": [True]}
    before, after = probe(clip), probe(result.path)
    assert after["video_codec"] == "h264" and after["pix_fmt"] == "yuv420p" and after["frames"] == 5
    assert after["audio_codec"] == "aac" and after["audio_bytes"] == before["audio_bytes"]
    assert after["times"] == pytest.approx(before["times"], abs=1e-6)
    assert [p.name for p in (folders / "temp").iterdir()] == [result.path.name]
    # What Save Video does with it (standalone stand-in: a copy); the file plays back in colour.
    result.save_to(folders / "output" / "saved.mp4")
    frame = next(iter(video.open_video(video.VideoFile(folders / "output" / "saved.mp4"))))
    assert frame.shape == (3, 48, 64) and (frame[0].float() - frame[2].float()).abs().mean() > 1
    # A re-run of the same node replaces its temp file (a film would otherwise cost its size per run);
    # another node's file stays.
    (folders / "temp" / "colormnet_n8_0123456789ab.mp4").write_bytes(b"other node")
    again = nodes["ColorMNetVideo"]().colorize(model, memory, video.VideoFile(clip), "custom", True, 2, 18,
                                               custom_size=64, unique_id="7")["result"][0]
    assert sorted(p.name for p in (folders / "temp").iterdir()) == sorted(
        [again.path.name, "colormnet_n8_0123456789ab.mp4"]) and again.path.name.startswith("colormnet_n7_")


@pytest.mark.slow
def test_cancel_mid_video_leaves_no_file(nodes, folders, monkeypatch):
    clip = make_clip(folders / "input" / "film.mp4", frames=8, fps=10)
    host, video = submodule("nodes.host"), submodule("nodes.video")
    errors = submodule("colormnet_core.errors")
    model, memory = memory_for(nodes)
    polls = []

    def interrupted():   # the user presses Cancel while the third frame is being read
        polls.append(1)
        return len(polls) > 2

    monkeypatch.setattr(host, "interrupted", interrupted)
    with pytest.raises(errors.Cancelled, match=r"cancelled after \d+ frames"):
        nodes["ColorMNetVideo"]().colorize(model, memory, video.VideoFile(clip), "official (no resize)", True, 1)
    assert list((folders / "temp").iterdir()) == []
    # The deprecated file node: same writer, nothing in output/ either.
    polls.clear()
    with pytest.raises(errors.Cancelled):
        nodes["ColorMNetColorizeVideo"]().colorize(model, memory, "film.mp4", "colormnet/film",
                                                   "official (no resize)", True, 1)
    assert [p for p in (folders / "output").rglob("*") if p.is_file()] == []


@pytest.mark.slow
def test_deprecated_file_node_writes_h264_with_audio_into_output(nodes, folders):
    clip = make_clip(folders / "input" / "film.mp4", frames=4, fps=10, audio_seconds=0.4)
    model, memory = memory_for(nodes)
    out = nodes["ColorMNetColorizeVideo"]().colorize(model, memory, "film.mp4", "colormnet/film",
                                                     "official (no resize)", True, 2)
    path = folders / "output" / "colormnet" / "film_00001_.mp4"
    assert out["result"] == (str(path),) and out["ui"]["images"][0]["subfolder"] == "colormnet"
    after = probe(path)
    assert after["video_codec"] == "h264" and after["frames"] == 4 and after["audio_codec"] == "aac"
    assert abs(after["duration"] - probe(clip)["duration"]) < 1 / 10
    assert sorted(p.name for p in path.parent.iterdir()) == ["film_00001_.mp4"]


@pytest.mark.slow
def test_video_node_accepts_a_video_made_from_frames(nodes, folders):
    from fractions import Fraction
    from types import SimpleNamespace

    class FramesVideo:   # the shape of ComfyUI's VideoFromComponents (Create Video's output)
        def get_components(self):
            audio = {"waveform": torch.zeros(1, 1, 8000).uniform_(-0.2, 0.2), "sample_rate": 16000}
            return SimpleNamespace(images=torch.rand(3, 48, 64, 3), frame_rate=Fraction(6), audio=audio)

    model, memory = memory_for(nodes)
    out = nodes["ColorMNetVideo"]().colorize(model, memory, FramesVideo(), "official (no resize)", True, 2)
    after = probe(out["result"][0].path)
    assert after["frames"] == 3 and after["audio_codec"] == "aac" and after["video_codec"] == "h264"
    assert after["times"] == pytest.approx([0, 1 / 6, 2 / 6], abs=1e-3)


@pytest.mark.slow
def test_video_node_finds_the_shots_itself_and_reports_confidence(nodes, folders):
    from fractions import Fraction
    from types import SimpleNamespace

    # Shot 0: the moving gradient (10 frames, the detector's shortest shot); shot 1: dark stripes.
    stripes = np.zeros((48, 64, 3), np.uint8)
    stripes[:, ::8] = (20, 40, 200)
    pixels = [frame_pixels(i, 48, 64) for i in range(10)] + [np.roll(stripes, i, axis=1) for i in range(2)]
    images = torch.from_numpy(np.stack(pixels)).float() / 255

    class FramesVideo:   # Create Video's VIDEO: still colorized one frame at a time
        def get_components(self):
            return SimpleNamespace(images=images, frame_rate=Fraction(10), audio=None)

    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(images[:1].flip(-1), 0)
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(images[10:11].flip(-1), 10, exemplars)
    (encoded,) = nodes["ColorMNetEncode"]().encode(model, exemplars)
    (memory,) = nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)
    out = nodes["ColorMNetVideo"]().colorize(model, memory, FramesVideo(), "official (no resize)", True, 1,
                                             shots="auto")
    video, plot, report = out["result"]
    report = json.loads(report)
    assert report["shots"] == [[0, 9], [10, 11]] and len(report["confidence"]) == 12
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.shape[1] > 100
    assert probe(video.path)["frames"] == 12


# -- issue 17: frame rate, NaN, notes on the node ---------------------------------------------------

@pytest.mark.parametrize("rate", [0, Fraction(-5), float("nan"), float("inf"), None])
def test_a_video_built_with_no_usable_frame_rate_is_refused_before_any_work(nodes, folders, rate):
    from types import SimpleNamespace

    errors = submodule("colormnet_core.errors")

    class FramesVideo:   # Create Video's VIDEO, with the rate it was given (0: Get Video Components had none)
        def get_components(self):
            return SimpleNamespace(images=torch.rand(2, 16, 16, 3), frame_rate=rate, audio=None)

    with pytest.raises(errors.InputError, match=r"frame rate is (0|-5|nan|inf|None): .*set fps on Create Video") as e:
        nodes["ColorMNetVideo"]().colorize(None, None, FramesVideo(), "240", True, 1)   # no model needed: before work
    assert "Get Video Components" in str(e.value)
    assert list((folders / "temp").iterdir()) == []


def test_nan_in_a_videos_frames_names_the_frame(nodes, folders):
    from types import SimpleNamespace

    errors = submodule("colormnet_core.errors")
    images = torch.rand(4, 16, 16, 3)
    images[2, 3, 3, 1] = float("nan")
    video = SimpleNamespace(get_components=lambda: SimpleNamespace(images=images, frame_rate=24, audio=None))
    with pytest.raises(errors.InputError, match=r"NaN or infinite values in the VIDEO's frames: frame 2 is the first"):
        nodes["ColorMNetVideo"]().colorize(None, None, video, "240", True, 1)


@pytest.mark.slow
def test_odd_sized_frames_get_a_padding_note_on_the_node(nodes, folders, monkeypatch):
    from fractions import Fraction
    from types import SimpleNamespace

    host = submodule("nodes.host")
    shown = []
    monkeypatch.setattr(host, "show_text", lambda node_id, lines, notes=(): shown.append(list(notes)))
    images = torch.rand(2, 47, 63, 3)

    class FramesVideo:
        def get_components(self):
            return SimpleNamespace(images=images, frame_rate=Fraction(8), audio=None)

    model, memory = memory_for(nodes, size=(63, 47))
    out = nodes["ColorMNetVideo"]().colorize(model, memory, FramesVideo(), "official (no resize)", True, 1,
                                             unique_id="3")
    assert probe(out["result"][0].path)["frames"] == 2
    assert any("63x47" in n and "padded to 64x48" in n for n in shown[-1]), shown
