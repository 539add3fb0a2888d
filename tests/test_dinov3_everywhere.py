"""CMNET2's DINOv3 family everywhere: converted to one .safetensors, colorizing from the command line
with references and the proximity bias, a film project (and switching family makes every shot
stale, with the reason), a Ray worker's model cache, and the ComfyUI loader node."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from colormnet_core.__main__ import main
from colormnet_core.checkpoint import describe_network, sha256_file
from colormnet_core.film import FilmProject

from . import golden
from . import golden_dinov3 as fixture
from .clips import make_shot_clip
from .plugin import submodule

pytestmark = pytest.mark.slow
FAMILY = "CMNET2, DINOv3 ViT-B/16 backbone (fine-tuned)"


@pytest.fixture(scope="module")
def dinov3_safetensors(tmp_path_factory):
    """The fixture's CMNET2 .pth converted (CLI) to one standalone .safetensors, in a folder without
    the backbone folder: the converted file needs nothing beside it."""
    out = tmp_path_factory.mktemp("weights") / "DINOv3FeatureV6_LocalAtten_p374099.safetensors"
    assert main(["convert", str(fixture.fixture_release()), str(out)]) == 0
    assert not (out.parent / "dinov3-vitb16").exists()
    return out


def test_cli_colorizes_with_references_given_at_frames(tmp_path, dinov3_safetensors, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in sorted(p.name for p in (golden.BLACKSWAN / "frames").iterdir())[:4]:
        shutil.copy(golden.BLACKSWAN / "frames" / name, frames / name)
    exemplar = golden.BLACKSWAN / "exemplar" / "00000.png"
    mirrored = tmp_path / "mirrored.png"
    cv2.imwrite(str(mirrored), cv2.imread(str(exemplar))[:, ::-1])
    out = tmp_path / "out"
    code = main(["colorize", "--input", str(frames), "--reference", f"{exemplar}@0", "--reference", f"{mirrored}@2",
                 "--proximity-bias", "0.5", "--memory-like-cmnet2", "--checkpoint", str(dinov3_safetensors),
                 "--size", "112", "--device", "cpu", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    written = sorted(out.glob("*.png"))
    assert len(written) == 4
    rgb = cv2.imread(str(written[1])).astype(np.int16)
    assert np.abs(rgb[..., 2] - rgb[..., 1]).mean() > 1.0          # coloured, not grey
    bad = main(["colorize", "--input", str(frames), "--checkpoint", str(dinov3_safetensors), "--output",
                str(tmp_path / "none")])
    assert bad == 1 and "give at least one --exemplar" in capsys.readouterr().err


def test_film_renders_with_dinov3_and_a_family_switch_makes_every_shot_stale(tmp_path, dinov3_safetensors,
                                                                               golden_checkpoint, capsys):
    clip = make_shot_clip(tmp_path / "film.mp4", shots=(4, 3), audio=False)
    project = tmp_path / "project"
    assert main(["film", "init", str(clip), "--project", str(project), "--min-shot-length", "2"]) == 0
    for key in (project / "keyframes").iterdir():
        shutil.copy(key, project / "exemplars")
    assert main(["film", "render", "--project", str(project), "--checkpoint", str(dinov3_safetensors),
                 "--size", "64", "--device", "cpu", "--crf", "0"]) == 0
    assert [s.state for s in FilmProject.open(project).status()] == ["done", "done"]
    capsys.readouterr()
    assert main(["film", "status", "--project", str(project), "--checkpoint", str(golden_checkpoint)]) == 0
    text = capsys.readouterr().out
    assert text.count("stale (checkpoint changed") == 2, text
    states = FilmProject.open(project).status(checkpoint_sha256=sha256_file(golden_checkpoint))
    assert [s.state for s in states] == ["stale", "stale"]
    assert all(s.reason.startswith("checkpoint changed") for s in states)


def test_ray_worker_and_loader_node_load_the_dinov3_family(tmp_path, dinov3_safetensors, folders, monkeypatch):
    import torch

    from colormnet_core.film.worker import cached_network

    network = cached_network(dinov3_safetensors, sha256_file(dinov3_safetensors), torch.device("cpu"))
    assert describe_network(network) == FAMILY
    del network
    models = tmp_path / "models"
    (models / dinov3_safetensors.name).symlink_to(dinov3_safetensors)
    backbone = models / "dinov3-vitb16"
    backbone.mkdir()
    (backbone / "model.safetensors").write_bytes(b"not listed")
    model_nodes, host = submodule("nodes.model"), submodule("nodes.host")
    listed = host.list_checkpoints()
    assert dinov3_safetensors.name in listed and not any("dinov3-vitb16" in n for n in listed)
    shown = []
    monkeypatch.setattr(host, "show_status", lambda node, lines: shown.extend(lines))
    (model,) = model_nodes.ColorMNetModelLoader().load(dinov3_safetensors.name, "auto", unique_id="7")
    assert model.family == FAMILY and shown == [f"{dinov3_safetensors.name}: {FAMILY}"]
    model_nodes._CACHE.clear()
