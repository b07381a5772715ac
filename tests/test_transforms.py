from __future__ import annotations

import torch

from mtnas.data.transforms import RandomHorizontalFlip, RandomScaleCrop

KINDS = {"image": "image", "semseg": "semseg", "depth": "depth", "normal": "normal", "edge": "edge"}


def _sample(h=24, w=32):
    g = torch.Generator().manual_seed(0)
    # 4×4 blocks: big enough that bilinear (image) and nearest (labels) resampling agree inside blocks.
    label = torch.randint(0, 5, (h // 4, w // 4), generator=g).repeat_interleave(4, 0).repeat_interleave(4, 1)
    # The image encodes the label, so alignment after a transform can be checked pixel by pixel.
    image = label[None].float().repeat(3, 1, 1) / 10
    depth = torch.rand(1, h, w, generator=g) + 1
    normal = torch.nn.functional.normalize(torch.randn(3, h, w, generator=g), dim=0)
    edge = (label != torch.roll(label, 1, 1)).float()[None]
    return {"image": image, "semseg": label, "depth": depth, "normal": normal, "edge": edge}


def test_flip_mirrors_everything_and_negates_normal_x():
    s = _sample()
    out = RandomHorizontalFlip(p=1.0)(dict(s), KINDS)
    assert torch.equal(out["semseg"], s["semseg"].flip(-1))
    assert torch.equal(out["image"], s["image"].flip(-1))
    assert torch.equal(out["normal"][0], -s["normal"][0].flip(-1))
    assert torch.equal(out["normal"][1:], s["normal"][1:].flip(-1))
    assert torch.equal(out["depth"], s["depth"].flip(-1))


def test_scale_crop_divides_depth_and_keeps_labels_aligned():
    torch.manual_seed(0)
    s = _sample()
    out = RandomScaleCrop(scales=(1.5,))(dict(s), KINDS)
    assert out["image"].shape == s["image"].shape and out["semseg"].shape == s["semseg"].shape
    # Nearest resampling: every depth value is an original value divided by the scale.
    orig = set((s["depth"] / 1.5).flatten().tolist())
    assert set(out["depth"].flatten().tolist()) <= orig
    # Normals stay unit vectors; labels agree with the (label-encoding) image away from borders.
    assert torch.allclose(out["normal"].norm(dim=0), torch.ones(24, 32), atol=1e-5)
    img_label = (out["image"][0] * 10).round().long()
    agree = (img_label == out["semseg"]).float().mean()
    assert agree > 0.75


def test_scale_one_is_identity():
    s = _sample()
    out = RandomScaleCrop(scales=(1.0,))(dict(s), KINDS)
    assert all(torch.equal(out[k], s[k]) for k in s)
