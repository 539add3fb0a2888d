"""Node functions called directly (no server), standalone host, fixture checkpoint."""

from __future__ import annotations

import pytest
import torch

from . import golden
from .plugin import load_plugin, submodule

NODE_IDS = ["ColorMNetModelLoader", "ColorMNetDownloadModel", "ColorMNetLoadExemplar", "ColorMNetEncode",
            "ColorMNetMemory", "ColorMNetFinetune", "ColorMNetColorize", "ColorMNetColorizeVideo",
            "ColorMNetDetectShots",
            "ColorMNetVideo", "ColorMNetFilmProject", "ColorMNetFilmShot", "ColorMNetRenderShot",
            "ColorMNetAssembleFilm", "ColorMNetFilmExemplars"]


@pytest.fixture(scope="module")
def nodes():
    return load_plugin().NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, golden_checkpoint):
    folder = tmp_path_factory.mktemp("models")
    (folder / "fixture.safetensors").symlink_to(golden_checkpoint)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLORMNET_MODELS_DIR", str(folder))
        yield folder


def test_every_node_declares_the_classic_api(nodes):
    assert sorted(nodes) == sorted(NODE_IDS)
    display = load_plugin().NODE_DISPLAY_NAME_MAPPINGS
    for node_id, cls in nodes.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
        assert isinstance(cls.RETURN_TYPES, tuple) and callable(getattr(cls, cls.FUNCTION))
        assert cls.CATEGORY == "ColorMNet" and len(cls.DESCRIPTION) > 40 and node_id in display


def test_loader_lists_and_loads_the_checkpoint(nodes, models_dir):
    spec = nodes["ColorMNetModelLoader"].INPUT_TYPES()["required"]
    assert spec["checkpoint"][0] == ["fixture.safetensors"]
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    assert model.path.name == "fixture.safetensors" and model.autocast(torch.device("cpu")) == "float32"


def test_loader_without_checkpoint_says_where_to_put_it(nodes, tmp_path, monkeypatch):
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path / "empty"))
    errors = submodule("colormnet_core.errors")
    with pytest.raises(errors.CheckpointError, match="Download Model") as e:
        nodes["ColorMNetModelLoader"]().load("(no checkpoint in models/colormnet)", "auto")
    assert str(tmp_path / "empty") in str(e.value) and "CC BY-NC-SA" in str(e.value)


def test_loader_rejects_a_wrong_checkpoint(nodes, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path))
    errors = submodule("colormnet_core.errors")
    with pytest.raises(errors.CheckpointError, match="not a ColorMNet checkpoint"):
        nodes["ColorMNetModelLoader"]().load("other.safetensors", "auto")


def bhwc(x):
    return x.permute(0, 2, 3, 1).float() / 255


def test_exemplars_chain_without_touching_upstream_outputs(nodes):
    load = nodes["ColorMNetLoadExemplar"]()
    image = torch.rand(1, 40, 60, 3)
    (first,) = load.add(image, 0)
    (both,) = load.add(torch.rand(1, 30, 30, 3), -1, exemplars=first)
    assert len(first) == 1 and [e.frame for e in both] == [0, None]
    (batch,) = load.add(torch.rand(3, 20, 20, 3), 0, batch_frames="0, 10, -1")
    assert [e.frame for e in batch] == [0, 10, None]
    errors = submodule("colormnet_core.errors")
    with pytest.raises(errors.InputError, match="one index per image"):
        load.add(torch.rand(3, 20, 20, 3), 0, batch_frames="0, 10")
    with pytest.raises(errors.InputError, match="batch of 2"):
        load.add(torch.rand(2, 20, 20, 3), 0)
    with pytest.raises(errors.InputError, match="empty batch"):
        load.add(torch.rand(0, 20, 20, 3), 0)


@pytest.mark.slow
def test_colorize_chain_runs_on_the_fixture_checkpoint(nodes, models_dir):
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    frames = bhwc(golden.frames()[:4])
    exemplar = bhwc(golden.load_png(golden.GOLDEN / "inputs" / "exemplar.png")[None])
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(exemplar, 0)
    (encoded,) = nodes["ColorMNetEncode"]().encode(model, exemplars)
    (memory,) = nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)
    frames_before = frames.clone()
    out = nodes["ColorMNetColorize"]().colorize(model, memory, frames, "360", True, 2)[0]
    assert out.shape == frames.shape and out.dtype == torch.float32
    assert torch.equal(frames, frames_before)                           # inputs never modified
    assert out.min() >= 0 and out.max() <= 1 and (out[..., 0] - out[..., 2]).abs().mean() > 0.01
    # The same memory seed gives the same result again (each run builds a fresh session).
    again = nodes["ColorMNetColorize"]().colorize(model, memory, frames, "360", True, 2)[0]
    assert torch.equal(out, again)


def test_colorize_propagation_option(nodes, models_dir, tmp_path, monkeypatch):
    """bidirectional on the node: one exemplar gives the forward result; a second keyframe changes the
    frames before it (the backward pass reaches them), and its own frame shows that exemplar."""
    monkeypatch.setattr(submodule("nodes.host"), "temp_dir", lambda: tmp_path)
    spec = nodes["ColorMNetColorize"].INPUT_TYPES()["optional"]["propagation"]
    assert spec[0] == ["forward", "bidirectional"] and spec[1]["default"] == "forward"
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    frames = bhwc(golden.frames()[:5])
    exemplar = bhwc(golden.load_png(golden.GOLDEN / "inputs" / "exemplar.png")[None])

    def run(pins, propagation):
        chain = None
        for frame in pins:
            (chain,) = nodes["ColorMNetLoadExemplar"]().add(exemplar, frame, exemplars=chain)
        (encoded,) = nodes["ColorMNetEncode"]().encode(model, chain)
        (memory,) = nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)
        return nodes["ColorMNetColorize"]().colorize(model, memory, frames, "112", False, 1,
                                                     propagation=propagation)[0]

    assert torch.equal(run([0], "forward"), run([0], "bidirectional"))
    forward, both = run([0, 4], "forward"), run([0, 4], "bidirectional")
    assert torch.equal(forward[0], both[0]) and torch.equal(forward[4], both[4])
    assert not torch.equal(forward[1:4], both[1:4])


@pytest.mark.slow
def test_streaming_video_node_writes_a_video(nodes, models_dir, tmp_path, monkeypatch):
    import cv2

    host = submodule("nodes.host")
    (tmp_path / "in").mkdir()
    writer = cv2.VideoWriter(str(tmp_path / "in" / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 12, (96, 64))
    for i in range(5):
        writer.write(torch.full((64, 96, 3), 40 * i, dtype=torch.uint8).numpy())
    writer.release()
    monkeypatch.setattr(host, "input_dir", lambda: tmp_path / "in")
    monkeypatch.setattr(host, "annotated_input_path", lambda name: tmp_path / "in" / name)
    monkeypatch.setattr(host, "output_dir", lambda: tmp_path / "out")
    node = nodes["ColorMNetColorizeVideo"]
    assert node.INPUT_TYPES()["required"]["video"][0] == ["clip.mp4"]
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(torch.rand(1, 64, 96, 3), 0)
    (encoded,) = nodes["ColorMNetEncode"]().encode(model, exemplars)
    (memory,) = nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)
    result = node().colorize(model, memory, "clip.mp4", "colormnet/test", "official (no resize)", True, 2)
    path = tmp_path / "out" / "colormnet" / "test_00001_.mp4"
    assert result["result"] == (str(path),) and result["ui"]["images"][0]["subfolder"] == "colormnet"
    capture = cv2.VideoCapture(str(path))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()
