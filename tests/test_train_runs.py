"""`python -m colormnet_core train` end to end on tiny clips (112 x 112 crops, 2 frames per clip, global
batch 2, 3 steps + 1 fine-tune step, fp32 on the CPU), against one uninterrupted reference run:

* a run killed with SIGKILL mid-step, then resumed (once under a time budget that stops it cleanly at
  a checkpoint, once to the end), logs the reference's losses and ends with its weights;
* `torchrun --nproc_per_node 2` (gloo on 127.0.0.1) trains like the one process with the same global batch;
* the exports load wherever the official checkpoint loads: Model Loader node, CLI, Ray workers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

from colormnet_core.checkpoint import OFFICIAL_SENTINEL, load_model, read_state_dict, sha256_file
from colormnet_core.download import sidecar, verify
from colormnet_core.errors import CheckpointError
from colormnet_core.training.monitor import read_losses

from .golden import BLACKSWAN, REPO
from .plugin import load_plugin
from .train_runs import TINY, free_port, make_clip_folders, run_train, train_command, train_env

pytestmark = pytest.mark.slow            # whole training runs of the full 123 M-parameter network

STEPS = ["--iterations", "3", "--finetune-iterations", "1", "--batch-size", "2", "--export-every", "2"]
EXPORTS = ["colormnet_s2_2.safetensors", "colormnet_s2_4.safetensors"]
# Runs that are not interrupted checkpoint only where a stage ends (writing the state is not part of the
# computation; each checkpoint is 1.5 GB); the killed run keeps TINY's checkpoint after every step.
RARE_CHECKPOINTS = ["--checkpoint-every", "1000"]


@pytest.fixture(scope="module")
def common(tmp_path_factory, golden_checkpoint):
    clips = make_clip_folders(tmp_path_factory.mktemp("clips"), clips=4, frames=3)
    return ["--clips", str(clips), "--init", str(golden_checkpoint), *STEPS, *TINY]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, common):
    """The uninterrupted run: its folder."""
    out = tmp_path_factory.mktemp("reference")
    run_train("--out", out, *common, *RARE_CHECKPOINTS)
    return out


def assert_same_losses(ours: list[dict], expected: list[dict], rel: float) -> None:
    assert [e["step"] for e in ours] == [e["step"] for e in expected] == [1, 2, 3, 4]
    for a, b in zip(ours, expected):
        assert a["loss"] == pytest.approx(b["loss"], rel=rel) and a["frames"] == pytest.approx(b["frames"], rel=rel)
        assert a["lr"] == b["lr"]


def assert_same_changes(path, expected_path, start_path, *, rtol: float, flips: float = 0.0) -> None:
    """The weights' changes from the start (~lr = 2e-5 per step) agree relative to themselves.

    flips: the share of elements allowed to differ beyond rtol by at most one AdamW step per step taken
    (4 lr): AdamW moves a weight by ~lr whatever its gradient's size, so where a gradient is at rounding
    level (DDP sums the two ranks' gradients in another order than one process) its step can go either
    way. The losses, compared separately, show the runs are the same computation."""
    ours, expected, start = read_state_dict(path), read_state_dict(expected_path), read_state_dict(start_path)
    moved, elements, off = 0, 0, 0
    for name, value in expected.items():
        if not value.is_floating_point():
            assert torch.equal(ours[name], value), name
            continue
        change = value.double() - start[name].double()
        mine = ours[name].double() - start[name].double()
        bad = (mine - change).abs() > 1e-9 + rtol * change.abs()
        if flips == 0.0:
            torch.testing.assert_close(mine, change, rtol=rtol, atol=1e-9, msg=name)
        else:
            assert bool(((mine - change).abs() <= 4 * 2e-5 + rtol * change.abs()).all()), name
        elements, off = elements + change.numel(), off + int(bad.sum())
        moved += int(change.abs().max() > 1e-6)
    assert moved > 300, "too few tensors moved for the comparison to mean anything"
    assert off <= flips * elements, f"{off} of {elements} weight changes differ"


def test_sigkill_mid_step_and_resume_continue_the_run_exactly(tmp_path, common, reference, golden_checkpoint):
    out = tmp_path / "killed"
    process = subprocess.Popen(train_command("--out", out, *common), env=train_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while len(read_losses(out)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)           # into step 3 (or still writing step 2's checkpoint)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    # A time budget shorter than a step: one step, then a clean stop at a checkpoint ...
    stopped = run_train("--out", out, "--resume", "--time-budget", "1s", *common)
    assert "stopped (time budget)" in stopped.stderr and "--resume" in stopped.stderr
    assert len(read_losses(out)) < 4
    # ... and the last resume finishes the run.
    run_train("--out", out, "--resume", *common)

    assert_same_losses(read_losses(out), read_losses(reference), rel=1e-6)
    assert sorted(p.name for p in out.glob("*.safetensors")) == EXPORTS
    assert not list(out.glob(".*partial*")), "a partial file was left behind"
    assert_same_changes(out / EXPORTS[-1], reference / EXPORTS[-1], golden_checkpoint, rtol=1e-5)


def test_two_torchrun_ranks_train_like_one_process(tmp_path, common, reference, golden_checkpoint):
    out = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                "-m", "colormnet_core", "train", "--out", str(out), *common, *RARE_CHECKPOINTS]
    result = subprocess.run(torchrun, env=dict(train_env(), GLOO_SOCKET_IFNAME="lo"), cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    # Each rank takes one clip of every global batch; DDP averages the two gradients.
    assert_same_losses(read_losses(out), read_losses(reference), rel=1e-5)
    assert_same_changes(out / EXPORTS[-1], reference / EXPORTS[-1], golden_checkpoint, rtol=1e-3, flips=1e-4)


def test_resume_without_a_run_says_so(tmp_path, capsys, common):
    from colormnet_core.__main__ import main

    assert main(["train", "--out", str(tmp_path / "none"), "--resume", *common]) == 1
    assert "nothing to resume" in capsys.readouterr().err


def test_export_is_an_official_checkpoint_with_its_sha256(reference, golden_checkpoint):
    path = reference / EXPORTS[-1]
    digest = sha256_file(path)
    assert sidecar(path).read_text().split()[0] == digest
    verify(path)
    with safe_open(str(path), "pt") as f, safe_open(str(golden_checkpoint), "pt") as g:
        keys = set(f.keys())
        assert keys == set(g.keys()) and OFFICIAL_SENTINEL in keys
        assert f.metadata()["trained_steps"] == "4"
    trained, start = load_model(path).state_dict(), read_state_dict(golden_checkpoint)   # strict load
    assert not torch.equal(trained["decoder.pred.weight"], start["decoder.pred.weight"].float())
    assert torch.equal(trained["key_encoder.dino.vit.cls_token"], start["key_encoder.dino.vit.cls_token"].float())
    damaged = path.with_name("damaged.safetensors")
    damaged.write_bytes(path.read_bytes()[:-16] + bytes(16))
    sidecar(damaged).write_text(sidecar(path).read_text())
    with pytest.raises(CheckpointError, match="sha256"):
        verify(damaged)


def test_export_loads_in_the_model_loader_node(reference, tmp_path, monkeypatch):
    path = reference / EXPORTS[-1]
    for file in (path, sidecar(path)):
        (tmp_path / file.name).symlink_to(file)
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path))
    loader = load_plugin().NODE_CLASS_MAPPINGS["ColorMNetModelLoader"]
    assert path.name in loader.INPUT_TYPES()["required"]["checkpoint"][0]
    (model,) = loader().load(path.name, "fp32")
    weights = model.network(torch.device("cpu")).state_dict()
    assert torch.equal(weights["decoder.pred.weight"], read_state_dict(path)["decoder.pred.weight"])


def test_export_loads_in_ray_workers_by_its_sha256(reference):
    from colormnet_core.film.worker import cached_network

    path = reference / EXPORTS[-1]
    network = cached_network(path, sha256_file(path), torch.device("cpu"))
    assert torch.equal(network.state_dict()["decoder.pred.weight"], read_state_dict(path)["decoder.pred.weight"])
    with pytest.raises(CheckpointError, match="not the driver's checkpoint"):
        cached_network(path, "0" * 64, torch.device("cpu"))


def test_export_colorizes_from_the_cli(reference, tmp_path):
    from colormnet_core.__main__ import main

    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("00000.png", "00001.png"):
        (frames / name).symlink_to(BLACKSWAN / "frames" / name)
    out = tmp_path / "out"
    assert main(["colorize", "--input", str(frames), "--exemplar", f"{BLACKSWAN / 'exemplar' / '00000.png'}@0",
                 "--output", str(out), "--checkpoint", str(reference / EXPORTS[-1]), "--size", "112",
                 "--device", "cpu"]) == 0
    assert len(list(out.glob("*.png"))) == 2
