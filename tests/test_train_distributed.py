"""`torchrun --nproc_per_node 2` on the CPU (gloo, 127.0.0.1) trains like one process with the same
global batch: the same clips, augmentations and draws, the same losses and weights to float rounding."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from colormnet_core.checkpoint import read_state_dict
from colormnet_core.training.monitor import read_losses

from .golden import REPO
from .train_runs import TINY, free_port, make_clip_folders, run_train, train_env

STEPS = ["--iterations", "2", "--finetune-iterations", "0", "--batch-size", "2", "--export-every", "2"]


@pytest.mark.slow
def test_two_ranks_train_like_one_process_with_the_same_global_batch(tmp_path, golden_checkpoint):
    clips = make_clip_folders(tmp_path / "clips", clips=3, frames=3)
    common = ["--clips", clips, "--init", golden_checkpoint, *STEPS, *TINY]
    run_train("--out", tmp_path / "one", *common)

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                "-m", "colormnet_core", "train", "--out", str(tmp_path / "two"), *map(str, common)]
    env = dict(train_env(), MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", TORCHELASTIC_ERROR_FILE="")
    result = subprocess.run(torchrun, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    one, two = read_losses(tmp_path / "one"), read_losses(tmp_path / "two")
    assert [e["step"] for e in one] == [e["step"] for e in two] == [1, 2]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["frames"] == pytest.approx(a["frames"], rel=1e-5)
    weights_one = read_state_dict(tmp_path / "one" / "colormnet_s2_2.safetensors")
    weights_two = read_state_dict(tmp_path / "two" / "colormnet_s2_2.safetensors")
    start = read_state_dict(golden_checkpoint)
    moved = 0
    for name, value in weights_one.items():
        # Weight changes are ~lr (2e-5): compare them, not just the weights, with a tolerance relative to them.
        if value.is_floating_point():
            change_one = value.double() - start[name].double()
            change_two = weights_two[name].double() - start[name].double()
            torch.testing.assert_close(change_two, change_one, rtol=1e-3, atol=2e-9, msg=name)
            moved += int(change_one.abs().max() > 1e-6)
        else:
            assert torch.equal(value, weights_two[name]), name
    assert moved > 300, "the steps changed too few tensors to compare"
