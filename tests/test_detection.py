"""Object detection: CenterNet targets, loss and decoding on hand-made boxes; COCO mAP on hand-computed cases;
boxes kept consistent by the joint augmentations; boxes in the synthetic data and through a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtnas.data.transforms import RandomHorizontalFlip, RandomScaleCrop, crop_boxes
from mtnas.metrics.detection import DetectionMetrics, decode_centers
from mtnas.tasks import build_task


def _task(num_classes=3):
    return build_task("detection", {"type": "detection", "num_classes": num_classes})


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}


def _maps_from(task, target, size):
    """The maps a perfect head would predict for `target` (logits of the target heatmaps)."""
    t = task.targets(target, size)
    c = task.num_classes
    maps = torch.logit(t["heatmap"].clamp(1e-4, 1 - 1e-4))
    maps = torch.cat([maps, torch.zeros(len(target), 4, *size)], 1)
    maps[t["image"], c : c + 2, t["cell_y"], t["cell_x"]] = t["size"]
    maps[t["image"], c + 2 :, t["cell_y"], t["cell_x"]] = t["offset"]
    return maps


def test_targets_put_a_peak_at_each_centre_with_size_and_offset_in_cells():
    task = _task()
    # On a 24×32 map: box (0.1, 0.2)–(0.5, 0.6) → centre (9.6, 9.6) cells, size 12.8 × 9.6 cells.
    target = [_target([[0.1, 0.2, 0.5, 0.6]], [1]), _target([], [])]
    t = task.targets(target, (24, 32))
    assert t["heatmap"].shape == (2, 3, 24, 32)
    assert t["heatmap"][0, 1, 9, 9] == 1 and int((t["heatmap"] == 1).sum()) == 1
    assert t["heatmap"][1].sum() == 0 and t["heatmap"][0, [0, 2]].sum() == 0  # other image, other classes
    assert t["heatmap"][0, 1, 9, 12] < t["heatmap"][0, 1, 9, 10] < 1  # a Gaussian falling off from the peak
    torch.testing.assert_close(t["size"], torch.tensor([[12.8, 9.6]]))
    torch.testing.assert_close(t["offset"], torch.tensor([[0.1, 0.1]]))


def test_loss_is_lowest_for_the_perfect_maps_and_handles_images_without_boxes():
    task = _task()
    target = [_target([[0.1, 0.2, 0.5, 0.6], [0.6, 0.5, 0.9, 0.95]], [0, 2]), _target([], [])]
    perfect = _maps_from(task, target, (24, 32))
    assert task.loss(perfect, target) < 0.5
    wrong_size = perfect.clone()
    wrong_size[:, 3:5] += 2.0
    assert task.loss(wrong_size, target) > task.loss(perfect, target) + 0.3
    assert task.loss(torch.zeros_like(perfect), target) > 10 * task.loss(perfect, target)
    empty = [_target([], []), _target([], [])]
    loss = task.loss(torch.zeros_like(perfect, requires_grad=True), empty)
    assert torch.isfinite(loss) and loss > 0  # the negatives still teach "no object here"
    loss.backward()


def test_decoding_finds_the_boxes_of_planted_peaks():
    task = _task()
    target = [_target([[0.1, 0.2, 0.5, 0.6], [0.6, 0.5, 0.9, 0.95]], [0, 2])]
    out = decode_centers(_maps_from(task, target, (24, 32)), 3)[0]
    assert out["scores"][:2].min() > 0.99 and out["scores"][2:].max() < 0.5
    torch.testing.assert_close(out["boxes"][:2][out["labels"][:2].argsort()], target[0]["boxes"])
    assert out["labels"][:2].sort().values.tolist() == [0, 2]


def test_training_the_maps_directly_reaches_full_map():
    """Loss and decoding agree: minimising the loss over free maps gives the boxes back (mAP 1)."""
    task = _task(2)
    target = [_target([[0.1, 0.1, 0.4, 0.5], [0.5, 0.55, 0.95, 0.9]], [0, 1])]
    maps = torch.zeros(1, 6, 16, 16)
    maps[:, :2] = -2.2  # where the head's bias starts (below)
    maps.requires_grad_(True)
    opt = torch.optim.Adam([maps], lr=0.2)
    for _ in range(300):
        opt.zero_grad()
        task.loss(maps, target).backward()
        opt.step()
    metric = task.metrics()
    metric.update(maps.detach(), target)
    out = metric.compute()
    assert out["map_50"] == 1 and out["map"] >= 0.9


def test_the_head_predicts_at_stride_4_with_a_low_centre_prior():
    task = _task(3)
    head = task.build_head([16, 32], hidden=8)
    bias = head.predict.bias.detach()
    torch.testing.assert_close(bias[:3], torch.full((3,), float(torch.logit(torch.tensor(0.1)))))
    out = head([torch.randn(2, 16, 12, 16), torch.randn(2, 32, 6, 8)], (48, 64))
    assert out.shape == (2, 3 + 4, 12, 16)


@pytest.mark.parametrize(
    ("scores", "boxes", "want_map", "want_map_50"),
    [
        # One true positive (IoU 1) ranked above a false positive: precision 1 at every recall.
        ([0.9, 0.8], [[0, 0, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]], 1.0, 1.0),
        # The false positive ranked first: precision 1/2 when the only object is found → AP 0.5.
        ([0.8, 0.9], [[0, 0, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]], 0.5, 0.5),
        # One detection of IoU 0.62 (0.4×0.4 truth, 0.4×0.248 box inside it): a hit at the IoU thresholds
        # 0.5, 0.55, 0.6 only → mAP@[.5:.95] = 3/10.
        ([0.9], [[0, 0, 0.4, 0.248]], 0.3, 1.0),
    ],
)
def test_map_matches_hand_computed_cases(scores, boxes, want_map, want_map_50):
    num_classes = 1
    maps = torch.full((1, 5, 10, 10), -20.0)
    for score, (x1, y1, x2, y2) in zip(scores, boxes, strict=True):
        cx, cy = (x1 + x2) / 2 * 10, (y1 + y2) / 2 * 10
        i, j = int(cy), int(cx)
        maps[0, 0, i, j] = float(torch.logit(torch.tensor(score)))
        maps[0, 1:5, i, j] = torch.tensor([(x2 - x1) * 10, (y2 - y1) * 10, cx - j - 0.5, cy - i - 0.5])
    metric = DetectionMetrics(num_classes)
    metric.update(maps, [_target([[0, 0, 0.4, 0.4]], [0])])
    out = metric.compute()
    assert float(out["map"]) == pytest.approx(want_map, abs=1e-3)
    assert float(out["map_50"]) == pytest.approx(want_map_50, abs=1e-3)
    metric.reset()
    metric.update(maps, [_target([], [])])  # nothing to find: 0, not COCO's −1
    assert float(metric.compute()["map"]) == 0.0


def test_flip_and_scale_crop_move_boxes_with_the_image():
    h, w = 40, 60
    mask = torch.zeros(h, w, dtype=torch.long)
    mask[10:30, 5:25] = 1  # an object; its box is the mask's extent
    mask[2:6, 50:58] = 2  # a small one near the corner, cut off by most crops
    sample = {
        "image": mask[None].float().repeat(3, 1, 1),
        "semseg": mask,
        "detection": _target([[5 / w, 10 / h, 25 / w, 30 / h], [50 / w, 2 / h, 58 / w, 6 / h]], [0, 1]),
    }
    kinds = {"image": "image", "semseg": "semseg", "detection": "boxes"}

    def extent(m, value):
        ys, xs = torch.nonzero(m == value, as_tuple=True)
        return torch.tensor([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])

    flipped = RandomHorizontalFlip(p=1.0)(dict(sample), kinds)
    for k, box in enumerate(flipped["detection"]["boxes"]):
        torch.testing.assert_close(box, extent(flipped["semseg"], k + 1))
    g = torch.Generator().manual_seed(3)
    for _ in range(10):
        out = RandomScaleCrop(scales=(2.0,))(dict(sample), kinds, g)
        boxes, labels = out["detection"]["boxes"], out["detection"]["labels"]
        for box, label in zip(boxes, labels, strict=True):
            torch.testing.assert_close(box, extent(out["semseg"], int(label) + 1), atol=1 / h, rtol=0)
        visible = {int(v) - 1 for v in out["semseg"].unique() if v > 0}
        assert set(labels.tolist()) <= visible  # no box for an object the crop left out
        assert ((boxes >= 0) & (boxes <= 1)).all()


def test_crop_drops_boxes_thinner_than_the_minimum():
    target = _target([[0.0, 0.0, 0.52, 0.5], [0.9, 0.9, 1.0, 1.0]], [0, 1])
    out = crop_boxes(target, (0.0, 0.0, 0.5, 0.5), (0.05, 0.05))  # the top-left quarter, zoomed ×2
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert out["labels"].tolist() == [0]
    sliver = crop_boxes(_target([[0.49, 0.1, 0.505, 0.3]], [0]), (0.0, 0.0, 0.5, 0.5), (0.05, 0.05))
    assert len(sliver["boxes"]) == 0  # 0.01 wide after clipping → dropped


def test_synthetic_scenes_have_boxes_around_their_objects():
    from mtnas.data.synthetic import BOX, render_scene

    found = 0
    for seed in range(6):
        scene = render_scene(np.random.default_rng(seed), 48, 64)
        boxes, label = scene["boxes"], scene["label"]
        assert boxes.shape[1] == 5 and boxes.dtype == np.float32
        for x1, y1, x2, y2, cls in boxes:
            inside = label[int(y1) : int(y2), int(x1) : int(x2)]
            assert (inside == BOX + cls).any()  # the box holds pixels of its object's class
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 48
        found += len(boxes)
    assert found >= 6


def test_a_batch_keeps_each_images_boxes(tmp_path):
    from omegaconf import OmegaConf

    from mtnas.cli import config_dir
    from mtnas.data.datamodule import MultiTaskDataModule

    cfg = OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/data/synthetic.yaml"))
    cfg["synthetic"].update(height=32, width=48, num_train=8, num_val=4, num_test=4)
    cfg["batch_size"] = 4
    dm = MultiTaskDataModule(cfg, ["semseg", "detection"], tmp_path, progress=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 48) and batch["semseg"].shape == (4, 32, 48)
    assert isinstance(batch["detection"], list) and len(batch["detection"]) == 4
    assert all(d["boxes"].shape[1] == 4 and len(d["boxes"]) == len(d["labels"]) for d in batch["detection"])
    assert sum(len(d["boxes"]) for d in batch["detection"]) > 0


@pytest.mark.slow
def test_cli_vit_nas_searches_and_exports_a_detection_head(tmp_path, cache_dir):
    """The one-shot ViT method with a detection task: the supernet trains a detection head per hidden width,
    the search scores subnets by mAP, the retrained subnet predicts stride-4 centre maps, and ONNX matches."""
    import json

    from .conftest import assert_onnx_matches, run_cli
    from .test_nas import NAS_TINY

    run_dir = tmp_path / "run"
    metrics = "{semseg: {miou: 0.5, pixel_acc: 0.9}, detection: {map_50: 0.1}}"
    args = [
        *NAS_TINY,
        "tasks=[semseg,detection]",
        "baselines.source=config",  # a 2-step detection baseline would have mAP 0: no Δm reference
        f"baselines.metrics={metrics}",
        "search.generations=1",
        f"hydra.run.dir={run_dir}",
    ]
    res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["search"]["evaluated"] >= 6
    assert set(results["models"]["multitask"]["test"]["detection"]) == {"map", "map_50", "map_75"}
    out = tmp_path / "subnet.onnx"  # the retrained subnet, as a plain graph with the stride-4 detection maps
    from mtnas.export.cli import main as export_main  # in-process: the CLI's start-up is tested elsewhere
    from mtnas.lit.multitask import MultiTaskLitModule

    export_main(["--onnx", str(run_dir / "retrain/best.ckpt"), str(out)])

    model = MultiTaskLitModule.load_from_checkpoint(run_dir / "retrain/best.ckpt", map_location="cpu").model
    assert model.eval()(torch.zeros(1, 3, 64, 64))["detection"].shape == (1, 4 + 4, 16, 16)
    assert_onnx_matches(out, model, ["semseg", "detection"], (64, 64))


def test_bad_box_files_are_named(tmp_path):
    from mtnas.data.files import Target
    from mtnas.data.npy_folder import NpyFolderDataset
    from mtnas.errors import DataError

    split = tmp_path / "train"
    for folder in ("image", "boxes"):
        (split / folder).mkdir(parents=True)
    np.save(split / "image/0.npy", np.zeros((20, 30, 3), np.float32))
    targets = {"detection": Target("detection", "boxes", "boxes", num_classes=2)}
    cases = [
        (np.array([[2, 3, 12, 9, 1]], np.float32), None),  # fine
        (np.zeros((0, 5), np.float32), None),  # an image without objects is fine too
        (np.array([[2, 3, 12, 9, 2]], np.float32), "box class 2 outside 0..1"),
        (np.array([[2, 3, 2, 9, 0]], np.float32), "has no area"),
        (np.array([[2, 3, 35, 9, 0]], np.float32), "outside the 30×20 image"),
        (np.array([[2, 3, 12, 9]], np.float32), "expected N×5 boxes"),
    ]
    for boxes, says in cases:
        np.save(split / "boxes/0.npy", boxes)
        if says is None:
            sample = NpyFolderDataset(tmp_path, "train", targets)[0]
            assert len(sample["detection"]["boxes"]) == len(boxes)
            continue
        with pytest.raises(DataError, match=says) as err:
            NpyFolderDataset(tmp_path, "train", targets)
        assert "boxes/0.npy" in str(err.value)
    np.save(split / "boxes/0.npy", np.array([[3, 2, 15, 10, 1]], np.float32))
    sample = NpyFolderDataset(tmp_path, "train", targets)[0]
    torch.testing.assert_close(sample["detection"]["boxes"], torch.tensor([[0.1, 0.1, 0.5, 0.5]]))
