"""bench/gpu_check.py (issue 22's one prepared GPU run) on a CPU with --quick, so it cannot rot while no GPU
is at hand: one run as the device machine runs it (a subprocess writing one JSON and one Markdown file), on
tiny sizes, whose report the tests read; and one run with no time budget, which must skip every section with
its reason rather than silently."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from . import golden

pytestmark = pytest.mark.slow

SCRIPT = golden.REPO / "bench" / "gpu_check.py"
SECTIONS = ("golden", "film", "shots", "propagation", "ray", "precision", "profile", "speed")


def run_check(out, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=1200, cwd=golden.REPO)


@pytest.fixture(scope="module")
def quick(tmp_path_factory, golden_checkpoint):
    """(process, report JSON, Markdown text, output folder) of one --quick --profile run. The budget is
    generous: what runs must not depend on how loaded the CI machine is (the budget test is below)."""
    out = tmp_path_factory.mktemp("gpu_check")
    run = run_check(out, "--profile", "--budget", "3600")
    assert (out / "gpu_check.json").is_file(), run.stderr[-3000:]
    return run, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), out


def test_the_quick_run_passes_and_leaves_one_json_and_one_markdown(quick):
    run, report, _, out = quick
    assert run.returncode == 0, run.stderr[-3000:]
    assert report["exit_code"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.md"]   # nothing else comes back
    status = {name: section["status"] for name, section in report["sections"].items()}
    assert status == {"golden": "passed", "film": "passed", "shots": "passed", "propagation": "passed",
                      "ray": "skipped", "precision": "done", "speed": "done", "profile": "done"}
    assert "--quick" in report["sections"]["ray"]["reason"]
    assert report["environment"]["device"] == "cpu"
    checkpoint = next(iter(report["environment"]["checkpoints"].values()))
    assert checkpoint["family"] == "vit_small_patch14_dinov2" and checkpoint["parameters"] == 123_609_281


def test_golden_parity_holds_with_the_ci_checks(quick):
    rows = quick[1]["sections"]["golden"]["rows"]
    assert [r["config"] for r in rows] == ["A_release"]
    row = rows[0]
    assert row["frames"] == 2 and row["result"] == "passed" and row["checks"] == "all passed"
    assert row["ab_max"] <= 5e-5 and row["png_max_levels"] <= 1


def test_film_shots_and_propagation_record_what_they_checked(quick):
    sections = quick[1]["sections"]
    for name, expected in (("film", "every shot done"), ("shots", "shot labels"),
                           ("propagation", "exemplar frames keep the forward pass's bits")):
        checks = {r["check"]: r["result"] for r in sections[name]["rows"]}
        assert checks[expected] == "passed" and set(checks.values()) == {"passed"}, (name, checks)


def test_precision_rows_measure_reduced_precision_against_float32(quick):
    rows = quick[1]["sections"]["precision"]["rows"]
    assert [(r["input"], r["precision"]) for r in rows] == [
        (name, precision) for name in ("golden", "blackswan") for precision in ("float32 (reference)", "bfloat16")]
    assert "not in this run's settings: float16" in quick[1]["sections"]["precision"]["summary"]
    for row in rows:
        assert row["frames"] == 2 and row["size"] == "112x112"
        if row["precision"] != "float32 (reference)":
            # autocast really ran in reduced precision: some values moved, none by anything like the range
            assert row["mean_levels"] > 0 and 0 < row["max_levels"] < 128
            assert 0 < row["over_0_pct"] <= 100 and row["over_8_pct"] <= row["over_0_pct"]


def test_speed_rows_and_goals(quick):
    report = quick[1]
    rows = report["sections"]["speed"]["rows"]
    done = [r for r in rows if r["status"] == "done"]
    assert {(r["precision"], r["key_batch"], r["frames"]) for r in done} == {
        ("bfloat16", 1, 4), ("bfloat16", 1, 8), ("float32", 1, 4), ("float32", 2, 4), ("bfloat16", 2, 4)}
    for row in done:
        assert row["s_per_frame"] > 0 and row["fps"] == pytest.approx(1 / row["s_per_frame"], rel=1e-3)
        assert row["processing"] == "112x64" and row["compile"] is False
    assert rows[0]["precision"] == "bfloat16" and rows[0]["frames"] == 4       # the goal configuration first
    goals = {g["goal"]: g for g in report["goals"]["rows"]}
    assert goals["frames/s at 112x64, bf16"]["met"] == "n/a (no GPU)"
    assert any(name.startswith("VRAM at 8 vs 4 frames") for name in goals)


def test_profile_times_every_stage(quick):
    rows = {r["stage"]: r for r in quick[1]["sections"]["profile"]["rows"]}
    # The two profiled frames (2 and 3) are not memory frames, so the value encoder does not run in them.
    for stage in ("key encoder: DINOv2", "key encoder: ResNet-50", "key encoder: fusion (3 Fuse)",
                  "memory read (top-k)", "LA (local attention)", "decoder"):
        assert rows[stage]["cpu_ms"] > 0, stage
    assert sum(r["share_pct"] for r in rows.values()) <= 100.5


def test_markdown_holds_every_table(quick):
    text = quick[2]
    for heading in ("# GPU check (issue 22)", "## Goals", "## Sections", "## golden", "## precision", "## speed",
                    "## profile"):
        assert heading in text
    assert "| A_release | 2 |" in text
    assert "| golden | bfloat16 | 2 | 112x112 |" in text
    assert "Exit code 0." in text


def test_an_exhausted_budget_skips_every_section_with_its_reason(tmp_path):
    run = run_check(tmp_path, "--budget", "0")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for name in (s for s in SECTIONS if s != "profile"):
        section = report["sections"][name]
        assert section["status"] == "skipped", name
        assert name == "ray" or section["reason"].startswith("time budget"), (name, section)
        assert any(note.startswith(f"{name}: skipped") for note in report["notes"])
    assert report["sections"]["profile"]["reason"].startswith("not asked for")
    assert "checkpoints" not in report["environment"]                  # no network was even loaded
    assert "skipped" in (tmp_path / "gpu_check.md").read_text()


def test_exit_status_follows_the_sections(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)      # its dataclasses look their module up
    monkeypatch.setattr(sys, "path", list(sys.path))         # it puts the repository and bench/ on the path
    spec.loader.exec_module(module)
    assert module.exit_code({"sections": {"golden": {"status": "passed"}, "speed": {"status": "done"}}}) == 0
    assert module.exit_code({"sections": {"golden": {"status": "passed"}, "speed": {"status": "error"}}}) == 2
    assert module.exit_code({"sections": {"film": {"status": "failed"}, "speed": {"status": "error"}}}) == 1
