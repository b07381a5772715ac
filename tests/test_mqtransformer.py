"""MQTransformer: output shapes for every task type; the decoder's attention mixes the pixels of one image and
never the images of a batch (the authors' released decoder attends across the batch axis); the recipes."""

from __future__ import annotations

import pytest
import torch

from mtnas.nn.mqtransformer import NormedAttention, QueryDecoder, build_mqtransformer
from mtnas.tasks import build_tasks

EVERY_TYPE = {
    "semseg": {"type": "semseg", "num_classes": 5},
    "depth": {"type": "depth"},
    "normal": {"type": "normal"},
    "edge": {"type": "edge"},
    "saliency": {"type": "saliency"},
    "regression": {"type": "regression", "channels": 2},
    "classification": {"type": "classification", "num_classes": 6},
    "vector": {"type": "vector", "channels": 3},
    "detection": {"type": "detection", "num_classes": 4},
}


def test_forward_shapes_for_every_task_type():
    tasks = build_tasks(list(EVERY_TYPE), EVERY_TYPE)
    model = build_mqtransformer({"name": "mobilenetv3_small_100"}, tasks, (64, 96), dim=32, num_queries=8)
    out = model(torch.randn(2, 3, 64, 96))
    want = {
        "semseg": (2, 5, 64, 96),
        "depth": (2, 1, 64, 96),
        "normal": (2, 3, 64, 96),
        "edge": (2, 1, 64, 96),
        "saliency": (2, 1, 64, 96),
        "regression": (2, 2, 64, 96),
        "classification": (2, 6),
        "vector": (2, 3),
        "detection": (2, 4 + 4, 16, 24),  # stride-4 centre maps
    }
    assert {t: tuple(v.shape) for t, v in out.items()} == want
    assert out["detection"][:, :4].mean() < -1  # the centre heatmaps start at a low prior
    loss = sum(task.loss(out[t], _targets(t, task)) for t, task in tasks.items())
    loss.backward()  # every task's loss reaches the shared decoder
    assert model.decoder.spatial_attn.to_q.weight.grad.abs().sum() > 0


def _targets(name, task):
    shapes = {
        "semseg": lambda: torch.randint(0, 5, (2, 64, 96)),
        "depth": lambda: torch.rand(2, 1, 64, 96) + 0.5,
        "normal": lambda: torch.nn.functional.normalize(torch.randn(2, 3, 64, 96), dim=1),
        "edge": lambda: (torch.rand(2, 1, 64, 96) > 0.9).float(),
        "saliency": lambda: (torch.rand(2, 1, 64, 96) > 0.5).float(),
        "regression": lambda: torch.randn(2, 2, 64, 96),
        "classification": lambda: torch.randint(0, 6, (2,)),
        "vector": lambda: torch.randn(2, 3),
        "detection": lambda: [
            {"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.6]]), "labels": torch.tensor([1])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        ],
    }
    return shapes[name]()


@pytest.mark.parametrize("kv_stride", [1, 2])
def test_decoder_mixes_pixels_of_one_image_and_never_across_the_batch(kv_stride):
    """With the queries fixed, a pixel's output can depend on another pixel only through the spatial
    attention: changing one pixel of image 0 must change other pixels of image 0 and nothing of image 1.
    (Attention over the batch axis, as in the released code, fails both.)"""
    torch.manual_seed(0)
    decoder = QueryDecoder(dim=16, num_heads=2, ffn_ratio=2, kv_stride=kv_stride).eval()
    h, w = 6, 8
    pixels = torch.randn(2, h * w, 16)
    queries, key_pos = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    base = decoder(pixels, (h, w), queries, key_pos)
    changed = pixels.clone()
    changed[0, 0] += 3 * torch.randn(
        16
    )  # pixel (0, 0) of image 0 (not a constant shift: LayerNorm undoes that)
    out = decoder(changed, (h, w), queries, key_pos)
    assert torch.equal(out[1], base[1])  # the other image is untouched
    far = (h - 1) * w + (w - 1)  # pixel (5, 7) of image 0
    assert (out[0, far] - base[0, far]).abs().max() > 1e-4  # …while the same image's far pixel changed


def test_attention_is_batch_first():
    attn = NormedAttention(8, 2).eval()
    q, kv = torch.randn(3, 5, 8), torch.randn(3, 7, 8)
    together = attn(q, kv, kv)
    alone = torch.cat([attn(q[i : i + 1], kv[i : i + 1], kv[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone)


def test_settings_are_checked_with_their_key():
    from mtnas.errors import ConfigError

    tasks = build_tasks(["depth"], EVERY_TYPE)
    with pytest.raises(ConfigError, match="model.num_queries"):
        build_mqtransformer({"name": "mobilenetv3_small_100"}, tasks, (32, 32), num_queries=0)
    with pytest.raises(ConfigError, match="model.num_heads"):
        build_mqtransformer({"name": "mobilenetv3_small_100"}, tasks, (32, 32), dim=30, num_heads=4)


def test_swin_backbone_features_are_channels_first():
    tasks = build_tasks(["semseg"], EVERY_TYPE)
    model = build_mqtransformer(
        {
            "name": "swin_tiny_patch4_window7_224",
            "depths": [1, 1, 1, 1],
            "embed_dim": 24,
            "num_heads": [1, 1, 1, 1],
        },
        tasks,
        (64, 96),
        dim=16,
        num_queries=4,
    )
    assert model.backbone.channels_last  # Swin stages give NHWC maps; the wrapper permutes them
    assert model(torch.randn(1, 3, 64, 96))["semseg"].shape == (1, 5, 64, 96)


@pytest.mark.slow
def test_cli_mqtransformer_with_detection_beside_hard_sharing(tmp_path, cache_dir):
    """`model=mqtransformer` (its synthetic recipe) on semseg + detection: MQTransformer in train/, hard sharing
    on the same backbone in reference/, both in one report against the same reference numbers."""
    import json

    from .conftest import TINY, run_cli

    run_dir = tmp_path / "run"
    metrics = "{semseg: {miou: 0.5, pixel_acc: 0.9}, detection: {map_50: 0.1}}"
    args = [
        *(a for a in TINY if not a.startswith("model=")),  # the recipe's model is the point
        "+experiment=synthetic_mqtransformer",
        "tasks=[semseg,detection]",
        "model.dim=16",
        "model.num_queries=4",
        "baselines.source=config",  # a 2-step detection baseline would have mAP 0: no Δm reference
        f"baselines.metrics={metrics}",
        f"hydra.run.dir={run_dir}",
    ]
    res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["references"] == ["hard sharing"]
    mq, hard = results["models"]["multitask"], results["models"]["hard sharing"]
    assert set(mq["test"]["detection"]) == {"map", "map_50", "map_75"}
    assert mq["params"] != hard["params"] and isinstance(hard["delta_m"], float)
    assert (run_dir / "train/best.ckpt").is_file() and (run_dir / "reference/best.ckpt").is_file()
    report = (run_dir / "report.md").read_text()
    assert "| hard sharing | change (%) |" in report and "mAP@.5 ↑" in report
    assert "hard sharing (reference/, same recipe and baselines): Δm per task" in report
