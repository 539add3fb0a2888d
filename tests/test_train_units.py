"""The training parts one by one: schedule, draws, sampler, frame sampling, augmentation, memory read,
LayerNorm backward, frozen parts, checkpoint files."""

from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from colormnet_core.errors import CheckpointError, InputError
from colormnet_core.memory import softmax_readout
from colormnet_core.pvgfe import LayerNorm2d
from colormnet_core.training import CLIPS_STAGE, KeyedDraws, RunConfig, parse_duration
from colormnet_core.training.augment import ClipAugmentation, _tps_sampling_map, lab_planes
from colormnet_core.training.datasets import ClipFolderDataset, KeyedSampler, PictureDataset, sample_frame_indices
from colormnet_core.training.state import DataPosition, load_training_state, restore_rng_states, save_training_state

from .train_runs import make_clip_folders


def test_official_schedule():
    s = CLIPS_STAGE
    assert (s.iterations, s.finetune, s.lr, s.lr_milestones, s.weight_decay, s.batch_size, s.num_frames) == (
        150_000, 10_000, 2e-5, (120_000,), 0.05, 2, 8)
    # max_skip 5, then 10 / 15 / 5 from 10 / 30 / 90 % of the main phase (train.py)
    assert [s.max_skip_at(i) for i in (0, 14_999, 15_000, 44_999, 45_000, 134_999, 135_000, 159_999)] == [
        5, 5, 10, 10, 15, 15, 5, 5]
    assert not s.in_finetune(149_999) and s.in_finetune(150_000)
    assert s.lr_at(119_999) == 2e-5 and s.lr_at(120_000) == pytest.approx(2e-6)
    assert RunConfig().with_stages("02").stages[0].kind == "static"
    with pytest.raises(InputError, match="multiple of 112"):
        replace(CLIPS_STAGE, crop=384)
    with pytest.raises(InputError, match="unknown training stage"):
        RunConfig().with_stages("3")


def test_durations():
    assert [parse_duration(t) for t in ("8h", "30m", "90s", "1h30m", "45", "1.5h")] == [
        28800, 1800, 90, 5400, 45, 5400]
    for bad in ("", "8 hours", "h", "5x"):
        with pytest.raises(InputError, match="8h, 30m, 90s"):
            parse_duration(bad)


def test_keyed_draws_follow_the_official_rule_and_do_not_depend_on_the_process():
    draws = KeyedDraws(seed=7)
    step = draws.for_step(3)
    assert [step.reference_frames(t, 0) for t in (1, 2, 3)] == [[0], [0, 1], [0, 1, 2]]
    seen = set()
    for t in range(4, 8):
        for clip in range(4):
            refs = step.reference_frames(t, clip)
            assert refs[0] == 0 and len(refs) == 3 and len(set(refs)) == 3 and all(0 < r < t for r in refs[1:])
            assert refs == KeyedDraws(seed=7).for_step(3).reference_frames(t, clip)   # a pure function
            seen.add(tuple(refs))
    assert len(seen) > 4
    coins = [draws.for_step(s).deep_update(t) for s in range(400) for t in range(1, 7)]
    assert 0.16 < np.mean(coins) < 0.24                    # probability 0.2
    assert draws.for_step(5).deep_update(2) == draws.for_step(5).deep_update(2)


def test_sampler_gives_each_rank_its_slice_of_the_same_global_batches():
    one = list(KeyedSampler(10, batch_size=4, seed=3, epoch=2))
    assert len(one) == 8                                    # 2 full global batches, 2 items dropped
    ranks = [list(KeyedSampler(10, batch_size=4, seed=3, epoch=2, rank=r, world_size=2)) for r in (0, 1)]
    for k in range(2):
        assert ranks[0][2 * k:2 * k + 2] + ranks[1][2 * k:2 * k + 2] == one[4 * k:4 * k + 4]
    assert list(KeyedSampler(10, batch_size=4, seed=3, epoch=2, start=1)) == one[4:]
    assert [i for i, _ in one] != [i for i, _ in KeyedSampler(10, batch_size=4, seed=3, epoch=3)]


def test_official_frame_sampling():
    rng = np.random.RandomState(0)
    for _ in range(200):
        chosen = sample_frame_indices(40, 8, 5, rng)
        assert len(set(chosen)) == 8 and chosen in (sorted(chosen), sorted(chosen)[::-1])
        ordered = sorted(chosen)
        assert all(b - a <= 5 for a, b in zip(ordered, ordered[1:]))   # each new frame within 5 of one chosen


def test_clip_folder_dataset(tmp_path):
    root = make_clip_folders(tmp_path / "clips", clips=2, frames=3)
    make_clip_folders(tmp_path / "short", clips=1, frames=1)
    (root / "short").symlink_to(tmp_path / "short" / "clip0")
    data = ClipFolderDataset(root, num_frames=3, crop=112)
    assert len(data) == 2                                   # the 1-frame clip is skipped
    image, ab = data[(1, 12345)]
    assert image.shape == (3, 3, 112, 112) and ab.shape == (3, 2, 112, 112)
    assert torch.equal(image[:, 0], image[:, 1]) and image.abs().max() <= 1 and ab.abs().max() < 1
    assert torch.equal(data[(1, 12345)][1], ab)             # keyed: the same seed gives the same item
    assert not torch.equal(data[(1, 54321)][1], ab)
    with pytest.raises(InputError, match="no usable clip"):
        ClipFolderDataset(tmp_path / "short", num_frames=3)


def test_picture_dataset_makes_pseudo_sequences():
    picture = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    data = PictureDataset([picture], num_frames=3, crop=112)
    image, ab = data[(0, 5)]
    assert image.shape == (3, 3, 112, 112) and ab.shape == (3, 2, 112, 112)
    assert not torch.equal(image[0], image[1])             # every frame is warped differently
    with pytest.raises(InputError, match="H x W x 3 uint8"):
        PictureDataset([picture[..., 0]])


def test_augmentation_leaves_the_global_generator_alone():
    torch.manual_seed(1)
    before = torch.get_rng_state()
    ClipAugmentation(112)(Image.new("RGB", (80, 64), (200, 30, 40)), 11, 12)
    assert torch.equal(before, torch.get_rng_state())


def test_tps_without_moves_is_the_identity():
    anchors = np.random.default_rng(0).random((12, 2))
    map_x, map_y = _tps_sampling_map(anchors, np.zeros((12, 2)), 32, 48)
    ys, xs = np.mgrid[0:32, 0:48]
    assert np.abs(map_x - xs).max() < 1e-4 and np.abs(map_y - ys).max() < 1e-4
    shifts = np.full((12, 2), 0.1)                          # one common shift is a translation
    map_x, _ = _tps_sampling_map(anchors, shifts, 32, 48)
    assert np.abs(map_x - xs - 4.8).max() < 1e-4


def test_lab_planes_are_the_official_normalisation():
    L, ab = lab_planes(Image.new("RGB", (4, 4), (255, 255, 255)))
    assert L.shape == (1, 4, 4) and torch.allclose(L, torch.ones(1)) and ab.abs().max() < 1e-4


def test_softmax_readout_is_the_official_training_read():
    """XMem's get_affinity + readout (plain softmax over all memory), values and gradients, float64."""
    g = torch.Generator().manual_seed(0)
    mk, qk = torch.randn(2, 8, 30, generator=g, dtype=torch.float64), torch.randn(2, 8, 10, generator=g,
                                                                                   dtype=torch.float64)
    ms = torch.rand(2, 1, 30, generator=g, dtype=torch.float64) + 1
    qe = torch.rand(2, 8, 10, generator=g, dtype=torch.float64)
    mv = torch.randn(2, 6, 30, generator=g, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (mk, ms, mv, qk, qe)]

    def official(mk, ms, mv, qk, qe):
        a = mk.transpose(1, 2).pow(2) @ qe
        two_ab = 2 * (mk.transpose(1, 2) @ (qk * qe))
        b = (qe * qk.pow(2)).sum(1, keepdim=True)
        sim = (-a + two_ab - b) * ms.transpose(1, 2) / math.sqrt(8)
        return mv @ torch.softmax(sim, dim=1)

    ours, ref = softmax_readout(*inputs), official(*inputs)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((ours * weights).sum(), inputs),
                    torch.autograd.grad((ref * weights).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_layernorm_backward_is_exact_and_the_forward_unchanged():
    norm = LayerNorm2d(16).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.2)
    x = (torch.randn(2, 16, 5, 6, dtype=torch.float64) * 3 + 7).requires_grad_()
    assert torch.autograd.gradcheck(norm, (x,))
    with torch.no_grad():
        plain = norm(x)
    assert torch.equal(norm(x).detach(), plain)             # the training path computes the same values


def test_dinov2_branch_is_frozen():
    from colormnet_core.network import ColorMNet
    from colormnet_core.training import frozen_modules, prepare_for_training

    network = ColorMNet()
    assert [name for name, _ in frozen_modules(network)] == ["key_encoder.dino"]
    trainable = prepare_for_training(network)
    assert sum(p.numel() for p in trainable) == 99_190_337       # 123,609,281 less DINOv2 and its conv3/bn3
    assert not any(p.requires_grad for p in network.key_encoder.dino.parameters())
    assert not network.training
    with pytest.raises(TypeError, match="no training rule"):
        frozen_modules(torch.nn.Linear(2, 2))


def test_training_checkpoint_is_replaced_atomically(tmp_path, monkeypatch):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [5])

    def save(step):
        return save_training_state(tmp_path, network=net, optimizer=opt, scheduler=sched, scaler=None,
                                   position=DataPosition(step=step), run={"x": 1})

    torch.manual_seed(5)
    save(1)
    expected_next = torch.rand(3)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save(2)
    monkeypatch.undo()
    assert not list(tmp_path.glob(".*partial*"))
    state = load_training_state(tmp_path)
    assert state["position"]["step"] == 1                    # the old checkpoint, whole
    restore_rng_states(state["rng"])
    assert torch.equal(torch.rand(3), expected_next)         # the generator states came back
    (tmp_path / "last.ckpt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="damaged"):
        load_training_state(tmp_path)


def test_official_initialisation_from_pretrained_backbones(tmp_path):
    from safetensors.torch import save_file

    from colormnet_core.backbones import ResNetTrunk, build_dinov2_vits14
    from colormnet_core.network import ColorMNet
    from colormnet_core.training.families import PretrainedBackbones, official_initialisation

    torch.manual_seed(0)
    vit, r50, r18 = build_dinov2_vits14(), ResNetTrunk("resnet50"), ResNetTrunk("resnet18")
    dino_state = {**vit.state_dict(), "mask_token": torch.full((1, 384), 0.5)}
    torch.save(dino_state, tmp_path / "dinov2.pth")
    save_file({k: v.contiguous() for k, v in r50.state_dict().items()}, str(tmp_path / "r50.safetensors"))
    torch.save({**r18.state_dict(), "fc.weight": torch.zeros(1000, 512)}, tmp_path / "r18.pth")   # extra keys: ignored
    network = ColorMNet()
    backbones = PretrainedBackbones(tmp_path / "dinov2.pth", tmp_path / "r50.safetensors", tmp_path / "r18.pth")
    official_initialisation(network, backbones, seed=1)
    state = network.state_dict()
    qkv = "blocks.3.attn.qkv.weight"
    assert torch.equal(state[f"key_encoder.dino.vit.{qkv}"], vit.state_dict()[qkv])
    assert torch.equal(state["key_encoder.dino.mask_token"], dino_state["mask_token"])
    assert torch.equal(state["key_encoder.cnn.layer3.5.conv3.weight"], r50.state_dict()["layer3.5.conv3.weight"])
    conv1 = state["value_encoder.cnn.conv1.weight"]                       # 64 x 5 x 7 x 7: RGB + 2 chroma
    assert torch.equal(conv1[:, :3], r18.state_dict()["conv1.weight"]) and conv1[:, 3:].abs().sum() > 0
    key = state["key_proj.key.weight"].flatten(1)                          # orthogonal rows, zero bias
    torch.testing.assert_close(key @ key.T, torch.eye(64), atol=1e-4, rtol=0)
    assert not state["key_proj.key.bias"].any()
    with pytest.raises(InputError, match="does not hold ResNet-50"):
        official_initialisation(network, PretrainedBackbones(tmp_path / "dinov2.pth", tmp_path / "r18.pth",
                                                             tmp_path / "r18.pth"), seed=1)
