"""Shared fixtures. The golden network is built once per test session (~2 s, 0.5 GB)."""

from __future__ import annotations

import pytest
import torch

from colormnet_core.checkpoint import load_model

from . import golden
from .plugin import submodule


@pytest.fixture(scope="session")
def spec_dir():
    """tests/data/spec: the official state-dict manifest and a real ComfyUI /object_info snapshot."""
    return golden.SPEC


@pytest.fixture(scope="session")
def golden_checkpoint():
    return golden.golden_weights()


@pytest.fixture(scope="session")
def golden_network(golden_checkpoint):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_model(golden_checkpoint)


@pytest.fixture()
def folders(tmp_path, monkeypatch, golden_checkpoint):
    """A private ComfyUI-like tree for node tests: models/ with the fixture checkpoint, input/, output/
    and temp/, with the host adapter pointed at them."""
    host = submodule("nodes.host")
    models = tmp_path / "models"
    models.mkdir()
    (models / "fixture.safetensors").symlink_to(golden_checkpoint)
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(models))
    for name in ("input", "output", "temp"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(host, "temp_dir", lambda: tmp_path / "temp")
    monkeypatch.setattr(host, "output_dir", lambda: tmp_path / "output")
    monkeypatch.setattr(host, "input_dir", lambda: tmp_path / "input")
    monkeypatch.setattr(host, "annotated_input_path", lambda name: tmp_path / "input" / name)
    return tmp_path
