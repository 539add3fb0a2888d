"""The film nodes called directly (no server): Film Project -> Film Shot -> (exemplar) -> Render Shot, one
shot per call as one queued prompt does it, then Assemble Film. Tiny 3-shot clip with sound, processing
size 112, the fixture network."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from .clips import make_shot_clip, panning_field, probe
from .plugin import load_plugin, submodule

SHOT = 6                    # frames per shot of the test clip
SIZE = (112, 64)            # width, height


@pytest.fixture(scope="module")
def nodes():
    return load_plugin().NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def errors():
    return submodule("colormnet_core.errors")


@pytest.fixture()
def shown(monkeypatch):
    """What the nodes show on themselves: [(node id, lines), ...]."""
    host = submodule("nodes.host")
    lines_shown = []
    monkeypatch.setattr(host, "show_status", lambda node_id, lines: lines_shown.append((node_id, list(lines))))
    return lines_shown


def shot_pixels(i: int) -> np.ndarray:
    """Frame i of the test clip, uint8 `H x W x 3` (each shot a different panning colour field)."""
    shot, t = divmod(i, SHOT)
    return panning_field(SHOT, SIZE[1], SIZE[0], seed=10 + shot)[t]


def make_three_shot_clip(path, fps: int = 12):
    """Three shots of SHOT frames with hard cuts, a keyframe every 5 frames (shots start between them), and a
    440 Hz AAC track."""
    return make_shot_clip(path, shots=(SHOT,) * 3, size=SIZE, fps=fps)


def film_project(nodes, clip, name="test film", **kwargs):
    video = submodule("nodes.video")
    out = nodes["ColorMNetFilmProject"]().open_film(name, 0.2, 3, video=video.VideoFile(clip), unique_id="1",
                                                    **kwargs)
    return out["result"][0], out["ui"]["text"]


def memory_with(nodes, model, image: torch.Tensor, batch_frames: str):
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(image, 0, batch_frames=batch_frames)
    (encoded,) = nodes["ColorMNetEncode"]().encode(model, exemplars)
    (memory,) = nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)
    return memory


def coloured(keyframe: torch.Tensor) -> torch.Tensor:
    """What an image model might make of a keyframe: tinted, at another size."""
    tinted = keyframe * torch.tensor([1.0, 0.7, 0.4])
    return torch.nn.functional.interpolate(tinted.permute(0, 3, 1, 2), size=(96, 168)).permute(0, 2, 3, 1)


def render(nodes, film, model, memory, shot, **options):
    return nodes["ColorMNetRenderShot"]().render(film, model, memory, shot, "custom", True, 1, 18, custom_size=112,
                                                 unique_id="4", **options)


REDO = "redo with the new exemplar"


def test_film_nodes_declare_help_and_the_incrementing_shot(nodes):
    for node_id in ("ColorMNetFilmProject", "ColorMNetFilmShot", "ColorMNetRenderShot", "ColorMNetAssembleFilm"):
        cls = nodes[node_id]
        assert len(cls.DESCRIPTION) > 80 and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        for group in ("required", "optional"):
            for name, spec in cls.INPUT_TYPES().get(group, {}).items():
                assert spec[0] in ("FILM", "COLORMNET_MODEL") or "tooltip" in spec[1], f"{node_id}.{name}"
    shot = nodes["ColorMNetFilmShot"].INPUT_TYPES()["required"]["shot"]
    assert shot[1]["control_after_generate"] is True and shot[1]["min"] == 0
    assert nodes["ColorMNetRenderShot"].OUTPUT_NODE is True
    assert nodes["ColorMNetFilmShot"].RETURN_NAMES == ("keyframe", "frame", "first", "last", "shot")


def test_project_names_stay_inside_the_films_folder_and_work_on_every_os(nodes, folders, errors):
    for name in ("../escape", "a/b", "", ".hidden", "a:b"):
        with pytest.raises(errors.InputError, match="plain folder name"):
            nodes["ColorMNetFilmProject"]().open_film(name, 0.2, 3)
    for name in ("con", "NUL", "aux.film", "com1", "lpt9", "Con.txt"):
        with pytest.raises(errors.InputError, match="device name on Windows"):
            nodes["ColorMNetFilmProject"]().open_film(name, 0.2, 3)
    with pytest.raises(errors.InputError, match="ends with '.'"):
        nodes["ColorMNetFilmProject"]().open_film("film.", 0.2, 3)
    for name in ("Le Mépris", "映画", "console", "com10"):     # letters of any script; only device names refused
        with pytest.raises(errors.InputError, match="no film project named"):
            nodes["ColorMNetFilmProject"]().open_film(name, 0.2, 3)
    with pytest.raises(errors.InputError, match="no film project named 'new' .* connect a VIDEO"):
        nodes["ColorMNetFilmProject"]().open_film("new", 0.2, 3)
    assert not (folders / "output" / "colormnet_films" / "new").exists()


def test_project_detects_the_shots_once_and_film_shot_gives_each_keyframe(nodes, folders, shown, errors):
    clip = make_three_shot_clip(folders / "input" / "film.mp4")
    film, text = film_project(nodes, clip)
    project_dir = folders / "output" / "colormnet_films" / "test film"
    assert film.dir == project_dir and film.shots == ((0, 5), (6, 11), (12, 17)) and film.frame_count == 18
    assert "3 shots, 18 frames: 0 done, 0 stale, 0 to render, 3 needing an exemplar." in text[0]
    assert shown[-1] == ("1", text)
    for shot, first in enumerate((0, 6, 12)):
        out = nodes["ColorMNetFilmShot"]().pick(film, shot, unique_id="2")
        keyframe, frame, first_out, last, index = out["result"]
        assert keyframe.shape == (1, SIZE[1], SIZE[0], 3) and keyframe.dtype == torch.float32
        expected = torch.from_numpy(shot_pixels(first)).float() / 255
        assert (keyframe[0] - expected).abs().mean() < 0.03                 # the shot's first frame (H.264)
        assert (frame, first_out, last, index) == (str(first), first, first + 5, shot)
    # Reopened (same name, same file): nothing detected again, same shots.
    assert film_project(nodes, clip)[0] == film
    # Another film under the same name is refused, and the project is untouched.
    other = make_three_shot_clip(folders / "input" / "other.mp4", fps=10)
    with pytest.raises(errors.InputError, match="was made from .*film.mp4.* the video connected is .*other.mp4"):
        film_project(nodes, other)


def api_prompt(memory_inputs: dict | None = None) -> dict:
    """The part of a queued prompt Render Shot (node "15") reads: its memory input's ColorMNet Memory node."""
    memory = {"encoded": ["13", 0], "mem_every": 5, "min_mid_term_frames": 5, "max_mid_term_frames": 10,
              "num_prototypes": 128, "max_long_term_elements": 10000, "top_k": 30, "long_term": True,
              "permanent_exemplars": True, **(memory_inputs or {})}
    return {"14": {"class_type": "ColorMNetMemory", "inputs": memory},
            "15": {"class_type": "ColorMNetRenderShot", "inputs": {"memory": ["14", 0]}}}


def test_render_shot_asks_for_the_image_models_exemplar_only_when_the_shot_needs_one(nodes, folders):
    """Render Shot's memory input is lazy: evaluated (the image model runs) for a shot without an exemplar in
    the project or when done_shot says redo; a shot with one renders from it, or is skipped when done."""
    film, _ = film_project(nodes, make_three_shot_clip(folders / "input" / "film.mp4"))
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    node = nodes["ColorMNetRenderShot"]
    assert node.INPUT_TYPES()["required"]["memory"][1]["lazy"] is True
    assert node.INPUT_TYPES()["hidden"]["prompt"] == "PROMPT"

    def needs(shot, prompt=None, **options):
        return node().check_lazy_status(film, model, None, shot, "custom", True, 1, 18, custom_size=112,
                                        prompt=api_prompt() if prompt is None else prompt, unique_id="15", **options)

    assert needs(0) == ["memory"]                                       # no exemplar yet: the image model runs
    (film.dir / "exemplars" / "000000.png").write_bytes((film.dir / "keyframes" / "000000.png").read_bytes())
    assert needs(0) == []                                               # rendered from the project's exemplar
    assert needs(0, done_shot=REDO) == ["memory"]
    assert needs(1, done_shot="revert to the previous exemplar") == []
    assert needs(0, prompt=api_prompt({"top_k": ["20", 0]})) == ["memory"]   # a setting it cannot read here
    assert needs(0, prompt={}) == ["memory"]
    assert node().check_lazy_status(film, model, "memory given", 0, "480", True, 1, 18) == []


def test_film_shot_extracts_a_missing_keyframe_again(nodes, folders):
    film, _ = film_project(nodes, make_three_shot_clip(folders / "input" / "film.mp4"))
    keyframe = film.dir / "keyframes" / "000006.png"
    original = nodes["ColorMNetFilmShot"]().pick(film, 1)["result"][0]
    keyframe.unlink()
    again = nodes["ColorMNetFilmShot"]().pick(film, 1)["result"][0]
    assert keyframe.is_file() and torch.equal(again, original)
    keyframe.write_bytes(b"damaged")
    assert torch.equal(nodes["ColorMNetFilmShot"]().pick(film, 1)["result"][0], original)


def test_status_text_goes_to_the_prompts_own_client_only(monkeypatch):
    """ComfyUI's send_progress_text without a sid reaches every browser; ours passes the running prompt's
    client id (PromptServer.client_id), and sends nothing for a prompt queued without one."""
    host = submodule("nodes.host")
    sent = []
    instance = SimpleNamespace(client_id="alice",
                               send_progress_text=lambda text, node_id, sid=None: sent.append((node_id, sid, text)))
    server = SimpleNamespace(PromptServer=SimpleNamespace(instance=instance))
    monkeypatch.setattr(host, "_comfy", lambda name: server if name == "server" else None)
    host.show_status("7", ["4 shots, 48 frames"])
    host.show_text("8", ["a warning"])
    assert sent == [("7", "alice", "4 shots, 48 frames"), ("8", "alice", "Warning: a warning")]
    instance.client_id = None
    host.show_status("7", ["Shot 1 of 4"])
    assert len(sent) == 2


def test_a_shot_past_the_last_does_nothing_and_says_how_many_there_are(nodes, folders, shown):
    film, _ = film_project(nodes, make_three_shot_clip(folders / "input" / "film.mp4"))
    out = nodes["ColorMNetFilmShot"]().pick(film, 3, unique_id="2")
    # Standalone the blocker is None; in ComfyUI it is an ExecutionBlocker that silently stops every
    # node fed from Film Shot (the image model, Render Shot), so the prompt does nothing.
    assert out["result"] == (None,) * 5
    message = "the film has 3 shots, 0-2; shot 3 does not exist"
    assert message in out["ui"]["text"][0].lower() and "set the batch count to 3" in out["ui"]["text"][0]
    assert shown[-1][0] == "2" and message in shown[-1][1][0].lower()


def test_a_video_held_in_memory_is_written_once_into_the_project(nodes, folders):
    images = torch.from_numpy(np.stack([shot_pixels(i) for i in range(3 * SHOT)])).float() / 255

    class FramesVideo:   # the shape of ComfyUI's VideoFromComponents (Create Video's output)
        def get_components(self):
            return SimpleNamespace(images=images, frame_rate=Fraction(12), audio=None)

    out = nodes["ColorMNetFilmProject"]().open_film("memory", 0.2, 3, video=FramesVideo())
    film = out["result"][0]
    assert film.shots == ((0, 5), (6, 11), (12, 17))
    assert probe(film.dir / "source.mp4")["frames"] == 18
    again = nodes["ColorMNetFilmProject"]().open_film("memory", 0.2, 3, video=FramesVideo())
    assert again["result"][0] == film


@pytest.mark.slow
def test_one_prompt_per_shot_renders_the_film_then_assemble_joins_it(nodes, folders, errors):
    clip = make_three_shot_clip(folders / "input" / "film.mp4")
    film, _ = film_project(nodes, clip)
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    segments = folders / "output" / "colormnet_films" / "test film" / "segments"

    def prompt(shot):   # one queued prompt: Film Shot -> image model (a tint) -> Load Exemplar -> Render Shot
        keyframe, frame, _, _, index = nodes["ColorMNetFilmShot"]().pick(film, shot)["result"]
        return render(nodes, film, model, memory_with(nodes, model, coloured(keyframe), frame), index)

    state = nodes["ColorMNetFilmProject"].IS_CHANGED(project="test film")
    assert nodes["ColorMNetFilmProject"].IS_CHANGED(project="test film") == state   # cached while nothing changes
    out = prompt(0)
    # A rendered shot changes the project: Film Project (and what it feeds) runs again on the next prompt.
    assert nodes["ColorMNetFilmProject"].IS_CHANGED(project="test film") != state
    video, plot, exemplar = out["result"]
    assert exemplar.shape == (1, 96, 168, 3)                   # the exemplar the shot was rendered from
    assert probe(video.path)["frames"] == SHOT and video.path.parent == folders / "temp"
    assert plot.shape[0] == 1 and plot.shape[-1] == 3
    assert (folders / "output" / "colormnet_films" / "test film" / "exemplars" / "000000.png").is_file()
    first_segment = (segments / "000000.mp4").read_bytes()
    # The same prompt again: already done, nothing rendered, the segment untouched.
    again = prompt(0)
    assert any("already done" in line for line in again["ui"]["text"])
    assert (segments / "000000.mp4").read_bytes() == first_segment
    # Assemble now: refused, naming the shots still to render.
    with pytest.raises(errors.InputError, match=r"2 of 3 shots are not rendered .*: 1 \(frames 6-11: needs an "
                       r"exemplar\), 2 \(frames 12-17: needs an exemplar\)\. Queue them"):
        nodes["ColorMNetAssembleFilm"]().assemble(film)
    assert list((folders / "temp").glob("colormnet_film_*.mp4")) == []
    prompt(1)
    prompt(2)
    status = nodes["ColorMNetFilmProject"]().open_film("test film", 0.2, 3)["ui"]["text"]
    assert "3 done, 0 stale, 0 to render, 0 needing an exemplar" in status[0]
    (joined,) = nodes["ColorMNetAssembleFilm"]().assemble(film)["result"]
    info = probe(joined.path)
    assert info["frames"] == 3 * SHOT and info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["audio_bytes"] == probe(clip)["audio_bytes"]
    # A new picture from the image model does not replace a done shot's exemplar unless asked to ...
    keyframe = nodes["ColorMNetFilmShot"]().pick(film, 1)["result"][0]
    before = {p.name: p.read_bytes() for p in segments.glob("*.mp4")}
    out = render(nodes, film, model, memory_with(nodes, model, coloured(keyframe).flip(-1), "6"), 1)
    assert any("not used; set done_shot to 'redo'" in line for line in out["ui"]["text"])
    assert {p.name: p.read_bytes() for p in segments.glob("*.mp4")} == before
    # ... redo renders exactly that shot with it.
    out = render(nodes, film, model, memory_with(nodes, model, coloured(keyframe).flip(-1), "6"), 1, done_shot=REDO)
    assert any("shot 1 rendered" in line for line in out["ui"]["text"])
    after = {p.name: p.read_bytes() for p in segments.glob("*.mp4")}
    assert after["000000.mp4"] == before["000000.mp4"] and after["000012.mp4"] == before["000012.mp4"]
    assert after["000006.mp4"] != before["000006.mp4"]
    # Revert (the node option): the previous exemplar and segment come back, nothing is rendered.
    out = render(nodes, film, model, None, 1, done_shot="revert to the previous exemplar")
    assert any("nothing was rendered" in line for line in out["ui"]["text"])
    assert {p.name: p.read_bytes() for p in segments.glob("*.mp4")} == before


@pytest.mark.slow
def test_render_shot_saves_only_the_exemplars_inside_its_shot_and_a_refusal_leaves_nothing(nodes, folders, errors,
                                                                                           monkeypatch):
    film, _ = film_project(nodes, make_three_shot_clip(folders / "input" / "film.mp4"))
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    exemplars_dir = film.dir / "exemplars"
    keyframes = torch.rand(2, SIZE[1], SIZE[0], 3)
    # Only an exemplar of shot 2 given to shot 0, then one inside shot 0 but not at its first frame: refused,
    # saying why, and nothing is written into the project.
    with pytest.raises(errors.InputError, match=r"shot 0 \(frames 0-5\) has no exemplar for its first frame 0: "
                                                r"pin one to frame 0.*Nothing was saved"):
        render(nodes, film, model, memory_with(nodes, model, keyframes[:1], "12"), 0)
    with pytest.raises(errors.InputError, match="the exemplar pinned to frame 3 colours only frames 3 on"):
        render(nodes, film, model, memory_with(nodes, model, keyframes[:1], "3"), 0)
    assert not [p for p in exemplars_dir.rglob("*") if p.is_file()]
    shown = []
    host = submodule("nodes.host")
    monkeypatch.setattr(host, "show_text", lambda node_id, warnings, notes=(): shown.append(list(warnings)))
    grey = torch.rand(1, 400, 150, 1).expand(-1, -1, -1, 3)      # another aspect ratio, and no colour
    out = render(nodes, film, model, memory_with(nodes, model, torch.cat([keyframes[:1], keyframes[:1]]), "0, 12"),
                 0)
    assert any("frame 12 is outside shot 0" in line for line in out["ui"]["text"])
    assert sorted(p.name for p in exemplars_dir.glob("*.png")) == ["000000.png"]
    render(nodes, film, model, memory_with(nodes, model, grey, "6"), 1)
    warnings = " ".join(shown[-1])
    assert "shot 1: the exemplar pinned to frame 6 is 150x400" in warnings and "greyscale" in warnings


@pytest.mark.slow
def test_cancel_mid_shot_keeps_the_previous_segment_and_leaves_no_partial(nodes, folders, monkeypatch, errors):
    film, _ = film_project(nodes, make_three_shot_clip(folders / "input" / "film.mp4"))
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    keyframe = nodes["ColorMNetFilmShot"]().pick(film, 0)["result"][0]
    render(nodes, film, model, memory_with(nodes, model, coloured(keyframe), "0"), 0)
    segments = film.dir / "segments"
    record = (film.dir / "records" / "000000.json").read_bytes()
    before = (segments / "000000.mp4").read_bytes()
    host = submodule("nodes.host")
    polls = []

    def interrupted():   # Cancel pressed while the shot's third frame is read
        polls.append(1)
        return len(polls) > 2

    exemplar = (film.dir / "exemplars" / "000000.png").read_bytes()
    monkeypatch.setattr(host, "interrupted", interrupted)
    with pytest.raises(errors.Cancelled):
        render(nodes, film, model, memory_with(nodes, model, coloured(keyframe).flip(-1), "0"), 0, done_shot=REDO)
    assert sorted(p.name for p in segments.iterdir() if p.is_file()) == ["000000.mp4"]
    assert (segments / "000000.mp4").read_bytes() == before
    assert (film.dir / "records" / "000000.json").read_bytes() == record
    assert (film.dir / "exemplars" / "000000.png").read_bytes() == exemplar     # the previous one still counts
    assert len(list((film.dir / "exemplars" / "history").iterdir())) == 1     # the cancelled one left nothing
