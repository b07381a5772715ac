"""Cityscapes on fixtures written in its two exact on-disk formats:

* the MTAN preprocessed layout (`npy_folder`, `conf/data/cityscapes.yaml`): `{split}/{image,label_7,
  label_19,depth}/{i}.npy`, float labels with −1 = ignore, H×W×1 inverse depth with 0 = invalid;
* the official layout (`mtnas.data.cityscapes`, `conf/data/cityscapes_official.yaml`): 8-bit RGB
  `leftImg8bit`, 8-bit `gtFine_labelIds`, 16-bit `gtFine_instanceIds` and `disparity` PNGs and `camera`
  JSON, mapped through the cityscapesScripts label table, decoded to metric depth and instance boxes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtnas.data.cityscapes import CATEGORIES, LUTS, TRAIN_CLASSES, CityscapesDataset
from mtnas.data.cli import check, load_data_config, main
from mtnas.data.files import Target
from mtnas.data.formats import build_dataset
from mtnas.errors import ConfigError, DataError

from .conftest import dataset_run_args, run_cli

H, W = 32, 64  # native size of the official-layout fixtures (the real one is 1024×2048)
TARGETS = {
    "semseg": Target("semseg", "semseg", "category", num_classes=7),
    "semseg19": Target("semseg19", "semseg", "trainId", num_classes=19),
    "depth": Target("depth", "depth", "disparity"),
}
CITIES = {"train": {"aachen": 2, "bremen": 1}, "val": {"lindau": 2}}
BASELINE = {"aachen": 0.2, "bremen": 0.25, "lindau": 0.2}  # per-image calibration differs per city here
FX = 2000.0
# Planted pixels in row 0 of every label / disparity image: (labelId, 7-class, 19-class) …
PLANTED_IDS = [(7, 0, 0), (0, -1, -1), (9, 0, -1), (24, 5, 11), (33, 6, 18), (23, 4, 10), (3, -1, -1)]
# … and (16-bit value, disparity in pixels or None = invalid).
PLANTED_DISP = [(0, None), (1, None), (1 + 256 * 20, 20.0), (1 + 256 * 10 + 128, 10.5), (1 + 256 * 2, 2.0)]
# Instances planted in every instanceIds image: (id, rows, cols, box class or None = no box). Everywhere else
# the file holds the plain label id (crowds of instance classes among them: no box).
PLANTED_INSTANCES = [
    (26001, slice(4, 10), slice(10, 20), 2),  # car #1
    (24000, slice(12, 16), slice(30, 34), 0),  # person #0
    (29002, slice(20, 23), slice(40, 46), None),  # caravan: not an evaluated instance class
    (33005, slice(25, 26), slice(60, 61), 7),  # a one-pixel bicycle
]


def stem(city, i):
    return f"{city}_{i:06d}_000019"


def write_official(root, size=(H, W), camera=True, seed=0):
    """The official packages unzipped into one root; returns {split: [(city, stem), …]}."""
    rng = np.random.default_rng(seed)
    h, w = size
    written = {}
    for split, cities in CITIES.items():
        written[split] = []
        for city, n in cities.items():
            for folder in ("leftImg8bit", "gtFine", "disparity", "camera"):
                if folder != "camera" or camera:
                    (root / folder / split / city).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                s = stem(city, i)
                rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                ids = rng.integers(0, 34, (h, w)).astype(np.uint8)
                ids[0, : len(PLANTED_IDS)] = [p[0] for p in PLANTED_IDS]
                disp = rng.integers(1 + 256 * 7, 30000, (h, w)).astype(np.uint16)  # ≥ 7 px: < 80 m
                disp[0, : len(PLANTED_DISP)] = [p[0] for p in PLANTED_DISP]
                disp[-2:] = 0  # invalid rows (the ego-vehicle hood has no disparity)
                Image.fromarray(rgb).save(root / "leftImg8bit" / split / city / f"{s}_leftImg8bit.png")
                instance_ids = ids.astype(np.uint16)
                for value, rows, cols, _ in PLANTED_INSTANCES:
                    instance_ids[rows, cols] = value
                    ids[rows, cols] = value // 1000
                Image.fromarray(ids).save(root / "gtFine" / split / city / f"{s}_gtFine_labelIds.png")
                instances = root / "gtFine" / split / city / f"{s}_gtFine_instanceIds.png"
                Image.fromarray(instance_ids).save(instances)
                Image.fromarray(disp).save(root / "disparity" / split / city / f"{s}_disparity.png")
                if camera:
                    cam = {
                        "extrinsic": {"baseline": BASELINE[city], "pitch": 0.038, "x": 1.7, "z": 1.18},
                        "intrinsic": {"fx": FX, "fy": FX, "u0": w / 2, "v0": h / 2},
                    }
                    (root / "camera" / split / city / f"{s}_camera.json").write_text(json.dumps(cam))
                written[split].append((city, s))
    return written


def official(root, split="train", size=(H, W), **options):
    return CityscapesDataset(root, split, TARGETS, image_size=size, options={"cityscapes": options})


def test_label_tables_match_cityscapesscripts():
    cat, train = LUTS["category"], LUTS["trainId"]
    assert (cat[7], train[7]) == (0, 0)  # road: flat / trainId 0
    assert (cat[0], train[0]) == (-1, -1)  # unlabeled: void → ignore
    assert (cat[9], train[9]) == (0, -1)  # parking: flat, but trainId 255 → ignore
    assert (cat[24], train[24]) == (5, 11)  # person: human
    assert (cat[33], train[33]) == (6, 18)  # bicycle: vehicle
    assert (cat[29], train[29]) == (6, -1)  # caravan
    assert all(cat[i] == -1 and train[i] == -1 for i in range(7))  # ids 0..6 are void
    assert (cat[34:] == -2).all() and (train[34:] == -2).all()  # not label ids
    assert sorted(set(train[:34]) - {-1}) == list(range(19))
    assert sorted(set(cat[:34]) - {-1}) == list(range(7))
    assert TRAIN_CLASSES[0] == "road" and TRAIN_CLASSES[-1] == "bicycle" and len(TRAIN_CLASSES) == 19
    assert CATEGORIES == ("flat", "construction", "object", "nature", "sky", "human", "vehicle")


def test_official_layout_reads_to_expected_tensors(tmp_path):
    written = write_official(tmp_path)
    ds = official(tmp_path, "train")
    assert len(ds) == 3 and ds.sample_id(0) == "train/aachen/aachen_000000_000019"
    for index, (city, s) in enumerate(written["train"]):
        sample = ds[index]
        assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.float32
        rgb = np.array(Image.open(tmp_path / "leftImg8bit" / "train" / city / f"{s}_leftImg8bit.png"))
        np.testing.assert_allclose(sample["image"].numpy(), rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)
        assert sample["semseg"].shape == (H, W) and sample["semseg"].dtype == torch.long
        ids = np.array(Image.open(tmp_path / "gtFine" / "train" / city / f"{s}_gtFine_labelIds.png"))
        np.testing.assert_array_equal(sample["semseg"].numpy(), LUTS["category"][ids])
        np.testing.assert_array_equal(sample["semseg19"].numpy(), LUTS["trainId"][ids])
        for col, (_, seven, nineteen) in enumerate(PLANTED_IDS):
            assert sample["semseg"][0, col] == seven and sample["semseg19"][0, col] == nineteen
        depth = sample["depth"]
        assert depth.shape == (1, H, W) and depth.dtype == torch.float32
        bf = BASELINE[city] * FX
        for col, (_, d) in enumerate(PLANTED_DISP):
            want = 0.0 if d is None or bf / d > 80 else bf / d  # 2 px → 200/250 m > max_depth → invalid
            assert depth[0, 0, col].item() == pytest.approx(want, rel=1e-6), (city, col)
        assert (depth[0, -2:] == 0).all() and (depth[0, 1:-2] > 0).all()
        raw = np.array(Image.open(tmp_path / "disparity" / "train" / city / f"{s}_disparity.png"))
        assert raw.dtype == np.uint16  # the fixture really is a 16-bit PNG
        np.testing.assert_allclose(
            depth[0, 5].numpy(), bf / ((raw[5].astype(np.float64) - 1) / 256), rtol=1e-6
        )


def test_official_layout_reads_instance_boxes(tmp_path):
    write_official(tmp_path)
    raw = np.array(Image.open(next((tmp_path / "gtFine" / "train").glob("*/*_instanceIds.png"))))
    assert raw.dtype == np.uint16 and (raw == 26001).any()  # a real 16-bit instanceIds PNG
    targets = {**TARGETS, "detection": Target("detection", "boxes", "instanceIds", num_classes=8)}
    want = torch.tensor(
        [
            [c.start / W, r.start / H, c.stop / W, r.stop / H]
            for _, r, c, k in PLANTED_INSTANCES
            if k is not None
        ]
    )
    for size in ((H, W), (16, 32)):  # normalised boxes do not change when the image is resized
        ds = CityscapesDataset(tmp_path, "train", targets, image_size=size)
        sample = ds[0]
        assert sample["image"].shape == (3, *size)
        order = sample["detection"]["boxes"][:, 0].argsort()
        torch.testing.assert_close(sample["detection"]["boxes"][order], want[want[:, 0].argsort()])
        assert sorted(sample["detection"]["labels"].tolist()) == [0, 2, 7]
    bad = next((tmp_path / "gtFine" / "val").glob("*/*_instanceIds.png"))
    Image.fromarray(np.full((H, W), 40001, np.uint16)).save(bad)
    with pytest.raises(DataError, match="id 40001 is neither a label id"):
        CityscapesDataset(tmp_path, "val", targets, image_size=(H, W))
    with pytest.raises(ConfigError, match="num_classes"):
        CityscapesDataset(tmp_path, "val", {"d": Target("d", "boxes", "instanceIds", num_classes=3)})


def test_official_layout_resizes_and_keeps_metric_depth(tmp_path):
    write_official(tmp_path, size=(64, 128))
    full = official(tmp_path, "val", size=(64, 128))[0]
    small = official(tmp_path, "val", size=(32, 64))[0]
    assert small["image"].shape == (3, 32, 64) and small["semseg"].shape == (32, 64)
    assert small["depth"].shape == (1, 32, 64)
    # Nearest resampling: every depth / label value of the small sample exists at full resolution (metres
    # unchanged, no blended labels); the planted 20 px → 20 m pixel survives at (0, 1).
    assert set(small["depth"].unique().tolist()) <= set(full["depth"].unique().tolist())
    assert set(small["semseg"].unique().tolist()) <= set(full["semseg"].unique().tolist())
    assert small["depth"][0, 0, 1].item() == pytest.approx(20.0)


def test_official_calibration_modes(tmp_path):
    write_official(tmp_path, camera=False)
    with pytest.warns(UserWarning, match="camera/train is missing"):
        ds = official(tmp_path, "train")  # auto: falls back to the fixed values, loudly
    assert ds[0]["depth"][0, 0, 2].item() == pytest.approx(0.209313 * 2262.52 / 20, rel=1e-6)
    ds = official(tmp_path, "train", calibration="fixed", baseline=0.5, fx=1000.0, max_depth=None)
    assert ds[0]["depth"][0, 0, 4].item() == pytest.approx(0.5 * 1000 / 2)  # 250 m kept without max_depth
    with pytest.raises(DataError, match=r"camera/train.*calibration=camera"):
        official(tmp_path, "train", calibration="camera")
    with pytest.raises(ConfigError, match=r"data\.cityscapes\.calibration"):
        official(tmp_path, "train", calibration="stereo")
    with pytest.raises(ConfigError, match=r"data\.cityscapes\.baseline"):
        official(tmp_path, "train", calibration="fixed", baseline=-1)
    with pytest.raises(ConfigError, match=r"data\.cityscapes\.focal"):
        official(tmp_path, "train", focal=2000)


def test_official_layout_names_bad_files(tmp_path):
    write_official(tmp_path)
    city, s = "aachen", stem("aachen", 0)
    label = tmp_path / "gtFine" / "train" / city / f"{s}_gtFine_labelIds.png"
    disparity = tmp_path / "disparity" / "train" / city / f"{s}_disparity.png"
    camera = tmp_path / "camera" / "train" / city / f"{s}_camera.json"
    ids = np.array(Image.open(label))
    ids[5, 5] = 40
    Image.fromarray(ids).save(label)
    with pytest.raises(DataError, match=rf"{s}_gtFine_labelIds.png.*label id 40"):
        official(tmp_path)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(label)  # a colour image
    with pytest.raises(DataError, match=rf"{s}_gtFine_labelIds.png.*8-bit single-channel"):
        official(tmp_path)
    Image.fromarray(np.zeros((H, W // 2), np.uint8)).save(label)
    with pytest.raises(DataError, match=rf"{s}_gtFine_labelIds.png: size \(32, 32\) differs from its image"):
        official(tmp_path)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(label)
    Image.fromarray(np.full((H, W), 200, np.uint8)).save(disparity)  # 8-bit: not the official encoding
    with pytest.raises(DataError, match=rf"{s}_disparity.png.*16-bit"):
        official(tmp_path)
    Image.fromarray(np.full((H, W), 5000, np.uint16)).save(disparity)
    camera.write_text(json.dumps({"intrinsic": {"fx": 2000}}))
    with pytest.raises(DataError, match=rf"{s}_camera.json.*baseline"):
        official(tmp_path)
    camera.unlink()
    with pytest.raises(DataError, match=rf"{s}_camera.json: file is missing"):
        official(tmp_path)
    with pytest.raises(DataError, match=r"leftImg8bit/test"):
        official(tmp_path, "test")


def test_official_layout_rejects_bad_task_specs(tmp_path):
    write_official(tmp_path)
    bad = {
        "semseg": Target("semseg", "semseg", "labelIds", num_classes=34),
        "normal": Target("normal", "normal", "normal"),
    }
    with pytest.raises(ConfigError, match=r"available_tasks\.semseg\.source"):
        CityscapesDataset(tmp_path, "train", {"semseg": bad["semseg"]})
    with pytest.raises(ConfigError, match=r"available_tasks\.semseg\.num_classes"):
        CityscapesDataset(tmp_path, "train", {"semseg": Target("semseg", "semseg", "trainId", num_classes=7)})
    with pytest.raises(ConfigError, match=r"available_tasks\.normal\.type"):
        CityscapesDataset(tmp_path, "train", {"normal": bad["normal"]})


def test_mtnas_data_check_official(tmp_path, capsys):
    write_official(tmp_path, size=(48, 96))
    assert check("cityscapes_official", tmp_path) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out and "semseg class histogram" in out
    assert check("cityscapes_official", tmp_path, tasks=["semseg19", "detection"]) == 0
    assert "detection boxes per class: 0:5 1:0 2:5 3:0 4:0 5:0 6:0 7:5 (total 15)" in capsys.readouterr().out
    (tmp_path / "gtFine" / "train" / "bremen" / f"{stem('bremen', 0)}_gtFine_labelIds.png").unlink()
    label = tmp_path / "gtFine" / "val" / "lindau" / f"{stem('lindau', 1)}_gtFine_labelIds.png"
    ids = np.array(Image.open(label))
    ids[3, 3] = 77
    Image.fromarray(ids).save(label)
    disparity = tmp_path / "disparity" / "train" / "aachen" / f"{stem('aachen', 1)}_disparity.png"
    Image.fromarray(np.ones((48, 50), np.uint16)).save(disparity)
    (tmp_path / "leftImg8bit" / "val" / "lindau" / f"{stem('lindau', 0)}_leftImg8bit.png").unlink()
    assert check("cityscapes_official", tmp_path) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert f"{stem('bremen', 0)}_gtFine_labelIds.png: file is missing" in out
    assert f"{stem('lindau', 1)}_gtFine_labelIds.png" in out and "label id 77" in out
    assert f"{stem('aachen', 1)}_disparity.png: size (48, 50) differs" in out
    assert f"{stem('lindau', 0)}_gtFine_labelIds.png: no matching image" in out


# --- the preprocessed .npy layout -------------------------------------------------------------------
def write_npy(root, size=(128, 256), splits=(("train", 3), ("val", 2)), seed=0):
    rng = np.random.default_rng(seed)
    h, w = size
    for split, n in splits:
        for folder in ("image", "label_7", "label_19", "depth"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            depth = rng.uniform(0.002, 0.49, (h, w, 1)).astype(np.float32)  # inverse depth
            depth[-4:] = 0  # invalid rows
            arrays = {
                "image": rng.random((h, w, 3)).astype(np.float32),
                "label_7": rng.integers(-1, 7, (h, w)).astype(np.float32),
                "label_19": rng.integers(-1, 19, (h, w)).astype(np.float32),
                "depth": depth,
            }
            for folder, arr in arrays.items():
                np.save(root / split / folder / f"{i}.npy", arr)
    return root


def test_npy_layout_reads_through_its_data_config(tmp_path):
    write_npy(tmp_path, size=(32, 64))
    cfg = {**load_data_config("cityscapes"), "image_size": [32, 64]}
    assert cfg["format"] == "npy_folder"
    ds = build_dataset(cfg, tmp_path, "test", ["semseg", "semseg19", "depth"])  # test → val
    assert ds.split == "val" and len(ds) == 2
    s = ds[1]
    raw = {k: np.load(tmp_path / "val" / k / "1.npy") for k in ("image", "label_7", "label_19", "depth")}
    np.testing.assert_array_equal(s["image"].numpy(), raw["image"].transpose(2, 0, 1))
    np.testing.assert_array_equal(s["semseg"].numpy(), raw["label_7"].astype(np.int64))
    np.testing.assert_array_equal(s["semseg19"].numpy(), raw["label_19"].astype(np.int64))
    np.testing.assert_array_equal(s["depth"].numpy(), raw["depth"].transpose(2, 0, 1))
    assert (s["semseg"] == -1).any() and (s["depth"][0, -4:] == 0).all()
    with pytest.raises(DataError, match=r"expected \(128, 256\)"):
        build_dataset(load_data_config("cityscapes"), tmp_path, "train", ["semseg", "depth"])


def test_mtnas_data_check_npy(tmp_path, capsys):
    write_npy(tmp_path)  # the real 128×256
    assert check("cityscapes", tmp_path) == 0
    capsys.readouterr()
    bad = np.zeros((128, 256), np.float32)
    bad[0, 0] = 7  # 7 classes: 0..6
    np.save(tmp_path / "val" / "label_7" / "1.npy", bad)
    np.save(tmp_path / "train" / "depth" / "0.npy", np.zeros((128, 256), np.float32))  # no channel axis
    (tmp_path / "train" / "label_19" / "2.npy").unlink()
    assert check("cityscapes", tmp_path, tasks=["semseg", "semseg19", "depth"]) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert "val/label_7/1.npy" in out and "label value 7 outside" in out
    assert "train/depth/0.npy" in out and "expected H×W×1" in out
    assert "train/label_19/2.npy: file is missing" in out
    assert check("cityscapes", tmp_path) == 1  # the default tasks (semseg, depth) do not need label_19
    assert "label_19" not in capsys.readouterr().out


def test_npy_depth_in_metres_is_named(tmp_path, capsys):
    # This layout stores inverse depth (≈ 0–0.49); a copy converted to metres must not pass silently.
    write_npy(tmp_path)
    metres = np.full((128, 256, 1), 12.5, np.float32)
    np.save(tmp_path / "val" / "depth" / "1.npy", metres)
    assert check("cityscapes", tmp_path) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert "val/depth/1.npy: values in [12.5, 12.5], outside [0, 1]" in out
    assert "data.available_tasks.depth.value_range" in out


def test_mtnas_data_check_takes_the_training_data_overrides(tmp_path, capsys):
    write_npy(tmp_path, size=(64, 96))  # a copy at another size: .npy layouts are never resized
    assert check("cityscapes", tmp_path) == 1
    assert "expected (128, 256)" in capsys.readouterr().out.replace("\n", " ")
    assert check("cityscapes", tmp_path, overrides=["data.image_size=[64,96]"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["check", "cityscapes", str(tmp_path), "++data.image_size=[64,96]"])
    assert exc.value.code == 0
    assert check("cityscapes", tmp_path, overrides=["image_size=[64,96]"]) == 2
    assert "data.KEY=VALUE" in capsys.readouterr().out


# --- a few supernet steps through the CLI on each layout ---------------------------------------------
@pytest.mark.slow
def test_cli_trains_supernet_on_npy_fixture(tmp_path, cache_dir):
    root = write_npy(tmp_path / "cityscapes2", size=(32, 64), splits=(("train", 4), ("val", 2)))
    run_dir = tmp_path / "run"
    args = dataset_run_args("cityscapes_search", root, ["semseg", "depth"], run_dir, size=(32, 64))
    res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (run_dir / "supernet" / "last.ckpt").is_file()


@pytest.mark.slow
def test_cli_trains_supernet_on_official_fixture(tmp_path, cache_dir):
    root = tmp_path / "cityscapes"
    write_official(root, size=(64, 128))  # resized to 32×64 by the reader
    run_dir = tmp_path / "run"
    args = dataset_run_args("cityscapes_search", root, ["semseg", "depth"], run_dir, size=(32, 64))
    res = run_cli(args + ["data=cityscapes_official"], tmp_path, cache_dir)  # after +experiment: still wins
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (run_dir / "supernet" / "last.ckpt").is_file()
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "format: cityscapes" in config and "calibration: auto" in config
