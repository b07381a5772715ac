"""Joint augmentations that keep every target consistent with the image.

A sample is `dict[str, Tensor]` in channel-first layout; `kinds` maps each key to its task type
(`mtnas.data.files.KINDS`), which decides how it is resampled and transformed. Random choices come from the
`generator` given (the global generator when None): `Compose` with a `seed` draws each sample's from
(seed, epoch, sample index), so the augmentation of a sample does not depend on which process or data worker
loads it, nor on what was drawn before — a resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mtnas.data.files import SPATIAL, resize


class RandomScaleCrop:
    """Crop a random window of 1/s of the image and resize it back (zoom in by s, s from `scales`).

    Zooming in by s makes things look s times closer, so depth is divided by s (as in MTAN). Boxes move with
    the window, are clipped to it, and those left thinner than `min_box_pixels` are dropped.
    """

    def __init__(self, scales: Sequence[float] = (1.0, 1.2, 1.5), min_box_pixels: float = 1.0):
        self.scales = tuple(float(s) for s in scales)
        self.min_box_pixels = min_box_pixels

    def __call__(
        self, sample: dict[str, Tensor], kinds: Mapping[str, str], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        s = self.scales[int(torch.randint(len(self.scales), (), generator=generator))]
        if s == 1.0:
            return sample
        h, w = sample["image"].shape[-2:]
        ch, cw = int(h / s), int(w / s)
        i = int(torch.randint(h - ch + 1, (), generator=generator))
        j = int(torch.randint(w - cw + 1, (), generator=generator))
        out = {}
        for key, x in sample.items():
            if kinds[key] == "boxes":
                out[key] = crop_boxes(
                    x, (i / h, j / w, ch / h, cw / w), (self.min_box_pixels / w, self.min_box_pixels / h)
                )
                continue
            if kinds[key] not in SPATIAL:
                out[key] = x
                continue
            x = resize(x[..., i : i + ch, j : j + cw], (h, w), kinds[key])
            out[key] = x / s if kinds[key] == "depth" else x
        return out


class RandomHorizontalFlip:
    """Mirror left-right; a mirrored surface's normal has its x component negated."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(
        self, sample: dict[str, Tensor], kinds: Mapping[str, str], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        if float(torch.rand((), generator=generator)) >= self.p:
            return sample
        out = {}
        for key, x in sample.items():
            if kinds[key] == "boxes":  # normalised x1, x2 become 1 − x2, 1 − x1
                mirrored = x["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1])
                out[key] = {**x, "boxes": mirrored + torch.tensor([1.0, 0, 1, 0])}
                continue
            if kinds[key] not in SPATIAL:  # an image-level label is the same for the mirrored image
                out[key] = x
                continue
            x = x.flip(-1)
            if kinds[key] == "normal":
                x = x.clone()
                x[0] = -x[0]
            out[key] = x
        return out


def crop_boxes(
    target: dict[str, Tensor], window: tuple[float, float, float, float], min_size: tuple[float, float]
) -> dict[str, Tensor]:
    """Normalised boxes seen through a crop `window` (top, left, height, width, all as fractions of the image)
    that is then resized to the whole image: shifted, scaled, clipped, and dropped when thinner than
    `min_size` (width, height as fractions of the image)."""
    top, left, height, width = window
    scale = torch.tensor([width, height, width, height])
    boxes = ((target["boxes"] - torch.tensor([left, top, left, top])) / scale).clamp(0, 1)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size[0]) & ((boxes[:, 3] - boxes[:, 1]) >= min_size[1])
    return {**target, "boxes": boxes[keep], "labels": target["labels"][keep]}


class Compose:
    """Transforms in order. With `seed` (and `epoch`, a shared one-element tensor the data module sets each
    training epoch, visible to data workers), each sample's random draws come from (seed, epoch, index)."""

    def __init__(self, transforms: Sequence, seed: int | None = None, epoch: Tensor | None = None):
        self.transforms = list(transforms)
        self.seed, self.epoch = seed, epoch

    def __call__(
        self, sample: dict[str, Tensor], kinds: Mapping[str, str], index: int | None = None
    ) -> dict[str, Tensor]:
        generator = None
        if self.seed is not None and index is not None:
            epoch = int(self.epoch) if self.epoch is not None else 0
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        for t in self.transforms:
            sample = t(sample, kinds, generator)
        return sample


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A seed of its own per (seed, epoch, sample): stable across processes and workers."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFFFFFFFFFFFFFF
