from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from mtnas.data.datamodule import MultiTaskDataModule
from mtnas.data.synthetic import CLASSES, SyntheticSpec, generate, render_scene
from mtnas.errors import ConfigError

from .conftest import compose_cfg


def test_render_is_deterministic_and_in_nyuv2_layout():
    a = render_scene(np.random.default_rng(7), 48, 64)
    b = render_scene(np.random.default_rng(7), 48, 64)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["image"].shape == (48, 64, 3) and a["image"].dtype == np.float32
    assert a["label"].shape == (48, 64)
    assert a["depth"].shape == (48, 64, 1)
    assert a["normal"].shape == (48, 64, 3)
    assert a["edge"].shape == (48, 64)
    assert a["image"].min() >= 0 and a["image"].max() <= 1


def test_scene_geometry_is_consistent():
    s = render_scene(np.random.default_rng(3), 64, 80)
    depth, normal, label = s["depth"][..., 0], s["normal"], s["label"]
    valid = depth > 0
    assert valid.mean() > 0.8  # a few sensor-like holes only
    norms = np.linalg.norm(normal, axis=-1)
    np.testing.assert_allclose(norms[valid], 1.0, atol=1e-4)
    assert np.all(norms[~valid] == 0)
    # OpenCV camera frame: visible surfaces face the camera, so normals have z < 0 at the image centre ray.
    assert normal[32, 40, 2] < 0
    assert set(np.unique(label)) <= set(range(-1, len(CLASSES)))
    assert {0, 1} <= set(np.unique(label).astype(int))  # floor and walls are always in view


def test_floor_normals_point_up_in_camera_frame():
    s = render_scene(np.random.default_rng(5), 64, 80)
    floor = (s["label"] == CLASSES.index("floor")) & (s["depth"][..., 0] > 0)
    # Camera y points down, so an upward floor normal has negative y.
    assert np.median(s["normal"][floor][:, 1]) < -0.9


def test_edges_are_exactly_the_label_and_depth_discontinuities():
    s = render_scene(np.random.default_rng(11), 64, 80)
    edge = s["edge"].astype(bool)
    assert 0.01 < edge.mean() < 0.3
    label, depth = s["label"], s["depth"][..., 0]
    # Holes (depth 0) and ignore labels (−1) are applied after edges; treat them as "unknown".
    disc = np.zeros_like(edge)
    unknown = np.zeros_like(edge)
    right = ((slice(None), slice(1, None)), (slice(None), slice(None, -1)))
    down = ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))
    for a, b in (right, down):
        la, lb, da, db = label[a], label[b], depth[a], depth[b]
        unk = (la < 0) | (lb < 0) | (da <= 0) | (db <= 0)
        jump = np.abs(da - db) / np.maximum(np.minimum(da, db), 1e-6) > 0.05
        disc[a] |= ((la != lb) | jump) & ~unk
        unknown[a] |= unk
    known = ~unknown
    assert np.all(edge[disc & known])  # every discontinuity is marked ...
    assert not np.any(edge[~disc & known])  # ... and nothing else


def test_generate_writes_layout_once_and_reuses_cache(tmp_path):
    spec = SyntheticSpec(height=32, width=48, num_train=3, num_val=2, num_test=2, seed=1)
    root = generate(spec, tmp_path, progress=False)
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        for kind in ("image", "label", "depth", "normal", "edge"):
            assert sorted(p.name for p in (root / split / kind).iterdir()) == [f"{i}.npy" for i in range(n)]
    meta = json.loads((root / "meta.json").read_text())
    assert meta["classes"] == list(CLASSES) and len(CLASSES) >= 6
    mtime = (root / "train" / "image" / "0.npy").stat().st_mtime_ns
    assert generate(spec, tmp_path, progress=False) == root
    assert (root / "train" / "image" / "0.npy").stat().st_mtime_ns == mtime
    # Another seed is another dataset, in another folder.
    other = generate(
        SyntheticSpec(height=32, width=48, num_train=3, num_val=2, num_test=2, seed=2),
        tmp_path,
        progress=False,
    )
    assert other != root
    assert not np.array_equal(np.load(other / "train/image/0.npy"), np.load(root / "train/image/0.npy"))
    assert not list(tmp_path.glob(".*tmp*"))  # no leftovers from the atomic write


def test_a_train_split_smaller_than_the_batch_is_a_config_error(tmp_path):
    # drop_last on such a split gives zero training steps: Lightning would "train" nothing and save nothing.
    overrides = ["data.synthetic.num_train=3", "data.synthetic.height=32", "data.synthetic.width=32"]
    cfg = compose_cfg([*overrides, "data.batch_size=4"])
    dm = MultiTaskDataModule(OmegaConf.to_container(cfg.data, resolve=True), ["semseg"], tmp_path, False)
    dm.prepare_data()
    with pytest.raises(ConfigError, match=r"data.batch_size.*only 3 samples"):
        dm.train_dataloader()
    assert len(dm.val_dataloader()) >= 1  # evaluation keeps partial batches
    dm.cfg["batch_size"] = 3
    assert len(dm.train_dataloader()) == 1


def test_the_autoencoding_target_is_the_input_image_itself(tmp_path):
    overrides = ["data.synthetic.num_train=4", "data.synthetic.height=32", "data.synthetic.width=32"]
    cfg = compose_cfg([*overrides, "data.batch_size=4"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    dm = MultiTaskDataModule(data, ["semseg", "autoencoding"], tmp_path, False)
    dm.prepare_data()
    val = next(iter(dm.val_dataloader()))
    assert val["autoencoding"].shape == val["image"].shape and val["autoencoding"].equal(val["image"])
    # Training crops, zooms and flips both alike; only the zoom's resampling differs (bilinear for the input,
    # nearest for a regression target, which may hold NaN = invalid).
    train = next(iter(dm.train_dataloader()))
    assert (train["autoencoding"] - train["image"]).abs().mean() < 0.05
