"""The pack's Comfy Registry metadata: icon made from the shipped example, version floor, classifiers,
publish workflow."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
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
