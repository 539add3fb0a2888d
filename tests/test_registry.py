"""The pack's Comfy Registry metadata: icon made from the shipped example, version floor, classifiers,
publish workflow."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tomllib
from PIL import Image

from . import golden

PYPROJECT = tomllib.loads((golden.REPO / "pyproject.toml").read_text())


def test_icon_is_a_small_square_made_by_the_script_from_the_example():
    icon = golden.REPO / "docs" / "icon.png"
    with Image.open(icon) as image:
        assert image.format == "PNG" and image.width == image.height <= 400
        shipped = np.asarray(image.convert("RGB")).astype(int)
    spec = importlib.util.spec_from_file_location("make_icon_under_test", golden.REPO / "scripts" / "make_icon.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    made = np.asarray(script.make_icon(shipped.shape[0])).astype(int)
    assert np.abs(made - shipped).max() <= 3   # decoders may round the grey frame a level apart
    # Above-left of the diagonal the input is grey, below-right the exemplar has colour.
    upper, lower = shipped[20, 20], shipped[-20, -20]
    assert upper.max() - upper.min() <= 2 and np.ptp(shipped[-60:, -60:], axis=-1).mean() > 10
    assert lower.tolist() != upper.tolist()
    tool = PYPROJECT["tool"]["comfy"]
    assert tool["Icon"].endswith("/docs/icon.png")
    owner_repo = PYPROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    assert tool["Icon"] == f"https://raw.githubusercontent.com/{owner_repo}/main/docs/icon.png"


def test_requires_comfyui_is_the_harness_version_and_classifiers_name_os_and_gpus():
    assert re.fullmatch(r">=\d+\.\d+\.\d+", PYPROJECT["tool"]["comfy"]["requires-comfyui"])
    # The version whose /object_info the workflow tests check against, and the harness ran.
    info = (golden.REPO / "tests" / "data" / "spec" / "comfyui_object_info.json").read_text(encoding="utf-8")
    version = re.search(r'"comfyui_version":\s*"([0-9.]+)"', info[:200]).group(1)
    assert PYPROJECT["tool"]["comfy"]["requires-comfyui"] == f">={version}"
    classifiers = PYPROJECT["project"]["classifiers"]
    assert any(c.startswith("Operating System ::") for c in classifiers)
    assert any(c.startswith("Environment :: GPU ::") for c in classifiers)


def test_publish_workflow_uses_the_registrys_action_with_the_token_secret():
    text = (golden.REPO / ".github" / "workflows" / "publish.yml").read_text()
    assert "uses: Comfy-Org/publish-node-action@v1" in text
    assert "personal_access_token: ${{ secrets.REGISTRY_ACCESS_TOKEN }}" in text
    assert '- "pyproject.toml"' in text and "workflow_dispatch" in text
    readme = (golden.REPO / "README.md").read_text()
    assert "ComfyUI-Manager" in readme and "REGISTRY_ACCESS_TOKEN" in readme and "make_icon.py" in readme


# -- the Registry archive (`comfy node pack`, comfy-cli from requirements-dev.txt; offline) ------------------

PACK_LIMIT = 5 * 1024 * 1024


def comfy_cli(args: list[str], cwd, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "DO_NOT_TRACK": "1", "COMFY_NO_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-m", "comfy_cli", "--skip-prompt", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """`comfy node pack` run on a clone of this repository's HEAD (it archives git-tracked files, minus
    .comfyignore), unpacked: (archive path, unpacked folder, comfy output)."""
    root = tmp_path_factory.mktemp("pack")
    clone = root / "clone"
    subprocess.run(["git", "clone", "--quiet", str(golden.REPO), str(clone)], check=True, timeout=120)
    run = comfy_cli(["node", "pack"], clone, root)
    assert run.returncode == 0, run.stdout + run.stderr
    archive = clone / "node.zip"
    unpacked = root / "comfyui-colormnet"
    with zipfile.ZipFile(archive) as z:
        z.extractall(unpacked)
    return archive, unpacked, run.stdout


def test_the_registry_archive_is_small_and_holds_what_users_need(packed):
    archive, unpacked, _ = packed
    size = archive.stat().st_size
    assert size <= PACK_LIMIT, f"node.zip is {size / 2**20:.2f} MiB"
    names = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    for needed in ("__init__.py", "README.md", "LICENSE", "requirements.txt", "pyproject.toml", "docs/icon.png",
                   "nodes/film.py", "colormnet_core/film/commit.py", "scripts/queue_batch.py"):
        assert needed in names, needed
    tracked = subprocess.run(["git", "ls-files", "workflows"], cwd=golden.REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert set(tracked) <= names                       # every workflow, thumbnail and example medium
    assert not [n for n in names if n.split("/")[0] in ("tests", "bench", ".ci", ".github")]
    assert not [n for n in names if n.startswith("scripts/") and n != "scripts/queue_batch.py"]
    readme_images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", (golden.REPO / "README.md").read_text())
    assert readme_images and set(readme_images) <= names          # the README shows its pictures in the Registry
    assert "requirements-dev.txt" not in names and not [n for n in names if n.startswith("docs/") and
                                                        n not in ("docs/icon.png", *readme_images)]
    # The README records the archive's size (within 20 %: it drifts a little with every change).
    stated = re.search(r"archive[^.]*?is ([0-9.]+) MB", (golden.REPO / "README.md").read_text())
    assert stated, "README: say how big the Registry archive is"
    assert abs(float(stated.group(1)) * 1e6 - size) <= 0.2 * size


def test_the_unpacked_archive_is_a_plugin_with_every_workflow_node_and_medium(packed):
    """What ComfyUI-Manager installs imports as a plugin, and every shipped workflow finds its nodes and
    media in it (the real-ComfyUI run from the archive is in scripts/film_e2e.py --plugin; see README)."""
    _, unpacked, _ = packed
    code = ("import importlib.util, json, sys; "
            "spec = importlib.util.spec_from_file_location('packed_plugin', sys.argv[1] + '/__init__.py', "
            "submodule_search_locations=[sys.argv[1]]); m = importlib.util.module_from_spec(spec); "
            "sys.modules['packed_plugin'] = m; spec.loader.exec_module(m); "
            "print(json.dumps(sorted(m.NODE_CLASS_MAPPINGS)))")
    run = subprocess.run([sys.executable, "-c", code, str(unpacked)], capture_output=True, text=True, timeout=300,
                         cwd=unpacked.parent)
    assert run.returncode == 0, run.stderr
    ours = set(json.loads(run.stdout.splitlines()[-1]))
    for path in (unpacked / "workflows" / "api").glob("*.json"):
        for node in json.loads(path.read_text()).values():
            kind = node["class_type"]
            assert not kind.startswith("ColorMNet") or kind in ours, (path.name, kind)
            for value in node["inputs"].values():
                if isinstance(value, str) and value.endswith((".mp4", ".png")):
                    assert (unpacked / "workflows" / "media" / value).is_file(), (path.name, value)


def test_comfy_node_validate_passes(tmp_path):
    run = comfy_cli(["node", "validate"], golden.REPO, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    output = run.stdout + run.stderr
    assert "Security warnings" not in output and "All validation checks passed" in output
