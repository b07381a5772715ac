"""Joint augmentations that keep every target consistent with the image.

A sample is `dict[str, Tensor]` in channel-first layout; `kinds` maps each key to its task type
(`mtnas.data.files.KINDS`), which decides how it is resampled and transformed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mtnas.data.files import SPATIAL, resize


class RandomScaleCrop:
    """Crop a random window of 1/s of the image and resize it back (zoom in by s, s from `scales`).

    Zooming in by s makes things look s times closer, so depth is divided by s (as in MTAN).
    """

    def __init__(self, scales: Sequence[float] = (1.0, 1.2, 1.5)):
        self.scales = tuple(float(s) for s in scales)

    def __call__(self, sample: dict[str, Tensor], kinds: Mapping[str, str]) -> dict[str, Tensor]:
        s = self.scales[int(torch.randint(len(self.scales), ()))]
        if s == 1.0:
            return sample
        h, w = sample["image"].shape[-2:]
        ch, cw = int(h / s), int(w / s)
        i = int(torch.randint(h - ch + 1, ()))
        j = int(torch.randint(w - cw + 1, ()))
        out = {}
        for key, x in sample.items():
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

    def __call__(self, sample: dict[str, Tensor], kinds: Mapping[str, str]) -> dict[str, Tensor]:
        if float(torch.rand(())) >= self.p:
            return sample
        out = {}
        for key, x in sample.items():
            if kinds[key] not in SPATIAL:  # an image-level label is the same for the mirrored image
                out[key] = x
                continue
            x = x.flip(-1)
            if kinds[key] == "normal":
                x = x.clone()
                x[0] = -x[0]
            out[key] = x
        return out


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: dict[str, Tensor], kinds: Mapping[str, str]) -> dict[str, Tensor]:
        for t in self.transforms:
            sample = t(sample, kinds)
        return sample
