"""AutoMTL: the block-policy supernet on timm CNNs, its policy terms, the alternating data, and the method."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mtnas.data.datamodule import AlternatingBatches
from mtnas.errors import ConfigError
from mtnas.nn.multitask import build_multitask_net
from mtnas.search.cost import count_flops, count_params
from mtnas.space.policy import OPTIONS, PolicyArch
from mtnas.supernet.policy import PolicySupernet, build_policy_subnet, policy_subnet_spec
from mtnas.tasks import build_tasks

from .conftest import compose_cfg, config_dir

SIZE = (32, 32)


def _tasks(names=("semseg", "depth")):
    available = OmegaConf.to_container(
        OmegaConf.load(Path(config_dir()) / "data" / "synthetic.yaml").available_tasks, resolve=True
    )
    return build_tasks(list(names), available)


@pytest.mark.parametrize(
    "backbone",
    ["resnet18", "resnet34", "resnet50", "mobilenetv3_large_100", "efficientnet_b0", "convnext_atto"],
)
def test_extracted_subnet_equals_the_supernet_and_its_cost_is_counted(backbone):
    # Two tasks (paths that share and split); the two deep ResNets with one, which is enough to check their
    # blocks and projections and keeps the copies cheap.
    tasks = _tasks(("depth",) if backbone in ("resnet34", "resnet50") else ("semseg", "depth"))
    torch.manual_seed(0)
    net = PolicySupernet({"name": backbone}, tasks, SIZE, {"hidden": 8}, 4).eval()
    static = build_multitask_net({"name": backbone}, tasks, SIZE, {"hidden": 8}, 4)
    shared = net.space.uniform("shared")
    # Hard sharing is the static pipeline's model on the same backbone: same parameters.
    assert net.cost(shared)["params"] == count_params(static)
    x = torch.randn(2, 3, *SIZE)
    rng = random.Random(0)
    for arch in [
        shared,
        net.space.largest(),
        net.space.smallest(),
        *(net.space.sample(rng) for _ in range(2)),
    ]:
        sub = net.extract(arch).eval()
        with torch.no_grad():
            want, got = net(x, arch), sub(x)
        for t in tasks:
            torch.testing.assert_close(got[t], want[t], rtol=1e-5, atol=1e-6)
        assert net.cost(arch) == {"params": count_params(sub), "flops": count_flops(sub, SIZE)}, (
            arch.describe()
        )


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv3_large_100"])
def test_task_batchnorm_option_keeps_the_invariants(backbone):
    tasks = _tasks(("semseg", "depth", "normal"))
    torch.manual_seed(0)
    net = PolicySupernet({"name": backbone}, tasks, SIZE, {"hidden": 8}, 4, task_bn=True).eval()
    plain = PolicySupernet({"name": backbone}, tasks, SIZE, {"hidden": 8}, 4)
    shared = net.space.uniform("shared")
    # Hard sharing with a BatchNorm per task: the static model's params plus two more copies of every block's norms.
    assert net.cost(shared)["params"] == plain.cost(shared)["params"] + 2 * sum(net.costs["params"]["bn"])
    x = torch.randn(2, 3, *SIZE)
    rng = random.Random(1)
    for arch in [shared, *(net.space.sample(rng) for _ in range(2))]:
        sub = net.extract(arch).eval()
        with torch.no_grad():
            want, got = net(x, arch), sub(x)
        for t in tasks:
            torch.testing.assert_close(got[t], want[t], rtol=1e-5, atol=1e-6)
        assert net.cost(arch) == {"params": count_params(sub), "flops": count_flops(sub, SIZE)}
        spec = policy_subnet_spec(arch, {"backbone": {"name": backbone}, "head": {"hidden": 8}}, task_bn=True)
        rebuilt = build_policy_subnet(
            **{k: v for k, v in spec.items() if k != "_target_"}, tasks=tasks, image_size=SIZE
        )
        rebuilt.load_state_dict(sub.state_dict())  # the same modules: inherited weights load into a retrain
    # A policy certain of `shared` expects exactly that arch's params and FLOPs, per-task norms included.
    with torch.no_grad():
        net.policy_logits.copy_(torch.tensor([50.0, -50.0, -50.0]).expand_as(net.policy_logits))
    for key in ("params", "flops"):
        assert float(net.expected_cost(key).detach()) == pytest.approx(net.cost(shared)[key], rel=1e-6), key
    # Each task runs the shared blocks with its own norms: changing depth's statistics changes depth alone.
    with torch.no_grad():
        before = net(x, shared)
        for m in net.modules():
            if type(m).__name__ == "TaskBatchNorm":
                m.norms["depth"].running_mean.add_(1.0)
        after = net(x, shared)
    assert torch.equal(after["semseg"], before["semseg"]) and not torch.equal(after["depth"], before["depth"])


def test_options_build_what_they_say():
    tasks = _tasks(("semseg", "depth", "normal"))
    net = PolicySupernet({"name": "resnet18"}, tasks, SIZE, {"hidden": 8}, 4).eval()
    n = len(net.space.nodes)
    assert n == 8 and net.space.nodes[0] == "layer1.0"  # ResNet-18: 4 stages × 2 basic blocks after the stem
    # normal skips every block: its path is the stem plus the 1×1 projections where a block changes shape.
    arch = net.space.arch(lambda i, t: "skip" if t == "normal" else "shared")
    sub = net.extract(arch)
    assert set(sub.skip) == {"2", "4", "6"}  # the first block of layer2..4 changes channels and stride
    assert set(sub.shared) == {str(i) for i in range(n)} and len(sub.specific) == 0
    everything_skipped = net.space.uniform("skip")
    assert net.cost(everything_skipped)["params"] == (
        net.costs["params"]["fixed"] + sum(net.costs["params"]["heads"]) + sum(net.costs["params"]["skip"])
    )
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        a = net(x, arch)
        b = net(x, net.space.uniform("shared"))
    assert torch.equal(a["semseg"], b["semseg"]) and not torch.equal(a["normal"], b["normal"])
    # One task specific everywhere: one copy of every block, the shared blocks stay for the other tasks.
    one = net.space.arch(lambda i, t: "specific" if t == "depth" else "shared")
    assert net.cost(one)["params"] == net.cost(net.space.uniform("shared"))["params"] + sum(
        net.costs["params"]["node"]
    )


def test_arch_yaml_round_trip_and_space_checks(tmp_path):
    tasks = _tasks()
    net = PolicySupernet({"name": "resnet18"}, tasks, SIZE, {"hidden": 8}, 4)
    arch = net.space.sample(random.Random(3))
    assert PolicyArch.from_dict(arch.to_dict()) == arch
    path = tmp_path / "arch.yaml"
    import yaml

    path.write_text(yaml.safe_dump(arch.to_dict()))
    assert net.space.read_arch(path) == arch
    bad = arch.to_dict()
    bad["blocks"][0]["depth"] = "shard"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="shard"):
        net.space.read_arch(path)
    other = PolicySupernet({"name": "mobilenetv3_small_100"}, tasks, SIZE, {"hidden": 8}, 4)
    path.write_text(yaml.safe_dump(arch.to_dict()))
    with pytest.raises(ConfigError, match="another backbone"):
        other.space.read_arch(path)
    spec = policy_subnet_spec(arch, {"backbone": {"name": "resnet18"}, "head": {"hidden": 8}})
    rebuilt = build_policy_subnet(
        **{k: v for k, v in spec.items() if k != "_target_"}, tasks=tasks, image_size=SIZE
    )
    assert count_params(rebuilt) == net.cost(arch)["params"]


def test_regulariser_and_expected_cost_match_hand_computed_values():
    tasks = _tasks()
    net = PolicySupernet({"name": "resnet18"}, tasks, SIZE, {"hidden": 8}, 4)
    g = torch.randn(net.policy_logits.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.policy_logits.copy_(g)
    depth, num_tasks = g.shape[:2]
    s = 2.0
    want = 0.0
    for v in range(depth):
        for t in range(num_tasks):
            sp, sh, sk = float(g[v, t, 1]), float(g[v, t, 0]), float(g[v, t, 2])
            want += (
                (depth - v)
                / depth
                * (math.log1p(math.exp(s * (sp - sh))) + math.log1p(math.exp(s * (sk - sh))))
            )
    assert float(net.sharing_regulariser(s).detach()) == pytest.approx(want, rel=1e-5)
    # Expected params: every arch's exact params weighted by its probability (2 tasks, tiny enumeration per node).
    p = F.softmax(g, -1)
    c = net.costs["params"]
    want = c["fixed"] + sum(c["heads"])
    for v in range(depth):
        for a in OPTIONS:
            for b in OPTIONS:
                prob = float(p[v, 0, OPTIONS.index(a)] * p[v, 1, OPTIONS.index(b)])
                used = {a, b}
                cost = c["node"][v] * ("shared" in used) + c["skip"][v] * ("skip" in used)
                cost += c["node"][v] * [a, b].count("specific")
                want += prob * cost
    assert float(net.expected_cost("params").detach()) == pytest.approx(want, rel=1e-6)
    assert net.expected_cost("params").requires_grad
    # FLOPs: a policy certain of one arch expects that arch's FLOPs where tasks share the path so far.
    for option in ("shared", "specific", "skip"):
        with torch.no_grad():
            net.policy_logits.copy_(
                torch.where(torch.arange(3) == OPTIONS.index(option), 50.0, -50.0).expand_as(g)
            )
        arch = net.space.uniform(option)
        expected = float(net.expected_cost("flops").detach())
        assert expected == pytest.approx(net.cost(arch)["flops"], rel=1e-6), option


def test_straight_through_gates_change_nothing_in_value_and_reach_the_logits():
    tasks = _tasks()
    net = PolicySupernet({"name": "resnet18"}, tasks, SIZE, {"hidden": 8}, 4).eval()
    torch.manual_seed(0)
    gates = net.gumbel_gates(tau=5.0)
    x = torch.randn(1, 3, *SIZE)
    out = net(x, gates=gates)
    chosen = net.arch_of(gates.detach().argmax(-1))
    with torch.no_grad():
        plain = net(x, chosen)
    for t in tasks:
        torch.testing.assert_close(out[t], plain[t])
    sum(o.square().mean() for o in out.values()).backward()
    assert net.policy_logits.grad is not None and net.policy_logits.grad.abs().sum() > 0
    # A task's logits learn from its own loss only, even where the tasks share every block.
    net.zero_grad()
    shared = torch.zeros_like(gates)
    shared[..., 0] = 1
    gates = shared + net.policy_logits - net.policy_logits.detach()  # one-hot `shared`, with gradients
    net(x, gates=gates)["semseg"].square().mean().backward()
    order = net.space.tasks
    assert net.policy_logits.grad[:, order.index("semseg")].abs().sum() > 0
    assert net.policy_logits.grad[:, order.index("depth")].abs().sum() == 0


def _policy_module_args() -> dict:
    """A small PolicyLitModule's arguments: the demo's policy settings, resnet18, two tasks."""
    cfg = compose_cfg(["+experiment=automtl_demo"])
    return dict(
        tasks=["semseg", "depth"],
        available_tasks=OmegaConf.to_container(cfg.data.available_tasks, resolve=True),
        model={"backbone": {"name": "resnet18"}, "head": {"hidden": 8}},
        policy=OmegaConf.to_container(cfg.method.policy, resolve=True),
        optim={"lr": 1e-3},
        loss={},
        image_size=SIZE,
    )


def test_budget_penalty_is_zero_within_the_budget_and_steers_the_policy_below_it():
    from mtnas.lit.policy import PolicyLitModule

    roomy = PolicyLitModule(**_policy_module_args(), budget={"params": 1e12})
    assert float(roomy.budget_penalty()) == 0.0
    tight = PolicyLitModule(**_policy_module_args(), budget={"params": 5e6})
    expected = tight.net.expected_cost("params")
    assert float(tight.budget_penalty().detach()) == pytest.approx(
        float(expected.detach()) / 5e6 - 1, rel=1e-6
    )
    opt = torch.optim.Adam(tight.net.policy_parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        tight.budget_penalty().backward()
        opt.step()
    assert float(tight.net.expected_cost("params").detach()) < float(expected.detach())


def test_temperature_decays_per_policy_round():
    from mtnas.lit.policy import PolicyLitModule

    args = _policy_module_args()
    module = PolicyLitModule(
        **{**args, "policy": {**args["policy"], "tau": 5.0, "tau_decay": 0.5, "policy_steps": 4}}
    )
    for steps, tau in [(0, 5.0), (3, 5.0), (4, 2.5), (9, 1.25)]:
        module.policy_steps.fill_(steps)
        assert module.tau == pytest.approx(tau)


def test_alternating_batches_are_deterministic_disjoint_and_in_rounds():
    subsets = ([0, 2, 4, 6, 8, 10], [1, 3, 5, 7])
    epoch = torch.zeros((), dtype=torch.long)
    sampler = AlternatingBatches(subsets, (2, 1), 2, seed=0, epoch=epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    assert [b[0][0] for b in batches] == [0, 0, 1, 0, 0]  # 2 batches of the first subset, 1 of the second
    for batch in batches:
        k = batch[0][0]
        assert all(s == k and i in subsets[k] for s, i in batch)
    assert batches == list(AlternatingBatches(subsets, (2, 1), 2, seed=0, epoch=epoch))
    epoch.fill_(1)  # the phase runs on across epochs: epoch 1 starts at batch 5 of the fit
    assert [b[0][0] for b in sampler] == [1, 0, 0, 1, 0]
    # Under DDP each of 2 processes takes its half of the same global batch of 2 × 2.
    ranks = [list(AlternatingBatches(subsets, (1, 1), 2, 0, epoch, rank=r, world=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    for a, b in zip(*ranks, strict=True):
        assert a[0][0] == b[0][0] and len(a) == len(b) == 2 and not {i for _, i in a} & {i for _, i in b}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("method.policy.tau=0", "method.policy.tau"),
        ("method.policy.tau_decay=1.5", "method.policy.tau_decay"),
        ("method.policy.weight_steps=0", "method.policy.weight_steps"),
        ("method.policy.policy_steps=-1", "method.policy.policy_steps"),
        ("method.policy.lr=-0.1", "method.policy.lr"),
        ("method.policy.weight_decay=-1", "method.policy.weight_decay"),
        ("method.policy.share_weight=abc", "method.policy.share_weight"),
        ("method.policy.reg_slope=0", "method.policy.reg_slope"),
        ("method.policy.budget_weight=-1", "method.policy.budget_weight"),
        ("method.policy.split=1.0", "method.policy.split"),
        ("method.policy.sampling=gumbel", "method.policy.sampling"),
        ("method.policy.options=[specific,skip]", "method.policy.options"),
        ("method.policy.max_epochs=0", "method.policy.max_epochs"),
        ("method.policy.task_bn=maybe", "method.policy.task_bn"),
        ("method.pretrain.max_epochs=-2", "method.pretrain.max_epochs"),
        ("method.derive.samples=-1", "method.derive.samples"),
        ("method.derive.pick=worst", "method.derive.pick"),
        ("method.derive.val_batches=0", "method.derive.val_batches"),
        ("method.retrain.init=random", "method.retrain.init"),
        ("method.retrain.max_epochs=0", "method.retrain.max_epochs"),
        ("model.backbone.name=resnet_nope", "model.backbone.name"),
        ("model=vit_tiny", "model.backbone.name"),
        ("loss.weighting=uncertainty", "loss.weighting"),
        ("search.objectives=[foo]", "search.objectives"),
        ("search.objectives=flops", "search.objectives"),
        ("+trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val"),
    ],
)
def test_every_automtl_key_refuses_a_bad_value(tmp_path, override, key):
    from mtnas.methods.base import build_method
    from mtnas.run import Run

    cfg = compose_cfg(["+experiment=automtl_demo", override], output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        method = build_method(cfg)
        method.check(
            Run(cfg, method), ("derive",)
        )  # the backbone is split at check (it needs the image size)
    assert f"`{key}`" in str(err.value)


def test_local_timm_weights_initialise_shared_and_specific_copies(tmp_path):
    import timm

    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(7)
    torch.save(timm.create_model("resnet18").state_dict(), weights)
    reference = torch.load(weights)["layer1.0.conv1.weight"]
    torch.manual_seed(0)  # another init: only the file can make the copies equal to it
    net = PolicySupernet({"name": "resnet18", "checkpoint": str(weights)}, _tasks(), SIZE, {"hidden": 8}, 4)
    torch.testing.assert_close(net.shared["0"].conv1.weight, reference)
    for copy in net.specific["0"].values():
        torch.testing.assert_close(copy.conv1.weight, reference)
    with pytest.raises(ConfigError, match="model.backbone.checkpoint"):
        PolicySupernet({"name": "resnet18", "checkpoint": str(tmp_path / "missing.pth")}, _tasks(), SIZE)


def test_train_split_is_drawn_from_the_seed_alone(cache_dir):
    from mtnas.data.datamodule import MultiTaskDataModule

    cfg = compose_cfg(
        [
            "+experiment=automtl_demo",
            "data.synthetic.num_train=40",
            "data.synthetic.height=32",
            "data.synthetic.width=32",
        ]
    )
    data = OmegaConf.to_container(cfg.data, resolve=True)
    dm = MultiTaskDataModule(data, list(cfg.tasks), cache_dir=cache_dir, progress=False)
    a, b = dm.split_train(0.5, seed=3)
    assert len(a) == len(b) == 20 and not set(a) & set(b) and sorted(a + b) == list(range(40))
    assert dm.split_train(0.5, seed=3) == (a, b)
    assert dm.split_train(0.5, seed=4) != (a, b)
    assert len(dm.split_train(0.25, seed=3)[0]) == 10


def test_options_outside_the_space_are_not_built():
    tasks = _tasks()
    net = PolicySupernet({"name": "resnet18"}, tasks, SIZE, {"hidden": 8}, 4, options=("shared", "skip"))
    assert len(net.specific) == 0 and len(net.skip) == 3
    assert net.export() == net.space.uniform("shared")
    assert all(o in ("shared", "skip") for row in net.sample_arch(torch.Generator()).choices for _, o in row)


def test_a_policy_trained_with_other_settings_is_refused(tmp_path):
    from types import SimpleNamespace

    from mtnas.methods.base import build_method

    method = build_method(compose_cfg(["+experiment=automtl_demo"], output_dir=tmp_path))
    trained = SimpleNamespace(
        hparams=SimpleNamespace(model=dict(method.model), policy={**method.policy, "task_bn": True})
    )
    with pytest.raises(ConfigError) as err:
        method.check_same_supernet(trained, tmp_path / "policy/last.ckpt", "supernet_ckpt")
    assert "`supernet_ckpt`" in str(err.value) and "task_bn=True" in str(err.value)
    trained.hparams.policy["task_bn"] = False
    trained.hparams.model = {**method.model, "backbone": {"name": "resnet18"}}
    with pytest.raises(ConfigError, match="model.backbone.name='resnet18'"):
        method.check_same_supernet(trained, tmp_path / "policy/last.ckpt", None)
