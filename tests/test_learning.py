"""Training must learn: a short run beats constant predictors on every task by a wide margin."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from mtnas.pipeline import run
from mtnas.utils.io import read_json

from .conftest import compose_cfg

pytestmark = pytest.mark.slow


def _constant_predictor_metrics(dm, tasks):
    """Metrics of the best constant predictions: majority class, mean train depth, mean train normal."""
    train = dm._dataset("train")
    samples = [train.load_arrays(i) for i in range(len(train))]
    import numpy as np

    labels = np.concatenate([s["semseg"].ravel() for s in samples])
    majority = int(np.bincount(labels[labels >= 0].astype(int)).argmax())
    depths = np.concatenate([s["depth"].ravel() for s in samples])
    mean_depth = float(depths[depths > 0].mean())
    normals = np.concatenate([s["normal"].reshape(-1, 3) for s in samples])
    mean_normal = torch.nn.functional.normalize(
        torch.tensor(normals[np.abs(normals).sum(1) > 0].mean(0)), dim=0
    )
    metrics = {t: task.metrics() for t, task in tasks.items()}
    for batch in dm.val_dataloader():
        b, _, h, w = batch["image"].shape
        const = {
            "semseg": torch.full((b, h, w), majority),
            "depth": torch.full((b, 1, h, w), mean_depth),
            "normal": mean_normal.view(1, 3, 1, 1).expand(b, 3, h, w),
        }
        for t, m in metrics.items():
            m.update(const[t], batch[t])
    return {t: {k: float(v) for k, v in m.compute().items()} for t, m in metrics.items()}


def test_multitask_training_beats_constant_predictors(tmp_path, cache_dir):
    cfg = compose_cfg(
        [
            "+experiment=synthetic_mtl",
            "logger=none",
            "stage=train",
            "data.synthetic.height=64",
            "data.synthetic.width=64",
            "data.synthetic.num_train=256",
            "data.synthetic.num_val=32",
            "data.synthetic.num_test=8",
            "trainer.max_epochs=8",
            "trainer.enable_progress_bar=false",
            "trainer.num_sanity_val_steps=0",
        ],
        output_dir=tmp_path,
    )
    run(cfg)
    val = read_json(tmp_path / "train" / "fit.json")["val"]

    from mtnas.pipeline import Pipeline

    p = Pipeline(cfg).run
    p.dm.setup("fit")
    const = _constant_predictor_metrics(p.dm, p.task_objs)
    assert val["semseg"]["miou"] > 1.5 * const["semseg"]["miou"], (val, const)
    assert val["semseg"]["pixel_acc"] > const["semseg"]["pixel_acc"] + 0.1
    # Depth is the slowest of the three to learn in 8 epochs: its ratio to the constant predictor measured
    # 0.63-0.75 over seeds 0-3 (normals 0.47-0.48), so 0.8 leaves room for seed noise, not for a trainer
    # that does not learn (ratio ~1).
    assert val["depth"]["abs_err"] < 0.8 * const["depth"]["abs_err"]
    assert val["normal"]["mean"] < 0.7 * const["normal"]["mean"]
    assert OmegaConf.select(cfg, "tasks")[0] == "semseg"
