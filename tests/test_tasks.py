from __future__ import annotations

import pytest
import torch

from mtnas.errors import ConfigError
from mtnas.tasks import build_task, build_tasks


def test_losses_are_zero_for_perfect_predictions_and_ignore_invalid_pixels():
    depth = build_task("depth", {"type": "depth"})
    target = torch.tensor([[[[1.0, 2.0, 0.0]]]])
    pred = torch.tensor([[[[1.0, 2.0, 50.0]]]])  # wrong only where the target is invalid
    assert depth.loss(pred, target).item() == 0.0

    normal = build_task("normal", {"type": "normal"})
    n = torch.zeros(1, 3, 1, 2)
    n[0, 2, 0, 0] = 1.0  # pixel 1 invalid (zero vector)
    p = n.clone()
    p[0, :, 0, 0] *= 4  # scale does not matter
    p[0, 0, 0, 1] = 1.0
    assert normal.loss(p, n).item() == pytest.approx(0.0, abs=1e-6)

    seg = build_task("semseg", {"type": "semseg", "num_classes": 3})
    assert seg.loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), -1)).item() == 0.0


def test_edge_loss_balances_rare_edges():
    edge = build_task("edge", {"type": "edge"})
    target = torch.zeros(1, 1, 10, 10)
    target[..., 0, 0] = 1
    all_negative = torch.full((1, 1, 10, 10), -4.0)
    # Predicting "no edge" everywhere must not be nearly free when edges are 1 % of pixels.
    assert edge.loss(all_negative, target).item() > 0.5 * edge.loss(torch.zeros(1, 1, 10, 10), target).item()


def test_directions_and_delta_m_metrics_come_from_the_metric():
    seg = build_task("semseg", {"type": "semseg", "num_classes": 3})
    assert seg.delta_m_directions == {"miou": "max", "pixel_acc": "max"}
    depth = build_task("depth", {"type": "depth", "delta_m_metrics": ["rmse"]})
    assert depth.delta_m_directions == {"rmse": "min"}


def test_unknown_task_and_type_are_config_errors():
    with pytest.raises(ConfigError, match="`tasks`"):
        build_tasks(["sky"], {"depth": {"type": "depth"}})
    with pytest.raises(ConfigError, match="available_tasks.x.type"):
        build_task("x", {"type": "telepathy"})


@pytest.mark.parametrize(
    "spec,says",
    [
        ({"type": "semseg", "num_classes": 0}, "positive integer"),
        ({"type": "regression", "channels": -3}, "positive integer"),
        ({"type": "edge", "pos_weight": 2.0}, "pos_weight"),
        ({"type": "edge", "max_dist": 0}, "max_dist"),
    ],
)
def test_out_of_range_task_parameters_name_the_task(spec, says):
    with pytest.raises(ConfigError) as e:
        build_task("t", spec)
    assert e.value.key == "data.available_tasks.t" and says in str(e.value)
