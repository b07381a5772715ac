from __future__ import annotations

import pytest
import torch

from mtnas.errors import ConfigError
from mtnas.lit.multitask import MultiTaskLitModule, build_optimizer
from mtnas.nn import build_multitask_net
from mtnas.search.cost import count_flops, count_params
from mtnas.tasks import build_tasks

TASKS = {
    "semseg": {"type": "semseg", "num_classes": 5, "source": "label"},
    "depth": {"type": "depth", "source": "depth"},
}


def net(backbone: str, tasks: list[str], size=(64, 96), available=TASKS):
    """The static model spec's target, as `conf/model/*.yaml` builds it, on the given tasks."""
    return build_multitask_net({"name": backbone}, build_tasks(tasks, available), size, head={"hidden": 16})


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_cnn_and_vit_backbones_give_full_resolution_outputs(backbone):
    out = net(backbone, ["semseg", "depth"])(torch.randn(2, 3, 64, 96))
    assert out["semseg"].shape == (2, 5, 64, 96)
    assert out["depth"].shape == (2, 1, 64, 96)


def test_image_level_tasks_get_pooled_heads_and_skip_loss_resampling():
    from mtnas.lit.multitask import loss_targets
    from mtnas.tasks import image_level

    model = net(
        "test_resnet",
        ["depth", "scene"],
        available={"depth": TASKS["depth"], "scene": {"type": "classification", "num_classes": 7}},
    )
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert out["depth"].shape == (2, 1, 64, 96) and out["scene"].shape == (2, 7)
    # pooled before the 1×1 prediction == the dense logits averaged over the head's grid
    head, feats = model.heads["scene"], [model.backbone(x)[i] for i in model.levels]
    head.pooled = False
    dense = head(feats, feats[0].shape[-2:])
    head.pooled = True
    torch.testing.assert_close(out["scene"], dense.mean((2, 3)), rtol=1e-4, atol=1e-5)
    tasks = build_tasks(
        ["depth", "scene"],
        {"depth": TASKS["depth"], "scene": {"type": "classification", "num_classes": 7}},
    )
    assert image_level(tasks) == {"scene"}
    scene = torch.softmax(torch.randn(2, 7), 1)
    _, t = loss_targets(tasks, {"image": x, "depth": torch.rand(2, 1, 64, 96), "scene": scene}, 4)
    assert t["scene"] is scene and t["depth"].shape == (2, 1, 16, 24)


def test_cost_counts_params_and_flops():
    model = net("test_resnet", ["depth"], (64, 64))
    n = count_params(model)
    assert n == sum(p.numel() for p in model.parameters()) > 0
    f1, f2 = count_flops(model, (64, 64)), count_flops(model, (128, 128))
    assert f1 > 2 * n  # at least one multiply-add per weight
    assert 3.5 < f2 / f1 < 4.5  # a conv net's FLOPs grow with the pixel count


def test_uncertainty_weighting_learns_per_task_log_variances():
    module = MultiTaskLitModule(
        ["semseg", "depth"],
        TASKS,
        {"backbone": {"name": "test_resnet"}, "head": {"hidden": 8}},
        {"lr": 1e-3},
        {"weighting": "uncertainty"},
        (32, 32),
    )
    assert module.log_vars.shape == (2,)
    batch = {
        "image": torch.randn(2, 3, 32, 32),
        "semseg": torch.randint(0, 5, (2, 32, 32)),
        "depth": torch.rand(2, 1, 32, 32) + 0.5,
    }
    total, per_task = module._losses(module(batch["image"]), batch)
    assert torch.isclose(total, sum(per_task.values()))  # log σ² = 0 at the start
    total.backward()
    assert module.log_vars.grad is not None and module.log_vars.grad.abs().sum() > 0
    # Weight decay would pull every log σ² to 0 (task weight 1): the optimizer leaves them out of it.
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    opt = build_optimizer(module, {"lr": 1e-3, "weight_decay": 0.05})["optimizer"]
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(module.log_vars)] == 0.0 and set(decay.values()) == {0.0, 0.05}
    assert len(decay) == len(list(module.parameters()))


def test_fixed_weights_and_checkpoint_monitor():
    module = MultiTaskLitModule(
        ["semseg", "depth"],
        TASKS,
        {"backbone": {"name": "test_resnet"}, "head": {"hidden": 8}},
        {"lr": 1e-3},
        {"weighting": "fixed", "weights": {"depth": 3.0}},
        (32, 32),
    )
    assert module.loss_weights == {"semseg": 1.0, "depth": 3.0}
    assert module.monitor == ("val/loss", "min")  # no baselines: Δm is not available
    single = MultiTaskLitModule(
        ["depth"], TASKS, {"backbone": {"name": "test_resnet"}}, {"lr": 1e-3}, {}, (32, 32)
    )
    assert single.monitor == ("val/depth/abs_err", "min")


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="model.backbone.name"):
        net("nope_net", ["depth"], (32, 32))


def test_warmup_cosine_schedule_shape():
    from mtnas.lit.multitask import warmup_cosine

    f = [warmup_cosine(s, warmup=10, total=110) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # decays monotonically
    assert f[110] == pytest.approx(0.01) and f[119] == pytest.approx(0.01)  # stays at the floor past the end


def test_loss_stride_predicts_and_scores_at_the_reduced_size():
    from mtnas.lit.multitask import loss_targets

    tasks = build_tasks(
        ["semseg", "depth", "edge"],
        {**TASKS, "edge": {"type": "edge", "source": "edge"}},
    )
    semseg = torch.zeros(1, 8, 8, dtype=torch.long)
    semseg[:, :, 4:] = 3
    semseg[:, 0, 0] = -1
    edge = torch.zeros(1, 1, 8, 8)
    edge[0, 0, 3, 5] = 1  # a thin edge off the nearest-sampling grid must survive
    edge[0, 0, 6:, 6:] = 255
    depth = torch.arange(64.0).reshape(1, 1, 8, 8)
    batch = {"image": torch.zeros(1, 3, 8, 8), "semseg": semseg, "depth": depth, "edge": edge}
    assert loss_targets(tasks, batch, 1) == (None, batch)
    size, t = loss_targets(tasks, batch, 2)
    assert size == (4, 4)
    assert t["semseg"].dtype == torch.long and t["semseg"][0, 0, 0] == -1
    assert (t["semseg"][0, :, 2:] == 3).all() and (t["semseg"][0, 1:, :2] == 0).all()
    assert t["edge"][0, 0, 1, 2] == 1 and t["edge"][0, 0, 3, 3] == 255 and t["edge"].sum() == 1 + 255
    assert set(t["depth"].flatten().tolist()) <= set(depth.flatten().tolist())  # no blending

    model = net("test_resnet", ["semseg", "depth"])
    assert model(torch.randn(2, 3, 64, 96), (16, 24))["semseg"].shape == (2, 5, 16, 24)
