"""Shot nodes called directly (no server): Detect Shots, Colorize's shot inputs and outputs, the plot."""

from __future__ import annotations

import json

import pytest
import torch

from . import golden
from .plugin import load_plugin, submodule

CUTS = (12, 24)   # where the three sources of `three_shot_clip` start


@pytest.fixture(scope="module")
def nodes():
    return load_plugin().NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def shots_module():
    return submodule("nodes.shots")


@pytest.fixture(scope="module")
def errors():
    return submodule("colormnet_core.errors")


def bhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).float() / 255


def three_shot_clip() -> torch.Tensor:
    """36 frames, IMAGE `36 x H x W x 3`: the golden clip, a bright gradient with noise,
    dark moving stripes; hard cuts at frames 12 and 24."""
    real = bhwc(golden.frames()[:12])
    n, h, w, _ = real.shape
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    gradient = torch.stack([(0.6 + 0.35 * xs + 0.03 * torch.rand(h, w, generator=g)).clamp(0, 1) for _ in range(12)])
    stripes = torch.stack([0.05 + 0.25 * (((xs * 9 + ys * 3 + 0.1 * t) % 1) > 0.5).float() for t in range(12)])
    synthetic = torch.cat([gradient, stripes])[..., None].expand(-1, -1, -1, 3)
    return torch.cat([real, synthetic * torch.tensor([1.0, 0.9, 0.8])]).contiguous()


def test_detect_shots_outputs_keyframes_and_indices_load_exemplar_reads(nodes):
    clip = three_shot_clip()
    before = clip.clone()
    shots, keyframes, indices, count, text = nodes["ColorMNetDetectShots"]().detect(0.2, 5, frames=clip)
    assert [tuple(s) for s in shots] == [(0, 11), (12, 23), (24, 35)]
    assert isinstance(shots, tuple) and count == 3 and text == "0-11,12-23,24-35" and indices == "0, 12, 24"
    assert torch.equal(keyframes, clip[[0, *CUTS]]) and torch.equal(clip, before)
    # The indices string is what Load Exemplar's batch_frames takes for the (coloured) keyframe batch.
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(keyframes, 0, batch_frames=indices)
    assert [e.frame for e in exemplars] == [0, *CUTS]


def test_min_shot_length_is_passed_to_the_detector(nodes):
    shots, keyframes, indices, count, _ = nodes["ColorMNetDetectShots"]().detect(0.2, 13, frames=three_shot_clip())
    assert all(s.length >= 13 for s in shots[:-1]) and 12 not in [s.first for s in shots]
    assert keyframes.shape[0] == count == len(shots) and indices == ", ".join(str(s.first) for s in shots)


class FakeVideo:
    """A ComfyUI VIDEO stand-in: components only (no file), or a file path as stream source."""

    def __init__(self, images=None, path=None):
        self.images, self.path = images, path

    def get_stream_source(self):
        return str(self.path) if self.path else None

    def get_components(self):
        if self.images is None:
            raise AssertionError("components decoded although the video has a file")
        return type("Components", (), {"images": self.images})()


def test_detect_shots_reads_a_video_input(nodes, tmp_path):
    import cv2

    clip = three_shot_clip()
    node = nodes["ColorMNetDetectShots"]()
    from_components = node.detect(0.2, 5, video=FakeVideo(images=clip))
    assert from_components[2] == "0, 12, 24" and torch.equal(from_components[1], clip[[0, *CUTS]])
    path = tmp_path / "clip.avi"   # MJPG keeps the cuts; frames streamed from the file
    clip = clip[:, :184, :320]     # even sizes: the codec's chroma subsampling would crop odd ones
    h, w = clip.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12, (w, h))
    for frame in (clip * 255).round().byte().numpy():
        writer.write(frame[:, :, ::-1].copy())
    writer.release()
    shots, keyframes, indices, count, _ = node.detect(0.2, 5, video=FakeVideo(path=path))
    assert indices == "0, 12, 24" and keyframes.shape == (3, h, w, 3) and keyframes.dtype == torch.float32
    assert (keyframes - clip[[0, *CUTS]]).abs().mean() < 0.05   # JPEG-compressed copies of the keyframes


def test_detect_shots_wants_exactly_one_input(nodes, errors):
    node = nodes["ColorMNetDetectShots"]()
    with pytest.raises(errors.InputError, match="neither"):
        node.detect(0.2, 5)
    with pytest.raises(errors.InputError, match="both"):
        node.detect(0.2, 5, frames=torch.rand(2, 8, 8, 3), video=FakeVideo(images=torch.rand(2, 8, 8, 3)))


def test_session_shots_maps_the_switch_and_rejects_contradictions(shots_module, errors):
    core = submodule("colormnet_core.shots")
    shots = (core.Shot(0, 4), core.Shot(5, 9))
    assert shots_module.session_shots("none (official)", None, 10) is None
    assert shots_module.session_shots("auto", None, 10) == "auto"
    assert shots_module.session_shots("from input", shots, 10) == list(shots)
    with pytest.raises(errors.InputError, match="no shot list is connected"):
        shots_module.session_shots("from input", None, 10)
    with pytest.raises(errors.InputError, match="would be ignored"):
        shots_module.session_shots("auto", shots, 10)
    with pytest.raises(errors.InputError, match="covers frames 0-9 .* 12 frames"):
        shots_module.session_shots("from input", shots, 12)


def test_colorize_keeps_its_old_outputs_first_and_new_inputs_optional(nodes):
    cls = nodes["ColorMNetColorize"]
    assert cls.RETURN_TYPES[0] == "IMAGE" and cls.RETURN_NAMES[0] == "images"
    assert cls.RETURN_TYPES[1:] == ("IMAGE", "STRING") and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    spec = cls.INPUT_TYPES()
    assert {"shots", "shot_list"} <= set(spec["optional"]) and "shots" not in spec["required"]
    assert spec["optional"]["shots"][0][0] == "none (official)"


def _colour_at(plot: torch.Tensor, x: int, colour) -> bool:
    column = (plot[0, :, x] * 255).round()
    return bool(((column - torch.tensor(colour, dtype=column.dtype)).abs().sum(-1) < 30).any())


def test_confidence_plot_marks_cuts_and_frames_needing_an_exemplar(shots_module, errors):
    confidence = [1.0] + [0.8] * 29 + [0.2] * 30
    plot = shots_module.confidence_plot(confidence, [(0, 29), (30, 59)], [30], [0])
    width, height = shots_module.PLOT_SIZE
    assert plot.shape == (1, height, width, 3) and plot.dtype == torch.float32
    assert plot.min() >= 0 and plot.max() <= 1
    cut_x = 62 + round((width - 80) * 30 / 60)            # between frames 29 and 30
    assert _colour_at(plot, cut_x, shots_module._CUT)
    assert not _colour_at(plot, cut_x - 60, shots_module._CUT)
    rows = slice(0, 50)                                    # the triangles sit above the plot area
    assert _colour_at(plot[:, rows], cut_x + 4, shots_module._NEED)
    plain = shots_module.confidence_plot(confidence, [(0, 59)], [], [0])
    assert not _colour_at(plain[:, rows], cut_x + 4, shots_module._NEED)
    # The curve is high on the left half and low on the right half.
    line = (plain[0] * 255 - torch.tensor(shots_module._LINE)).abs().sum(-1) < 30
    left_rows = line[:, 100].nonzero()[:, 0].float().mean()
    right_rows = line[:, width - 100].nonzero()[:, 0].float().mean()
    assert left_rows < right_rows - 100
    with pytest.raises(errors.InputError, match="no confidence"):
        shots_module.confidence_plot([], [], [], [])


@pytest.mark.slow
def test_colorize_with_shots_reports_confidence_and_the_shot_without_exemplar(nodes, golden_checkpoint, tmp_path,
                                                                             monkeypatch, errors):
    (tmp_path / "fixture.safetensors").symlink_to(golden_checkpoint)
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path))
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    clip = three_shot_clip()[6:30, ::2, ::2].contiguous()   # cuts at frames 6 and 18; 93 x 161 to stay quick
    shots, keyframes, indices, _, _ = nodes["ColorMNetDetectShots"]().detect(0.2, 5, frames=clip)
    assert indices == "0, 6, 18"
    colorize = nodes["ColorMNetColorize"]()

    def memory_for(images, batch_frames):
        (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(images, 0, batch_frames=batch_frames)
        (encoded,) = nodes["ColorMNetEncode"]().encode(model, exemplars)
        return nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)[0]

    everyone = memory_for(torch.rand(3, 32, 48, 3), indices)
    images, plot, report = colorize.colorize(model, everyone, clip, "official (no resize)", True, 4,
                                             shots="from input", shot_list=shots)
    report = json.loads(report)
    assert images.shape == clip.shape and plot.shape[0] == 1 and plot.shape[-1] == 3
    assert report["shots"] == [[0, 5], [6, 17], [18, 23]] and len(report["confidence"]) == 24
    assert report["reset_at_cuts"] and not {0, 6, 18} & set(report["needs_exemplar"])
    assert [report["confidence"][f] for f in (0, 6, 18)] == [1.0, 1.0, 1.0]
    # auto with a min_shot_length that drops the cut at 6 (6 frames after frame 0): reported, and shown.
    shown = []
    monkeypatch.setattr(submodule("nodes.host"), "show_text",
                        lambda node_id, lines, notes=(): shown.append((node_id, list(notes))))
    _, _, dropped = colorize.colorize(model, memory_for(torch.rand(2, 32, 48, 3), "0, 18"), clip,
                                      "official (no resize)", True, 4, shots="auto", min_shot_length=13,
                                      unique_id="9")
    dropped = json.loads(dropped)
    assert dropped["shots"] == [[0, 17], [18, 23]] and dropped["ignored_cuts"] == [6]
    assert any("frame(s) 6 ignored" in note for note in shown[-1][1])
    # The scene from frame 6 is read against frame 0's memory: flagged when its confidence drops.
    assert (6 in dropped["needs_exemplar"]) == (min(dropped["confidence"][6:18]) < 0.5)
    first_only = memory_for(torch.rand(1, 32, 48, 3), "0")
    for mode, shot_list in (("from input", shots), ("auto", None)):
        with pytest.raises(errors.InputError, match="shot 1"):
            colorize.colorize(model, first_only, clip, "official (no resize)", True, 4,
                              shots=mode, shot_list=shot_list)
    _, plot, report = colorize.colorize(model, first_only, clip, "official (no resize)", True, 4)
    report = json.loads(report)    # official behaviour: one run, colours carried across the cuts
    assert report["shots"] == [[0, 23]] and not report["reset_at_cuts"] and len(report["confidence"]) == 24
    assert plot.shape == (1, *reversed(submodule("nodes.shots").PLOT_SIZE), 3)


# -- issue 17: shot lists as text, grey keyframes, ignored cuts, the plot's markers -----------------

def test_shot_list_takes_the_clis_text_and_pairs_and_names_what_does_not_fit(shots_module, errors):
    session_shots = shots_module.session_shots
    expected = [(0, 11), (12, 23)]
    for given in ("0-11,12-23", " 0-11, 12-23 ", [[0, 11], [12, 23]], [(0, 11), (12, 23)]):
        assert [tuple(s) for s in session_shots("from input", given, 24)] == expected, given
    assert session_shots("from input", "auto", 24) == "auto"
    with pytest.raises(errors.InputError, match=r"cannot read shot '12_23'.*0-119,120-300"):
        session_shots("from input", "0-11,12_23", 24)
    # Text or pairs that do not fit the video: the same message as Detect Shots' list.
    for given in ("0-11,12-23", [[0, 11], [12, 23]]):
        with pytest.raises(errors.InputError, match=r"covers frames 0-23 \(0-11,12-23\) but the video has 16 frames"):
            session_shots("from input", given, 16)
    with pytest.raises(errors.InputError, match="shot_list must be"):
        session_shots("from input", [["a", "b"]], 16)
    with pytest.raises(errors.InputError, match="no shot list is connected"):
        session_shots("from input", "none", 16)
    # The socket takes Detect Shots' list and STRING (a String node) alike.
    assert shots_module.shot_inputs()["shot_list"][0] == "COLORMNET_SHOTS,STRING"


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_detect_shots_keyframes_are_rgb_whatever_comes_in(nodes, channels):
    clip = three_shot_clip()
    frames = clip[..., :1] if channels == 1 else torch.cat([clip, torch.ones_like(clip[..., :1])], -1)[..., :channels]
    _, keyframes, indices, _, _ = nodes["ColorMNetDetectShots"]().detect(0.2, 5, frames=frames)
    assert indices == "0, 12, 24" and keyframes.shape == (3, *clip.shape[1:3], 3)
    assert torch.equal(keyframes[..., 0], frames[[0, *CUTS]][..., 0])
    _, from_video, *_ = nodes["ColorMNetDetectShots"]().detect(0.2, 5, video=FakeVideo(images=frames))
    assert from_video.shape == keyframes.shape


def test_detect_shots_shows_the_cuts_it_ignored(nodes, monkeypatch):
    host = submodule("nodes.host")
    shown = []
    monkeypatch.setattr(host, "show_text", lambda node_id, lines, notes=(): shown.append((node_id, list(lines))))
    shots, *_ = nodes["ColorMNetDetectShots"]().detect(0.2, 15, frames=three_shot_clip(), unique_id="4")
    assert [tuple(s) for s in shots] == [(0, 23), (24, 35)]   # the cut at 12 is 12 frames after frame 0
    (node_id, (line,)), = shown
    assert node_id == "4" and "frame(s) 12 ignored" in line and "min_shot_length (15 frames)" in line


def test_confidence_plot_numbers_its_markers(shots_module):
    confidence = [0.9] * 30

    def red_label_pixels(needs):
        img = (shots_module.confidence_plot(confidence, [(0, 29)], needs)[0] * 255).round().byte()
        band = img[30:50]   # above the plot area, where the markers and their numbers sit
        red = (band[..., 0] > 150) & (band[..., 1] < 90) & (band[..., 2] < 90)
        return red.nonzero()[:, 1]

    assert red_label_pixels([]).numel() == 0
    xs = red_label_pixels([13])
    marker_x = 62 + round((640 - 62 - 18) * 13.5 / 30)
    assert xs.numel() and xs.max() > marker_x + 14   # the number "13" right of the triangle


def test_colorize_nodes_expose_the_auto_detector_settings(nodes):
    for name in ("ColorMNetColorize", "ColorMNetVideo"):
        optional = nodes[name].INPUT_TYPES()["optional"]
        assert list(optional)[-3:] == ["shot_threshold", "min_shot_length", "propagation"]   # appended: old
        # workflows keep their widget order
        assert optional["shot_threshold"][1]["default"] == 0.2 and optional["min_shot_length"][1]["default"] == 10


def test_both_colorize_nodes_hand_text_shot_lists_to_the_session(nodes, monkeypatch, errors, tmp_path):
    """Valid text reaches the session as shots; bad text is refused before any work."""
    colorize, video = submodule("nodes.colorize"), submodule("nodes.video")
    seen = []

    class Done(Exception):
        pass

    def fake_run(*args, shots=None, detector=None, **kwargs):
        seen.append(([tuple(s) for s in shots], detector.min_shot_length))
        raise Done

    monkeypatch.setattr(colorize, "run_session", fake_run)
    monkeypatch.setattr(video, "run_session", fake_run)
    monkeypatch.setattr(colorize, "preflight", lambda *a: [])
    model = submodule("nodes.model").ColorMNetModel(tmp_path / "unused.safetensors", "fp32")
    frames = torch.rand(24, 16, 16, 3)
    with pytest.raises(Done):
        nodes["ColorMNetColorize"]().colorize(model, None, frames, "240", True, 1, shots="from input",
                                              shot_list="0-11,12-23", min_shot_length=7)
    memory = type("Memory", (), {"exemplars": type("E", (), {"pinned_frames": (), "exemplars": ()})()})()
    clip = FakeVideo(images=frames)
    clip.get_components = lambda: type("C", (), {"images": frames, "frame_rate": 24.0})()
    with pytest.raises(Done):
        nodes["ColorMNetVideo"]().colorize(model, memory, clip, "240", True, 1, shots="from input",
                                           shot_list="0-11,12-23", min_shot_length=7)
    assert seen == [([(0, 11), (12, 23)], 7)] * 2
    for node, source in ((nodes["ColorMNetColorize"](), frames), (nodes["ColorMNetVideo"](), clip)):
        with pytest.raises(errors.InputError, match="cannot read shot '0-11;12-23'"):
            node.colorize(model, memory, source, "240", True, 1, shots="from input", shot_list="0-11;12-23")
