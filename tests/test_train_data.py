"""Our clip dataset samples and augments exactly as the official DAVISVidevoDataset
(dataset/vos_dataset.py) given the same NumPy generator state: tests/data/golden_train/dataset/ holds
two tiny clips and what the official dataset made of them (README in tests/data/golden_train/)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from colormnet_core.training.datasets import ClipFolderDataset, _to_item

from .golden import DATA

FOLDER = DATA / "golden_train" / "dataset"


def official_items() -> list[dict]:
    """Four of the fixture's eight items: each clip once, with each max_skip and with(out) fine-tune."""
    records = json.loads((FOLDER / "official_dataset.json").read_text())
    return [r for r in records if r["clip"] == (r["max_jump"] == 15)]


@pytest.mark.parametrize("record", official_items(), ids=lambda r: f"clip{r['clip']}-skip{r['max_jump']}"
                         f"{'-finetune' if r['finetune'] else ''}")
def test_clip_dataset_reproduces_the_official_items(record):
    data = ClipFolderDataset(FOLDER / "clips", num_frames=8, max_skip=record["max_jump"], crop=448,
                             finetune=record["finetune"])
    chosen, frames = data.frames_of(record["clip"], np.random.RandomState(record["numpy_seed"]))
    names = [data.clips[record["clip"]][1][i].name for i in chosen]
    assert names == record["frames"]
    image, ab = _to_item(frames)
    lab = torch.cat([image[:, :1], ab], 1).double()                        # T x 3 x 448 x 448: L', a', b'
    assert list(lab.shape) == record["shape"]
    values = lab.flatten()[record["indices"]]
    torch.testing.assert_close(values, torch.tensor(record["values"], dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(lab.sum(dim=(0, 2, 3)), torch.tensor(record["sum"], dtype=torch.float64),
                               rtol=1e-9, atol=1e-3)
