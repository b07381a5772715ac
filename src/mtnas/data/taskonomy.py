"""Taskonomy (Zamir et al., CVPR 2018) as the official download extracts it: PNG files per building and domain.

Layouts (chosen per building with `data.layout: auto`, or forced with `building` / `domain` / `omnidata`):

    root/<building>/<domain>/point_<p>_view_<v>_domain_<tag>.png            building  (as the sample building
                                                                            alexsax/taskonomy-sample-model-1)
    root/<domain>/<building>/point_<p>_view_<v>_domain_<tag>.png            domain    (tstandley/taskgrouping
                                                                            README, EPFL-VILAB/MultiMAE loader)
    root/<domain>/taskonomy/<building>/point_<p>_view_<v>_domain_<tag>.png  omnidata  (`omnitools.download`,
                                                                            EPFL-VILAB/omnidata dataloader)

`<tag>` is the domain name, except that segment_semantic files are named `..._domain_segmentsemantic.png`
(seen in three independent public converters; `..._domain_segment_semantic.png` is accepted too); the
sample building's older folder names (curvature, depth, edge2d, …) are not mapped. A task's
`source` in the data config is its domain (folder) name. The samples of a building are the files of its
`rgb/` folder; a target file missing for one of them is reported (and the sample left out), a domain folder
missing for a whole building is reported once.

Splits: buildings per split, from (first that is set) `data.buildings: {train: [...], val: [...], ...}`,
or the official split CSV `data.split_file` (absolute or relative to `data.root`; when null, the single
`train_val_test_*.csv` found in root or root/splits_taskonomy/). CSV format (StanfordVL/taskonomy
data/assets/splits_taskonomy.zip; EPFL-VILAB/omnidata component_datasets/taskonomy/train_val_test_tiny.csv):
a header `id,train,val,test`, then one row per building `hanson,1,0,0` (1 = in that split). The split's
on-disk name (`data.splits`) is the CSV column. `data.exclude_buildings` drops buildings a copy lacks;
a listed building that is on disk in no layout is a `DataError` naming it.

Value conventions (StanfordVL/taskonomy data/README.md; tstandley/taskgrouping taskonomy_loader.py and
taskonomy_losses.py; EPFL-VILAB/omnidata omnidata_tools/torch/dataloader/transforms.py, task_configs.py):

* rgb: 8-bit RGB, 512×512 → image in [0, 1]; also the `autoencoding` regression target.
* segment_semantic: 8-bit class ids, 0 = "uncertain" (must not contribute to the loss), 1 = background,
  2..17 = 16 COCO object classes (18 values). Read as 0 → −1 (ignore), k → k − 1, so 17 classes
  (background = 0); Standley et al. train 18 channels with `ignore_index=0`, which is the same thing.
  A raw value above `num_classes` is a `DataError`.
* depth_zbuffer, depth_euclidean: 16-bit, units of 1/512 m (max 128 m); 65535 = no depth (no mesh
  hit) → 0 (invalid). metres = raw / 512 (omnidata `transform_16bit_depth`). `data.max_depth` (metres)
  also invalidates far depth: Standley et al. keep raw < 2^13, i.e. `max_depth: 16`.
* normal: 8-bit RGB, 127-centred: n = 2·v/255 − 1 (Standley: (v/255 − 0.5)·2), kept in the dataset's own
  axis convention. A decoded vector shorter than 0.5 (the grey of empty pixels) is invalid (zero); others
  are rescaled to unit length (8-bit quantisation); one longer than 1.2 means another encoding
  (`DataError`). Unverified: whether rendered normals at object boundaries are blends (shorter than 1).
* keypoints2d, keypoints3d, edge_texture, edge_occlusion: 16-bit single channel (omnidata
  `transform_16bit_single_channel`), read as raw integers.
* principal_curvature: 8-bit RGB, first two channels (127 = zero curvature), read as v/255.
* reshading: 8-bit, read as the channel mean v/255 (Standley; omnidata keeps the first channel — equal
  when the image is grey).
* segment_unsup2d / segment_unsup25d: 8-bit segment ids (first channel), read as v/255. The ids are
  arbitrary per image, so an L1 regression on them (as some multi-task loaders do) is only a proxy task.

Regression targets are then standardised as `(value − shift) / scale` with `data.value_scaling.<task>`
(defaults in conf/data/taskonomy.yaml: Standley et al.'s statistics, from taskonomy_loader.py), and
pixels without depth are invalid (NaN / zero / ignore) in the tasks listed in `data.mask_with_depth`
(Standley et al. mask normal, reshading, principal_curvature and edge_occlusion with depth_zbuffer); the
depth_zbuffer file is then read even when depth is not a selected task.

Sizes: every target is brought to its rgb image's size by nearest-neighbour sampling when they differ
(segment_semantic is reported to be stored at 256×256 in some copies, rgb at 512×512); the base class
then resizes everything to `data.image_size` (bilinear image, nearest targets), so metrics are computed at
that size on nearest-resampled targets — Standley et al. resize labels bilinearly to 256×256 instead.
Image-level domains: class_object and class_scene hold one `.npy` per image
(`point_<p>_view_<v>_domain_class_object.npy`), a vector of class probabilities distilled from an ImageNet
(1000 classes) or Places365 (365) classifier (omnidata `task_configs.py`: 1000 / 365 classes, ext npy);
read as that vector (a (1, C) array is flattened), checked finite and non-negative, and trained as
`classification` tasks with pooled heads. `classes: [...]` in the task spec keeps a subset of the entries
(renormalised; one public loader trains object classification on a selected ImageNet subset).
The vanishing-point task reads the per-view JSON metadata (`point_info/..._domain_point_info.json` from
omnidata, or the official `points/..._domain_fixatedpose.json`): key `vanishing_points_gaussian_sphere`,
its `x`, `y`, `z` lists of 3 concatenated into 9 numbers (as the Taskonomy and XTC consistency loaders
do); a view without the key is unlabeled (NaN). Room layout, point matching and camera poses (other
keys, or pairs of views) are not read.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtnas.data.files import SPATIAL, FileDataset, Target, read_npy, read_png
from mtnas.errors import ConfigError, DataError

RGB = "rgb"
MASK_DOMAIN = "depth_zbuffer"
LAYOUTS = ("building", "domain", "omnidata")
DEPTH_UNITS_PER_M = 512.0
DEPTH_MISSING = 65535
NORMAL_INVALID_BELOW = 0.5
NORMAL_MAX_LENGTH = 1.2
RGB_NAME = re.compile(r"^point_(\d+)_view_(\d+)_domain_rgb\.png$")
VIEW_NAME = re.compile(r"^point_(\d+)_view_(\d+)_domain_")
SPLIT_GLOB = "train_val_test_*.csv"
VP_KEY = "vanishing_points_gaussian_sphere"


@dataclass(frozen=True)
class Domain:
    encoding: str  # rgb | labels | depth16 | normal8 | gray16 | curvature8 | shading8 | gray8 | scores | …
    kinds: tuple[str, ...]  # array kinds a task of this domain may have
    channels: int | None = None  # regression channels
    tags: tuple[str, ...] = ()  # file-name tags, when not the domain name
    ext: str = "png"


DOMAINS: dict[str, Domain] = {
    "rgb": Domain("rgb", ("image", "regression"), 3),
    "segment_semantic": Domain("labels", ("semseg",), tags=("segmentsemantic", "segment_semantic")),
    "depth_zbuffer": Domain("depth16", ("depth",)),
    "depth_euclidean": Domain("depth16", ("depth",)),
    "normal": Domain("normal8", ("normal",)),
    "keypoints2d": Domain("gray16", ("regression",), 1),
    "keypoints3d": Domain("gray16", ("regression",), 1),
    "edge_texture": Domain("gray16", ("regression",), 1),
    "edge_occlusion": Domain("gray16", ("regression",), 1),
    "principal_curvature": Domain("curvature8", ("regression",), 2),
    "reshading": Domain("shading8", ("regression",), 1),
    "segment_unsup2d": Domain("gray8", ("regression",), 1),
    "segment_unsup25d": Domain("gray8", ("regression",), 1),
    # Image-level: one .npy vector of class probabilities per image, distilled from an ImageNet
    # (1000 classes) or Places365 (365) classifier.
    "class_object": Domain("scores", ("distribution",), ext="npy"),
    "class_scene": Domain("scores", ("distribution",), ext="npy"),
    # Image-level: per-view JSON metadata; the vanishing-point task reads its 9 numbers. `point_info/` is
    # omnidata's folder, `points/` the official per-building one (files tagged `fixatedpose` there).
    "point_info": Domain("vanishing_points", ("vector",), 9, tags=("point_info", "fixatedpose"), ext="json"),
    "points": Domain("vanishing_points", ("vector",), 9, tags=("fixatedpose", "point_info"), ext="json"),
}


def file_tags(domain: str) -> tuple[str, ...]:
    d = DOMAINS.get(domain)
    return d.tags if d is not None and d.tags else (domain,)


def read_split_csv(path: Path) -> dict[str, list[str]]:
    """`{column: [buildings with 1 in it]}` from an official split CSV (`id,train,val,test` header)."""
    try:
        with open(path, newline="") as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)]
    except FileNotFoundError:
        raise DataError(path, "split file is missing.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(path, f"split file is unreadable ({e}).") from None
    if not rows:
        raise DataError(path, "split file is empty.")
    header, body = rows[0], rows[1:]
    if len(header) < 2 or all(c in ("0", "1") for c in header[1:]):
        raise DataError(path, "line 1: expected a header such as `id,train,val,test`.")
    out: dict[str, list[str]] = {col: [] for col in header[1:]}
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(path, f"line {n}: {len(row)} fields, the header has {len(header)}.")
        for col, value in zip(header[1:], row[1:], strict=True):
            if value not in ("0", "1"):
                raise DataError(path, f"line {n}: `{col}` is {value!r}, expected 0 or 1.")
            if value == "1":
                out[col].append(row[0])
    return out


def _listing(folder: Path) -> set[str] | None:
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it}
    except (FileNotFoundError, NotADirectoryError):
        return None


def _nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = arr.shape[:2]
    rows = (np.arange(size[0]) * h) // size[0]
    cols = (np.arange(size[1]) * w) // size[1]
    return arr[rows][:, cols]


class TaskonomyDataset(FileDataset):
    """One split (a set of buildings) of Taskonomy; see the module docstring for layout and conventions."""

    resize_to_image_size = True

    # --- configuration ------------------------------------------------------------------------------
    def _setup(self) -> None:
        self.domains = {"image": RGB, **{k: str(t.source) for k, t in self.targets.items() if k != "image"}}
        for key, domain in self.domains.items():
            if key == "image":
                continue
            spec = DOMAINS.get(domain)
            where = f"data.available_tasks.{key}.source"
            if spec is None:
                raise ConfigError(
                    where, f"unknown Taskonomy domain {domain!r}; this format reads {sorted(DOMAINS)}."
                )
            target = self.targets[key]
            if target.kind not in spec.kinds:
                raise ConfigError(
                    f"data.available_tasks.{key}.type",
                    f"domain {domain} is read as {' or '.join(spec.kinds)} targets, not {target.kind}.",
                )
            if target.kind in ("regression", "vector") and target.channels != spec.channels:
                raise ConfigError(
                    f"data.available_tasks.{key}.channels",
                    f"domain {domain} has {spec.channels} channel(s), got {target.channels}.",
                )
            if target.kind == "distribution" and not target.num_classes:
                raise ConfigError(
                    f"data.available_tasks.{key}.num_classes",
                    "is required (1000 for class_object, 365 for class_scene, or len(classes)).",
                )
            if target.kind == "semseg" and not target.num_classes:
                raise ConfigError(
                    f"data.available_tasks.{key}.num_classes", "is required (17 for Taskonomy)."
                )
        available = self.options.get("available_tasks") or {}
        masked = list(self.options.get("mask_with_depth") or [])
        unknown = [t for t in masked if available and t not in available]
        if unknown:
            raise ConfigError(
                "data.mask_with_depth", f"unknown task(s) {unknown}; tasks are {sorted(available)}."
            )
        self.masked = [k for k in self.targets if k in masked and self.targets[k].kind in SPATIAL]
        max_depth = self.options.get("max_depth")
        if max_depth is not None and (not isinstance(max_depth, int | float) or max_depth <= 0):
            raise ConfigError(
                "data.max_depth", f"got {max_depth!r}; expected a positive number of metres or null."
            )
        self.max_raw_depth = (
            DEPTH_MISSING
            if max_depth is None
            else min(DEPTH_MISSING, int(np.ceil(max_depth * DEPTH_UNITS_PER_M)))
        )
        self.scaling = {k: self._scaling(k) for k, t in self.targets.items() if t.kind == "regression"}
        layout = self.options.get("layout") or "auto"
        if layout not in ("auto", *LAYOUTS):
            raise ConfigError("data.layout", f"got {layout!r}; expected one of {['auto', *LAYOUTS]}.")
        self.layout = layout

    def _scaling(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        channels = self.targets[key].channels or 1
        spec = (self.options.get("value_scaling") or {}).get(key) or {}
        where = f"data.value_scaling.{key}"
        extra = set(spec) - {"shift", "scale"}
        if extra:
            raise ConfigError(where, f"unknown key(s) {sorted(extra)}; expected `shift` and `scale`.")
        out = []
        for name, default in (("shift", 0.0), ("scale", 1.0)):
            value = spec.get(name, default)
            values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
            if len(values) == 1:
                values = values * channels
            if len(values) != channels or not all(isinstance(v, int | float) for v in values):
                raise ConfigError(
                    f"{where}.{name}", f"got {value!r}; expected a number or {channels} numbers."
                )
            if name == "scale" and any(v == 0 for v in values):
                raise ConfigError(f"{where}.scale", "must not be 0.")
            out.append(np.asarray(values, dtype=np.float32))
        return out[0], out[1]

    # --- splits -----------------------------------------------------------------------------------
    def split_source(self) -> tuple[str, Path | None]:
        """Where the split's buildings come from: ("config", None) or ("csv", path)."""
        if self.options.get("buildings"):
            return "config", None
        name = self.options.get("split_file")
        if name:
            path = Path(str(name)).expanduser()
            return "csv", path if path.is_absolute() else self.root / path
        found = sorted({*self.root.glob(SPLIT_GLOB), *(self.root / "splits_taskonomy").glob(SPLIT_GLOB)})
        if len(found) > 1:
            names = [str(p.relative_to(self.root)) for p in found]
            raise ConfigError(
                "data.split_file",
                f"{self.root} holds several split files {names}; name one, e.g. "
                f"`data.split_file={names[0]}`.",
            )
        if not found:
            raise DataError(
                self.root,
                f"no split file ({SPLIT_GLOB}, e.g. train_val_test_tiny.csv from the official "
                "splits_taskonomy.zip) in the dataset root; set `data.split_file=/path/to.csv` or list "
                "buildings in `data.buildings`.",
            )
        return "csv", found[0]

    def buildings_of(self, split: str) -> tuple[list[str], str]:
        """The buildings of a split (after `data.exclude_buildings`) and where they are listed."""
        kind, path = self.split_source()
        if kind == "config":
            table = self.options["buildings"]
            if split not in table or not isinstance(table[split], Sequence) or isinstance(table[split], str):
                raise ConfigError(
                    "data.buildings", f"has no list for the `{split}` split (has {sorted(table)})."
                )
            listed, where = [str(b) for b in table[split]], f"data.buildings.{split}"
        else:
            columns = read_split_csv(path)
            if split not in columns:
                raise DataError(path, f"has no `{split}` column (columns: {sorted(columns)}).")
            listed, where = columns[split], f"{path} (column `{split}`)"
        excluded = {str(b) for b in (self.options.get("exclude_buildings") or [])}
        buildings = list(dict.fromkeys(b for b in listed if b not in excluded))
        if not buildings:
            raise DataError(path or self.root, f"no building listed for the `{split}` split in {where}.")
        return buildings, where

    def domain_dir(self, building: str, domain: str, layout: str) -> Path:
        if layout == "building":
            return self.root / building / domain
        if layout == "domain":
            return self.root / domain / building
        return self.root / domain / "taskonomy" / building

    def building_layout(self, building: str) -> str | None:
        candidates = LAYOUTS if self.layout == "auto" else (self.layout,)
        return next((lay for lay in candidates if self.domain_dir(building, RGB, lay).is_dir()), None)

    # --- index ------------------------------------------------------------------------------------
    def index(self) -> list[dict[str, Any]]:
        self._setup()
        buildings, self.buildings_from = self.buildings_of(self.split)
        layouts = {b: self.building_layout(b) for b in buildings}
        missing = [b for b, lay in layouts.items() if lay is None]
        if missing:
            where = {"auto": "root/<b>/rgb, root/rgb/<b> or root/rgb/taskonomy/<b>"}.get(
                self.layout, str(self.domain_dir("<b>", RGB, self.layout).relative_to(self.root))
            )
            raise DataError(
                self.root / missing[0],
                f"building(s) {missing} of the `{self.split}` split ({self.buildings_from}) not found: "
                f"no {where} folder. Download them, or drop them with `data.exclude_buildings`.",
            )
        domains = dict(self.domains)
        if self.masked and MASK_DOMAIN not in domains.values():
            domains["_mask"] = MASK_DOMAIN
        samples = []
        for building in buildings:
            samples += self._index_building(building, layouts[building], domains)
        return samples

    def _index_building(self, building: str, layout: str, domains: Mapping[str, str]) -> list[dict[str, Any]]:
        rgb_dir = self.domain_dir(building, RGB, layout)
        views = sorted(
            (int(m[1]), int(m[2])) for m in map(RGB_NAME.match, _listing(rgb_dir) or ()) if m is not None
        )
        if not views:
            self.index_problems.append(f"{rgb_dir}: no point_<p>_view_<v>_domain_rgb.png files.")
            return []
        folders = {d: self.domain_dir(building, d, layout) for d in set(domains.values())}
        listings: dict[str, set[str]] = {}
        for domain in set(domains.values()) - {RGB}:
            folder = folders[domain]
            listing = _listing(folder)
            if listing is None:
                self.index_problems.append(
                    f"{folder}: folder is missing ({len(views)} sample(s) of building {building} left out)."
                )
                return []
            listings[domain] = listing
        # A view whose targets exist but whose rgb file does not is a missing file, not a silent drop.
        in_targets = {
            (int(m[1]), int(m[2])) for names in listings.values() for m in map(VIEW_NAME.match, names) if m
        }
        self.index_problems += [
            f"{rgb_dir / f'point_{p}_view_{v}_domain_rgb.png'}: file is missing (its targets exist)."
            for p, v in sorted(in_targets - set(views))
        ]
        samples = []
        for p, v in views:
            stem = f"point_{p}_view_{v}_domain_"
            sample: dict[str, Any] = {"id": f"{building}/point_{p}_view_{v}"}
            for key, domain in domains.items():
                folder = folders[domain]
                if domain == RGB:
                    sample[key] = folder / f"{stem}rgb.png"
                    continue
                tags, ext = file_tags(domain), DOMAINS[domain].ext
                names = [f"{stem}{t}.{ext}" for t in tags]
                name = next((n for n in names if n in listings[domain]), None)
                if name is None:
                    self.index_problems.append(f"{folder / names[0]}: file is missing.")
                    break
                sample[key] = folder / name
            else:
                samples.append(sample)
        return samples

    def check_split(self) -> list[str]:
        """Buildings that are also in the train split (evaluation buildings must not be trained on)."""
        train = str((self.options.get("splits") or {}).get("train") or "train")
        if self.split == train:
            return []
        try:
            overlap = sorted(set(self.buildings_of(self.split)[0]) & set(self.buildings_of(train)[0]))
        except (DataError, ConfigError):
            return []
        if overlap:
            return [f"{self.buildings_from}: building(s) {overlap} are also in the `{train}` split."]
        return []

    # --- decode -----------------------------------------------------------------------------------
    def decode(self, key: str, ref: Path) -> np.ndarray:
        domain = self.domains.get(key, MASK_DOMAIN)
        enc = DOMAINS[domain].encoding
        if enc == "rgb":
            rgb = self._uint8(ref, read_png(ref), channels=3)
            return rgb.astype(np.float32) / 255.0
        if enc == "labels":
            return self._labels(ref, read_png(ref), self.targets[key].num_classes or 17)
        if enc == "scores":
            return self._scores(ref, read_npy(ref), self.targets[key])
        if enc == "vanishing_points":
            return self._vanishing_points(ref)
        if enc == "depth16":
            return self._depth(ref, self._uint16(ref, read_png(ref), "depth in 1/512 m"))
        if enc == "normal8":
            return self._normals(ref, self._uint8(ref, read_png(ref), channels=3))
        if enc == "gray16":
            return self._uint16(ref, read_png(ref), domain).astype(np.float32)[..., None]
        raw = self._uint8(ref, read_png(ref), channels=None).astype(np.float32) / 255.0
        if enc == "curvature8":
            if raw.ndim != 3 or raw.shape[-1] < 2:
                raise DataError(
                    ref, f"shape {raw.shape}, expected an RGB image (curvatures in channels 1–2)."
                )
            return raw[..., :2]
        if enc == "shading8":
            return raw.mean(axis=-1, keepdims=True) if raw.ndim == 3 else raw[..., None]
        return (raw[..., 0] if raw.ndim == 3 else raw)[..., None]  # gray8

    @staticmethod
    def _uint8(path: Path, raw: np.ndarray, channels: int | None) -> np.ndarray:
        if raw.dtype != np.uint8:
            raise DataError(path, f"dtype {raw.dtype}, expected an 8-bit PNG.")
        if raw.ndim == 3 and raw.shape[-1] == 4:
            raw = raw[..., :3]  # drop an alpha channel
        if channels == 3 and (raw.ndim != 3 or raw.shape[-1] != 3):
            raise DataError(path, f"shape {raw.shape}, expected an RGB image (H×W×3).")
        return raw

    @staticmethod
    def _uint16(path: Path, raw: np.ndarray, what: str) -> np.ndarray:
        if raw.ndim != 2:
            raise DataError(path, f"shape {raw.shape}, expected a single-channel 16-bit PNG ({what}).")
        if raw.dtype == np.uint8:
            raise DataError(path, f"8-bit PNG, expected a 16-bit PNG ({what}).")
        if raw.dtype not in (np.uint16, np.int32) or raw.min() < 0 or raw.max() > 65535:
            raise DataError(path, f"dtype {raw.dtype}, expected a 16-bit PNG ({what}).")
        return raw

    @staticmethod
    def _labels(path: Path, raw: np.ndarray, num_classes: int) -> np.ndarray:
        if raw.ndim == 3 and (raw == raw[..., :1]).all():
            raw = raw[..., 0]  # a grey image saved as RGB
        if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
            raise DataError(path, f"shape {raw.shape}, dtype {raw.dtype}: expected single-channel class ids.")
        bad = raw > num_classes
        if bad.any():
            raise DataError(
                path,
                f"label value {int(raw[bad].flat[0])} outside 0 (uncertain, ignored), 1 (background) and "
                f"2..{num_classes} (objects); {int(bad.sum())} pixel(s).",
            )
        return raw.astype(np.int16) - 1  # 0 → −1 (ignore), k → k − 1

    @staticmethod
    def _scores(path: Path, raw: np.ndarray, target: Target) -> np.ndarray:
        """A class-probability vector; `classes` (task option) keeps a subset of its entries, renormalised."""
        scores = np.asarray(raw).reshape(-1) if raw.ndim == 2 and 1 in raw.shape else np.asarray(raw)
        if scores.ndim != 1 or not np.issubdtype(scores.dtype, np.number):
            raise DataError(path, f"shape {raw.shape}, dtype {raw.dtype}: expected a vector of class scores.")
        classes = target.options.get("classes")
        if classes is not None:
            if max(classes) >= scores.shape[0]:
                raise DataError(
                    path, f"{scores.shape[0]} class scores, but `classes` selects index {max(classes)}."
                )
            scores = scores[list(classes)]
            total = scores.sum()
            scores = scores / total if total > 0 else scores
        return scores.astype(np.float32)

    @staticmethod
    def _vanishing_points(path: Path) -> np.ndarray:
        """`vanishing_points_gaussian_sphere` {x: [3], y: [3], z: [3]} → its x, y, z lists concatenated
        (9 numbers, unit-sphere coordinates in camera space). A view without the key is unlabeled (NaN)."""
        import json

        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(path, "file is missing.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(path, f"not a readable JSON file ({e}).") from None
        vps = info.get(VP_KEY) if isinstance(info, dict) else None
        if vps is None:
            return np.full(9, np.nan, np.float32)
        try:
            values = [float(v) for axis in ("x", "y", "z") for v in vps[axis]]
        except (KeyError, TypeError, ValueError):
            values = []
        if len(values) != 9:
            raise DataError(path, f"`{VP_KEY}` must hold x, y and z lists of 3 numbers each.")
        return np.asarray(values, np.float32)

    def _depth(self, path: Path, raw: np.ndarray) -> np.ndarray:
        metres = raw.astype(np.float32) / DEPTH_UNITS_PER_M
        metres[raw >= self.max_raw_depth] = 0.0
        return metres[..., None]

    @staticmethod
    def _normals(path: Path, raw: np.ndarray) -> np.ndarray:
        n = 2.0 * raw.astype(np.float32) / 255.0 - 1.0
        length = np.linalg.norm(n, axis=-1)
        too_long = length > NORMAL_MAX_LENGTH
        if too_long.any():
            raise DataError(
                path,
                f"{int(too_long.sum())} normal(s) of length {float(length[too_long].flat[0]):.3g} after "
                "n = 2·v/255 − 1; expected unit vectors (or grey = invalid).",
            )
        valid = length >= NORMAL_INVALID_BELOW
        out = np.zeros_like(n)
        out[valid] = n[valid] / length[valid][:, None]
        return out

    # --- one sample: decode, align sizes, mask, check -------------------------------------------
    def finish(self, sample: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Targets stored smaller than rgb are upsampled to it; regression targets are standardised; pixels
        without depth are invalid in the depth-masked domains (Standley et al.'s `mask_with_depth`)."""
        size = arrays["image"].shape[:2]
        for key, target in self.targets.items():
            if key == "image" or target.kind not in SPATIAL:
                continue
            arr = self._align(sample, sample[key], arrays[key], size)
            if target.kind == "regression" and key in self.scaling:
                shift, scale = self.scaling[key]
                arr = (arr - shift) / scale
            arrays[key] = arr
        if self.masked:
            key = next((k for k, d in self.domains.items() if d == MASK_DOMAIN), None)
            if key is None:  # depth_zbuffer is not a selected task: read it for the mask only
                depth = self._align(sample, sample["_mask"], self.decode("_mask", sample["_mask"]), size)
            else:
                depth = arrays[key]
            invalid = depth[..., 0] <= 0
            for key in self.masked:
                arrays[key] = self._mask(arrays[key], invalid, self.targets[key].kind)
        return arrays

    @staticmethod
    def _align(sample: Mapping[str, Any], ref: Path, arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        h, w = arr.shape[:2]
        if (h, w) == tuple(size):
            return arr
        if abs(h * size[1] - w * size[0]) > max(h, w, *size) * 0.02:  # another aspect ratio: not a rescale
            raise DataError(
                ref, f"size {(h, w)} does not match its rgb image {tuple(size)} ({sample['image']})."
            )
        return _nearest(arr, size)

    @staticmethod
    def _mask(arr: np.ndarray, invalid: np.ndarray, kind: str) -> np.ndarray:
        arr = arr.copy()
        if kind == "regression":
            arr = arr.astype(np.float32)
            arr[invalid] = np.nan
        elif kind == "semseg":
            arr[invalid] = -1
        elif kind == "binary":
            arr[invalid] = 255
        else:  # depth, normal: 0 = invalid
            arr[invalid] = 0
        return arr
