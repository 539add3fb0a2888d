"""`film render --ray ADDRESS` on a 2-node Ray cluster on this machine (separate raylets, all on
127.0.0.1, no dashboard): the segments equal the in-process render's, also when the node running a
shot is removed mid-shot. Ray starts in ~10 s; the film is 4 tiny shots at processing size 112."""

from __future__ import annotations

import os

# Before Ray is imported (it reads this once): keep 127.0.0.1 as the cluster's address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from ray.cluster_utils import Cluster

from colormnet_core.__main__ import main
from colormnet_core.film import FilmProject

from .clips import make_shot_clip, panning_field

SHOTS = "0-4,5-8,9-13,14-17"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def film(tmp_path_factory, golden_checkpoint):
    """(make_project(name) -> folder of a fresh project, in-process reference project folder)."""
    root = tmp_path_factory.mktemp("film_ray")
    source = make_shot_clip(root / "film.mp4", shots=(5, 4, 5, 4))
    reference = root / "reference.png"
    Image.fromarray(panning_field(1, 64, 96, seed=99)[0]).save(reference)

    def make_project(name: str) -> Path:
        folder = root / name
        assert main(["film", "init", str(source), "--project", str(folder), "--shots", SHOTS]) == 0
        shutil.copy(reference, folder / "exemplars" / "reference.png")
        return folder

    sequential = make_project("sequential")
    # The same number of torch threads as each Ray task (1 CPU, 1 thread): CPU float32 results are
    # bit-identical at equal thread counts; another count sums in another order (BLAS blocking), which
    # moves a few near-tie pixels by a few levels.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert render(sequential, golden_checkpoint) == 0
    finally:
        torch.set_num_threads(threads)
    return make_project, sequential


def render(folder: Path, checkpoint: Path, *extra: str) -> int:
    return main(["film", "render", "--project", str(folder), "--checkpoint", str(checkpoint), "--size", "112",
                 "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head with no CPU (it schedules nothing) and two 1-CPU worker nodes, each its own raylet.
    Workers touch <trace>/<shot>-<node id>-<pid> when they start a shot."""
    trace = tmp_path_factory.mktemp("ray_trace")
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    patch.setenv("COLORMNET_RAY_TRACE_DIR", str(trace))   # inherited by the raylets and their workers
    patch.setenv("OMP_NUM_THREADS", "1")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    nodes = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes(timeout=60)
    yield cluster, nodes, trace
    cluster.shutdown()
    patch.undo()


def decoded(folder: Path) -> dict[str, list[np.ndarray]]:
    """Every segment's frames, decoded to RGB."""
    out = {}
    for path in sorted((folder / "segments").glob("*.mp4")):
        with av.open(str(path)) as container:
            out[path.name] = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return out


def assert_same_film(folder: Path, sequential: Path) -> None:
    ours, theirs = decoded(folder), decoded(sequential)
    assert list(ours) == list(theirs) == ["000000.mp4", "000005.mp4", "000009.mp4", "000014.mp4"]
    for name in theirs:
        assert len(ours[name]) == len(theirs[name])
        for a, b in zip(ours[name], theirs[name]):
            np.testing.assert_array_equal(a, b)
    states = [s.state for s in FilmProject.open(folder).status()]
    assert states == ["done"] * 4
    assert not list((folder / "segments").glob("*.partial-*")), "a temporary segment was left"


def test_ray_render_equals_the_sequential_one(film, cluster, golden_checkpoint, capsys):
    make_project, sequential = film
    c, _, _ = cluster
    folder = make_project("ray")
    assert render(folder, golden_checkpoint, "--ray", c.address, "--shot-timeout", "300") == 0
    assert_same_film(folder, sequential)
    report = capsys.readouterr().err   # four shots on two worker processes, the network loaded once in each
    assert "4 of 4 shots done on 2 worker processes; the network was loaded 2 times" in report
    assert report.count(", 1 attempt\n") == 4 and not list(folder.glob(".ray-probe-*"))


def test_segments_come_back_as_bytes_without_a_shared_folder(film, cluster, golden_checkpoint, capsys):
    make_project, sequential = film
    c, _, _ = cluster
    folder = make_project("bytes")
    assert render(folder, golden_checkpoint, "--ray", c.address, "--shared-folder", "no",
                  "--shot-timeout", "300") == 0
    assert_same_film(folder, sequential)
    # Four shots on two worker processes: each loaded the network once and kept it.
    assert "the network was loaded 2 times" in capsys.readouterr().err


def test_a_node_lost_mid_shot_the_film_still_completes_identically(film, cluster, golden_checkpoint, capsys):
    make_project, sequential = film
    c, nodes, trace = cluster
    for leftover in trace.iterdir():
        leftover.unlink()
    folder = make_project("lost_node")
    removed: list[str] = []

    def remove_the_first_busy_node() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not removed:
            for mark in trace.iterdir():
                node_id = mark.name.split("-")[1]
                node = next((n for n in nodes if n.node_id == node_id), None)
                if node is not None:
                    time.sleep(0.3)   # mid-shot: the shot takes seconds, the mark is its first act
                    removed.append(mark.name)
                    c.remove_node(node)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=remove_the_first_busy_node, daemon=True)
    killer.start()
    code = render(folder, golden_checkpoint, "--ray", c.address, "--shot-timeout", "300")
    killer.join(10)
    assert removed, "no shot started on a worker node"
    assert code == 0
    assert_same_film(folder, sequential)
    shot = int(removed[0].split("-")[0])
    lost_node = removed[0].split("-")[1]
    survivors = {m.name.split("-")[1] for m in trace.iterdir() if m.name.startswith(f"{shot}-")}
    assert survivors - {lost_node}, "the lost shot was not rendered again on the other node"
    report = capsys.readouterr().err
    assert "4 of 4 shots done" in report
    # The driver resubmitted the lost shot itself, so the report counts its attempts.
    line = next(x for x in report.splitlines() if x.startswith(f"shot {shot:4d}  done"))
    assert re.search(r", [2-9] attempts$", line), line


def test_without_ray_the_option_says_how_to_install_it(film, golden_checkpoint, monkeypatch, capsys):
    make_project, _ = film
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray -> ImportError
    assert render(make_project("no_ray"), golden_checkpoint, "--ray", "auto") == 1
    assert 'pip install "ray[default]>=2.9"' in capsys.readouterr().err
