"""Shared fixtures. The golden network is built once per test session (~2 s, 0.5 GB)."""

from __future__ import annotations

import pytest
import torch

from colormnet_core.checkpoint import load_model

from . import golden


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
