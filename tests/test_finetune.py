"""Fine-tuning on a film's pictures (colormnet_core.training.finetune): refusals, the caller's network
untouched, determinism, cancel, exports that load, and the DINOv3 family's training rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from colormnet_core.checkpoint import load_model, sha256_file
from colormnet_core.dinov3 import Dinov3Features
from colormnet_core.errors import InputError
from colormnet_core.training import (
    FinetuneConfig,
    FinetuneStep,
    check_finetune_data,
    estimate_finetune_seconds,
    finetune_network,
    frozen_modules,
)
from colormnet_core.training.families import prepare_for_training
from colormnet_core.training.state import export_weights
from colormnet_core.training.trainer import Trainer

from . import golden_dinov3
from .finetune_film import exemplar_tiles

TINY = FinetuneConfig(steps=2, size=112, holdout_frames=3)


def _state(network) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def test_config_and_data_refusals_say_what_to_do():
    with pytest.raises(InputError, match="multiple of 112"):
        FinetuneConfig(size=100)
    with pytest.raises(InputError, match="holdout"):
        FinetuneConfig(holdout=1.0)
    with pytest.raises(InputError, match="at least 1 step"):
        FinetuneConfig(steps=0)
    tiles = exemplar_tiles()
    check_finetune_data(tiles[:3], TINY)                                 # 1 held out, 2 to train on
    with pytest.raises(InputError, match=r"too little to learn from.*at least 3 pictures.*Add exemplars"):
        check_finetune_data(tiles[:2], TINY)
    check_finetune_data(tiles[:2], dataclasses.replace(TINY, holdout=0))   # no scores: 2 suffice
    with pytest.raises(InputError, match=r"picture\(s\) \[1\] have no colour"):
        check_finetune_data([tiles[0], tiles[1].float().mean(0, keepdim=True).expand(3, -1, -1) / 255, tiles[2]],
                            TINY)
    with pytest.raises(InputError, match="smaller than 64 pixels"):
        check_finetune_data([tiles[0], tiles[1][:, :40, :40], tiles[2]], TINY)
    with pytest.raises(InputError, match="colour clip"):
        check_finetune_data(tiles[:3], TINY, colour_frames=[torch.stack(tiles[:2])])


@pytest.mark.slow
def test_finetune_leaves_the_input_alone_is_deterministic_cancels_and_exports(golden_network, tmp_path):
    tiles = exemplar_tiles()
    original = _state(golden_network)
    steps: list[FinetuneStep] = []
    result = finetune_network(golden_network, tiles, TINY, on_step=steps.append)
    assert all(torch.equal(original[k], v) for k, v in golden_network.state_dict().items())
    assert result.network is not golden_network and not result.network.training
    assert not any(p.requires_grad for p in result.network.parameters())
    assert result.steps_done == 2 and not result.cancelled and len(result.losses) == 2
    assert [(s.step, s.steps) for s in steps] == [(1, 2), (2, 2)] and steps[-1].eta_s == 0
    assert result.before is not None and result.after is not None
    assert (result.before.pictures, result.before.frames) == (1, 2)     # 6 tiles: 1 held out, 2 frames scored
    tuned = _state(result.network)
    changed = [k for k in tuned if not torch.equal(tuned[k], original[k])]
    assert changed and not any(k.startswith("key_encoder.dino.") for k in changed)   # DINOv2 branch frozen

    # Same inputs and seed: the same weights, also when called under inference mode (as ComfyUI runs its
    # nodes). A stop after 2 of 5 steps leaves the 2-step weights.
    seen: list[FinetuneStep] = []
    with torch.inference_mode():
        again = finetune_network(golden_network, tiles, dataclasses.replace(TINY, steps=5), on_step=seen.append,
                                 should_stop=lambda: len(seen) >= 2)
    assert again.cancelled and again.after is None
    assert again.steps_done == 2 and again.losses == result.losses
    assert all(torch.equal(v, tuned[k]) for k, v in again.network.state_dict().items())

    digest = export_weights(result.network, tmp_path / "tuned-{sha8}.safetensors")
    path = tmp_path / f"tuned-{digest[:8]}.safetensors"
    assert sha256_file(path) == digest and (tmp_path / f"{path.name}.sha256").read_text().startswith(digest)
    loaded = load_model(path)
    assert all(torch.equal(v, tuned[k]) for k, v in loaded.state_dict().items())


@pytest.mark.slow
def test_the_estimate_measures_steps_and_stops_when_asked(golden_network, monkeypatch):
    """The up-front estimate times real steps; a Cancel during it is heard before the next step."""
    steps = []
    step = Trainer.step
    monkeypatch.setattr(Trainer, "step", lambda self: steps.append(1) or step(self))
    assert estimate_finetune_seconds(golden_network, exemplar_tiles(), TINY, should_stop=lambda: True) is None
    assert steps == []
    seconds = estimate_finetune_seconds(golden_network, exemplar_tiles(), dataclasses.replace(TINY, steps=400))
    assert len(steps) == 2 and seconds > 0
    # 400 steps cost at least 400 of the timed second step (which took > 0.05 s on any CPU here).
    assert seconds > 400 * 0.05


@pytest.mark.slow
def test_dinov3_network_fine_tunes_and_its_export_loads_alone(tmp_path):
    network = load_model(golden_dinov3.fixture_release())
    assert [name for name, _ in frozen_modules(network)] == ["key_encoder.dino.vit", "key_encoder.dino.mask_token"]
    assert frozen_modules(network, unlock_backbone=True) == []
    original = _state(network)
    tiles = exemplar_tiles()[:2]
    config = FinetuneConfig(steps=1, size=112, holdout=0)
    result = finetune_network(network, tiles, config)
    tuned = _state(result.network)
    changed = {k for k in tuned if not torch.equal(tuned[k], original[k])}
    assert "key_encoder.dino.conv.weight" in changed                    # CMNET2 trains its head ...
    assert not any(k.startswith("key_encoder.dino.vit.") for k in changed)   # ... not its frozen ViT
    unlocked = finetune_network(network, tiles, dataclasses.replace(config, unlock_backbone=True))
    moved = [k for k, v in unlocked.network.state_dict().items()
             if k.startswith("key_encoder.dino.vit.blocks.") and not torch.equal(v, original[k])]
    assert len(moved) > 100                                              # gradients reach the ViT's blocks
    digest = export_weights(unlocked.network, tmp_path / "dinov3-{sha8}.safetensors")
    path = tmp_path / f"dinov3-{digest[:8]}.safetensors"
    assert not (tmp_path / "dinov3-vitb16").exists()                     # self-contained: no backbone folder
    loaded = load_model(path)
    assert loaded.config.backbone == "dinov3_vitb16"
    assert all(torch.equal(v, unlocked.network.state_dict()[k]) for k, v in loaded.state_dict().items())
    # An unlocked ViT trains with its blocks' activations checkpointed (as CMNET2's), a frozen one keeps none.
    prepare_for_training(loaded, unlock_backbone=True)
    assert loaded.key_encoder.dino.checkpointed
    prepare_for_training(loaded)
    assert not loaded.key_encoder.dino.checkpointed


def test_checkpointed_dinov3_blocks_give_the_same_gradients():
    torch.manual_seed(0)
    dino = Dinov3Features()
    x = torch.randn(1, 3, 32, 48)
    runs = []
    dino.vit.blocks[0].register_forward_pre_hook(lambda *_: runs.append(1))
    gradients = []
    for checkpointed in (False, True):
        dino.zero_grad()
        dino.checkpointed = checkpointed
        runs.clear()
        dino(x).square().mean().backward()
        assert len(runs) == (2 if checkpointed else 1)      # checkpointed: run again in the backward pass
        gradients.append({n: p.grad.clone() for n, p in dino.vit.named_parameters() if p.grad is not None})
    assert len(gradients[0]) > 100 and gradients[0].keys() == gradients[1].keys()
    assert all(torch.equal(gradients[0][n], gradients[1][n]) for n in gradients[0])
    runs.clear()
    with torch.no_grad():
        dino(x)
    assert len(runs) == 1                                     # nothing to checkpoint without autograd


def test_colour_frames_become_clips_and_stills(tmp_path):
    import cv2

    from colormnet_core.film.finetune import read_colour_frames
    from colormnet_core.training.finetune import FinetuneData, _material

    tiles = exemplar_tiles()
    (tmp_path / "clip").mkdir()
    for i, picture in enumerate(tiles[:3]):
        cv2.imwrite(str(tmp_path / "clip" / f"{i:05d}.png"), picture.permute(1, 2, 0).numpy()[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "still.png"), tiles[3].permute(1, 2, 0).numpy()[:, :, ::-1])
    frames = read_colour_frames(tmp_path, 112)
    assert [tuple(f.shape) for f in frames] == [(3, 3, 120, 138), (3, 120, 138)]
    assert torch.equal(frames[0][1], tiles[1]) and torch.equal(frames[1], tiles[3])
    config = dataclasses.replace(TINY, holdout=0)
    data = FinetuneData(_material(tiles[:2], config, frames), config)
    assert len(data) == 4                                                # 2 pictures + 1 still, then 1 clip
    image, ab = data[3, 12345]
    assert image.shape == (config.num_frames, 3, 112, 112) and ab.shape == (config.num_frames, 2, 112, 112)
    assert ab.abs().amax() > 0.01                                        # colour frames: real chroma
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no colour frames"):
        read_colour_frames(tmp_path / "empty", 112)
