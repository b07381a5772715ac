"""MTNAS's parts (method=two_stage): the cell space and its composite arch, the collapse guard, GDAS sampling,
the supernet's extraction and cost invariants, the branch stage's shared backbone forward, the ImageFolder
reader, the synthetic classification set, and the budget refused before training."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mtnas.data.image_folder import ClassificationDataModule, generate_crops, scan
from mtnas.errors import ConfigError, DataError
from mtnas.nn.cells import OPS, edge_index, num_edges
from mtnas.search.cost import count_flops, count_params
from mtnas.search.gdas import ArchitectureLogits, gumbel_hard, tau_at
from mtnas.space.cells import CellArch, CellSpace, count_op, derive_genotype
from mtnas.supernet.cells import CellLayout, CellSupernet
from mtnas.tasks import build_tasks

from .conftest import compose_cfg

TASKS = {
    "semseg": {"type": "semseg", "num_classes": 7, "ignore_index": -1},
    "detection": {"type": "detection", "num_classes": 4},
    "depth": {"type": "depth"},
}
LAYOUT = CellLayout(channels=4, layers=3, nodes=2, branch_channels=4, head_hidden=8)


def test_a_composite_arch_round_trips_through_yaml_and_reads_as_one_line():
    space = CellSpace(("semseg", "detection"), OPS, nodes=4)
    arch = space.sample(random.Random(0))
    text = yaml.safe_dump(arch.to_dict(), sort_keys=False)
    assert CellArch.from_dict(yaml.safe_load(text)) == arch
    line = arch.describe()
    assert line.startswith("N ") and " · R " in line and "detection: " in line and "\n" not in line
    rng = random.Random(1)
    for _ in range(20):
        assert space.contains(space.mutate(arch, rng))
        assert space.contains(space.crossover(arch, space.sample(rng), rng))
    assert len(space.encode(arch)) == len(space.encode(space.largest()))


def test_a_hand_edited_arch_with_a_bad_node_is_refused_naming_it(tmp_path):
    space = CellSpace(("semseg",), OPS, nodes=2)
    d = space.largest().to_dict()
    d["backbone"]["normal"][1] = [["sep_conv_3x3", 0], ["sep_conv_3x3", 7]]
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError) as e:
        space.read_arch(path)
    assert e.value.key == "arch" and "backbone.normal: node 1: source 7" in str(e.value)
    d = space.largest().to_dict()
    d["branches"]["semseg"][0][0][0] = "conv_7x7"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="branches.semseg: node 0: 'conv_7x7' is not an op"):
        space.read_arch(path)


def test_derivation_keeps_the_two_strongest_edges_per_node():
    ops = ["none", "skip_connect", "sep_conv_3x3"]
    w = torch.full((num_edges(3), 3), 0.1)
    w[edge_index(2, 3), 2] = 0.9  # node 2 ← node 1 (source 3): sep3, the strongest
    w[edge_index(2, 0), 1] = 0.8  # node 2 ← input 0: skip
    w[edge_index(2, 1), 0] = 0.99  # `none` never counts
    g = derive_genotype(w.tolist(), ops, 3)
    assert g[2] == (("skip_connect", 0), ("sep_conv_3x3", 3))


def test_the_collapse_guard_caps_skip_connections_and_keeps_the_edges():
    """Weights that favour skip connections everywhere (DARTS's collapse) derive an all-skip cell; with the
    guard at most `max_skip` remain, the weakest replaced by their edge's best other op."""
    ops = ["max_pool_3x3", "skip_connect", "sep_conv_3x3"]
    rng = np.random.default_rng(0)
    w = rng.uniform(0.0, 0.2, (num_edges(4), 3))
    w[:, 1] += 0.6  # skip dominates every edge
    collapsed = derive_genotype(w.tolist(), ops, 4)
    assert count_op(collapsed, "skip_connect") == 8
    guarded = derive_genotype(w.tolist(), ops, 4, max_skip=2)
    assert count_op(guarded, "skip_connect") == 2
    assert [[s for _, s in node] for node in guarded] == [[s for _, s in node] for node in collapsed]
    skips = sorted((w[edge_index(i, s), 1], i, s) for i, node in enumerate(collapsed) for _, s in node)
    for _, i, s in skips[-2:]:  # the two strongest skips stay
        assert ("skip_connect", s) in guarded[i]
    for i, node in enumerate(guarded):
        for op, s in node:
            if op != "skip_connect":
                row = w[edge_index(i, s)]
                assert op == ops[int(np.argmax([row[0], -1, row[2]]))]


def test_gumbel_sampling_is_one_hot_reproducible_and_passes_gradients():
    logits = torch.zeros(5, 4, requires_grad=True)
    a = gumbel_hard(logits, 1.0, torch.Generator().manual_seed(3))
    b = gumbel_hard(logits, 1.0, torch.Generator().manual_seed(3))
    assert (
        torch.equal(a, b)
        and torch.equal(a.sum(-1), torch.ones(5))
        and set(a.flatten().tolist()) <= {0.0, 1.0}
    )
    (a * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    arch = ArchitectureLogits({"normal": (5, 4), "branch/semseg": (5, 4)})
    assert arch.entropy().item() == pytest.approx(1.0)
    assert tau_at(0, 10, 10.0, 0.1) == 10.0 and tau_at(10, 10, 10.0, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("reductions", [None, [0, 2]])
def test_extracted_subnets_equal_the_supernet_and_cost_is_exact(reductions):
    """For random composite archs: extract(arch)(x) == supernet(x, arch) in eval mode, and the analytic cost
    (fixed part + per-(group, edge, op) tables) equals counting the extracted net; with the default and with
    configured reduction cells."""
    torch.manual_seed(0)
    layout = CellLayout(**{**LAYOUT.to_config(), "reductions": reductions})
    supernet = CellSupernet(layout, OPS, build_tasks(list(TASKS), TASKS)).eval()
    assert len(supernet.backbone.channels) == (3 if reductions is None else 2)  # levels: one per stride
    space = CellSpace(tuple(TASKS), OPS, nodes=LAYOUT.nodes)
    rng = random.Random(0)
    x = torch.randn(2, 3, 32, 32)
    for arch in (space.sample(rng), space.sample(rng), space.smallest(), space.largest()):
        net = supernet.extract(arch).eval()
        with torch.no_grad():
            expected, got = supernet(x, arch), net(x)
        for t in TASKS:
            torch.testing.assert_close(got[t], expected[t], rtol=0, atol=0)
        cost = supernet.cost(arch, (32, 32))
        assert cost["params"] == count_params(net)
        assert cost["flops"] == count_flops(net, (32, 32))
    small, large = supernet.cost(space.smallest(), (32, 32)), supernet.cost(space.largest(), (32, 32))
    assert small["params"] < large["params"] and small["flops"] < large["flops"]


def cell_search_module(phase: str, fixed: dict, **kwargs):
    """A search stage's module on semseg + depth with the tiny layout, all ops but `none`."""
    from mtnas.lit.cells import CellSearchLitModule

    return CellSearchLitModule(
        cell_search=phase,
        tasks=["semseg", "depth"],
        available_tasks=TASKS,
        network=LAYOUT.to_config(),
        ops=list(OPS[1:]),
        search={"tau_max": 5.0, "tau_min": 0.1, "weight_steps": 1, "arch_steps": 1},
        optim={"lr": 1e-3},
        loss={},
        image_size=(32, 32),
        fixed=fixed,
        **kwargs,
    )


def test_bad_reduction_cells_name_their_key():
    with pytest.raises(ConfigError) as e:
        CellLayout(layers=3, reductions=[1, 3])
    assert e.value.key == "method.network.reductions" and "0..2" in str(e.value)


def test_the_branch_stage_runs_the_frozen_backbone_once_per_batch_for_every_branch():
    genotype = [[["sep_conv_3x3", 0], ["skip_connect", 1]]] * LAYOUT.nodes
    module = cell_search_module("branch", {"normal": genotype, "reduce": genotype})
    calls = []
    module.net.backbone.register_forward_hook(lambda *a: calls.append(1))
    heads = {t: [] for t in ("semseg", "depth")}
    for t, branch in module.net.branches.items():
        branch.register_forward_hook(lambda *a, t=t: heads[t].append(1))
    batch = {
        "image": torch.randn(2, 3, 32, 32),
        "semseg": torch.randint(0, 7, (2, 32, 32)),
        "depth": torch.rand(2, 1, 32, 32) + 0.5,
    }
    total, per_task = module._losses(batch, module.gates(module.arch.sample(1.0)))
    total.backward()
    assert len(calls) == 1 and heads == {"semseg": [1], "depth": [1]}
    assert all(p.grad is None for p in module.net.backbone.parameters())  # frozen
    assert all(module.arch.table(f"branch/{t}").grad is not None for t in ("semseg", "depth"))
    # Each branch learns from its own task only.
    module.zero_grad()
    module.net.branches["depth"].zero_grad()
    _, per_task = module._losses(batch, module.gates(module.arch.sample(1.0)))
    per_task["semseg"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.net.branches["depth"].parameters())


def _png(path, size=(20, 30), value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((*size, 3), value if value is not None else 128, np.uint8)
    Image.fromarray(arr).save(path)


def test_the_image_folder_reader_reads_the_layout_and_names_a_bad_file(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        for c, v in (("cat", 10), ("dog", 240)):
            for i in range(n):
                _png(
                    tmp_path / split / c / f"{i}.JPEG" if c == "dog" else tmp_path / split / c / f"{i}.png",
                    value=v,
                )
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    dm = ClassificationDataModule(tmp_path, (16, 16), 2, seed=0)
    assert dm.classes == ["cat", "dog"] and len(dm.train_samples) == 8 and len(dm.val_samples) == 4
    batches = list(dm.val_dataloader())
    assert sorted(label for b in batches for label in b["label"].tolist()) == [0, 0, 1, 1]
    batch = batches[0]
    assert batch["image"].shape == (2, 3, 16, 16)
    for b in batches:  # dog images are white, cat images dark: each image kept its own label
        assert all(
            (img.mean() > 0.5) == bool(label) for img, label in zip(b["image"], b["label"], strict=True)
        )
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (2, 3, 16, 16)
    bad = tmp_path / "val" / "dog" / "9.JPEG"
    bad.write_bytes(b"\xff\xd8 truncated")
    dm = ClassificationDataModule(tmp_path, (16, 16), 8, seed=0)
    with pytest.raises(DataError) as e:
        list(dm.val_dataloader())
    assert str(bad) in str(e.value) and "not a readable image" in str(e.value)
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(DataError, match="classes \\['bird'\\] that train/ does not have"):
        scan(tmp_path, "val", ["cat", "dog"])
    with pytest.raises(DataError, match="missing: the ImageFolder layout"):
        scan(tmp_path / "nowhere", "train")


def test_the_synthetic_classification_set_crops_every_object_by_class(tmp_path):
    scenes = tmp_path / "synthetic-x"
    (scenes / "train" / "image").mkdir(parents=True)
    (scenes / "train" / "boxes").mkdir(parents=True)
    (scenes / "val" / "image").mkdir(parents=True)
    (scenes / "val" / "boxes").mkdir(parents=True)
    (scenes / "meta.json").write_text('{"object_classes": ["box", "table", "sphere", "cylinder"]}')
    image = np.zeros((40, 40, 3), np.float32)
    image[5:25, 5:25] = 1.0
    np.save(scenes / "train" / "image" / "0.npy", image)
    np.save(
        scenes / "train" / "boxes" / "0.npy", np.array([[5, 5, 25, 25, 2], [30, 30, 33, 33, 0]], np.float32)
    )
    np.save(scenes / "val" / "image" / "0.npy", image)
    np.save(scenes / "val" / "boxes" / "0.npy", np.array([[5, 5, 25, 25, 3]], np.float32))
    root = generate_crops(scenes, tmp_path / "out")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == [
        "train/sphere/0_0.png",  # the 3-pixel object is left out
        "val/cylinder/0_0.png",
    ]
    crop = np.array(Image.open(root / "train/sphere/0_0.png"))
    assert crop.shape == (26, 26, 3) and crop[3:23, 3:23].min() == 255  # 15 % margin around the 20-px box
    assert generate_crops(scenes, tmp_path / "out") == root  # generated once
    classes, _ = scan(root, "train")
    assert classes == ["box", "cylinder", "sphere", "table"]


def test_a_budget_no_composite_arch_meets_is_refused_before_training(tmp_path, cache_dir):
    from mtnas.config import validate
    from mtnas.run import Run

    cfg = compose_cfg(
        ["+experiment=mtnas_demo", "logger=none", "budget.params_max=1000"], output_dir=tmp_path
    )
    method = validate(cfg)
    with pytest.raises(ConfigError) as e:
        method.check(Run(cfg, method), ("baselines", *method.stages))
    assert e.value.key.startswith("budget.params_max")
    cfg = compose_cfg(["+experiment=mtnas_demo", "logger=none", "budget.params_max=1e9"], output_dir=tmp_path)
    method = validate(cfg)
    run = Run(cfg, method)
    method.check(run, ("baselines", *method.stages))
    assert method.stages == ("presearch", "branch", "backbone", "search", "retrain", "reference")
    # A warm-up as long as a stage would leave it no architecture step.
    method.gdas["warmup_epochs"] = 4  # the demo's branch stage trains 4 epochs
    with pytest.raises(ConfigError) as e:
        method.check(run, ("branch",))
    assert e.value.key == "method.gdas.warmup_epochs" and "branch stage trains 4 epoch(s)" in str(e.value)
    # Pre-search images smaller than the backbone's reduction (stem ×4, two reduction cells ×4).
    small = compose_cfg(["+experiment=mtnas_demo", "method.presearch.image_size=[8,8]"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="expected each side ≥ 16"):
        validate(small)


def test_the_budget_penalty_steers_the_logits_to_cheaper_cells():
    """Under `budget.params_max`, architecture steps on the expected-cost penalty alone lower the expected
    params of the derived arch and the params of the arch the logits derive."""
    genotype = [[["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]] * LAYOUT.nodes
    module = cell_search_module(
        "backbone", {"branch/semseg": genotype, "branch/depth": genotype}, budget={"params": 1000.0}
    )
    size = (32, 32)
    net = module.net
    space = CellSpace(("depth", "semseg"), OPS[1:], LAYOUT.nodes)
    low, high = net.cost(space.smallest(), size)["params"], net.cost(space.largest(), size)["params"]
    with torch.no_grad():  # logits that start out preferring the costliest op
        for name in module.arch.names:
            module.arch.table(name)[:, list(OPS[1:]).index("sep_conv_5x5")] = 1.0
    assert module.derived_arch().normal == space.largest().normal
    before = float(module.expected_cost("params", size))
    params_before = net.cost(module.derived_arch(), size)["params"]
    assert low < before < high
    opt = torch.optim.Adam(module.arch.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        module.budget_penalty(size).backward()
        opt.step()
    after = float(module.expected_cost("params", size))
    assert after < before - 0.2 * (before - low)
    assert net.cost(module.derived_arch(), size)["params"] < params_before


def test_the_presearch_stage_reads_an_image_folder_root(tmp_path, cache_dir):
    """`method.presearch.data.root=` (the ImageFolder layout, written here as PNG and JPEG files): the pre-search
    stage checks it before any work, searches the backbone cells on it, and resumes as done."""
    from mtnas.config import validate
    from mtnas.run import Run

    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet"
    for split, n in (("train", 8), ("val", 2)):
        for c, hue in (("n01440764", 0), ("n01443537", 2)):
            for i in range(n):
                arr = (rng.uniform(0, 80, (24, 32, 3)) + np.eye(3)[hue] * 150).astype(np.uint8)
                path = root / split / c / f"{c}_{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path, format="JPEG")
    overrides = [
        "+experiment=mtnas_demo",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"method.presearch.data.root={root}",
        "method.presearch.image_size=[16,16]",
        "method.presearch.batch_size=4",
        "method.presearch.max_epochs=2",
        "method.network.channels=4",
        "method.network.nodes=2",
    ]
    cfg = compose_cfg(overrides, output_dir=tmp_path / "run")
    method = validate(cfg)
    run = Run(cfg, method)
    method.check(run, ("presearch",))
    method.run_stage("presearch", run)
    fit = json.loads((tmp_path / "run/presearch/fit.json").read_text())
    assert fit["unit"] == "presearch" and fit["epochs"] == 2 and "top1" in fit["val"]["classes"]
    split = json.loads((tmp_path / "run/presearch/split.json").read_text())
    assert sorted(split["weights"] + split["arch"]) == list(range(16))
    module = method.load_stage(run, "presearch")
    assert module.net.classifier.out_features == 2 and set(module.derived()) == {"normal", "reduce"}
    # A root without val/ is refused when the run is checked, naming the folder.
    shutil.rmtree(root / "val")
    fresh = Run(compose_cfg(overrides, output_dir=tmp_path / "other"), method)
    with pytest.raises(DataError) as e:
        method.check(fresh, ("presearch",))
    assert str(root / "val") in str(e.value)
