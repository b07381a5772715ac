"""Weight-sharing supernets: `forward(images, arch)` and `extract(arch)` → a static module."""

from mtnas.supernet.vit import StaticMultiTaskViT, ViTSupernet

__all__ = ["StaticMultiTaskViT", "ViTSupernet"]
