"""CMNET2's DINOv3 checkpoint family: recognised by content in every released layout, refused with
the fix when a part is missing. Small files in the release layout (every key, tiny tensors) test the
reading rules; the fixture's full-size release (tests/test_golden_dinov3.py) tests strict loading."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from colormnet_core import checkpoint_cmnet2 as cmnet2
from colormnet_core.checkpoint import backbone_of, infer_network_config, ours_to_official, read_state_dict
from colormnet_core.errors import CheckpointError

from . import golden_dinov3 as fixture

BACKBONE = cmnet2.BACKBONE_PREFIX


def tiny_release(layer_naming: str = "model.layer") -> dict[str, torch.Tensor]:
    """CMNET2's whole state dict, every key, each tensor replaced by a distinct 2-value stand-in (the
    dimension keys the loader reads keep their real leading size)."""
    out = {}
    for i, (key, (shape, dtype)) in enumerate(fixture.manifest().items()):
        if dtype != "float32":
            out[key] = torch.tensor(0)
        elif key in ("key_proj.key_proj.weight", "value_encoder.fuser.block2.conv2.weight",
                     "decoder.hidden_update.transform.weight"):
            out[key] = torch.full((shape[0], 1), float(i))
        else:
            out[key] = torch.tensor([float(i), -float(i)])
        if layer_naming == "layer" and key.startswith(BACKBONE + "model.layer."):
            out[key.replace(BACKBONE + "model.layer.", BACKBONE + "layer.")] = out.pop(key)
    return out


def write_folder(folder, state: dict[str, torch.Tensor], config: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixture.FIXTURE / "dinov3-vitb16" / "config.json", folder / "config.json")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    hub = {k[len(BACKBONE):].replace("model.layer.", "layer."): v.clone() + 1000 for k, v in state.items()
           if k.startswith(BACKBONE)}
    save_file(hub, str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def reference():
    return tiny_release()


@pytest.fixture(scope="module")
def read_reference(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "DINOv3FeatureV6_LocalAtten_p374099.pth"
    torch.save(reference, path)
    return read_state_dict(path)


def test_release_pth_maps_every_key_to_our_network(read_reference):
    assert backbone_of(read_reference) == "dinov3_vitb16"
    assert "key_encoder.dino.vit.blocks.11.attn.q_proj.bias" in read_reference
    assert "key_encoder.dino.vit.blocks.7.gamma_2" in read_reference
    assert "key_encoder.dino.vit.reg_token" in read_reference
    assert "key_encoder.dino.conv.weight" in read_reference and "key_encoder.dino.bn.running_var" in read_reference
    assert not any("network2" in k for k in read_reference)
    config = infer_network_config(read_reference)
    assert (config.key_dim, config.value_dim, config.hidden_dim, config.backbone) == (64, 512, 64, "dinov3_vitb16")
    # Back to CMNET2's names: the one table, reversed.
    back = {ours_to_official(k, "dinov3_vitb16") for k in read_reference}
    assert back == set(fixture.manifest())


@pytest.mark.parametrize("layout", ["layer_naming", "training_checkpoint", "safetensors", "module_prefix"])
def test_every_released_layout_reads_the_same(tmp_path, reference, read_reference, layout):
    if layout == "layer_naming":             # saved under transformers 4.x
        path = tmp_path / "p.pth"
        torch.save(tiny_release("layer"), path)
    elif layout == "training_checkpoint":    # training/checkpoint_io.py's dict, before export_weights.py
        path = tmp_path / "step_1000.pth"
        torch.save({"effective_step": 1000, "model": reference, "optimizer": {"state": {}},
                    "scaler": None, "scheduler": {"last_epoch": 3}}, path)
    elif layout == "safetensors":
        path = tmp_path / "p.safetensors"
        save_file({k: v.contiguous() for k, v in reference.items()}, str(path))
    else:
        path = tmp_path / "p.pth"
        torch.save({"module." + k: v for k, v in reference.items()}, path)
    read = read_state_dict(path)
    assert read.keys() == read_reference.keys()
    assert all(torch.equal(read[k], read_reference[k]) for k in read)


def test_backbone_comes_from_the_folder_beside_a_pth_without_it(tmp_path, reference, read_reference):
    path = tmp_path / "DINOv3FeatureV6_LocalAtten_p374099.pth"
    torch.save({k: v for k, v in reference.items() if not k.startswith(BACKBONE)}, path)
    with pytest.raises(CheckpointError) as missing:
        read_state_dict(path)
    text = str(missing.value)
    assert "without its DINOv3 ViT-B/16 backbone" in text and "211 of 211" in text
    assert "dinov3-vitb16.zip" in text and str(tmp_path / "dinov3-vitb16" / "model.safetensors") in text
    write_folder(tmp_path / "dinov3-vitb16", reference)
    read = read_state_dict(path)
    assert read.keys() == read_reference.keys()
    key = "key_encoder.dino.vit.blocks.3.mlp.fc1.weight"
    assert torch.equal(read[key], read_reference[key] + 1000)           # from the folder
    assert torch.equal(read["decoder.pred.weight"], read_reference["decoder.pred.weight"])


def test_the_pth_backbone_wins_over_the_folder(tmp_path, reference, read_reference):
    path = tmp_path / "p.pth"
    torch.save(reference, path)
    write_folder(tmp_path / "dinov3-vitb16", reference)
    read = read_state_dict(path)
    assert all(torch.equal(read[k], read_reference[k]) for k in read)


def test_a_folder_of_another_network_is_refused(tmp_path, reference):
    path = tmp_path / "p.pth"
    torch.save(reference, path)
    config = json.loads((fixture.FIXTURE / "dinov3-vitb16" / "config.json").read_text())
    write_folder(tmp_path / "dinov3-vitb16", reference, {**config, "hidden_size": 1024, "num_hidden_layers": 24})
    with pytest.raises(CheckpointError, match="hidden_size=1024.*Replace the folder with dinov3-vitb16.zip"):
        read_state_dict(path)


def test_partial_backbone_and_truncated_files_are_refused(tmp_path, reference):
    partial = dict(reference)
    del partial[BACKBONE + "model.layer.5.attention.q_proj.weight"]
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(CheckpointError, match=r"1 of 211 backbone tensors are missing \(model\.layer\.5"):
        read_state_dict(path)
    whole = tmp_path / "whole.pth"
    torch.save(reference, whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated, damaged or not a checkpoint; download it again") as e:
        read_state_dict(cut)
    assert "dan64/cmnet2/releases" in str(e.value)


def test_an_unrelated_pth_names_both_families(tmp_path):
    path = tmp_path / "yolo.pth"
    torch.save({"model.0.conv.weight": torch.zeros(2), "model.24.anchors": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as e:
        read_state_dict(path)
    text = str(e.value)
    assert "is not a ColorMNet checkpoint" in text and "CMNET2's DINOv3 one" in text
    assert "DINOv2FeatureV6_LocalAtten_s2_154000.pth" in text and "dan64/cmnet2/releases" in text
