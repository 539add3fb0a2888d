"""Checkpoint reading, naming, strict loading and conversion - on small files the tests make."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from colormnet_core.__main__ import main
from colormnet_core.checkpoint import (
    OFFICIAL_SENTINEL,
    infer_network_config,
    load_into,
    official_to_ours,
    ours_to_official,
    read_state_dict,
)
from colormnet_core.errors import CheckpointError


def official_keys(spec_dir):
    return [line.split("\t")[0] for line in (spec_dir / "official_state_dict.tsv").read_text().splitlines()
            if line and not line.startswith(("#", "key\t"))]


def test_name_table_is_a_bijection_over_the_official_keys(spec_dir):
    keys = official_keys(spec_dir)
    ours = [official_to_ours(k) for k in keys]
    assert len(keys) == 667 and len(set(ours)) == 667
    assert [ours_to_official(k) for k in ours] == keys
    assert official_to_ours("key_encoder.res2.0.conv1.weight") == "key_encoder.cnn.layer1.0.conv1.weight"
    fuse_key = "key_encoder.fuse1.crossattn.to_q_dw.weight"
    assert official_to_ours(fuse_key) == "key_encoder.fuse16.attention.to_q_dw.weight"
    assert official_to_ours("key_encoder.network2.backbone.mask_token") == "key_encoder.dino.mask_token"


def tiny_official_state():
    """A few official-named tensors, enough for the reader (not for the network)."""
    return {
        OFFICIAL_SENTINEL: torch.zeros(1, 1, 4),
        "key_encoder.res2.0.conv1.weight": torch.arange(8.0).reshape(2, 4, 1, 1),
        "key_proj.key_proj.weight": torch.ones(3, 5, 3, 3),
        "value_encoder.conv1.weight": torch.ones(2, 4, 7, 7),
        "value_encoder.fuser.block2.conv2.weight": torch.ones(6, 6, 3, 3),
        "decoder.hidden_update.transform.weight": torch.ones(9, 7, 3, 3),
        "value_encoder.bn1.num_batches_tracked": torch.tensor(0),
    }


@pytest.mark.parametrize("layout", ["bare", "wrapped", "dataparallel", "safetensors"])
def test_reads_official_files_in_common_containers(tmp_path, layout):
    state = tiny_official_state()
    path = tmp_path / ("ck.safetensors" if layout == "safetensors" else "ck.pth")
    if layout == "safetensors":
        save_file(state, path)
    elif layout == "wrapped":
        torch.save({"state_dict": state, "epoch": torch.tensor(3)}, path)
    elif layout == "dataparallel":
        torch.save({"module." + k: v for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    read = read_state_dict(path)
    assert torch.equal(read["key_encoder.cnn.layer1.0.conv1.weight"], state["key_encoder.res2.0.conv1.weight"])
    # XMem-style 4-channel value encoder: a zero fifth channel is appended; the file's tensor is untouched.
    conv1 = read["value_encoder.cnn.conv1.weight"]
    assert conv1.shape == (2, 5, 7, 7) and conv1[:, 4].abs().sum() == 0 and conv1[:, :4].eq(1).all()
    assert state["value_encoder.conv1.weight"].shape == (2, 4, 7, 7)
    config = infer_network_config(read)
    assert (config.key_dim, config.value_dim, config.hidden_dim) == (3, 6, 3)


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(CheckpointError, match="models/colormnet") as e:
        read_state_dict(tmp_path / "nope.pth")
    assert "nope.pth" in str(e.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    state = tiny_official_state()
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="download it again") as e:
        read_state_dict(path)
    assert path.name in str(e.value)


def test_non_checkpoint_files(tmp_path):
    rng = np.random.default_rng(0)
    contents = [rng.bytes(4096) for _ in range(200)] + [b"\x89PNG\r\n\x1a\n" + rng.bytes(256), b"", b"hello"]
    for i, content in enumerate(contents):
        path = tmp_path / f"image{i}.pth"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=f"image{i}.pth.*download it again"):
            read_state_dict(path)


def test_tensor_file_of_another_model(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2), "conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a ColorMNet checkpoint") as e:
        read_state_dict(path)
    assert "resnet.safetensors" in str(e.value) and "DINOv2FeatureV6" in str(e.value)


class _Payload:
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = str(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({OFFICIAL_SENTINEL: torch.zeros(1), "x": payload}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="arbitrary code") as e:
        read_state_dict(path)
    assert "evil.pth" in str(e.value)
    assert not marker.exists()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(3)


def test_strict_loading_names_every_kind_of_mismatch():
    good = Tiny().state_dict()
    cases = {
        "missing": {k: v for k, v in good.items() if k != "conv.bias"},
        "unexpected": {**good, "key_proj.d_proj.weight": torch.zeros(1)},
        "shape": {**good, "conv.weight": torch.zeros(3, 5, 1, 1)},
    }
    for label, state in cases.items():
        with pytest.raises(CheckpointError) as e:
            load_into(Tiny(), state, path="some/ck.pth")
        text = str(e.value)
        assert "some/ck.pth" in text and "official" in text
        assert {"missing": "conv.bias", "unexpected": "key_proj.d_proj.weight", "shape": "(3, 5, 1, 1)"}[label] in text


def test_fp16_checkpoints_are_upcast_and_counters_kept():
    state = {k: v.half() if v.is_floating_point() else v + 7 for k, v in Tiny().state_dict().items()}
    net = Tiny()
    load_into(net, state, path="x", dtype=torch.float32)
    assert net.conv.weight.dtype == torch.float32 and net.bn.num_batches_tracked.item() == 7


def test_convert_cli_prints_hashes_and_refuses_to_overwrite(tmp_path, capsys):
    source, target = tmp_path / "in.pth", tmp_path / "out.safetensors"
    state = tiny_official_state()
    torch.save(state, source)
    assert main(["convert", str(source), str(target)]) == 0
    out = capsys.readouterr().out
    for path in (source, target):
        assert hashlib.sha256(path.read_bytes()).hexdigest() in out
    from safetensors.torch import load_file

    written = load_file(target)
    assert set(written) == set(state) | {"value_encoder.conv1.weight"}
    assert torch.equal(written["key_encoder.res2.0.conv1.weight"], state["key_encoder.res2.0.conv1.weight"])
    before = target.read_bytes()
    assert main(["convert", str(source), str(target)]) == 2
    assert "--force" in capsys.readouterr().err and target.read_bytes() == before
    assert main(["convert", str(source), str(target), "--force"]) == 0


def test_convert_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nonsense")
    assert main(["convert", str(bad), str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


@pytest.mark.parametrize("writer, name", [("safetensors", "renamed.pth"), ("torch", "renamed.safetensors"),
                                          ("torch", "renamed.bin"), ("safetensors", "no_extension")])
def test_format_is_recognised_by_content_not_extension(tmp_path, writer, name):
    state = tiny_official_state()
    path = tmp_path / name
    save_file(state, path) if writer == "safetensors" else torch.save(state, path)
    read = read_state_dict(path)
    assert torch.equal(read["key_encoder.cnn.layer1.0.conv1.weight"], state["key_encoder.res2.0.conv1.weight"])


def test_sniffing_tells_the_formats_apart(tmp_path):
    from colormnet_core.checkpoint import SAFETENSORS, TORCH_PICKLE, TORCH_ZIP, sniff_format

    state = {"x": torch.zeros(2)}
    save_file(state, tmp_path / "a")
    torch.save(state, tmp_path / "b")
    torch.save(state, tmp_path / "c", _use_new_zipfile_serialization=False)
    (tmp_path / "d").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (tmp_path / "e").write_bytes(b"")
    assert [sniff_format(tmp_path / n) for n in "abcde"] == [SAFETENSORS, TORCH_ZIP, TORCH_PICKLE, None, None]


class _Opaque:
    """A harmless class that weights_only loading refuses (not in its allow-list)."""

    def __init__(self):
        self.value = 1


def test_torch_advice_to_load_unsafely_never_reaches_the_user(tmp_path):
    samples = {
        "object.pth": {OFFICIAL_SENTINEL: torch.zeros(1), "extra": _Opaque()},
        "legacy_object.pth": {OFFICIAL_SENTINEL: torch.zeros(1), "extra": _Opaque()},
    }
    for name, obj in samples.items():
        torch.save(obj, tmp_path / name, _use_new_zipfile_serialization=name == "object.pth")
    zipped = (tmp_path / "object.pth").read_bytes()
    (tmp_path / "cut_zip.pth").write_bytes(zipped[: len(zipped) - 200])
    (tmp_path / "garbage_pickle.pth").write_bytes(b"\x80\x02" + bytes(range(256)) * 4)
    for path in sorted(tmp_path.iterdir()):
        with pytest.raises(CheckpointError) as e:
            read_state_dict(path)
        text = str(e.value)
        assert "weights_only" not in text and "weights only" not in text.lower(), (path.name, text)
        head = text[:200]   # what UIs and logs show first: what happened and what to do
        assert path.name in head and ("download it again" in head or "Use the official release" in head), text


def test_written_checkpoints_are_readable_by_other_accounts(tmp_path):
    """safetensors creates files readable by their owner only; a farm's workers or a ComfyUI service
    user read checkpoints (converted, trained, fine-tuned) as another account."""
    from colormnet_core.checkpoint import save_safetensors

    path = tmp_path / "weights.safetensors"
    save_safetensors({"key_proj.key.bias": torch.zeros(2)}, path, official_names=False)
    assert path.stat().st_mode & 0o777 == 0o644
