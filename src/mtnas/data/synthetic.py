"""Procedural indoor scenes rendered by ray casting, written in the NYUv2 preprocessed layout.

Each scene is a room (floor, walls, ceiling) with randomly placed boxes, tables, spheres and cylinders,
textured and Lambertian-shaded by a point light. Per image we get RGB, semantic labels, metric z-depth,
camera-frame surface normals and edges (label / depth discontinuities); all from one ray cast, so the
tasks are consistent and correlated the way real indoor tasks are (edges sit on depth jumps, normals
follow the object class, depth follows the room layout). Objects (box, table, sphere, cylinder) also get
detection boxes: the extent of each one's visible pixels, N×5 (x1, y1, x2, y2 in pixels, class 0..3).

Conventions (shared with the NYUv2 reader): camera frame is OpenCV's (x right, y down, z forward);
normals point towards the camera; depth is z-depth in metres, 0 = invalid; label −1 = ignore.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CLASSES = ("floor", "wall", "ceiling", "box", "table", "sphere", "cylinder")
FLOOR, WALL, CEILING, BOX, TABLE, SPHERE, CYLINDER = range(len(CLASSES))
# Base hue per class; objects jitter around it, so colour is a cue but not a give-away.
_CLASS_HSV = {
    FLOOR: (0.08, 0.45, 0.55),
    WALL: (0.12, 0.15, 0.85),
    CEILING: (0.6, 0.05, 0.95),
    BOX: (0.07, 0.6, 0.6),
    TABLE: (0.05, 0.55, 0.45),
    SPHERE: (0.55, 0.6, 0.8),
    CYLINDER: (0.33, 0.5, 0.6),
}
OBJECT_CLASSES = CLASSES[BOX:]  # the detection classes, in order
GENERATOR_VERSION = 2  # 2: detection boxes
_EPS = 1e-4


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the generated files (and so the cache folder name)."""

    height: int = 96
    width: int = 128
    num_train: int = 512
    num_val: int = 128
    num_test: int = 128
    seed: int = 0
    max_objects: int = 8

    def cache_name(self) -> str:
        blob = json.dumps({"v": GENERATOR_VERSION, **asdict(self)}, sort_keys=True).encode()
        return (
            f"synthetic-v{GENERATOR_VERSION}-{self.height}x{self.width}-{hashlib.sha1(blob).hexdigest()[:10]}"
        )


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


class _Hits:
    """Nearest-hit buffers for all rays: distance t (= z-depth, rays have unit z in camera frame)."""

    def __init__(self, n: int):
        self.t = np.full(n, np.inf)
        self.normal = np.zeros((n, 3))
        self.label = np.full(n, -1, dtype=np.int64)
        self.obj = np.full(n, -1, dtype=np.int64)

    def offer(self, t: np.ndarray, normal: np.ndarray, label: int, obj: int) -> None:
        closer = (t > _EPS) & (t < self.t)
        self.t[closer] = t[closer]
        self.normal[closer] = normal[closer]
        self.label[closer] = label
        self.obj[closer] = obj


def _box(o, d, center, half, yaw):
    """Ray / yaw-rotated box (slab method in the box frame). Returns t (inf = miss) and world normals."""
    rot = _rot_y(yaw)
    ol = (o - center) @ rot  # rot^T applied to row vectors
    dl = d @ rot
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - ol) / dl
        t2 = (half - ol) / dl
    tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
    tn = np.nan_to_num(tn, nan=-np.inf)
    tf = np.nan_to_num(tf, nan=np.inf)
    t_near, t_far = tn.max(1), tf.min(1)
    hit = (t_far >= t_near) & (t_near > _EPS)
    axis = tn.argmax(1)
    nl = np.zeros_like(dl)
    nl[np.arange(len(dl)), axis] = -np.sign(dl[np.arange(len(dl)), axis])
    return np.where(hit, t_near, np.inf), nl @ rot.T


def _sphere(o, d, center, radius):
    oc = o - center
    a = (d * d).sum(1)
    b = 2 * (oc * d).sum(1)
    c = (oc * oc).sum() - radius**2
    disc = b * b - 4 * a * c
    hit = disc > 0
    t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    p = o + t[:, None] * d
    n = (p - center) / radius
    return np.where(t > _EPS, t, np.inf), n


def _cylinder(o, d, cx, cz, radius, height):
    """Vertical capped cylinder standing on the floor."""
    ox, oz = o[0] - cx, o[2] - cz
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (ox * d[:, 0] + oz * d[:, 2])
    c = ox**2 + oz**2 - radius**2
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    y = o[1] + t_side * d[:, 1]
    t_side = np.where((y >= 0) & (y <= height) & (t_side > _EPS), t_side, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_cap = (height - o[1]) / d[:, 1]
    px, pz = o[0] + t_cap * d[:, 0] - cx, o[2] + t_cap * d[:, 2] - cz
    t_cap = np.where((px**2 + pz**2 <= radius**2) & (t_cap > _EPS), t_cap, np.inf)
    t_cap = np.nan_to_num(t_cap, nan=np.inf)
    side = t_side <= t_cap
    t = np.minimum(t_side, t_cap)
    t = np.where(t < 1e6, t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    n_side = np.stack([(p[:, 0] - cx) / radius, np.zeros(len(d)), (p[:, 2] - cz) / radius], 1)
    n_cap = np.tile([0.0, 1.0, 0.0], (len(d), 1))
    return t, np.where(side[:, None], n_side, n_cap)


def render_scene(
    rng: np.random.Generator, height: int, width: int, max_objects: int = 8
) -> dict[str, np.ndarray]:
    """Render one random scene. Returns arrays in the NYUv2 preprocessed layout (float32)."""
    room_w, room_d, room_h = rng.uniform(4, 7), rng.uniform(4, 7), rng.uniform(2.5, 3.2)
    lo = np.array([-room_w / 2, 0.0, -room_d / 2])
    hi = np.array([room_w / 2, room_h, room_d / 2])

    # Camera near a wall, looking into the room, slightly down.
    yaw = rng.uniform(-np.pi, np.pi)
    pitch = rng.uniform(0.05, 0.35)
    cam = np.array([0.0, rng.uniform(1.2, 1.8), 0.0])
    back = np.array([np.sin(yaw), 0, np.cos(yaw)])
    cam[[0, 2]] -= back[[0, 2]] * min(room_w, room_d) * rng.uniform(0.2, 0.4)
    fwd = np.array([np.cos(pitch) * np.sin(yaw), -np.sin(pitch), np.cos(pitch) * np.cos(yaw)])
    right = np.cross([0.0, -1.0, 0.0], fwd)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    r_wc = np.stack([right, down, fwd], 1)  # camera axes as columns
    focal = 0.5 * width / np.tan(np.deg2rad(rng.uniform(55, 65)) / 2)
    v, u = np.mgrid[0:height, 0:width]
    d_cam = np.stack(
        [(u + 0.5 - width / 2) / focal, (v + 0.5 - height / 2) / focal, np.ones_like(u, float)], -1
    )
    d = d_cam.reshape(-1, 3) @ r_wc.T  # unnormalised: the hit parameter t is the z-depth
    n = len(d)
    hits = _Hits(n)

    # Room: exit distance through each pair of planes.
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axes = np.where(d > 0, (hi - cam) / d, (lo - cam) / d)
    t_axes = np.nan_to_num(t_axes, nan=np.inf, posinf=np.inf, neginf=np.inf)
    axis = t_axes.argmin(1)
    t_room = t_axes[np.arange(n), axis]
    normal_room = np.zeros((n, 3))
    normal_room[np.arange(n), axis] = -np.sign(d[np.arange(n), axis])
    label_room = np.where(axis == 1, np.where(d[:, 1] < 0, FLOOR, CEILING), WALL)
    for lab in (FLOOR, WALL, CEILING):
        m = label_room == lab
        hits.offer(np.where(m, t_room, np.inf), normal_room, lab, obj=lab)

    colors = {lab: _jitter(rng, lab, 0.02) for lab in (FLOOR, WALL, CEILING)}
    num_objects = rng.integers(3, max_objects + 1)
    for k in range(num_objects):
        obj = 10 + k
        kind = rng.choice([BOX, TABLE, SPHERE, CYLINDER], p=[0.3, 0.2, 0.25, 0.25])
        x = rng.uniform(lo[0] + 0.5, hi[0] - 0.5)
        z = rng.uniform(lo[2] + 0.5, hi[2] - 0.5)
        if np.hypot(x - cam[0], z - cam[2]) < 0.8:
            continue  # keep objects off the camera
        if kind == BOX:
            half = rng.uniform([0.2, 0.2, 0.2], [0.6, 0.8, 0.6])
            t, nrm = _box(cam, d, np.array([x, half[1], z]), half, rng.uniform(0, np.pi))
        elif kind == TABLE:
            half = np.array([rng.uniform(0.4, 0.9), 0.04, rng.uniform(0.3, 0.6)])
            t, nrm = _box(cam, d, np.array([x, rng.uniform(0.65, 0.8), z]), half, rng.uniform(0, np.pi))
        elif kind == SPHERE:
            r = rng.uniform(0.2, 0.5)
            y = r if rng.random() < 0.7 else rng.uniform(r, 1.5)
            t, nrm = _sphere(cam, d, np.array([x, y, z]), r)
        else:
            t, nrm = _cylinder(cam, d, x, z, rng.uniform(0.15, 0.4), rng.uniform(0.5, 2.2))
        hits.offer(t, nrm, int(kind), obj)
        colors[obj] = _jitter(rng, int(kind), 0.08)

    p = cam + hits.t[:, None] * d
    # Normals face the camera.
    flip = (hits.normal * d).sum(1) > 0
    hits.normal[flip] *= -1

    # Shading: Lambert from a ceiling light + ambient, with procedural textures.
    light = np.array([rng.uniform(lo[0] + 1, hi[0] - 1), room_h - 0.1, rng.uniform(lo[2] + 1, hi[2] - 1)])
    to_light = light - p
    dist2 = (to_light**2).sum(1)
    lambert = np.clip((hits.normal * to_light).sum(1) / np.sqrt(dist2), 0, 1)
    shade = 0.35 + 0.9 * lambert / (1 + 0.04 * dist2)
    base = np.zeros((n, 3))
    for obj, rgb in colors.items():
        base[hits.obj == obj] = rgb
    tex = np.ones(n)
    floor = hits.label == FLOOR
    tex[floor] = 0.85 + 0.15 * ((np.floor(p[floor, 0] * 2) + np.floor(p[floor, 2] * 2)) % 2)
    wall = hits.label == WALL
    tex[wall] = 0.93 + 0.07 * np.sin((p[wall, 0] + p[wall, 2]) * 12)
    box = hits.label == BOX
    tex[box] = 0.9 + 0.1 * np.sin(p[box, 1] * 25)
    rgb = base * (shade * tex)[:, None] + rng.normal(0, 0.015, (n, 3))
    image = np.clip(rgb, 0, 1).reshape(height, width, 3)

    depth = hits.t.reshape(height, width).copy()
    normal_cam = (hits.normal @ r_wc).reshape(height, width, 3)  # world -> camera: R^T n
    label = hits.label.reshape(height, width).copy()
    edge = _edges(label, depth)
    boxes = _object_boxes(hits.obj.reshape(height, width), label)

    # Sensor-like defects: holes without depth/normals, and unlabeled pixels on some label borders.
    for _ in range(rng.integers(0, 3)):
        h0, w0 = rng.integers(0, height), rng.integers(0, width)
        hh, ww = rng.integers(2, max(3, height // 8)), rng.integers(2, max(3, width // 8))
        depth[h0 : h0 + hh, w0 : w0 + ww] = 0
        normal_cam[h0 : h0 + hh, w0 : w0 + ww] = 0
    label_border = _label_border(label) & (rng.random(label.shape) < 0.5)
    label[label_border] = -1

    return {
        "image": image.astype(np.float32),
        "label": label.astype(np.float32),
        "depth": depth[..., None].astype(np.float32),
        "normal": normal_cam.astype(np.float32),
        "edge": edge.astype(np.float32),
        "boxes": boxes,
    }


def _object_boxes(obj: np.ndarray, label: np.ndarray, min_pixels: int = 4) -> np.ndarray:
    """One box per object with at least `min_pixels` visible pixels: its visible extent (pixel corners)."""
    from mtnas.data.files import instance_boxes

    classes = {int(o): int(label[obj == o].flat[0]) - BOX for o in np.unique(obj[obj >= 10])}
    return instance_boxes(obj, classes, min_pixels)


def _jitter(rng: np.random.Generator, label: int, amount: float) -> np.ndarray:
    h, s, v = _CLASS_HSV[label]
    h = (h + rng.uniform(-amount, amount)) % 1.0
    s = np.clip(s + rng.uniform(-0.15, 0.15), 0, 1)
    v = np.clip(v + rng.uniform(-0.15, 0.15), 0.2, 1)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _label_border(label: np.ndarray) -> np.ndarray:
    border = np.zeros(label.shape, bool)
    border[:, 1:] |= label[:, 1:] != label[:, :-1]
    border[1:, :] |= label[1:, :] != label[:-1, :]
    return border


def _edges(label: np.ndarray, depth: np.ndarray, rel_jump: float = 0.05) -> np.ndarray:
    """1 on pixels whose right/lower neighbour has another label or a relative depth jump."""
    edge = _label_border(label)
    jump_x = np.abs(depth[:, 1:] - depth[:, :-1]) / np.minimum(depth[:, 1:], depth[:, :-1]) > rel_jump
    jump_y = np.abs(depth[1:] - depth[:-1]) / np.minimum(depth[1:], depth[:-1]) > rel_jump
    edge[:, 1:] |= jump_x
    edge[1:, :] |= jump_y
    return edge


def _sample_seed(seed: int, split: str, index: int) -> int:
    # Per-sample seeds make every file independent of generation order (and of parallelism).
    return int.from_bytes(hashlib.sha256(f"{seed}/{split}/{index}".encode()).digest()[:8], "little")


def generate(spec: SyntheticSpec, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Generate (once) and return the dataset folder `cache_dir/<spec.cache_name()>`.

    Files go to a temporary sibling folder that is renamed into place at the end, so an interrupted
    generation never leaves a half-written dataset that would later be read as complete.
    """
    root = Path(cache_dir).expanduser() / spec.cache_name()
    if (root / "meta.json").exists():
        return root
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    splits = {"train": spec.num_train, "val": spec.num_val, "test": spec.num_test}
    total = sum(splits.values())
    with _progress(progress, total, f"Generating synthetic dataset ({total} scenes) → {root}") as advance:
        for split, count in splits.items():
            for kind in ("image", "label", "depth", "normal", "edge", "boxes"):
                (tmp / split / kind).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng(_sample_seed(spec.seed, split, i))
                sample = render_scene(rng, spec.height, spec.width, spec.max_objects)
                for kind, arr in sample.items():
                    np.save(tmp / split / kind / f"{i}.npy", arr)
                advance()
    meta = {
        "generator_version": GENERATOR_VERSION,
        "classes": list(CLASSES),
        "object_classes": list(OBJECT_CLASSES),
        **asdict(spec),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return root


class _progress:
    """A rich progress bar when asked for (and not in a worker), else nothing."""

    def __init__(self, enabled: bool, total: int, description: str):
        self.enabled, self.total, self.description = enabled, total, description

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._bar = Progress(transient=False)
        self._bar.start()
        task = self._bar.add_task(self.description, total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc):
        if self.enabled:
            self._bar.stop()
