"""The PASCAL-Context multi-task reader on fixtures in the exact on-disk format of PASCAL_MT (ASTMT / MTI-Net /
ATRC / InvPT): JPEG images, palette/grey label PNGs (255 = ignored), PASCAL-Part `anno` structs and
PASCAL-Context `LabelMap` .mat files written with scipy.io.savemat, 8-bit saliency and normal PNGs, the
ImageSets/Context split lists and the JSON ImageSets/Parts list."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from mtnas.data.files import Target
from mtnas.data.pascal_context import (
    NORMALS_VALID_CLASSES,
    PascalContextDataset,
    label_boundaries,
    thin,
)
from mtnas.errors import ConfigError, DataError

from .conftest import dataset_run_args, run_cli

TASKS = ["semseg", "human_parts", "saliency", "normal", "edge"]
SPEC = {
    "semseg": ("semseg", "semseg", {"type": "semseg"}, 21),
    "human_parts": ("semseg", "human_parts", {"type": "semseg"}, 7),
    "saliency": ("binary", "sal_distill", {"type": "saliency"}, None),
    "normal": ("normal", "normals_distill", {"type": "normal"}, None),
    "edge": ("binary", "pascal-context/trainval", {"type": "edge"}, None),
}
TARGETS = {t: Target(t, kind, src, num_classes=n, options=o) for t, (kind, src, o, n) in SPEC.items()}
SPLITS = {
    "train": ["2008_000002", "2008_000003", "2008_000007", "2008_000008"],
    "val": ["2010_000001", "2010_000002"],
}
SIZES = [(24, 32), (32, 24), (28, 28), (24, 32), (24, 36), (30, 24)]  # PASCAL images come in many sizes
WALL, FLOOR, TV, SKY, BIRD = 440, 158, 427, 360, 25  # PASCAL-Context ids; sky, bird: not NYU classes
PERSON, DOG_VOC = 15, 12  # PASCAL-Part (VOC) class_ind


def part_struct(parts):
    """1×P struct array {part_name, mask}, or MATLAB's [] for an object without parts."""
    if not parts:
        return np.zeros((0, 0))
    arr = np.empty((1, len(parts)), dtype=[("part_name", object), ("mask", object)])
    for i, (name, mask) in enumerate(parts):
        arr["part_name"][0, i] = name
        arr["mask"][0, i] = mask.astype(np.uint8)
    return arr


def write_part_mat(path, imname, objects):
    """PASCAL-Part annotation: struct anno {imname, objects(1×N) {class, class_ind, mask, parts}}."""
    dtype = [("class", object), ("class_ind", object), ("mask", object), ("parts", object)]
    objs = np.empty((1, len(objects)), dtype=dtype)
    for i, (name, ind, mask, parts) in enumerate(objects):
        objs["class"][0, i] = name
        objs["class_ind"][0, i] = np.array([[ind]], dtype=np.uint8)
        objs["mask"][0, i] = mask.astype(np.uint8)
        objs["parts"][0, i] = part_struct(parts)
    scipy.io.savemat(path, {"anno": {"imname": imname, "objects": objs}})


def encode_normals(n):
    return np.clip(np.round((n + 1) / 2 * 255), 0, 255).astype(np.uint8)


def make_sample(rng, h, w, person=True):
    """Raw arrays as PASCAL_MT stores them."""
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    seg = rng.integers(0, 21, (h, w)).astype(np.uint8)
    seg[0] = 255  # VOC "void" border → ignored
    seg[1, :2] = (0, 20)  # first and last class
    # LabelMap: wall | floor on the left, sky on the right (boundary at column c), a TV and a dog block.
    c = w // 2
    labels = np.full((h, w), WALL, np.uint16)
    labels[h // 2 :, :c] = FLOOR
    labels[:, c:] = SKY
    labels[2:5, 2:5] = TV
    labels[-4:-1, -4:-1] = BIRD
    sal = rng.integers(0, 256, (h, w), dtype=np.uint8)
    sal[0, :4] = (127, 128, 0, 255)  # the threshold v/255 > 0.5
    normal = rng.normal(size=(h, w, 3))
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    objects = []
    dog = np.zeros((h, w), bool)
    dog[-6:, -6:] = True
    dog_head = np.zeros((h, w), bool)
    dog_head[-6:-3, -6:] = True
    objects.append(("dog", DOG_VOC, dog, [("head", dog_head)]))  # not a person: never painted
    if person:
        body = np.zeros((h, w), bool)
        body[4:16, 4:12] = True
        parts = []
        for name, rows in (("hair", (4, 6)), ("torso", (6, 9)), ("ruarm", (9, 10)), ("lhand", (10, 11))):
            m = np.zeros((h, w), bool)
            m[rows[0] : rows[1], 4:12] = True
            parts.append((name, m))
        for name, rows in (("luleg", (11, 13)), ("llleg", (13, 15)), ("rfoot", (15, 16))):
            m = np.zeros((h, w), bool)
            m[rows[0] : rows[1], 4:8] = True
            parts.append((name, m))
        objects.append(("person", PERSON, body, parts))
    return {
        "rgb": rgb,
        "seg": seg,
        "labels": labels,
        "sal": sal,
        "normal": encode_normals(normal),
        "objects": objects,
    }


def write_pascal(root, splits=SPLITS, seed=0, no_person=("2008_000003", "2010_000002"), parts_list=True):
    """PASCAL_MT layout. Every other image's semseg lies in semseg/pascal-context/ instead of VOC12/ (as for
    images outside VOC2012's segmentation set). `no_person` images hold only a dog."""
    rng = np.random.default_rng(seed)
    for d in ("ImageSets/Context", "ImageSets/Parts", "JPEGImages", "semseg/VOC12", "semseg/pascal-context"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for d in ("human_parts", "sal_distill", "normals_distill", "pascal-context/trainval"):
        (root / d).mkdir(parents=True, exist_ok=True)
    raws, sizes = {}, iter(SIZES)
    for split, ids in splits.items():
        (root / "ImageSets/Context" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        listing = {}
        for k, id_ in enumerate(ids):
            raws[id_] = raw = make_sample(rng, *next(sizes), person=id_ not in no_person)
            Image.fromarray(raw["rgb"]).save(root / "JPEGImages" / f"{id_}.jpg", quality=100)
            seg = Image.fromarray(raw["seg"])
            if k % 2 == 0:  # VOC12 labels are palette PNGs
                seg = seg.convert("P")
                seg.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
            seg.save(root / "semseg" / ("VOC12" if k % 2 == 0 else "pascal-context") / f"{id_}.png")
            write_part_mat(root / "human_parts" / f"{id_}.mat", id_, raw["objects"])
            listing[id_] = [int(o[1]) for o in raw["objects"]]
            Image.fromarray(raw["sal"]).save(root / "sal_distill" / f"{id_}.png")
            Image.fromarray(raw["normal"]).save(root / "normals_distill" / f"{id_}.png")
            scipy.io.savemat(root / "pascal-context/trainval" / f"{id_}.mat", {"LabelMap": raw["labels"]})
        if parts_list and split == "train":  # the reference's JSON cache; val decides from the .mat files
            (root / "ImageSets/Parts" / f"{split}.txt").write_text(json.dumps(listing))
    return raws


def dataset(root, split="train", **kw):
    return PascalContextDataset(
        root, split, TARGETS, image_size=(32, 32), options={"num_human_parts": 6}, **kw
    )


def test_reads_every_target_in_the_array_convention(tmp_path):
    raws = write_pascal(tmp_path)
    ds = dataset(tmp_path)
    assert [ds.sample_id(i) for i in range(len(ds))] == SPLITS["train"]
    for i, id_ in enumerate(SPLITS["train"]):
        a, raw = ds.load_arrays(i), raws[id_]
        h, w = raw["seg"].shape
        np.testing.assert_array_equal(
            a["image"], np.asarray(Image.open(ds.samples[i]["image"]), np.float32) / 255
        )
        assert ds.samples[i]["semseg"].parent.name == ("VOC12" if i % 2 == 0 else "pascal-context")
        # semseg: 0..20 kept (0 = background is a class), 255 → −1
        np.testing.assert_array_equal(
            a["semseg"], np.where(raw["seg"] == 255, -1, raw["seg"].astype(np.int64))
        )
        assert (a["semseg"][0] == -1).all() and a["semseg"][1, 0] == 0 and a["semseg"][1, 1] == 20
        # saliency: v/255 > 0.5
        np.testing.assert_array_equal(a["saliency"], (raw["sal"] > 127.5).astype(np.uint8))
        assert a["saliency"][0, :4].tolist() == [0, 1, 0, 1]
        # normals: 2·v/255 − 1, unit length, valid only on NYU classes of the LabelMap (wall, floor, TV)
        valid = np.isin(raw["labels"], (WALL, FLOOR, TV))
        n = 2 * raw["normal"].astype(np.float64) / 255 - 1
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        np.testing.assert_allclose(a["normal"][valid], n[valid], atol=1e-6)
        assert (a["normal"][~valid] == 0).all() and (~valid).any()  # sky, bird: zero vector = invalid
        # edges: one-pixel boundaries of the LabelMap (wall|floor|sky, TV and dog blocks)
        assert set(np.unique(a["edge"])) == {0, 1} and a["edge"].shape == (h, w)
        # human parts
        if id_ == "2008_000003":
            assert (a["human_parts"] == -1).all()  # no person: the whole map is ignored
            continue
        hp = a["human_parts"]
        assert hp.shape == (h, w)
        assert (hp[4:6, 4:12] == 1).all()  # hair → head
        assert (hp[6:9, 4:12] == 2).all()  # torso
        assert (hp[9, 4:12] == 3).all() and (hp[10, 4:12] == 4).all()  # upper arm; hand → lower arm
        assert (hp[11:13, 4:8] == 5).all() and (hp[13:16, 4:8] == 6).all()  # upper leg; lower leg + foot
        assert (hp[11:16, 8:12] == 0).all()  # person pixels without a part: background
        assert (hp[-6:-3, -6:] == 0).all()  # the dog's head is not a person part
        assert hp.min() == 0 and hp.max() == 6


def test_images_without_people_are_ignored_for_human_parts(tmp_path):
    write_pascal(tmp_path)
    val = dataset(tmp_path, "val")  # no Parts list for val: decided from the .mat
    assert (val.load_arrays(1)["human_parts"] == -1).all()
    assert (val.load_arrays(0)["human_parts"] >= 0).all()
    # A person without part annotations paints nothing: ignored too (the reference's all-zero rule).
    h, w = 24, 36
    write_part_mat(
        tmp_path / "human_parts/2010_000001.mat", "x", [("person", PERSON, np.ones((h, w), bool), [])]
    )
    assert (dataset(tmp_path, "val").load_arrays(0)["human_parts"] == -1).all()
    # The Parts list decides first, as in the reference: listed without class 15 → ignored unread.
    (tmp_path / "ImageSets/Parts/val.txt").write_text(json.dumps({"2010_000001": [12], "2010_000002": [12]}))
    (tmp_path / "human_parts/2010_000001.mat").write_bytes(b"not a mat file")
    assert (dataset(tmp_path, "val").load_arrays(0)["human_parts"] == -1).all()


def test_thin_matches_scikit_image_examples():
    # skimage.morphology.thin docstring example
    square = np.zeros((7, 7), bool)
    square[1:-1, 2:-2] = True
    square[0, 1] = True
    expected = np.zeros((7, 7), bool)
    expected[[0, 1, 2, 3, 4], [1, 2, 3, 3, 3]] = True
    np.testing.assert_array_equal(thin(square), expected)
    # scikit-image's test_thin.py `test_noiter` image and result
    ii = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 1, 2, 3, 4, 5, 0],
            [0, 1, 0, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 6, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 0],
        ]
    )
    expected = np.zeros((7, 7), bool)
    expected[[1, 2, 2, 3], [2, 1, 3, 2]] = True
    np.testing.assert_array_equal(thin(ii), expected)


def test_edges_of_a_planted_label_boundary():
    labels = np.full((12, 16), 5, np.uint16)
    labels[:, 9:] = 7
    edge = label_boundaries(labels)
    assert edge.dtype == np.uint8 and set(np.unique(edge)) == {0, 1}
    assert (edge[:, :8] == 0).all() and (edge[:, 10:] == 0).all()  # only at the boundary columns 8 | 9
    assert (edge[1:-1, 8:10].sum(axis=1) == 1).all()  # thinned from 2 pixels to one per row
    assert edge[[0, -1], 8:10].sum() <= 2  # (thinning may shorten a line's ends by a pixel)
    assert not label_boundaries(np.full((12, 16), 5)).any()  # no boundary, no edge; borders are not edges
    # The reference's Laplacian quirk: a 1-pixel line of label 2 between 1 and 3 sums to 0 and stays unmarked.
    stripes = np.ones((9, 9), np.uint16)
    stripes[:, 4] = 2
    stripes[:, 5:] = 3
    assert not label_boundaries(stripes)[:, 4].any() and label_boundaries(stripes)[1:-1, 3].all()


def test_batches_are_resized_to_image_size(tmp_path):
    write_pascal(tmp_path)
    s = dataset(tmp_path)[1]
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert s["semseg"].shape == (32, 32) and s["semseg"].dtype == torch.long
    assert (s["human_parts"] == -1).all()  # sample 1 has no person
    assert s["saliency"].shape == (1, 32, 32) and s["edge"].shape == (1, 32, 32)
    assert set(s["edge"].unique().tolist()) <= {0.0, 1.0} and set(s["saliency"].unique().tolist()) == {
        0.0,
        1.0,
    }
    norm = s["normal"].norm(dim=0)
    assert ((norm < 1e-6) | ((norm - 1).abs() < 1e-5)).all()


def test_normal_classes_come_from_the_json_tables_when_present(tmp_path):
    write_pascal(tmp_path)
    assert len(NORMALS_VALID_CLASSES) == 170 and {WALL, FLOOR, TV} <= NORMALS_VALID_CLASSES
    assert not {SKY, BIRD} & NORMALS_VALID_CLASSES
    (tmp_path / "json").mkdir()
    (tmp_path / "json/nyu_classes.json").write_text(json.dumps({"wall": 21, "sky": 3, "unknown": 20}))
    (tmp_path / "json/context_classes.json").write_text(
        json.dumps({"wall": WALL, "sky": SKY, "floor": FLOOR, "tvmonitor": TV, "unknown": 431})
    )
    a = dataset(tmp_path).load_arrays(0)
    labels = scipy.io.loadmat(tmp_path / "pascal-context/trainval/2008_000002.mat")["LabelMap"]
    assert (np.linalg.norm(a["normal"], axis=-1) > 0.5).tolist() == np.isin(labels, (WALL, SKY, TV)).tolist()


@pytest.mark.parametrize(
    "path,writer,message",
    [
        (
            "semseg/pascal-context/2010_000002.png",
            lambda p: Image.fromarray(np.full((30, 24), 21, np.uint8)).save(p),
            r"label value 21 outside 0..20 \(0 = background\) and 255",
        ),
        (
            "human_parts/2010_000002.mat",
            lambda p: write_part_mat(
                p, "x", [("person", PERSON, np.ones((30, 24)), [("tail", np.ones((30, 24)))])]
            ),
            "unknown person part 'tail'",
        ),
        (
            "human_parts/2010_000002.mat",
            lambda p: scipy.io.savemat(p, {"anno": 3}),
            "not a PASCAL-Part annotation",
        ),
        (
            "normals_distill/2010_000002.png",
            lambda p: Image.fromarray(np.zeros((30, 24, 3), np.uint8)).save(p),
            "valid normals have a length far from 1",
        ),
        (
            "sal_distill/2010_000002.png",
            lambda p: Image.fromarray(np.full((30, 24), 300, np.uint16)).save(p),
            "dtype uint16; this layout stores 8-bit",
        ),
        (
            "pascal-context/trainval/2010_000002.mat",
            lambda p: scipy.io.savemat(p, {"LabelMap": np.full((30, 24), 500, np.uint16)}),
            "LabelMap value 500 outside the PASCAL-Context ids",
        ),
        (
            "pascal-context/trainval/2010_000002.mat",
            lambda p: scipy.io.savemat(p, {"labels": np.ones((30, 24))}),
            r"has no variable `LabelMap` \(found \['labels'\]\)",
        ),
    ],
)
def test_wrong_value_conventions_are_named(tmp_path, path, writer, message):
    write_pascal(tmp_path, no_person=())
    writer(tmp_path / path)
    ds = dataset(tmp_path, "val")  # the start-up check reads sample 0 only
    with pytest.raises(DataError, match=f"{path}.*{message}"):
        ds.load_arrays(1)


def test_missing_split_folder_and_files_and_config_errors(tmp_path):
    write_pascal(tmp_path)
    with pytest.raises(
        DataError, match=r"Context/test.txt: split file is missing.*\['train.txt', 'val.txt'\]"
    ):
        dataset(tmp_path, "test")
    (tmp_path / "sal_distill").rename(tmp_path / "sal")
    with pytest.raises(DataError, match=r"sal_distill: folder \(saliency\) is missing"):
        dataset(tmp_path)
    (tmp_path / "sal").rename(tmp_path / "sal_distill")
    (tmp_path / "semseg/pascal-context/2008_000003.png").unlink()
    with pytest.raises(
        DataError, match=r"VOC12/2008_000003.png: file is missing \(nor .*pascal-context/2008_000003.png\)"
    ):
        dataset(tmp_path)
    with pytest.warns(UserWarning, match="skipping 1 sample"):
        ds = dataset(tmp_path, skip_bad_samples=True)
    assert [ds.sample_id(i) for i in range(len(ds))] == ["2008_000002", "2008_000007", "2008_000008"]
    (tmp_path / "ImageSets/Parts/train.txt").write_text("{not json")
    with pytest.raises(DataError, match="Parts/train.txt: not the JSON"):
        dataset(tmp_path, skip_bad_samples=True)
    with pytest.raises(ConfigError, match="num_classes.*6 human part classes \\+ background = 7"):
        PascalContextDataset(
            tmp_path, "val", {"human_parts": Target("human_parts", "semseg", "human_parts", num_classes=21)}
        )


def test_mtnas_data_check_passes_and_names_planted_defects(tmp_path, capsys):
    from mtnas.data.cli import check

    write_pascal(tmp_path)
    assert check("pascal_context", tmp_path) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out and "✓" in out
    (tmp_path / "sal_distill/2008_000007.png").unlink()  # missing file
    Image.fromarray(np.zeros((24, 36), np.uint8)).save(
        tmp_path / "normals_distill/2010_000001.png"
    )  # not RGB
    seg = np.ones((30, 24), np.uint8)
    seg[5, 7] = 77
    Image.fromarray(seg).save(tmp_path / "semseg/pascal-context/2010_000002.png")  # out-of-range label
    Image.fromarray(np.zeros((25, 32, 3), np.uint8)).save(
        tmp_path / "JPEGImages/2008_000008.jpg"
    )  # wrong size
    (tmp_path / "ImageSets/Context/val.txt").write_text("2010_000001\n2010_000002\n2008_000002\n")
    assert check("pascal_context", tmp_path) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert "sal_distill/2008_000007.png: file is missing" in out
    assert "normals_distill/2010_000001.png" in out and "expected H×W×3" in out
    assert "semseg/pascal-context/2010_000002.png" in out and "label value 77" in out
    assert "JPEGImages/2008_000008.jpg" in out and "sizes differ" in out
    assert "val.txt: 1 id(s) also in train.txt" in out


@pytest.mark.slow
def test_cli_trains_supernet_on_pascal_context_fixture(tmp_path, cache_dir):
    root = tmp_path / "PASCAL_MT"
    write_pascal(root)
    run_dir = tmp_path / "run"
    res = run_cli(
        dataset_run_args("pascal_context_search", root, TASKS, run_dir, size=(32, 32)), tmp_path, cache_dir
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (run_dir / "supernet" / "last.ckpt").is_file()
