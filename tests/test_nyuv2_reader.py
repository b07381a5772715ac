"""The NYUv2 reader on fixture files written in the exact preprocessed format (288×384, .npy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtnas.data.files import Target
from mtnas.data.npy_folder import NpyFolderDataset
from mtnas.errors import DataError

H, W = 288, 384
TARGETS = {
    "semseg": Target("semseg", "semseg", "label", num_classes=13),
    "depth": Target("depth", "depth", "depth"),
    "normal": Target("normal", "normal", "normal"),
}


def write_nyuv2(root, splits=(("train", 2), ("val", 2)), seed=0):
    rng = np.random.default_rng(seed)
    for split, n in splits:
        for kind in ("image", "label", "depth", "normal"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = rng.random((H, W, 3)).astype(np.float32)
            label = rng.integers(-1, 13, (H, W)).astype(np.float32)  # stored as float, −1 = ignore
            depth = rng.uniform(0.5, 10, (H, W, 1)).astype(np.float32)
            depth[:10] = 0  # invalid rows
            normal = rng.normal(size=(H, W, 3)).astype(np.float32)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[:10] = 0
            for kind, arr in (("image", image), ("label", label), ("depth", depth), ("normal", normal)):
                np.save(root / split / kind / f"{i}.npy", arr)
    return root


def test_reads_samples_to_batch_convention(tmp_path):
    root = write_nyuv2(tmp_path)
    ds = NpyFolderDataset(root, "train", TARGETS, image_size=(H, W))
    assert len(ds) == 2
    s = ds[1]
    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
    assert s["semseg"].shape == (H, W) and s["semseg"].dtype == torch.long
    assert s["depth"].shape == (1, H, W)
    assert s["normal"].shape == (3, H, W)
    raw = {k: np.load(root / "train" / k / "1.npy") for k in ("image", "label", "depth", "normal")}
    np.testing.assert_array_equal(s["image"].numpy(), raw["image"].transpose(2, 0, 1))
    np.testing.assert_array_equal(s["semseg"].numpy(), raw["label"].astype(np.int64))
    assert (s["semseg"] == -1).any()  # ignore label kept
    assert (s["depth"][:, :10] == 0).all() and (s["normal"][:, :10] == 0).all()  # invalid stays invalid
    np.testing.assert_array_equal(s["normal"].numpy(), raw["normal"].transpose(2, 0, 1))


def test_missing_file_is_named(tmp_path):
    root = write_nyuv2(tmp_path)
    (root / "train" / "depth" / "1.npy").unlink()
    with pytest.raises(DataError, match=r"train/depth"):
        NpyFolderDataset(root, "train", TARGETS, image_size=(H, W))


def test_malformed_and_wrong_shape_files_are_named(tmp_path):
    root = write_nyuv2(tmp_path)
    (root / "train" / "normal" / "0.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match=r"train/normal/0.npy"):
        NpyFolderDataset(root, "train", TARGETS, image_size=(H, W))

    root2 = write_nyuv2(tmp_path / "b")
    np.save(root2 / "val" / "depth" / "1.npy", np.ones((H, W), np.float32))  # missing channel axis
    ds = NpyFolderDataset(root2, "val", TARGETS, image_size=(H, W))  # start-up check reads sample 0 only
    with pytest.raises(DataError, match=r"val/depth/1.npy.*expected H×W×1"):
        ds[1]


def test_wrong_resolution_and_missing_split(tmp_path):
    root = write_nyuv2(tmp_path)
    with pytest.raises(DataError, match="expected \\(240, 320\\)"):
        NpyFolderDataset(root, "train", TARGETS, image_size=(240, 320))
    with pytest.raises(DataError, match="split folder `test`"):
        NpyFolderDataset(root, "test", TARGETS)
    with pytest.raises(DataError, match="does not exist"):
        NpyFolderDataset(tmp_path / "nope", "train", TARGETS)


def test_mtnas_data_check_passes_and_names_planted_defects(tmp_path, capsys):
    from mtnas.data.cli import check

    root = write_nyuv2(tmp_path)
    assert check("nyuv2", root) == 0
    assert "train" in capsys.readouterr().out
    bad = np.zeros((H, W), np.float32)
    bad[0, 0] = 40  # out-of-range class
    np.save(root / "val" / "label" / "1.npy", bad)
    np.save(root / "train" / "normal" / "0.npy", np.zeros((H, W), np.float32))  # wrong shape
    (root / "train" / "depth" / "1.npy").unlink()
    assert check("nyuv2", root) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert "val/label/1.npy" in out and "40" in out
    assert "train/normal/0.npy" in out
    assert "train/depth" in out
