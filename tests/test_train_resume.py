"""A training run killed with SIGKILL mid-step resumes from its last checkpoint and goes on exactly as
an uninterrupted run; a time budget and --max-steps stop it cleanly at a checkpoint."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch

from colormnet_core.checkpoint import load_model, read_state_dict
from colormnet_core.download import verify
from colormnet_core.errors import CheckpointError
from colormnet_core.training.monitor import read_losses

from .golden import REPO
from .train_runs import TINY, make_clip_folders, run_train, train_command, train_env

STEPS = ["--iterations", "3", "--finetune-iterations", "1", "--batch-size", "1", "--export-every", "2"]


@pytest.mark.slow
def test_sigkill_mid_step_then_resume_gives_the_uninterrupted_losses(tmp_path, golden_checkpoint):
    clips = make_clip_folders(tmp_path / "clips")
    common = ["--clips", clips, "--init", golden_checkpoint, *STEPS, *TINY]
    run_train("--out", tmp_path / "straight", *common)
    reference = read_losses(tmp_path / "straight")
    assert [e["step"] for e in reference] == [1, 2, 3, 4]

    # Killed while its third step runs (the second is logged; its checkpoint may or may not be written).
    out = tmp_path / "killed"
    process = subprocess.Popen(train_command("--out", out, *common), env=train_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(read_losses(out)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = len(read_losses(out))

    # Resume under a time budget too short for a second step: it stops cleanly at a checkpoint ...
    stopped = run_train("--out", out, "--resume", "--time-budget", "1s", *common)
    assert "time budget" in stopped.stderr and "--resume" in stopped.stderr
    assert len(read_losses(out)) < 4
    # ... and a last resume finishes the run.
    run_train("--out", out, "--resume", *common)

    resumed = read_losses(out)
    assert [e["step"] for e in resumed] == [1, 2, 3, 4], f"killed after {killed_at} logged steps"
    for ours, ref in zip(resumed, reference):
        assert ours["loss"] == pytest.approx(ref["loss"], rel=1e-6, abs=1e-7)
        assert ours["frames"] == pytest.approx(ref["frames"], rel=1e-6, abs=1e-7)
        assert ours["lr"] == ref["lr"]
    assert not list(out.glob(".*partial*")), "a partial checkpoint was left behind"

    # The exports load like the official checkpoint (strictly) and match the uninterrupted run's.
    names = sorted(p.name for p in (tmp_path / "straight").glob("*.safetensors"))
    assert names == ["colormnet_s2_2.safetensors", "colormnet_s2_4.safetensors"]
    assert sorted(p.name for p in out.glob("*.safetensors")) == names
    final, reference_final = out / names[-1], tmp_path / "straight" / names[-1]
    verify(final)
    network = load_model(final)
    expected = read_state_dict(reference_final)
    for name, value in network.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-8, msg=name)
    final.write_bytes(final.read_bytes()[:-16] + bytes(16))
    with pytest.raises(CheckpointError, match="sha256"):
        verify(final)


def test_resume_without_a_run_says_so(tmp_path, capsys):
    from colormnet_core.__main__ import main

    clips = make_clip_folders(tmp_path / "clips", clips=1, frames=2)
    assert main(["train", "--out", str(tmp_path / "none"), "--clips", str(clips), "--resume", *TINY]) == 1
    assert "nothing to resume" in capsys.readouterr().err
