"""The NYUD-v2 multi-task reader on fixtures written in the exact on-disk formats of its three packagings
(MTI-Net `NYUD_MT`, ATRC/InvPT `NYUDv2`, ASTMT `NYUD_MT`): file types, dtypes, 0 = unlabeled labels,
0 = invalid depth, zero-vector normals, 0/1 and 0/255 boundaries, gt_sets/<split>.txt id lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mtnas.data.files import Target
from mtnas.data.nyud import NYUDDataset
from mtnas.errors import DataError

from .conftest import dataset_run_args, run_cli

H, W = 24, 32
TASKS = ["semseg", "depth", "normal", "edge"]
TARGETS = {
    "semseg": Target("semseg", "semseg", "segmentation", num_classes=40),
    "depth": Target("depth", "depth", "depth"),
    "normal": Target("normal", "normal", "normals"),
    "edge": Target("edge", "binary", "edge"),
}
# File type per folder in each public packaging.
LAYOUTS = {
    "mtinet": {"images": ".jpg", "segmentation": ".png", "depth": ".npy", "normals": ".npy", "edge": ".npy"},
    "atrc": {"images": ".png", "segmentation": ".png", "depth": ".npy", "normals": ".png", "edge": ".png"},
    "astmt": {"images": ".jpg", "segmentation": ".mat", "depth": ".mat", "normals": ".jpg", "edge": ".png"},
}
SPLITS = {"train": ["0003", "0004", "0010", "0011"], "val": ["0001", "0002"]}


def make_sample(rng):
    """Raw arrays as the datasets store them, plus the expected decoded normals."""
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    seg = rng.integers(1, 41, (H, W)).astype(np.uint8)
    seg[:3] = 0  # unlabeled rows
    seg[3, :2] = (1, 40)  # first and last class
    depth = rng.uniform(0.5, 9.5, (H, W)).astype(np.float32)
    depth[-3:] = 0  # invalid rows
    # A smooth field (surfaces are smooth; JPEG-stored normals only survive that), random per sample.
    y, x = np.mgrid[0:H, 0:W] / np.float32(W)
    a, b, c, d = rng.uniform(-1, 1, 4)
    normal = np.stack([a * x + b, c * y + d, -np.ones_like(x)], axis=-1).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[:, :2] = 0  # invalid columns
    edge = (rng.random((H, W)) < 0.2).astype(np.uint8)
    return {"rgb": rgb, "seg": seg, "depth": depth, "normal": normal, "edge": edge}


def save_image(path, arr):
    """8-bit image; JPEGs at high quality, as the packagings' JPEGs (images, ASTMT normals) are."""
    Image.fromarray(arr).save(path, **({"quality": 100} if path.suffix == ".jpg" else {}))


def write_file(path, folder, raw):
    import scipy.io

    mat = path.suffix == ".mat"
    if folder == "images":
        save_image(path, raw["rgb"])
    elif folder == "segmentation":  # 8-bit single-channel PNG, or ASTMT's .mat variable `segmentation`
        if mat:
            scipy.io.savemat(path, {"segmentation": raw["seg"].astype(np.float64)})
        else:
            save_image(path, raw["seg"])
    elif folder == "depth":  # float32 metres, H×W
        if mat:
            scipy.io.savemat(path, {"depth": raw["depth"]})
        else:
            np.save(path, raw["depth"])
    elif folder == "normals":
        if path.suffix == ".npy":
            np.save(path, raw["normal"])  # float32 unit vectors, zero = invalid
        else:  # 8-bit: v = (n + 1) / 2 · 255; a zero vector becomes grey 128
            save_image(path, np.clip(np.round((raw["normal"] + 1) / 2 * 255), 0, 255).astype(np.uint8))
    elif folder == "edge":
        if path.suffix == ".npy":
            np.save(path, raw["edge"].astype(np.float32))  # 0/1
        else:
            save_image(path, raw["edge"] * 255)  # 0/255


def write_nyud(root, layout="mtinet", splits=SPLITS, seed=0):
    rng = np.random.default_rng(seed)
    files = LAYOUTS[layout]
    (root / "gt_sets").mkdir(parents=True, exist_ok=True)
    for folder in files:
        (root / folder).mkdir(exist_ok=True)
    raws = {}
    for split, ids in splits.items():
        (root / "gt_sets" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for id_ in ids:
            raws[id_] = raw = make_sample(rng)
            for folder, suffix in files.items():
                write_file(root / folder / f"{id_}{suffix}", folder, raw)
    return raws


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_reads_each_packaging_to_batch_convention(tmp_path, layout):
    raws = write_nyud(tmp_path, layout)
    ds = NYUDDataset(tmp_path, "val", TARGETS, image_size=(H, W))
    assert [ds.sample_id(i) for i in range(len(ds))] == SPLITS["val"]
    s, raw = ds[1], raws["0002"]
    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
    assert s["semseg"].shape == (H, W) and s["semseg"].dtype == torch.long
    assert s["depth"].shape == (1, H, W) and s["normal"].shape == (3, H, W) and s["edge"].shape == (1, H, W)
    image = np.asarray(Image.open(ds.samples[1]["image"]).convert("RGB"), np.float32) / 255
    np.testing.assert_array_equal(s["image"].numpy(), image.transpose(2, 0, 1))
    if layout == "atrc":
        np.testing.assert_array_equal(s["image"].numpy(), raw["rgb"].transpose(2, 0, 1) / np.float32(255))
    # 0 = unlabeled → −1 (ignored); k → k − 1, so classes are 0..39
    np.testing.assert_array_equal(s["semseg"].numpy(), raw["seg"].astype(np.int64) - 1)
    assert (s["semseg"][:3] == -1).all() and s["semseg"][3, 0] == 0 and s["semseg"][3, 1] == 39
    np.testing.assert_array_equal(s["depth"][0].numpy(), raw["depth"])  # metres; 0 = invalid kept
    assert (s["depth"][0, -3:] == 0).all()
    normal = s["normal"].numpy().transpose(1, 2, 0)
    assert (normal[:, :2] == 0).all()  # invalid stays a zero vector (grey 128 in 8-bit files)
    np.testing.assert_allclose(np.linalg.norm(normal[:, 2:], axis=-1), 1, atol=1e-5)
    tol = {".npy": 1e-6, ".png": 0.01, ".jpg": 0.2}[LAYOUTS[layout]["normals"]]
    np.testing.assert_allclose(normal, raw["normal"], atol=tol)
    np.testing.assert_array_equal(s["edge"][0].numpy(), raw["edge"])  # 1 = boundary, no ignore


def test_resized_to_image_size(tmp_path):
    write_nyud(tmp_path, "atrc")
    ds = NYUDDataset(tmp_path, "train", TARGETS, image_size=(48, 40))
    s = ds[0]
    assert s["image"].shape == (3, 48, 40) and s["semseg"].shape == (48, 40)
    assert set(s["semseg"].unique().tolist()) <= set(range(-1, 40))  # nearest: no blended labels
    assert set(s["edge"].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "folder,name,writer,message",
    [
        (
            "segmentation",
            "0002.png",
            lambda p: Image.fromarray(np.full((H, W), 41, np.uint8)).save(p),
            r"label value 41 outside 0 \(unlabeled, ignored\) and 1..40",
        ),
        (
            "segmentation",
            "0002.png",
            lambda p: Image.fromarray(np.full((H, W), 255, np.uint8)).save(p),
            "label value 255",
        ),
        (
            "depth",
            "0002.npy",
            lambda p: np.save(p, np.full((H, W), 2500, np.uint16)),
            "dtype uint16.*float metres",
        ),
        (
            "depth",
            "0002.npy",
            lambda p: np.save(p, np.full((H, W), 2500.0, np.float32)),
            "depth up to 2500.*metres",
        ),
        (
            "normals",
            "0002.npy",
            lambda p: np.save(p, np.full((H, W, 3), 0.8, np.float32)),
            "normal.*of length 1.39",
        ),
        ("normals", "0002.npy", lambda p: np.save(p, np.ones((H, W), np.float32)), r"expected H×W×3"),
        (
            "edge",
            "0002.npy",
            lambda p: np.save(p, np.full((H, W), 255, np.float32)),
            "edge value 255.*0 and 1",
        ),
    ],
)
def test_wrong_value_conventions_are_named(tmp_path, folder, name, writer, message):
    write_nyud(tmp_path, "mtinet")
    writer(tmp_path / folder / name)
    ds = NYUDDataset(tmp_path, "val", TARGETS, image_size=(H, W))  # start-up check reads sample 0 only
    with pytest.raises(DataError, match=f"{folder}/{name}.*{message}"):
        ds[1]


def test_edge_png_must_be_0_255(tmp_path):
    write_nyud(tmp_path, "atrc")
    Image.fromarray(np.ones((H, W), np.uint8)).save(tmp_path / "edge" / "0001.png")  # a 0/1 PNG
    with pytest.raises(DataError, match=r"edge/0001.png.*edge value 1; .*0 and 255"):
        NYUDDataset(tmp_path, "val", TARGETS, image_size=(H, W))


def test_missing_split_file_folder_and_sample(tmp_path):
    write_nyud(tmp_path)
    with pytest.raises(
        DataError, match=r"gt_sets/test.txt: split file is missing.*\['train.txt', 'val.txt'\]"
    ):
        NYUDDataset(tmp_path, "test", TARGETS)
    (tmp_path / "gt_sets" / "val.txt").write_text("\n\n")
    with pytest.raises(DataError, match="val.txt: split file lists no image ids"):
        NYUDDataset(tmp_path, "val", TARGETS)
    (tmp_path / "normals").rename(tmp_path / "normal")
    with pytest.raises(DataError, match=r"normals: folder `normals` \(normal\) is missing"):
        NYUDDataset(tmp_path, "train", TARGETS)
    (tmp_path / "normal").rename(tmp_path / "normals")
    (tmp_path / "depth" / "0004.npy").unlink()
    with pytest.raises(DataError, match=r"depth/0004.npy: file is missing \(nor .mat\)"):
        NYUDDataset(tmp_path, "train", TARGETS)
    with pytest.warns(UserWarning, match="skipping 1 sample"):
        ds = NYUDDataset(tmp_path, "train", TARGETS, skip_bad_samples=True)
    assert [ds.sample_id(i) for i in range(len(ds))] == ["0003", "0010", "0011"]


def test_mtnas_data_check_passes_and_names_planted_defects(tmp_path, capsys):
    from mtnas.data.cli import check

    write_nyud(tmp_path, "atrc")
    assert check("nyud", tmp_path) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out and "✓" in out
    (tmp_path / "depth" / "0010.npy").unlink()  # missing file
    np.save(tmp_path / "depth" / "0002.npy", np.ones((H, W, 2), np.float32))  # wrong shape
    seg = np.ones((H, W), np.uint8)
    seg[5, 7] = 77
    Image.fromarray(seg).save(tmp_path / "segmentation" / "0001.png")  # out-of-range label
    Image.fromarray(np.zeros((H + 1, W, 3), np.uint8)).save(tmp_path / "images" / "0011.png")  # size mismatch
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(tmp_path / "edge" / "0004.png")  # one target's size
    (tmp_path / "gt_sets" / "val.txt").write_text("0001\n0002\n0003\n")  # a training image in val
    assert check("nyud", tmp_path) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert "depth/0010.npy: file is missing" in out
    assert "depth/0002.npy" in out and "expected H×W×1" in out
    assert "segmentation/0001.png" in out and "label value 77" in out
    assert f"images/0011.png: size ({H + 1}, {W})" in out and "sizes differ" in out
    assert f"edge/0004.png: size ({H + 2}, {W})" in out and "sizes differ" in out  # the edge, not its image
    assert "val.txt: 1 id(s) also in train.txt" in out


@pytest.mark.slow
def test_cli_trains_supernet_on_nyud_fixture(tmp_path, cache_dir):
    root = tmp_path / "NYUD_MT"
    write_nyud(root, "mtinet")
    run_dir = tmp_path / "run"
    res = run_cli(dataset_run_args("nyud_search", root, TASKS, run_dir, size=(32, 64)), tmp_path, cache_dir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (run_dir / "supernet" / "last.ckpt").is_file()
