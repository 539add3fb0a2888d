"""Bad or doubtful inputs at the node level: each gets a clear message at the node that can fix it."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from . import golden
from .plugin import load_plugin, submodule

OFFICIAL_STEM = "DINOv2FeatureV6_LocalAtten_s2_154000"


@pytest.fixture(scope="module")
def nodes():
    return load_plugin().NODE_CLASS_MAPPINGS


@pytest.fixture
def errors():
    return submodule("colormnet_core.errors")


@pytest.fixture
def load_counter(monkeypatch):
    """Counts full checkpoint loads done by the node layer (and empties its cache first)."""
    model = submodule("nodes.model")
    checkpoint = submodule("colormnet_core.checkpoint")
    model._CACHE.clear()
    calls = []
    real = checkpoint.load_model
    monkeypatch.setattr(checkpoint, "load_model", lambda path, **kw: calls.append(path) or real(path, **kw))
    return calls


def test_workflow_name_finds_the_official_pth_and_loads_it_once(nodes, tmp_path, monkeypatch, golden_checkpoint,
                                                                 load_counter):
    # The fixture is a .safetensors file; named .pth it must still load (format sniffed by content).
    (tmp_path / f"{OFFICIAL_STEM}.pth").symlink_to(golden_checkpoint)
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path))
    loader = nodes["ColorMNetModelLoader"]
    assert loader.VALIDATE_INPUTS(f"{OFFICIAL_STEM}.safetensors") is True   # what the shipped workflows name
    (model,) = loader().load(f"{OFFICIAL_STEM}.safetensors", "fp32")
    assert model.path.name == f"{OFFICIAL_STEM}.pth" and len(load_counter) == 1
    model.network(torch.device("cpu"))   # what Colorize does: no second read of the file
    assert len(load_counter) == 1
    assert loader.IS_CHANGED(f"{OFFICIAL_STEM}.safetensors", "fp32").startswith(str(model.path))


def test_missing_checkpoint_is_reported_at_validation_with_url_and_licence(nodes, tmp_path, monkeypatch):
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path))
    message = nodes["ColorMNetModelLoader"].VALIDATE_INPUTS(f"{OFFICIAL_STEM}.safetensors")
    assert isinstance(message, str)
    assert f"{OFFICIAL_STEM}.pth" in message and f"{OFFICIAL_STEM}.safetensors" in message
    assert "Download Model" in message and "CC BY-NC-SA 4.0" in message and "releases/download" in message
    assert "not found" in message[:30] and "models/colormnet" in message[:200] and "Download Model" in message[:200]


def test_sha256_mismatch_is_reported_by_the_loader(nodes, tmp_path, monkeypatch, golden_checkpoint, errors):
    path = tmp_path / "weights.safetensors"
    path.symlink_to(golden_checkpoint)
    (tmp_path / "weights.safetensors.sha256").write_text("0" * 64 + "  weights.safetensors\n")
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path))
    with pytest.raises(errors.CheckpointError, match="damaged or was replaced") as e:
        nodes["ColorMNetModelLoader"]().load("weights.safetensors", "auto")
    assert "download it again" in str(e.value)[:200]


def test_missing_and_misshaped_tensors_are_reported_by_the_loader(nodes, tmp_path, monkeypatch, golden_checkpoint,
                                                                   errors):
    from safetensors.torch import load_file, save_file

    state = load_file(golden_checkpoint)
    del state["decoder.pred.bias"]
    state["key_proj.d_proj.bias"] = torch.zeros(5)
    save_file(state, tmp_path / "broken.safetensors")
    del state
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path))
    with pytest.raises(errors.CheckpointError) as e:
        nodes["ColorMNetModelLoader"]().load("broken.safetensors", "auto")
    text = str(e.value)
    assert "decoder.pred.bias" in text and "key_proj.d_proj.bias (5,)" in text
    assert text.startswith("broken.safetensors does not fit") and "use the official checkpoint" in text[:200]


def test_fp16_on_cpu_runs_as_fp32_with_a_note(caplog, golden_network):
    model = submodule("nodes.model")
    with caplog.at_level(logging.WARNING):
        assert model.resolve_precision("fp16", torch.device("cpu")) == "float32"
    assert "30x slower" in caplog.text
    assert model.resolve_precision("bf16", torch.device("cpu")) == "bfloat16"
    assert model.resolve_precision("auto", torch.device("cpu")) == "float32"
    # The core session does the same when float16 is asked for explicitly.
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.session import ColorizeSession

    exemplars = EncodedExemplars((Exemplar(torch.rand(3, 32, 32)),))
    session = ColorizeSession(golden_network, exemplars, precision="float16", device="cpu")
    assert session.amp_dtype is None


def test_processing_size_choices_keep_old_values_and_accept_custom(nodes, errors):
    colorize = submodule("nodes.colorize")
    choices = nodes["ColorMNetColorize"].INPUT_TYPES()["required"]["processing_size"][0]
    for old in ["official (no resize)", "360", "480", "540", "720", "1080"]:   # values saved in old workflows
        assert old in choices
    assert "240" in choices and "custom" in choices
    assert colorize.processing_size("240").value == 240
    assert colorize.processing_size("custom", 200).value == 200 and colorize.size_choice("custom", 200) == "200"
    assert colorize.processing_size("official (no resize)").mode == "official"
    with pytest.raises(errors.InputError, match="custom_size"):
        colorize.processing_size("custom", None)
    optional = nodes["ColorMNetColorize"].INPUT_TYPES()["optional"]
    assert optional["custom_size"][1]["min"] < 240


def test_memory_estimate_raises_before_any_work(nodes, monkeypatch, errors):
    colorize = submodule("nodes.colorize")
    host = submodule("nodes.host")
    resources = submodule("colormnet_core.resources")
    # Two 8000x4500 frames at 1080 (the measured 13.8 GB case) need well over 10 GB by the estimate.
    estimate = resources.estimate_colorize_memory(
        2, 4500, 8000, key_batch=4, size=colorize.processing_size("1080"))
    assert 10e9 < estimate.new < 20e9 and estimate.held == 2 * 4500 * 8000 * 12
    assert resources.check_memory(estimate, 100 * 10**9, width=8000, height=4500) is None
    warning = resources.check_memory(estimate, estimate.new + 10**9, width=8000, height=4500)
    assert "2 frames of 8000x4500" in warning and "Image Scale" in warning

    class NoModel:
        def network(self, device):
            raise AssertionError("work started despite the memory check")

    monkeypatch.setattr(host, "available_memory", lambda: 2 * 10**9)
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(torch.rand(1, 45, 80, 3), 0)
    (encoded,) = nodes["ColorMNetEncode"]().encode(None, exemplars)
    (memory,) = nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)
    frames = torch.zeros(1, 1, 1, 3).expand(2, 2000, 3000, 3)   # a view: no real memory used by the test
    with pytest.raises(errors.ResolutionError, match="Not enough memory") as e:
        nodes["ColorMNetColorize"]().colorize(NoModel(), memory, frames, "1080", True, 4)
    assert "key_batch 1" in str(e.value) and "Image Scale" in str(e.value)[:400]


def test_exemplar_warnings_are_shown_on_the_nodes(nodes, monkeypatch):
    host = submodule("nodes.host")
    shown = []
    monkeypatch.setattr(host, "show_text", lambda node_id, lines: shown.append((node_id, list(lines))))
    grey = torch.full((1, 40, 60, 3), 0.5)
    nodes["ColorMNetLoadExemplar"]().add(grey, 0, unique_id="7")
    assert shown[-1][0] == "7" and "greyscale" in shown[-1][1][0]
    frames = golden.frames().permute(0, 2, 3, 1).float() / 255
    exemplar = golden.exemplar().permute(1, 2, 0)[None].float() / 255
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(exemplar[:, :, :185], 10, unique_id="8")
    assert shown[-1] == ("8", [])   # nothing wrong with the image itself
    memory_seed = submodule("nodes.memory").MemorySeed
    config = submodule("colormnet_core.config").MemoryConfig()
    encoded = submodule("colormnet_core.exemplars").EncodedExemplars(exemplars)
    colorize = submodule("nodes.colorize")
    warnings = colorize.preflight(frames.permute(0, 3, 1, 2), memory_seed(config, encoded), "480", 4)
    assert len(warnings) == 2 and "stretched" in warnings[0] and "frame 10" in warnings[1]


@pytest.mark.slow
def test_rgba_frames_colorize_to_rgb(nodes, tmp_path, monkeypatch, golden_checkpoint):
    (tmp_path / "fixture.safetensors").symlink_to(golden_checkpoint)
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path))
    (model,) = nodes["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    rgb = golden.frames()[:2].permute(0, 2, 3, 1).float() / 255
    rgba = torch.cat([rgb, torch.ones(*rgb.shape[:3], 1)], dim=-1)
    exemplar = golden.exemplar().permute(1, 2, 0)[None].float() / 255
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(exemplar, 0)
    (encoded,) = nodes["ColorMNetEncode"]().encode(model, exemplars)
    (memory,) = nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)
    out = nodes["ColorMNetColorize"]().colorize(model, memory, rgba, "240", True, 2)[0]
    expected = nodes["ColorMNetColorize"]().colorize(model, memory, rgb, "240", True, 2)[0]
    assert out.shape == (*rgb.shape[:3], 3) and torch.equal(out, expected)   # alpha ignored


def test_memory_tooltips_say_what_a_change_does(nodes):
    spec = nodes["ColorMNetMemory"].INPUT_TYPES()["required"]
    for name, (kind, *options) in spec.items():
        if kind == "COLORMNET_ENCODED":
            continue
        tooltip = options[0]["tooltip"]
        assert not re.search(r"\b(r|P|T_min|T_max|LT_max)\b", tooltip), name
        if kind == "INT":
            assert ("Higher" in tooltip or "Raise" in tooltip) and ("Lower" in tooltip or "lower" in tooltip), name


def test_search_words_and_aliases(nodes):
    display = load_plugin().NODE_DISPLAY_NAME_MAPPINGS
    # ComfyUI 0.3.64's frontend searches the id and the display name only.
    assert "colourise" in display["ColorMNetColorize"].lower()
    for node_id in ("ColorMNetColorize", "ColorMNetModelLoader", "ColorMNetLoadExemplar", "ColorMNetMemory"):
        aliases = nodes[node_id].SEARCH_ALIASES
        assert {"colourise", "colorize", "recolor"} <= set(aliases), node_id


# -- issue 17: NaN named where it is, notes on the node, text that wraps ----------------------------

def test_nan_is_named_in_the_frames_or_the_exemplar_where_it_is(nodes, errors):
    checks = submodule("colormnet_core.exemplar_checks")
    clean = torch.rand(3, 32, 32)
    broken = clean.clone()
    broken[0, 4, 4] = float("nan")
    with pytest.raises(errors.InputError, match=r"NaN or infinite values in frame 5 \(of the frames to colorize\)"):
        checks.check_pinned(clean, broken, 5)
    with pytest.raises(errors.InputError, match="NaN or infinite values in the exemplar pinned to frame 5"):
        checks.check_pinned(broken, clean, 5)
    frames = torch.rand(4, 32, 32, 3)
    frames[3, 0, 0, 0] = float("inf")
    with pytest.raises(errors.InputError, match="NaN or infinite values in frames: frame 3 is the first"):
        nodes["ColorMNetColorize"]().colorize(None, None, frames, "240", True, 1)


def test_precision_note_when_fp16_runs_as_fp32_on_the_cpu():
    colorize = submodule("nodes.colorize")
    model = submodule("nodes.model").ColorMNetModel(golden.REPO / "unused.safetensors", "fp16")
    (note,) = colorize.precision_notes(model, torch.device("cpu"))
    assert "fp16 runs as fp32 on the CPU" in note
    assert colorize.precision_notes(model.__class__(model.path, "fp32"), torch.device("cpu")) == []


def test_node_text_wraps_every_line_and_labels_warnings_and_notes():
    host = submodule("nodes.host")
    text = host.node_text(["the exemplar pinned to frame 0 does not match that frame's brightness pattern "
                           "(correlation 0.041; the colour version of the frame itself gives about 1.0)"],
                          ["the video was padded to 208x120"])
    lines = text.split("\n")
    assert lines[0].startswith("Warning: ") and "Note: the video was padded to 208x120" in text
    assert max(len(line) for line in lines) <= host.TEXT_WIDTH and "(correlation 0.041;" in text.replace("\n", " ")
