"""scripts/make_sd15_checkpoint.py: the SD 1.5 key layout ComfyUI detects, and weights that stay finite.
(The 2 GB file itself is written and run in real ComfyUI by the e2e harness, not here.)"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from . import golden


@pytest.fixture(scope="module")
def script():
    path = golden.REPO / "scripts" / "make_sd15_checkpoint.py"
    spec = importlib.util.spec_from_file_location("make_sd15_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_layout_is_sd15s_with_the_three_prefixes_comfyui_looks_for(script):
    shapes = script.sd15_shapes()
    count = {p: sum(math.prod(s) for k, s in shapes.items() if k.startswith(p))
             for p in (script.UNET, script.VAE, "cond_stage_model.")}
    # Parameter counts of the SD 1.5 release: UNet 859.5 M, VAE 83.7 M, CLIP ViT-L/14 text tower 123.1 M.
    assert count == {script.UNET: 859_520_964, script.VAE: 83_653_863, "cond_stage_model.": 123_060_480}
    assert len(shapes) == sum(1 for k in shapes if k.startswith((script.UNET, script.VAE, script.CLIP)))
    # The keys ComfyUI's detection reads: conv (not linear) proj_in, context_dim 768, 4 latent channels.
    assert shapes[f"{script.UNET}input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)
    assert shapes[f"{script.UNET}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert shapes[f"{script.UNET}input_blocks.0.0.weight"] == (320, 4, 3, 3)
    assert shapes[f"{script.UNET}output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert shapes[f"{script.UNET}output_blocks.8.2.conv.weight"] == (640, 640, 3, 3)
    assert shapes[f"{script.VAE}decoder.up.1.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)
    assert shapes[f"{script.CLIP}embeddings.token_embedding.weight"] == (49408, 768)
    # No attention at the lowest resolution; 12 input blocks (0-11).
    assert not any(p in k for k in shapes for p in ("input_blocks.10.1.", "input_blocks.11.1.", "input_blocks.12."))


def test_random_weights_are_norm_ones_zero_biases_and_scaled_weights(script):
    g = torch.Generator().manual_seed(0)
    make = script.random_tensor
    assert torch.equal(make("x.norm1.weight", (8,), g, torch.float16), torch.ones(8, dtype=torch.float16))
    assert torch.equal(make("m.in_layers.0.weight", (8,), g, torch.float16), torch.ones(8, dtype=torch.float16))
    assert torch.equal(make("x.conv1.bias", (8,), g, torch.float16), torch.zeros(8, dtype=torch.float16))
    w = make("x.conv1.weight", (64, 128, 3, 3), g, torch.float32)
    assert abs(w.std().item() - 1 / math.sqrt(128 * 9)) < 0.002
    assert make("x.proj_in.weight", (16, 16, 1, 1), g, torch.float32).std() < 0.5   # "proj" is not a norm
