"""Every shipped workflow uses only node types and input names that exist: ours from our classes,
core ones from a real ComfyUI 0.3.64's /object_info."""

from __future__ import annotations

import json

import pytest

from . import golden
from .plugin import load_plugin

WORKFLOWS = golden.REPO / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
VIRTUAL = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


@pytest.fixture(scope="module")
def known_inputs(spec_dir):
    core = json.loads((spec_dir / "comfyui_object_info.json").read_text())["nodes"]
    known = {name: {n for group in ("required", "optional") for n in d["input"].get(group, {})}
             for name, d in core.items()}
    for name, cls in load_plugin().NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        known[name] = {n for group in ("required", "optional") for n in spec.get(group, {})}
    return known


def test_the_four_workflows_ship_in_both_formats_with_thumbnails():
    stems = {p.stem for p in UI_FILES}
    assert stems == {"colormnet_basic", "colormnet_keyframes", "colormnet_image_model_exemplar", "colormnet_long_video"}
    assert {p.stem for p in API_FILES} == stems
    for stem in stems:
        thumb = WORKFLOWS / f"{stem}.jpg"
        assert thumb.is_file() and thumb.read_bytes()[:2] == b"\xff\xd8", f"{thumb.name} missing or not a JPEG"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_nodes_and_inputs_exist(path, known_inputs):
    prompt = json.loads(path.read_text())
    for node_id, node in prompt.items():
        assert node["class_type"] in known_inputs, f"{path.name} node {node_id}: unknown type {node['class_type']}"
        unknown = set(node["inputs"]) - known_inputs[node["class_type"]]
        assert not unknown, f"{path.name} node {node_id} ({node['class_type']}): unknown inputs {unknown}"
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in prompt, f"{path.name}: link to missing node {value[0]}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_nodes_and_inputs_exist_and_match_the_api_twin(path, known_inputs):
    graph = json.loads(path.read_text())
    twin = json.loads((WORKFLOWS / "api" / path.name).read_text())
    real = [n for n in graph["nodes"] if n["type"] not in VIRTUAL]
    assert sorted(n["type"] for n in real) == sorted(n["class_type"] for n in twin.values())
    for node in real:
        assert node["type"] in known_inputs, f"{path.name}: unknown node type {node['type']}"
        names = {i["name"] for i in node.get("inputs", [])}
        assert names <= known_inputs[node["type"]], f"{path.name}: {node['type']} unknown inputs"
    link_ids = {link[0] for link in graph["links"]}
    for node in real:
        for socket in node.get("inputs", []):
            assert socket["link"] is None or socket["link"] in link_ids


def test_shipped_workflows_use_the_documented_file_names():
    text = "".join(p.read_text() for p in API_FILES)
    for name in ("colormnet_example.mp4", "colormnet_example_exemplar.png",
                 "DINOv2FeatureV6_LocalAtten_s2_154000.safetensors"):
        assert name in text
