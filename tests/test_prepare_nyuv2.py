"""`mtnas-data prepare nyuv2` on a tiny copy of the official files, written in their exact formats:
nyu_depth_v2_labeled.mat as MATLAB v7.3 (HDF5, arrays stored transposed as h5py sees MATLAB's), splits.mat
and classMapping40.mat / class13Mapping.mat / labels40.mat as MATLAB v5 (scipy)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from mtnas.data.prepare_nyuv2 import prepare_nyuv2, smallest_eigenvector
from mtnas.errors import DataError

from .conftest import dataset_run_args, run_cli

N, H, W = 4, 48, 64  # the real file: 1449 images of 480×640
TRAIN, TEST = [3, 1], [2, 4]  # 1-based, as in splits.mat (train deliberately unsorted: file order is kept)
# The published 40 → 13 table (howard-mahe/nyudv2_class_mapping README), written out independently here.
TABLE_40_TO_13 = {
    1: 12, 2: 5, 3: 6, 4: 1, 5: 4, 6: 9, 7: 10, 8: 12, 9: 13, 10: 6, 11: 8, 12: 6, 13: 13, 14: 10,
    15: 6, 16: 13, 17: 6, 18: 7, 19: 7, 20: 5, 21: 7, 22: 3, 23: 2, 24: 6, 25: 11, 26: 7, 27: 7, 28: 7,
    29: 7, 30: 7, 31: 7, 32: 6, 33: 7, 34: 7, 35: 7, 36: 7, 37: 7, 38: 7, 39: 6, 40: 7,
}  # fmt: skip
# NYU toolbox RGB intrinsics (camera_params.m), 640×480, 1-based pixel coordinates.
FX, FY, CX, CY = 518.85790117450188, 519.46961112127485, 325.58244941119034, 253.73616633400465
TILT = np.array([0.05, 0.1, 0.3])  # a plane a·p = 1 in the camera frame


def rays():
    """x/z and y/z of each 48×64 pixel centre (a 10× downscaled 480×640 frame), OpenCV frame."""
    r, c = np.mgrid[0:H, 0:W]
    u, v = 10 * c + 5.5, 10 * r + 5.5  # the pixel centre in full-size 1-based coordinates
    return (u - CX) / FX, (v - CY) / FY


def scene_depth():
    """Top-left: a wall at x = −1.5 m; top-right: the tilted plane TILT; rows 20–27: no depth; bottom: the
    floor 1.2 m below the camera (y down). Asymmetric, so any transposition or flip shows."""
    xr, yr = rays()
    z = np.zeros((H, W))
    z[:20, :24] = -1.5 / xr[:20, :24]
    z[:20, 24:] = 1 / (TILT[0] * xr[:20, 24:] + TILT[1] * yr[:20, 24:] + TILT[2])
    z[28:] = 1.2 / yr[28:]
    return z.astype(np.float32)


def planted(seed=0):
    rng = np.random.default_rng(seed)
    r, c, ch = np.mgrid[0:H, 0:W, 0:3]
    images = np.stack([(5 * r + 3 * c + 60 * ch + 17 * n) % 256 for n in range(N)]).astype(np.uint8)
    depths = np.stack([scene_depth() * (1 + 0.1 * n) for n in range(N)]).astype(np.float32)
    raw_depths = depths.copy()
    raw_depths[:, 30:34, 40:50] = 0  # missing Kinect depth
    raw_depths[:, 31, 41] = np.nan  # not in the real file, but must not leak through either
    labels = rng.integers(0, 895, (N, H, W)).astype(np.uint16)
    labels[:, 0, :4] = [0, 5, 10, 894]  # unlabeled, and raw classes with a hand-checked mapping
    labels[:, 1, :2] = [7, 0]
    return {"images": images, "depths": depths, "rawDepths": raw_depths, "labels": labels}


def map_class(seed=1):
    rng = np.random.default_rng(seed)
    m = rng.integers(1, 41, 894)
    m[[4, 9, 893, 6]] = [1, 23, 22, 31]  # raw 5 → wall, 10 → books, 894 → ceiling, 7 → person
    return m


def write_files(root, drop=(), arrays=None, train=TRAIN, test=TEST):
    """The official files: .mat v7.3 with h5py's transposed view of MATLAB's H×W×C×N, v5 side files."""
    arrays = arrays or planted()
    mat = root / "nyu_depth_v2_labeled.mat"
    classes = {"images": "uint8", "depths": "single", "rawDepths": "single", "labels": "uint16"}
    with h5py.File(mat, "w", userblock_size=512) as f:
        for name, arr in arrays.items():
            if name in drop:
                continue
            axes = (0, 3, 2, 1) if arr.ndim == 4 else (0, 2, 1)  # N×H×W×3 → (N, 3, W, H); N×H×W → (N, W, H)
            ds = f.create_dataset(name, data=np.ascontiguousarray(arr.transpose(axes)))
            ds.attrs["MATLAB_class"] = np.bytes_(classes[name])
        f.create_dataset("instances", data=np.zeros((N, W, H), np.uint8))
    with open(mat, "r+b") as fh:  # MATLAB's text header lives in the HDF5 user block
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116))
    splits = root / "splits.mat"
    savemat(
        splits, {"trainNdxs": np.array(train, float)[:, None], "testNdxs": np.array(test, float)[:, None]}
    )
    map40 = root / "classMapping40.mat"
    names = np.empty((1, 40), dtype=object)
    names[0] = [f"class{i}" for i in range(1, 41)]
    savemat(map40, {"mapClass": map_class()[None].astype(float), "className": names})
    return mat, splits, map40


def expected_labels(raw):
    m40 = np.concatenate([[0], map_class()])[raw]
    out = np.full(raw.shape, -1, np.int64)
    for k40, k13 in TABLE_40_TO_13.items():
        out[m40 == k40] = k13 - 1
    return out


def load(out, split, folder, i):
    return np.load(out / split / folder / f"{i}.npy")


def test_layout_values_and_orientation(tmp_path):
    arrays = planted()
    mat, splits, map40 = write_files(tmp_path, arrays=arrays)
    out = prepare_nyuv2(mat, splits, tmp_path / "nyuv2", map40=map40, size=(H, W), progress=False)
    for split, idx in (("train", TRAIN), ("val", TEST)):
        for folder in ("image", "label", "depth", "normal"):
            assert sorted(p.name for p in (out / split / folder).iterdir()) == ["0.npy", "1.npy"]
        for i, n in enumerate(np.array(idx) - 1):
            image, label = load(out, split, "image", i), load(out, split, "label", i)
            depth, normal = load(out, split, "depth", i), load(out, split, "normal", i)
            assert image.shape == (H, W, 3) and image.dtype == np.float32
            np.testing.assert_allclose(image, arrays["images"][n] / 255.0, atol=1e-6)
            assert depth.shape == (H, W, 1) and depth.dtype == np.float32
            np.testing.assert_array_equal(depth[..., 0], arrays["depths"][n])
            assert label.shape == (H, W) and label.dtype == np.float32
            np.testing.assert_array_equal(label, expected_labels(arrays["labels"][n]))
            assert normal.shape == (H, W, 3)
    # hand-checked: unlabeled → −1; raw 5 → wall (12) → 11; 10 → books → 1; 894 → ceiling → 2; 7 → person → 6
    label = load(out, "train", "label", 0)
    assert label[0, :4].tolist() == [-1, 11, 1, 2] and label[1, :2].tolist() == [6, -1]
    # the image pattern is asymmetric in rows and columns: a transposed or flipped read fails above
    assert load(out, "train", "image", 0)[0, 1, 0] == pytest.approx(3 / 255 + 2 * 17 / 255)
    meta = json.loads((out / "prepare.json").read_text())
    assert meta["mat_index_1based"] == {"train": TRAIN, "val": TEST} and meta["depth"] == "depths"
    assert not list(tmp_path.glob(".nyuv2*"))  # the temporary folder was renamed into place


def test_normals_of_planted_planes(tmp_path):
    mat, splits, map40 = write_files(tmp_path)
    out = prepare_nyuv2(
        mat, splits, tmp_path / "out", map40=map40, size=(H, W), normal_window=5, progress=False
    )
    normal = load(out, "val", "normal", 0)  # testNdxs[0] = image 2: the scene scaled by 1.1
    norm = np.linalg.norm(normal, axis=-1)
    assert (norm[20:28] == 0).all()  # no depth → no normal
    assert np.allclose(norm[(norm > 0)], 1, atol=1e-5)
    tilt = -TILT / np.linalg.norm(TILT)  # facing the camera: opposite to a, since a·p = 1 > 0
    for region, want in (
        ((slice(2, 18), slice(2, 22)), [1, 0, 0]),  # the left wall faces right (+x)
        ((slice(2, 18), slice(26, 62)), tilt),
        ((slice(30, 46), slice(2, 62)), [0, -1, 0]),  # the floor faces up (−y)
    ):
        cos = normal[region] @ np.asarray(want, float)
        assert cos.min() > np.cos(np.deg2rad(1)), (want, cos.min())


def test_smallest_eigenvector_matches_eigh():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 3, 3))
    a = a @ a.transpose(0, 2, 1)
    vec, ok = smallest_eigenvector(a[:, 0, 0], a[:, 0, 1], a[:, 0, 2], a[:, 1, 1], a[:, 1, 2], a[:, 2, 2])
    want = np.linalg.eigh(a)[1][:, :, 0]
    assert ok.all() and np.allclose(np.abs((vec * want).sum(-1)), 1, atol=1e-8)
    line = np.outer([1.0, 2, 3], [1.0, 2, 3])  # the covariance of points on a line: no plane
    entries = [np.array([line[i, j]]) for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))]
    assert not smallest_eigenvector(*entries)[1][0]


def test_resized_output_passes_mtnas_data_check(tmp_path, capsys):
    from mtnas.data.cli import check

    arrays = planted()
    mat, splits, map40 = write_files(tmp_path, arrays=arrays)
    out = prepare_nyuv2(mat, splits, tmp_path / "nyuv2", map40=map40, progress=False)  # default 288×384
    assert check("nyuv2", out) == 0
    assert "✓" in capsys.readouterr().out
    label, depth = load(out, "train", "label", 1), load(out, "train", "depth", 1)  # image 1
    assert label.shape == (288, 384) and depth.shape == (288, 384, 1)
    assert set(np.unique(label)) <= set(np.unique(expected_labels(arrays["labels"][0])))  # nearest
    assert set(np.unique(depth)) <= set(np.unique(arrays["depths"][0]))  # nearest: no blended depth
    image = load(out, "train", "image", 1)
    assert image.shape == (288, 384, 3) and image.min() >= 0 and image.max() <= 1


def test_raw_depth_zero_is_invalid(tmp_path):
    arrays = planted()
    mat, splits, map40 = write_files(tmp_path, arrays=arrays)
    out = prepare_nyuv2(mat, splits, tmp_path / "o", map40=map40, size=(H, W), raw_depth=True, progress=False)
    depth, normal = load(out, "train", "depth", 0)[..., 0], load(out, "train", "normal", 0)
    np.testing.assert_array_equal(depth, np.nan_to_num(arrays["rawDepths"][2]))
    assert (depth[30:34, 40:50] == 0).all() and (normal[30:34, 40:50] == 0).all()
    assert (np.linalg.norm(normal[36:46, 40:50], axis=-1) > 0.99).all()
    assert json.loads((out / "prepare.json").read_text())["depth"] == "rawDepths"


def test_labels40_and_map13_files(tmp_path):
    mat, splits, _ = write_files(tmp_path)
    rng = np.random.default_rng(3)
    labels40 = rng.integers(0, 41, (H, W, N)).astype(np.uint8)  # MATLAB order: 480×640×1449
    savemat(tmp_path / "labels40.mat", {"labels40": labels40})
    custom = rng.integers(1, 14, 40)  # a different 40 → 13 map proves the file is used
    names = np.empty((1, 13), dtype=object)
    names[0] = [f"c{i}" for i in range(13)]
    struct = {"labels": custom[None].astype(float), "names": names}
    savemat(tmp_path / "class13Mapping.mat", {"classMapping13": struct})
    out = prepare_nyuv2(
        mat,
        splits,
        tmp_path / "o",
        labels40=tmp_path / "labels40.mat",
        map13=tmp_path / "class13Mapping.mat",
        size=(H, W),
        progress=False,
    )
    want = np.concatenate([[0], custom])[labels40[..., 3]] - 1  # val/1 = image 4
    np.testing.assert_array_equal(load(out, "val", "label", 1), want)


def test_bad_inputs_are_clear_data_errors(tmp_path):
    def run(name, **kw):
        kw.setdefault("map40", tmp_path / name / "classMapping40.mat")
        kw.setdefault("progress", False)
        folder = tmp_path / name
        return prepare_nyuv2(
            folder / "nyu_depth_v2_labeled.mat", folder / "splits.mat", folder / "out", size=(H, W), **kw
        )

    for name, drop in (("a", ("depths",)), ("b", ("labels",)), ("c", ("images",))):
        (tmp_path / name).mkdir()
        write_files(tmp_path / name, drop=drop)
        with pytest.raises(DataError, match=rf"nyu_depth_v2_labeled.mat.*dataset `{drop[0]}` is missing"):
            run(name)
        assert not (tmp_path / name / "out").exists()
    (tmp_path / "d").mkdir()
    write_files(tmp_path / "d", drop=("rawDepths",))
    with pytest.raises(DataError, match="dataset `rawDepths` is missing"):
        run("d", raw_depth=True)

    (tmp_path / "e").mkdir()
    write_files(tmp_path / "e", test=[2, 5])  # image 5 of 4
    with pytest.raises(DataError, match=r"splits.mat.*testNdxs.*5, expected 1..4"):
        run("e")
    savemat(tmp_path / "e" / "splits.mat", {"trainNdxs": np.array([[1.0]])})
    with pytest.raises(DataError, match="splits.mat.*variable `testNdxs` is missing"):
        run("e")
    savemat(tmp_path / "e" / "classMapping40.mat", {"mapClass": np.ones((1, 40))})
    with pytest.raises(DataError, match="classMapping40.mat.*40 entries, expected 894"):
        run("e")
    with pytest.raises(DataError, match="missing"):
        run("e", map40=tmp_path / "nope.mat")
    with pytest.raises(DataError, match="exactly one of --map40"):
        run("e", map40=None)

    # a bad label in the last image fails the run and leaves neither the output nor a temporary folder
    arrays = planted()
    arrays["labels"][3, 5, 5] = 895
    (tmp_path / "f").mkdir()
    write_files(tmp_path / "f", arrays=arrays)
    with pytest.raises(DataError, match=r"labels, image 4.*895, expected 0..894"):
        run("f")
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "classMapping40.mat", "nyu_depth_v2_labeled.mat", "splits.mat"
    ]  # fmt: skip

    (tmp_path / "g").mkdir()
    write_files(tmp_path / "g")
    (tmp_path / "g" / "out").mkdir()
    with pytest.raises(DataError, match="already exists"):
        run("g")
    savemat(tmp_path / "g" / "nyu_depth_v2_labeled.mat", {"images": np.zeros((2, 2))})  # a v5 file
    with pytest.raises(DataError, match="not a MATLAB v7.3"):
        run("g", overwrite=True)


def test_cli_prepare_subcommand(tmp_path, cache_dir, capsys):
    from mtnas.data.cli import main

    mat, splits, map40 = write_files(tmp_path)
    args = ["prepare", "nyuv2", "--mat", str(mat), "--splits", str(splits), "--map40", str(map40)]
    args += ["--out", str(tmp_path / "nyuv2"), "--size", "24", "32"]
    proc = run_cli(args, tmp_path, cache_dir, prog="mtnas-data")
    assert proc.returncode == 0, proc.stderr
    assert "mtnas-data check nyuv2" in proc.stdout
    assert load(tmp_path / "nyuv2", "val", "normal", 1).shape == (24, 32, 3)
    with pytest.raises(SystemExit) as exit_:  # again, in-process: the folder exists → a clear message
        main(args)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "nyuv2" in err


@pytest.mark.slow
def test_training_on_a_prepared_copy(tmp_path, cache_dir):
    mat, splits, map40 = write_files(tmp_path)
    root = prepare_nyuv2(mat, splits, tmp_path / "nyuv2", map40=map40, size=(32, 64), progress=False)
    args = dataset_run_args("nyuv2_search", root, ["semseg", "depth", "normal"], tmp_path / "run")
    proc = run_cli(args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
