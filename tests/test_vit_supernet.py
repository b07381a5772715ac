"""ViT search space + supernet: ops stay in the space, extraction is exact, timm weights load, cost is exact."""

from __future__ import annotations

import random

import pytest
import timm
import torch
import yaml

from mtnas.search.cost import count_params
from mtnas.space import ViTArch, ViTSpace
from mtnas.supernet import ViTSupernet
from mtnas.supernet.vit import feature_layers, mlp_hidden

TASKS = ("semseg", "depth")
OUT = {"semseg": 5, "depth": 1}
IMG = (32, 48)


def tiny_space(**kw) -> ViTSpace:
    return ViTSpace(
        tasks=TASKS,
        embed_dims=(24, 32),
        depths=(3, 4),
        num_heads=(2, 4),
        mlp_ratios=(1.0, 2.0),
        head_hidden=(8, 16),
        **kw,
    )


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    net = ViTSupernet(tiny_space(), OUT, IMG, patch_size=8).eval()
    # Task-specific copies start equal to the shared blocks; perturb them so a wrong route is detected.
    with torch.no_grad():
        for per_task in net.task_blocks.values():
            for block in per_task.values():
                for p in block.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
    return net


def test_space_ops_stay_in_space_and_are_seeded():
    space = tiny_space()
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(30)]
    for a, b in zip(archs, archs[1:], strict=False):
        assert space.contains(a)
        assert space.contains(space.mutate(a, rng))
        assert space.contains(space.crossover(a, b, rng))
        assert len(space.encode(a)) == len(space.encode(b))
    assert space.contains(space.largest()) and space.contains(space.smallest())
    assert space.contains(space.largest(task_specific=True))
    again = [space.sample(random.Random(0)) for _ in range(1)]
    assert again[0] == archs[0]
    assert len(set(archs)) > 20  # hashable and diverse


def test_specific_layers_restrict_task_copies():
    space = tiny_space(specific_layers=(2, 3))
    rng = random.Random(1)
    for _ in range(20):
        a = space.sample(rng)
        assert not a.task_specific[0] and not a.task_specific[1]
    bad = ViTArch.from_dict(
        {
            **space.largest().to_dict(),
            "layers": [{"num_heads": 4, "mlp_ratio": 2.0, "task_specific": ["depth"]}] * 4,
        }
    )
    assert not space.contains(bad)


def test_arch_yaml_round_trip():
    arch = tiny_space().sample(random.Random(3))
    text = yaml.safe_dump(arch.to_dict(), sort_keys=False)
    assert ViTArch.from_dict(yaml.safe_load(text)) == arch
    assert "task_specific" in text and "embed_dim" in text  # readable, editable


def test_arch_one_line_description_names_every_choice():
    arch = ViTArch(
        embed_dim=32,
        depth=3,
        num_heads=(2, 4, 2),
        mlp_ratio=(1.0, 2.0, 1.5),
        task_specific=(frozenset(), frozenset({"semseg", "depth"}), frozenset()),
        head_hidden=(("depth", 8), ("semseg", 16)),
    )
    assert arch.describe() == ("d3 e32 · heads 2,4,2 · mlp 1,2,1.5 · specific L2:depth+semseg · head 8/16")


def test_extracted_subnet_equals_supernet_for_random_archs(supernet):
    space = supernet.space
    rng = random.Random(0)
    x = torch.randn(2, 3, *IMG)
    archs = [space.largest(), space.smallest(), space.largest(task_specific=True)] + [
        space.sample(rng) for _ in range(8)
    ]
    for arch in archs:
        with torch.no_grad():
            ref = supernet(x, arch)
            static = supernet.extract(arch).eval()
            out = static(x)
        for t in TASKS:
            assert out[t].shape == (2, OUT[t], *IMG)
            torch.testing.assert_close(out[t], ref[t], rtol=1e-5, atol=1e-5)
        assert count_params(static) == supernet.cost(arch)["params"]


def test_task_specific_choice_changes_the_output(supernet):
    shared = supernet.space.largest()
    specific = ViTArch.from_dict(
        {
            **shared.to_dict(),
            "layers": [
                {"num_heads": 4, "mlp_ratio": 2.0, "task_specific": ["depth"] if i == 3 else []}
                for i in range(4)
            ],
        }
    )
    x = torch.randn(1, 3, *IMG)
    with torch.no_grad():
        a, b = supernet(x, shared), supernet(x, specific)
    torch.testing.assert_close(a["semseg"], b["semseg"])  # semseg's path is unchanged
    assert not torch.allclose(a["depth"], b["depth"])


def test_tasks_on_one_path_run_each_block_once(supernet):
    calls = []
    hooks = [b.register_forward_hook(lambda m, i, o: calls.append(1)) for b in supernet.blocks]
    try:
        with torch.no_grad():
            supernet(torch.randn(1, 3, *IMG), supernet.space.largest())
    finally:
        for h in hooks:
            h.remove()
    assert len(calls) == 4  # 4 layers, 2 tasks, one shared path


def test_loads_timm_vit_and_reproduces_its_features():
    space = ViTSpace(
        tasks=TASKS, embed_dims=(32,), depths=(3,), num_heads=(4,), mlp_ratios=(2.0,), head_hidden=(8,)
    )
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=IMG,
        patch_size=8,
        embed_dim=32,
        depth=3,
        num_heads=4,
        mlp_ratio=2.0,
        num_classes=0,
    ).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # timm zero-inits some tensors; make every weight count
    net = ViTSupernet(space, OUT, IMG, patch_size=8).eval()
    net.load_timm_vit(vit)
    x = torch.randn(2, 3, *IMG)
    layers = feature_layers(3)
    with torch.no_grad():
        theirs = vit.forward_intermediates(
            x, indices=layers, norm=True, output_fmt="NCHW", intermediates_only=True
        )
        mine = net.forward_features(x, space.largest())
    for t in TASKS:
        for a, b in zip(mine[t], theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_from_arch_skeleton_takes_inherited_weights_and_flops_are_exact(supernet):
    from mtnas.search.cost import count_flops
    from mtnas.supernet import StaticMultiTaskViT

    space = supernet.space
    rng = random.Random(5)
    for arch in [space.largest(task_specific=True), *[space.sample(rng) for _ in range(4)]]:
        skeleton = StaticMultiTaskViT.from_arch(arch, OUT, IMG, 8, space.head_dim).eval()
        extracted = supernet.extract(arch).eval()
        skeleton.load_state_dict(extracted.state_dict())  # strict: same structure, same names
        x = torch.randn(1, 3, *IMG)
        with torch.no_grad():
            torch.testing.assert_close(skeleton(x)["depth"], extracted(x)["depth"])
        assert count_flops(extracted, IMG) == supernet.cost(arch)["flops"]


def test_image_level_task_pooled_head_extracts_exactly_and_costs_are_exact():
    from mtnas.search.cost import count_flops
    from mtnas.supernet import StaticMultiTaskViT

    out = {"semseg": 5, "depth": 1, "scene": 11}
    space = ViTSpace(
        tasks=(*TASKS, "scene"),
        embed_dims=(24, 32),
        depths=(3, 4),
        num_heads=(2, 4),
        mlp_ratios=(1.0, 2.0),
        head_hidden=(8, 16),
    )
    torch.manual_seed(0)
    net = ViTSupernet(space, out, IMG, patch_size=8, image_level={"scene"}).eval()
    rng = random.Random(2)
    x = torch.randn(2, 3, *IMG)
    for arch in [space.largest(task_specific=True), *[space.sample(rng) for _ in range(3)]]:
        sub = net.extract(arch).eval()
        with torch.no_grad():
            want, got = net(x, arch), sub(x)
        assert got["scene"].shape == (2, 11) and got["depth"].shape == (2, 1, *IMG)
        for t in out:
            torch.testing.assert_close(got[t], want[t], rtol=1e-5, atol=1e-5)
        assert count_params(sub) == net.cost(arch)["params"]
        assert count_flops(sub, IMG) == net.cost(arch)["flops"]
        skeleton = StaticMultiTaskViT.from_arch(arch, out, IMG, 8, space.head_dim, image_level={"scene"})
        skeleton.load_state_dict(sub.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(skeleton.eval()(x)["scene"], got["scene"])


def tiny_supernet_module(loss=None, **supernet):
    """A two-task supernet module of a tiny ViT space, and a loader of one 2-image batch."""
    from mtnas.lit.supernet import SupernetLitModule

    available = {"semseg": {"type": "semseg", "num_classes": 5}, "depth": {"type": "depth"}}
    space = {
        "_target_": "mtnas.space.vit.ViTSpace",
        "embed_dims": [24, 32],
        "depths": [3, 4],
        "num_heads": [2, 4],
        "mlp_ratios": [1.0, 2.0],
        "head_hidden": [8, 16],
    }
    module = SupernetLitModule(
        ["semseg", "depth"],
        available,
        space,
        {"patch_size": 8, "num_random": 3, **supernet},
        {"lr": 1e-2, "scheduler": "none"},
        loss or {},
        IMG,
        seed=0,
    )
    batch = {
        "image": torch.randn(2, 3, *IMG),
        "semseg": torch.randint(0, 5, (2, *IMG)),
        "depth": torch.rand(2, 1, *IMG) + 0.5,
    }
    loader = torch.utils.data.DataLoader(
        [{k: v[i] for k, v in batch.items()} for i in range(2)], batch_size=2
    )
    return module, loader


def quiet_trainer(**kwargs):
    import pytorch_lightning as pl

    return pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_sandwich_step_trains_largest_smallest_and_random_archs():
    module, loader = tiny_supernet_module()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    quiet_trainer(max_steps=1).fit(module, train_dataloaders=loader)
    after = module.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("net.blocks.3.") for k in changed)  # largest arch: the 4th layer
    assert any(k.startswith("net.heads.semseg.8.") for k in changed)  # smallest arch's head
    assert any(k.startswith("net.task_blocks.") for k in changed)  # random archs train task-specific copies


def test_uncertainty_weighting_learns_one_log_variance_per_task_across_the_sandwich(tmp_path):
    from mtnas.lit.supernet import SupernetLitModule

    module, loader = tiny_supernet_module(loss={"weighting": "uncertainty"})
    assert torch.equal(module.log_vars.detach(), torch.zeros(2))
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(module, train_dataloaders=loader)
    learnt = module.log_vars.detach()
    assert (learnt != 0).all()  # each task's log σ² moved, trained by every sampled subnet's loss
    assert set(trainer.logged_metrics) >= {"train/semseg/log_var", "train/depth/log_var"}
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    torch.testing.assert_close(
        SupernetLitModule.load_from_checkpoint(tmp_path / "s.ckpt").log_vars.detach(), learnt
    )
    fixed, _ = tiny_supernet_module()
    assert not hasattr(fixed, "log_vars")


def test_shared_warmup_trains_shared_blocks_then_branches_task_blocks_from_them(tmp_path):
    import pytorch_lightning as pl

    from mtnas.lit.supernet import SupernetLitModule

    module, loader = tiny_supernet_module(shared_warmup=0.5)
    initial = {k: v.clone() for k, v in module.net.task_blocks.state_dict().items()}
    seen = {}

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:  # after the warm-up epoch, before epoch 1 trains anything
                net, state = pl_module.net, trainer.optimizers[0].state
                seen["sampled_specific"] = any(any(a.task_specific) for a in pl_module.sample_archs())
                seen["task_blocks"] = {k: v.clone() for k, v in net.task_blocks.state_dict().items()}
                seen["shared"] = {k: v.clone() for k, v in net.blocks.state_dict().items()}
                shared, copy = net.blocks[0].qkv.weight, net.task_blocks["depth"]["0"].qkv.weight
                seen["moments_equal"] = torch.equal(state[shared]["exp_avg"], state[copy]["exp_avg"])

        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                seen["warmup_archs"] = pl_module.sample_archs()
                seen["after_warmup"] = {
                    k: v.clone() for k, v in pl_module.net.task_blocks.state_dict().items()
                }

    trainer = quiet_trainer(max_epochs=2, callbacks=[Probe()])
    trainer.fit(module, train_dataloaders=loader)
    # The warm-up samples shared archs only and leaves the task blocks as they were initialised.
    assert not any(any(a.task_specific) for a in seen["warmup_archs"])
    assert all(torch.equal(initial[k], v) for k, v in seen["after_warmup"].items())
    # Then every task block starts from its shared block, Adam moments included, and is sampled again.
    for name, value in seen["task_blocks"].items():  # "<task>.<layer>.<param>" vs "<layer>.<param>"
        torch.testing.assert_close(value, seen["shared"][name.split(".", 1)[1]], rtol=0, atol=0)
    assert len(seen["task_blocks"]) == 2 * len(seen["shared"])
    assert seen["moments_equal"] and seen["sampled_specific"]
    # Saved in the checkpoint: a run resumed after the branching does not copy over the trained task blocks.
    ckpt = tmp_path / "s.ckpt"
    trainer.save_checkpoint(ckpt)
    assert module.task_blocks_branched and SupernetLitModule.load_from_checkpoint(ckpt).task_blocks_branched


def test_task_specific_largest_trains_every_task_copy_at_every_step_after_the_warmup():
    import pytorch_lightning as pl

    module, loader = tiny_supernet_module(shared_warmup=0.5, task_specific_largest=True, num_random=0)
    specific = module.space.largest(task_specific=True)
    seen = {}

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:  # just branched: the task blocks equal their shared blocks
                seen["branched"] = {k: v.clone() for k, v in pl_module.net.task_blocks.state_dict().items()}
            seen[trainer.current_epoch] = pl_module.sample_archs()

    quiet_trainer(max_epochs=2, callbacks=[Probe()]).fit(module, train_dataloaders=loader)
    assert specific not in seen[0] and specific in seen[1]
    assert seen[1][:2] == [module.space.largest(), module.space.smallest()]
    # With no random archs, only the task-specific largest arch can have moved the task copies: all of them.
    after = module.net.task_blocks.state_dict()
    moved = {".".join(k.split(".")[:2]) for k, v in seen["branched"].items() if not torch.equal(v, after[k])}
    assert moved == {f"{t}.{i}" for t in ("semseg", "depth") for i in range(4)}


def test_largest_sharing_sampled_draws_the_largest_archs_task_copies_at_each_step_after_the_warmup():
    """With `largest_sharing: sampled` no sharing pattern of the largest size trains at every step: the sandwich's
    largest arch keeps its sizes and draws its task-specific layers; by default it stays hard sharing."""
    import pytorch_lightning as pl

    def largest_archs_sampled(**supernet) -> dict[int, list]:
        module, loader = tiny_supernet_module(shared_warmup=0.5, num_random=0, **supernet)
        seen = {0: [], 1: []}

        class Probe(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                seen[trainer.current_epoch] += [pl_module.sample_archs()[0] for _ in range(8)]

        quiet_trainer(max_epochs=2, callbacks=[Probe()]).fit(module, train_dataloaders=loader)
        return seen

    largest = tiny_supernet_module()[0].space.largest()
    sampled = largest_archs_sampled(largest_sharing="sampled")
    assert set(sampled[0]) == {largest}  # the warm-up trains shared blocks only
    assert all(a.hard_sharing() == largest for a in sampled[1])
    assert len(set(sampled[1])) > 4
    assert largest_archs_sampled() == {0: [largest] * 8, 1: [largest] * 8}


def test_supernet_starts_from_timm_weights_given_in_config(tmp_path, cache_dir):
    from mtnas.errors import ConfigError
    from mtnas.pipeline import Pipeline

    from .conftest import TINY, compose_cfg

    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=(32, 32),
        patch_size=8,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=3.0,
        num_classes=0,
    )
    weights = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), weights)
    overrides = [
        *TINY,
        "+experiment=demo",
        "tasks=[depth]",
        f"supernet.timm_init={{model: vit_tiny_patch16_224, checkpoint: {weights}}}",
    ]
    cfg = compose_cfg(overrides, output_dir=tmp_path / "run")
    pipeline = Pipeline(cfg)
    method, run = pipeline.method, pipeline.run
    module = method.supernet_module(run)
    method.init_from_timm(
        run, module
    )  # a 32×32 checkpoint into 64×64 inputs: timm resamples the position embedding
    torch.testing.assert_close(module.net.blocks[2].fc1.weight, vit.blocks[2].mlp.fc1.weight)
    torch.testing.assert_close(module.net.task_blocks["depth"]["1"].qkv.weight, vit.blocks[1].attn.qkv.weight)
    assert module.net.embed.pos_embed.shape[1] == 1 + 8 * 8

    small = tmp_path / "small.pth"
    torch.save(
        timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            img_size=(32, 32),
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            num_classes=0,
        ).state_dict(),
        small,
    )
    method.supernet["timm_init"]["checkpoint"] = str(small)
    with pytest.raises(ConfigError, match="supernet.timm_init"):
        method.init_from_timm(run, module)


def test_compiled_block_variants_match_eager_one_graph_per_block_shape():
    """`supernet.compile`: one compiled variant per distinct block shape, shared by every block and arch,
    numerically the eager supernet (checked with Dynamo's `eager` backend: the variant bookkeeping is the
    point here, not inductor's kernels, which the GPU benchmark measures)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    space = ViTSpace(
        tasks=("a", "b"),
        embed_dims=(48, 64),
        depths=(3, 4),
        num_heads=(2, 4),
        mlp_ratios=(2.0, 3.0),
        head_hidden=(16,),
    )
    torch.manual_seed(0)
    sup = ViTSupernet(space, {"a": 3, "b": 1}, (32, 32), 8)
    x = torch.randn(2, 3, 32, 32)
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(8)]
    ref = [sup(x, a) for a in archs]
    grads_ref = torch.autograd.grad(sum(v.sum() for v in ref[0].values()), sup.blocks[0].qkv.weight)
    torch._dynamo.reset()
    counters.clear()
    try:
        sup.compile_blocks(backend="eager")
        out = [sup(x, a) for a in archs]
        for o, r in zip(out, ref, strict=True):
            for t in o:
                torch.testing.assert_close(o[t], r[t], rtol=0, atol=0)
        grads = torch.autograd.grad(sum(v.sum() for v in out[0].values()), sup.blocks[0].qkv.weight)
        torch.testing.assert_close(grads[0], grads_ref[0])
        shapes = {
            (a.embed_dim, a.num_heads[i], mlp_hidden(a.embed_dim, a.mlp_ratio[i]))
            for a in archs
            for i in range(a.depth)
        }
        assert counters["stats"]["unique_graphs"] == len(shapes)
        [sup(x, a) for a in archs]  # every variant exists now: no new graph
        assert counters["stats"]["unique_graphs"] == len(shapes)
    finally:
        torch._dynamo.reset()
