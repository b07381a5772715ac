"""The Taskonomy reader on fixtures in the exact on-disk format: per-building domain folders of PNGs named
point_<p>_view_<v>_domain_<domain>.png (segment_semantic files tagged `segmentsemantic`), 16-bit depth in
1/512 m with 65535 = no depth, 16-bit keypoints/edges, 8-bit 127-centred normals, 8-bit labels with
0 = uncertain / 1 = background, and the official `id,train,val,test` split CSV."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mtnas.data import taskonomy as tx
from mtnas.data.cli import check, load_data_config
from mtnas.data.formats import build_dataset
from mtnas.errors import ConfigError, DataError

from .conftest import dataset_run_args, run_cli

S = 32  # rgb (and every other domain) is S×S; segment_semantic is stored at half size, as some copies do
SPLITS = {"hanson": "train", "corozal": "val", "ihlen": "test"}
VIEWS = [(0, 1), (3, 0)]  # (point, view) per building
FIVE = ["semseg", "depth_zbuffer", "normal", "keypoints2d", "edge_texture"]
ALL = FIVE + ["edge_occlusion", "reshading", "principal_curvature", "autoencoding", "depth_euclidean",
              "keypoints3d", "segment_unsup2d", "segment_unsup25d", "class_object", "class_scene",
              "vanishing_point"]  # fmt: skip


def cfg(**overrides):
    return {**load_data_config("taskonomy"), "image_size": [S, S], **overrides}


def encode_normals(n):
    return np.round((n + 1.0) / 2.0 * 255.0).astype(np.uint8)


def make_raw(rng):
    """Raw arrays per domain, as Taskonomy stores them."""
    depth = rng.integers(200, 6000, (S, S)).astype(np.uint16)
    depth[:4] = 65535  # no depth (e.g. windows): invalid here and, masked, in normals/reshading/…
    depth[4, :3] = (8192, 8191, 0)
    normal = rng.normal(size=(S, S, 3))
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal_png = encode_normals(normal)
    normal_png[:, -2:] = 128  # grey: no normal
    seg = rng.integers(0, 18, (S // 2, S // 2)).astype(np.uint8)
    seg[0, :3] = (0, 1, 17)  # uncertain, background, last object class
    return {
        "rgb": rng.integers(0, 256, (S, S, 3), dtype=np.uint8),
        "segment_semantic": seg,
        "depth_zbuffer": depth,
        "depth_euclidean": np.where(depth == 65535, 65535, depth + 50).astype(np.uint16),
        "normal": normal_png,
        "keypoints2d": rng.integers(0, 3000, (S, S)).astype(np.uint16),
        "keypoints3d": rng.integers(0, 65000, (S, S)).astype(np.uint16),
        "edge_texture": rng.integers(0, 11000, (S, S)).astype(np.uint16),
        "edge_occlusion": rng.integers(0, 10000, (S, S)).astype(np.uint16),
        "principal_curvature": rng.integers(0, 256, (S, S, 3), dtype=np.uint8),
        "reshading": np.repeat(rng.integers(0, 256, (S, S, 1), dtype=np.uint8), 3, axis=-1),
        "segment_unsup2d": rng.integers(0, 256, (S, S), dtype=np.uint8),
        "segment_unsup25d": rng.integers(0, 256, (S, S), dtype=np.uint8),
        # image-level: a softmax vector per image, stored as .npy
        "class_object": softmax(rng.normal(size=1000) * 3),
        "class_scene": softmax(rng.normal(size=365) * 3),
        # per-view JSON metadata (omnidata's point_info); the vanishing points are 3 lists of 3
        "point_info": {
            "vanishing_points_gaussian_sphere": {a: rng.normal(size=3).tolist() for a in "xyz"},
            "camera_location": [1.0, 2.0, 3.0],
        },
    }


def softmax(z):
    e = np.exp(z - z.max())
    return (e / e.sum()).astype(np.float32)


def folder(root, layout, building, domain):
    return {
        "building": root / building / domain,
        "domain": root / domain / building,
        "omnidata": root / domain / "taskonomy" / building,
    }[layout]


def write_taskonomy(root, layout="building", seed=0, csv=True):
    rng = np.random.default_rng(seed)
    raws = {}
    for building in SPLITS:
        for p, v in VIEWS:
            raw = raws[(building, p, v)] = make_raw(rng)
            for domain, arr in raw.items():
                d = folder(root, layout, building, domain)
                d.mkdir(parents=True, exist_ok=True)
                tag = "segmentsemantic" if domain == "segment_semantic" else domain
                if domain.startswith("class_"):
                    np.save(d / f"point_{p}_view_{v}_domain_{tag}.npy", arr)
                elif domain == "point_info":
                    (d / f"point_{p}_view_{v}_domain_{tag}.json").write_text(json.dumps(arr))
                else:
                    Image.fromarray(arr).save(d / f"point_{p}_view_{v}_domain_{tag}.png")
    if csv:
        rows = ["id,train,val,test"] + [
            f"{b},{int(s == 'train')},{int(s == 'val')},{int(s == 'test')}" for b, s in SPLITS.items()
        ]
        (root / "train_val_test_tiny.csv").write_text("\n".join(rows) + "\n")
    return raws


def test_png_fixture_is_in_the_real_encodings(tmp_path):
    write_taskonomy(tmp_path)
    d = tmp_path / "hanson"
    assert Image.open(d / "depth_zbuffer/point_0_view_1_domain_depth_zbuffer.png").mode == "I;16"
    assert Image.open(d / "keypoints2d/point_0_view_1_domain_keypoints2d.png").mode == "I;16"
    assert Image.open(d / "normal/point_0_view_1_domain_normal.png").mode == "RGB"
    assert Image.open(d / "segment_semantic/point_0_view_1_domain_segmentsemantic.png").mode == "L"


def test_reads_every_domain_to_the_array_convention(tmp_path):
    raws = write_taskonomy(tmp_path)
    ds = build_dataset(cfg(), tmp_path, "train", ALL)
    assert len(ds) == 2 and ds.sample_id(1) == "hanson/point_3_view_0"
    a = ds.load_arrays(1)
    raw = raws[("hanson", 3, 0)]
    depth = raw["depth_zbuffer"].astype(np.float32)
    nodepth = (raw["depth_zbuffer"] == 65535) | (raw["depth_zbuffer"] == 0)
    np.testing.assert_allclose(a["image"], raw["rgb"] / 255.0, atol=1e-6)
    # depth: 1/512 m units, 65535 → 0 (invalid); 0 stays invalid
    np.testing.assert_allclose(a["depth_zbuffer"][..., 0], np.where(nodepth, 0, depth / 512.0), rtol=1e-6)
    assert a["depth_zbuffer"][4, 0, 0] == 16.0 and a["depth_zbuffer"][4, 2, 0] == 0
    euc = raw["depth_euclidean"].astype(np.float32)
    np.testing.assert_allclose(
        a["depth_euclidean"][..., 0], np.where(euc == 65535, 0, euc / 512.0), rtol=1e-6
    )
    # normals: 2·v/255 − 1, unit length; grey and no-depth pixels are zero vectors
    n = 2.0 * raw["normal"] / 255.0 - 1.0
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    valid = ~nodepth
    valid[:, -2:] = False
    np.testing.assert_allclose(a["normal"][valid], n[valid], atol=1e-5)
    assert (a["normal"][~valid] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(a["normal"][valid], axis=-1), 1.0, atol=1e-5)
    # semseg: 0 (uncertain) → −1, k → k − 1; stored at half size, nearest-upsampled to the rgb size
    want = np.kron(raw["segment_semantic"].astype(np.int64) - 1, np.ones((2, 2), np.int64))
    np.testing.assert_array_equal(a["semseg"], want)
    assert tuple(a["semseg"][0, :6:2]) == (-1, 0, 16)
    # regression: Standley et al.'s standardisation; masked pixels NaN
    np.testing.assert_allclose(a["keypoints2d"][..., 0], (raw["keypoints2d"] - 50.0) / 100.0, rtol=1e-6)
    np.testing.assert_allclose(a["edge_texture"][..., 0], (raw["edge_texture"] - 718.0) / 1070.0, rtol=1e-5)
    occ = (raw["edge_occlusion"] - 56.0248) / 239.1265
    np.testing.assert_allclose(a["edge_occlusion"][..., 0][valid], occ[valid], rtol=1e-5)
    assert np.isnan(a["edge_occlusion"][nodepth]).all() and not np.isnan(a["keypoints2d"]).any()
    pc = (raw["principal_curvature"][..., :2] / 255.0 - [0.5175, 0.4987]) / [0.1373, 0.0359]
    assert a["principal_curvature"].shape == (S, S, 2)
    np.testing.assert_allclose(a["principal_curvature"][~nodepth], pc[~nodepth], rtol=1e-4, atol=1e-5)
    shade = (raw["reshading"][..., 0] / 255.0 - 0.4962) / 0.2846
    np.testing.assert_allclose(a["reshading"][..., 0][~nodepth], shade[~nodepth], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a["keypoints3d"][..., 0], raw["keypoints3d"] / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(a["segment_unsup2d"][..., 0], raw["segment_unsup2d"] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(a["autoencoding"], raw["rgb"] / 255.0, atol=1e-6)
    # image-level: the stored probability vectors, as they are
    np.testing.assert_array_equal(a["class_object"], raw["class_object"])
    np.testing.assert_array_equal(a["class_scene"], raw["class_scene"])
    vps = raw["point_info"]["vanishing_points_gaussian_sphere"]
    np.testing.assert_allclose(a["vanishing_point"], vps["x"] + vps["y"] + vps["z"], rtol=1e-6)
    # batch convention, resized to data.image_size (nearest for targets)
    s = ds[1]
    assert s["image"].shape == (3, 32, 32) and s["semseg"].dtype == torch.long
    assert s["depth_zbuffer"].shape == (1, 32, 32) and s["principal_curvature"].shape == (2, 32, 32)
    assert s["class_object"].shape == (1000,) and s["class_scene"].shape == (365,)
    assert s["vanishing_point"].shape == (9,)
    # augmentation leaves image-level labels alone
    from mtnas.data.transforms import Compose, RandomHorizontalFlip, RandomScaleCrop

    aug = Compose([RandomScaleCrop((1.5,)), RandomHorizontalFlip(p=1.0)])(dict(s), ds.kinds)
    assert torch.equal(aug["class_object"], s["class_object"]) and aug["image"].shape == (3, 32, 32)
    small = build_dataset(cfg(image_size=[16, 16]), tmp_path, "train", ["semseg"])[1]
    np.testing.assert_array_equal(small["semseg"].numpy(), raw["segment_semantic"].astype(np.int64) - 1)


def test_class_subset_is_selected_and_renormalised(tmp_path):
    raws = write_taskonomy(tmp_path)
    c = cfg()
    c["available_tasks"]["class_object"] = {
        "type": "classification",
        "source": "class_object",
        "num_classes": 3,
        "classes": [5, 1, 999],
    }
    got = build_dataset(c, tmp_path, "train", ["class_object"]).load_arrays(0)["class_object"]
    want = raws[("hanson", 0, 1)]["class_object"][[5, 1, 999]]
    np.testing.assert_allclose(got, want / want.sum(), rtol=1e-6)
    del c["available_tasks"]["class_object"]["num_classes"]
    with pytest.raises(ConfigError, match=r"available_tasks\.class_object\.num_classes"):
        build_dataset(c, tmp_path, "train", ["class_object"])


def test_vanishing_points_official_layout_and_unlabeled_views(tmp_path):
    raws = write_taskonomy(tmp_path)
    # The official per-building layout keeps the metadata in points/ as ..._domain_fixatedpose.json.
    for b in SPLITS:
        old = tmp_path / b / "point_info"
        for f in old.iterdir():
            f.rename(f.with_name(f.name.replace("domain_point_info", "domain_fixatedpose")))
        old.rename(tmp_path / b / "points")
    info = tmp_path / "hanson/points/point_3_view_0_domain_fixatedpose.json"
    info.write_text(json.dumps({"camera_location": [0, 0, 0]}))  # no vanishing points for this view
    c = cfg()
    c["available_tasks"]["vanishing_point"]["source"] = "points"
    ds = build_dataset(c, tmp_path, "train", ["vanishing_point"])
    vps = raws[("hanson", 0, 1)]["point_info"]["vanishing_points_gaussian_sphere"]
    np.testing.assert_allclose(
        ds.load_arrays(0)["vanishing_point"], vps["x"] + vps["y"] + vps["z"], rtol=1e-6
    )
    assert np.isnan(ds.load_arrays(1)["vanishing_point"]).all()  # unlabeled: NaN, skipped by loss/metrics
    info.write_text(json.dumps({"vanishing_points_gaussian_sphere": {"x": [1, 2], "y": [0], "z": []}}))
    with pytest.raises(DataError, match="point_3_view_0_domain_fixatedpose.json.*x, y and z lists of 3"):
        ds.load_arrays(1)
    info.write_text("{not json")
    with pytest.raises(DataError, match="not a readable JSON"):
        ds.load_arrays(1)


def test_max_depth_and_mask_options(tmp_path):
    raws = write_taskonomy(tmp_path)
    raw = raws[("hanson", 0, 1)]["depth_zbuffer"]
    a = build_dataset(cfg(max_depth=16.0), tmp_path, "train", ["depth_zbuffer"]).load_arrays(0)
    np.testing.assert_array_equal(a["depth_zbuffer"][..., 0] == 0, (raw >= 8192) | (raw == 0))
    a = build_dataset(cfg(mask_with_depth=[]), tmp_path, "train", ["normal"]).load_arrays(0)
    assert (np.linalg.norm(a["normal"][:4, :-2], axis=-1) > 0.99).all()  # no depth, but not masked
    with pytest.raises(ConfigError, match="mask_with_depth"):
        build_dataset(cfg(mask_with_depth=["nope"]), tmp_path, "train", ["normal"])
    with pytest.raises(ConfigError, match="value_scaling.principal_curvature.scale"):
        build_dataset(cfg(value_scaling={"principal_curvature": {"scale": [1, 2, 3]}}), tmp_path, "train",
                      ["principal_curvature"])  # fmt: skip


@pytest.mark.parametrize("layout", ["domain", "omnidata"])
def test_other_layouts_read_the_same(tmp_path, layout):
    write_taskonomy(tmp_path / "a")
    write_taskonomy(tmp_path / "b", layout=layout)
    a = build_dataset(cfg(), tmp_path / "a", "val", FIVE).load_arrays(0)
    b = build_dataset(cfg(), tmp_path / "b", "val", FIVE).load_arrays(0)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(DataError, match="corozal"):
        build_dataset(cfg(layout="building"), tmp_path / "b", "val", FIVE)


def test_splits_from_csv_config_lists_and_errors(tmp_path):
    write_taskonomy(tmp_path)
    for split, building in (("train", "hanson"), ("val", "corozal"), ("test", "ihlen")):
        ds = build_dataset(cfg(), tmp_path, split, FIVE)
        assert {ds.sample_id(i).split("/")[0] for i in range(len(ds))} == {building}
    ds = build_dataset(cfg(buildings={"train": ["hanson", "ihlen"]}), tmp_path, "train", FIVE)
    assert len(ds) == 4
    # a listed building that is not on disk is named
    with open(tmp_path / "train_val_test_tiny.csv", "a") as f:
        f.write("woodbine,1,0,0\n")
    with pytest.raises(DataError, match=r"woodbine.*exclude_buildings"):
        build_dataset(cfg(), tmp_path, "train", FIVE)
    assert len(build_dataset(cfg(exclude_buildings=["woodbine"]), tmp_path, "train", FIVE)) == 2
    # malformed CSV, several CSVs, no CSV, unknown split column
    (tmp_path / "bad.csv").write_text("id,train,val,test\nhanson,yes,0,0\n")
    with pytest.raises(DataError, match=r"bad.csv.*line 2.*'yes'"):
        build_dataset(cfg(split_file="bad.csv"), tmp_path, "train", FIVE)
    (tmp_path / "train_val_test_medium.csv").write_text("id,train,val,test\n")
    with pytest.raises(ConfigError, match="data.split_file"):
        build_dataset(cfg(), tmp_path, "train", FIVE)
    with pytest.raises(DataError, match="no `extra` column"):
        build_dataset(cfg(split_file="train_val_test_tiny.csv"), tmp_path, "extra", FIVE)
    for p in tmp_path.glob("*.csv"):
        p.unlink()
    with pytest.raises(DataError, match="no split file"):
        build_dataset(cfg(), tmp_path, "train", FIVE)


def test_a_subset_of_tasks_reads_only_its_folders(tmp_path, monkeypatch):
    write_taskonomy(tmp_path)
    for domain in ("normal", "depth_zbuffer", "edge_texture", "reshading"):
        shutil.rmtree(tmp_path / "hanson" / domain)
    read = []
    real = tx.read_png
    monkeypatch.setattr(tx, "read_png", lambda path, mode=None: read.append(path) or real(path, mode))
    ds = build_dataset(cfg(), tmp_path, "train", ["semseg", "keypoints2d"])
    ds[0], ds[1]
    assert {p.parent.name for p in read} == {"rgb", "segment_semantic", "keypoints2d"}
    # a masked task also reads depth_zbuffer (here missing, and named)
    with pytest.raises(DataError, match="hanson/depth_zbuffer: folder is missing"):
        build_dataset(cfg(), tmp_path, "train", ["principal_curvature"])


def test_mtnas_data_check_passes_and_names_planted_defects(tmp_path, capsys):
    write_taskonomy(tmp_path)
    assert check("taskonomy", tmp_path) == 0
    assert check("taskonomy", tmp_path, ALL) == 0
    capsys.readouterr()
    stem = "point_3_view_0_domain_"
    (tmp_path / "hanson" / "keypoints2d" / f"{stem}keypoints2d.png").unlink()  # missing file
    Image.fromarray(np.zeros((S, S), np.uint8)).save(
        tmp_path / "corozal/normal" / f"{stem}normal.png"
    )  # shape
    Image.fromarray(np.full((S, S), 300, np.uint16).astype(np.uint8)).save(
        tmp_path / "ihlen/depth_zbuffer" / f"{stem}depth_zbuffer.png"
    )  # 8-bit depth
    seg = np.ones((S // 2, S // 2), np.uint8)
    seg[3, 3] = 40  # out-of-range label
    Image.fromarray(seg).save(tmp_path / "corozal/segment_semantic/point_0_view_1_domain_segmentsemantic.png")
    assert check("taskonomy", tmp_path) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert f"hanson/keypoints2d/{stem}keypoints2d.png: file is missing" in out
    assert f"corozal/normal/{stem}normal.png" in out and "expected an RGB image" in out
    assert f"ihlen/depth_zbuffer/{stem}depth_zbuffer.png" in out and "16-bit" in out
    assert "corozal/segment_semantic/point_0_view_1_domain_segmentsemantic.png" in out and "40" in out
    np.save(tmp_path / "ihlen/class_scene" / f"{stem}class_scene.npy", np.ones(10, np.float32))  # length
    neg = np.full(1000, 1e-3, np.float32)
    neg[7] = -0.5
    np.save(tmp_path / "hanson/class_object" / f"{stem}class_object.npy", neg)  # negative probability
    np.save(tmp_path / "corozal/class_object" / f"{stem}class_object.npy", np.full(1000, 0.01, np.float32))
    assert check("taskonomy", tmp_path, ["class_object", "class_scene"]) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert f"ihlen/class_scene/{stem}class_scene.npy: shape (10,), expected (365,)" in out
    assert f"hanson/class_object/{stem}class_object.npy: negative class probability -0.5" in out
    assert f"corozal/class_object/{stem}class_object.npy: class probabilities sum to 10, expected 1" in out
    (tmp_path / "hanson" / "rgb" / f"{stem}rgb.png").unlink()  # the view's targets remain: named, not dropped
    assert check("taskonomy", tmp_path) == 1
    assert f"hanson/rgb/{stem}rgb.png: file is missing" in capsys.readouterr().out.replace("\n", " ")


def test_recipe_validates_with_every_task(tmp_path):
    from mtnas.config import validate
    from mtnas.tasks import build_tasks

    from .conftest import compose_cfg

    c = compose_cfg(
        ["+experiment=taskonomy_search", f"data.root={tmp_path}", f"tasks=[{','.join(ALL)}]", "trainer=cpu"]
    )
    validate(c)
    assert list(compose_cfg(["+experiment=taskonomy_search", f"data.root={tmp_path}"]).tasks) == FIVE
    tasks = build_tasks(ALL, cfg()["available_tasks"])
    assert tasks["semseg"].out_channels == 17 and tasks["principal_curvature"].out_channels == 2
    assert tasks["autoencoding"].out_channels == 3 and tasks["keypoints2d"].loss_type == "l1"
    assert tasks["class_object"].out_channels == 1000 and not tasks["class_scene"].dense
    assert len(ALL) == 16
    assert tasks["vanishing_point"].out_channels == 9 and not tasks["vanishing_point"].dense


@pytest.mark.slow
def test_cli_trains_a_few_supernet_steps_on_five_tasks(tmp_path, cache_dir):
    root = tmp_path / "taskonomy"
    write_taskonomy(root)
    run_dir = tmp_path / "run"
    args = dataset_run_args("taskonomy_search", root, FIVE + ["principal_curvature"], run_dir, size=(32, 32))
    proc = run_cli(args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "supernet" / "last.ckpt").is_file()


@pytest.mark.slow
def test_cli_full_nas_pipeline_with_an_image_level_task(tmp_path, cache_dir):
    """Pooled heads through every stage: baselines, supernet, search (analytic cost), retrain, report."""
    import json

    root = tmp_path / "taskonomy"
    write_taskonomy(root)
    run_dir = tmp_path / "run"
    args = [
        a
        for a in dataset_run_args(
            "taskonomy_search", root, ["normal", "class_scene", "vanishing_point"], run_dir, size=(32, 32)
        )
        if not a.startswith("stage=")
    ]
    args += [
        "trainer.max_epochs=1",
        "retrain.max_epochs=1",
        "search.population=3",
        "search.top_k=2",
        "search.mutations=1",
        "search.crossovers=1",
        "search.generations=1",
        "search.val_batches=1",
        "latency.repeats=1",
        "latency.warmup=0",
        # 2 val images: top-1 of an untrained baseline may be 0, which makes a relative change undefined
        "+data.available_tasks.class_scene.delta_m_metrics=[kl]",
    ]
    proc = run_cli(args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    mtl = results["models"]["multitask"]
    assert set(mtl["test"]["class_scene"]) == {"top1", "top5", "kl"}
    assert 0 <= mtl["test"]["class_scene"]["top5"] <= 100 and isinstance(mtl["delta_m"], float)
    assert set(mtl["test"]["vanishing_point"]) == {"abs_err", "rmse"}
    assert "KL" in (run_dir / "report.md").read_text()
