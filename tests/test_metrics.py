"""Every metric against values worked out by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from mtnas.metrics import BoundaryFScore, DepthMetrics, NormalMetrics, SemsegMetrics, delta_m


def test_semseg_miou_and_pixel_acc_by_hand():
    # target: [0 0 1 1 / 2 2 -1 -1], pred: [0 1 1 1 / 2 0 2 0]
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, -1, -1]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 0]]])
    m = SemsegMetrics(num_classes=3, ignore_index=-1)
    m.update(pred, target)
    out = m.compute()
    # class 0: tp 1, fp 1 (pred 0 at target 2), fn 1 -> 1/3; class 1: tp 2, fp 1, fn 0 -> 2/3;
    # class 2: tp 1, fp 0, fn 1 -> 1/2. Ignored pixels do not count.
    assert out["miou"].item() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert out["pixel_acc"].item() == pytest.approx(4 / 6)


def test_semseg_accepts_logits_and_skips_absent_classes():
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.zeros(1, 4, 1, 4)
    logits[0, 0, 0, :2] = 5
    logits[0, 1, 0, 2:] = 5
    m = SemsegMetrics(num_classes=4)
    m.update(logits, target)
    assert m.compute()["miou"].item() == pytest.approx(1.0)  # classes 2, 3 never occur


def test_depth_metrics_by_hand():
    target = torch.tensor([1.0, 2.0, 4.0, 0.0]).view(1, 1, 1, 4)  # last pixel invalid
    pred = torch.tensor([1.5, 2.0, 2.0, 9.0]).view(1, 1, 1, 4)
    m = DepthMetrics()
    m.update(pred, target)
    out = m.compute()
    assert out["abs_err"].item() == pytest.approx((0.5 + 0 + 2) / 3)
    assert out["rel_err"].item() == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert out["rmse"].item() == pytest.approx(math.sqrt((0.25 + 0 + 4) / 3))
    # ratios 1.5, 1.0, 2.0 -> only the middle one is within 1.25
    assert out["delta1"].item() == pytest.approx(1 / 3)


def test_depth_metrics_accumulate_over_batches_per_pixel():
    m = DepthMetrics()
    m.update(torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 1.0))
    m.update(torch.full((1, 1, 1, 3), 1.0), torch.full((1, 1, 1, 3), 1.0))
    assert m.compute()["abs_err"].item() == pytest.approx(1 / 4)


def _normals_at(angles_deg):
    """Unit vectors in the x-z plane at the given angles from +z, as (1, 3, 1, N)."""
    a = torch.deg2rad(torch.tensor(angles_deg, dtype=torch.float64))
    return torch.stack([torch.sin(a), torch.zeros_like(a), torch.cos(a)])[None, :, None, :]


def test_normal_metrics_by_hand():
    angles = [5.0, 10.0, 20.0, 25.0, 40.0]
    pred = _normals_at(angles)
    target = _normals_at([0.0] * 5)
    target = torch.cat([target, torch.zeros(1, 3, 1, 1, dtype=torch.float64)], -1)  # + one invalid pixel
    pred = torch.cat([pred, _normals_at([90.0])], -1)
    m = NormalMetrics()
    m.update(pred.float() * 3.0, target.float())  # predictions need not be unit length
    out = m.compute()
    assert out["mean"].item() == pytest.approx(sum(angles) / 5, abs=1e-3)
    assert out["median"].item() == pytest.approx(20.0, abs=0.011)
    assert out["within_11_25"].item() == pytest.approx(40.0)
    assert out["within_22_5"].item() == pytest.approx(60.0)
    assert out["within_30"].item() == pytest.approx(80.0)


def test_boundary_fscore_by_hand():
    # 1×1×1×12 strip. GT edge at x=5. With radius 1 (max_dist chosen for it), a prediction at x=6 matches.
    target = torch.zeros(1, 1, 1, 12)
    target[..., 5] = 1
    logits = torch.full((1, 1, 1, 12), -10.0)
    logits[..., 6] = 10.0  # within tolerance
    logits[..., 10] = 10.0  # false positive
    m = BoundaryFScore(num_thresholds=9, max_dist=1.0 / math.hypot(1, 12))  # radius = 1 pixel
    m.update(logits, target)
    # precision 1/2, recall 1/1 -> F = 2/3 at every threshold
    assert m.compute()["odsf"].item() == pytest.approx(2 / 3, abs=1e-6)


def test_boundary_fscore_picks_best_threshold():
    target = torch.zeros(1, 1, 1, 12)
    target[..., 2] = 1
    logits = torch.full((1, 1, 1, 12), -10.0)
    logits[..., 2] = 2.0  # p = 0.88: a true edge
    logits[..., 9] = -1.0  # p = 0.27: spurious, only above low thresholds
    m = BoundaryFScore(num_thresholds=9, max_dist=0.0)
    m.update(logits, target)
    assert m.compute()["odsf"].item() == pytest.approx(1.0)


def test_delta_m_hand_worked_example_both_conventions():
    baselines = {"semseg": {"miou": 0.40, "pixel_acc": 0.60}, "depth": {"abs_err": 0.50}}
    metrics = {"semseg": {"miou": 0.44, "pixel_acc": 0.60}, "depth": {"abs_err": 0.55}}
    dirs = {"semseg": {"miou": "max", "pixel_acc": "max"}, "depth": {"abs_err": "min"}}
    # semseg terms: +10 %, 0 %; depth term: −10 %.
    assert delta_m(metrics, baselines, dirs, "per_task") == pytest.approx(100 / 2 * ((0.10 + 0.0) / 2 - 0.10))
    assert delta_m(metrics, baselines, dirs, "per_metric") == pytest.approx(100 / 3 * (0.10 + 0.0 - 0.10))
    assert delta_m(baselines, baselines, dirs) == 0.0


def test_delta_m_names_a_missing_metric():
    with pytest.raises(Exception, match="depth/abs_err"):
        delta_m({"depth": {}}, {"depth": {"abs_err": 1.0}}, {"depth": {"abs_err": "min"}})


def _logits(p):
    p = torch.tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


def test_saliency_maxf_and_iou_by_hand():
    from mtnas.metrics import SaliencyMetrics

    # Two images; thresholds 0.25, 0.5, 0.75. Image 1 has one ignored pixel (255).
    target = torch.tensor([[[[1, 0], [0, 255]]], [[[1, 1], [0, 0]]]])
    probs = [[[[0.9, 0.6], [0.2, 0.9]]], [[[0.8, 0.3], [0.1, 0.1]]]]
    m = SaliencyMetrics(num_thresholds=3)
    m.update(_logits(probs), target)
    out = m.compute()
    # Counts pooled over both images (3 salient pixels in all), per threshold:
    #   0.25: TP 3, predicted 4 → P 3/4, R 1   → F = 1.3·0.75/(0.225+1)  = 0.796
    #   0.5:  TP 2, predicted 3 → P 2/3, R 2/3 → F = 2/3
    #   0.75: TP 2, predicted 2 → P 1,   R 2/3 → F = 1.3·(2/3)/(0.3+2/3) = 0.897 (the max)
    # Averaging P and R per image instead (the old convention) would give 1.3·0.75/1.05 = 0.929 at 0.75.
    assert float(out["maxf"]) == pytest.approx(1.3 * (2 / 3) / (0.3 + 2 / 3), abs=1e-6)
    # IoU at 0.5 per image: {a,b} vs {a} → 0.5; {a} vs {a,b} → 0.5.
    assert float(out["miou"]) == pytest.approx(0.5)


def test_regression_metrics_skip_nan_targets_by_hand():
    from mtnas.metrics import RegressionMetrics

    m = RegressionMetrics()
    m.update(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, float("nan"), 5.0, 2.0]))
    out = m.compute()
    assert float(out["abs_err"]) == pytest.approx(4 / 3)
    assert float(out["rmse"]) == pytest.approx(math.sqrt(8 / 3))


def test_regression_and_saliency_losses_ignore_invalid_pixels():
    from mtnas.tasks import build_task

    reg = build_task("kp", {"type": "regression", "channels": 2})
    target = torch.full((1, 2, 2, 2), float("nan"))
    target[0, :, 0, 0] = 1.0
    pred = torch.zeros(1, 2, 2, 2, requires_grad=True)
    loss = reg.loss(pred, target)
    assert float(loss.detach()) == pytest.approx(1.0)
    loss.backward()
    assert pred.grad[0, :, 1, 1].abs().sum() == 0  # no gradient from invalid pixels

    sal = build_task("saliency", {"type": "saliency"})
    all_ignored = torch.full((1, 1, 2, 2), 255.0)
    assert float(sal.loss(torch.randn(1, 1, 2, 2), all_ignored)) == 0.0


def test_classification_metrics_and_loss_by_hand():
    from mtnas.metrics import ClassificationMetrics
    from mtnas.tasks import build_task

    logits = torch.tensor(
        [
            [3.0, 2.0, 1.0, 0.0, -1.0, -2.0],  # ranks 0 > 1 > 2 > 3 > 4 > 5
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # ranks 5 > 4 > 3 > 2 > 1 > 0
            [0.0, 0.0, 0.0, 0.0, 0.0, 9.0],
        ]
    )
    soft = torch.tensor(
        [
            [0.7, 0.3, 0, 0, 0, 0],  # most likely class 0: top-1 hit
            [0.1, 0.0, 0, 0, 0, 0.0],  # class 0 only (unnormalised): ranked last, not in the top 5
            [0.0, 0.0, 0, 0, 0, 0.0],  # unlabeled row: skipped
        ]
    )
    m = ClassificationMetrics()
    m.update(logits, soft)
    out = m.compute()
    assert out["top1"] == pytest.approx(50.0) and out["top5"] == pytest.approx(50.0)
    log_q0 = torch.log_softmax(logits[0], 0)
    log_q1 = torch.log_softmax(logits[1], 0)
    kl0 = 0.7 * (math.log(0.7) - log_q0[0]) + 0.3 * (math.log(0.3) - log_q0[1])
    kl1 = -log_q1[0]  # target one-hot on class 0 after normalisation
    assert out["kl"] == pytest.approx(float(kl0 + kl1) / 2, rel=1e-5)
    # hard labels: -1 = unlabeled; class 4 is in row 1's top 5 but not its top 1
    m = ClassificationMetrics()
    m.update(logits, torch.tensor([0, 4, -1]))
    assert m.compute()["top1"] == pytest.approx(50.0) and m.compute()["top5"] == pytest.approx(100.0)

    task = build_task("class_object", {"type": "classification", "num_classes": 6})
    want = -(0.7 * log_q0[0] + 0.3 * log_q0[1] + log_q1[0]) / 2  # soft cross-entropy, labelled rows
    assert float(task.loss(logits, soft)) == pytest.approx(float(want), rel=1e-5)
    assert float(task.loss(logits, torch.zeros(3, 6))) == 0.0
    assert task.directions == {"top1": "max", "top5": "max", "kl": "min"}


def test_delta_m_against_a_zero_baseline_names_the_metric_and_the_way_out():
    base = {"class_object": {"top1": 0.0, "top5": 2.0, "kl": 3.1}}
    with pytest.raises(Exception, match=r"class_object/top1` is 0.*delta_m_metrics=\[top5\]"):
        delta_m(base, base, {"class_object": {"top1": "max"}})
