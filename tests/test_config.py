"""Compose every shipped config; every bad value gives a ConfigError naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from mtnas.cli import config_dir
from mtnas.config import validate
from mtnas.errors import ConfigError, DataError

from .conftest import compose_cfg

EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
GROUPS = {
    g: sorted(p.stem for p in (Path(config_dir()) / g).glob("*.yaml"))
    for g in ("data", "model", "trainer", "logger", "method", "space", "search", "search_size", "budget")
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name, tmp_path, monkeypatch):
    cfg = compose_cfg([f"+experiment={name}", f"data.root={tmp_path}"])
    assert cfg.experiment_name == name
    OmegaConf.to_container(cfg.data, resolve=True)
    if cfg.data.name == "synthetic":
        cfg.data.root = None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # GPU recipes are valid on GPU machines
    method = validate(cfg)
    if hasattr(
        method, "strategy"
    ):  # a strategy-searching recipe runs with every strategy (others' keys ignored)
        for strategy in ("nsga2", "random"):
            other = compose_cfg([f"+experiment={name}", f"data.root={tmp_path}", f"search={strategy}"])
            if other.data.name == "synthetic":
                other.data.root = None
            assert validate(other).strategy.name == strategy


def test_the_demo_recipes_pass_their_strategy_only_its_own_settings(caplog):
    """`demo` sizes its evolution (`search_size=demo`); `demo_sharing` samples at random instead and drops those
    sizes, so neither recipe warns of settings its strategy ignores."""
    demo = validate(compose_cfg(["+experiment=demo"]))
    assert (demo.strategy.name, demo.strategy.population, demo.strategy.generations) == ("evolution", 16, 4)
    sharing = validate(compose_cfg(["+experiment=demo_sharing"]))
    assert (sharing.strategy.name, sharing.strategy.num_candidates) == ("random", 74)
    assert (sharing.strategy.finetune_top, sharing.strategy.finetune_local) == (8, 8)
    assert "not a setting" not in caplog.text and "not settings" not in caplog.text
    # An earlier row of experiments/autotaskformer: the demo's evolution again.
    earlier = validate(compose_cfg(["+experiment=demo_sharing", "search=evolution", "search_size=demo"]))
    assert (earlier.strategy.name, earlier.strategy.population) == ("evolution", 16)


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_cuda_says_use_trainer_cpu(trainer, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg([f"trainer={trainer}"]))
    assert e.value.key == "trainer.accelerator"
    assert "trainer=cpu" in str(e.value)
    validate(compose_cfg([f"trainer={trainer}", "trainer=cpu"]))


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_cfg([f"{group}={option}", f"data.root={tmp_path}"])
    key = {"search_size": "search"}.get(group, group)  # a group that adds to another's package
    assert cfg[key] is not None
    OmegaConf.to_container(cfg[key], resolve=True)


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in ("model", "space", "search", "method", "budget") for o in GROUPS[g]]
)
def test_every_spec_config_instantiates(group, option):
    """Every `_target_` config builds its object (models with the run's tasks and image size)."""
    from mtnas.lit.multitask import build_model
    from mtnas.methods.base import Method, build_method
    from mtnas.search.budget import Budget
    from mtnas.search.problem import Strategy
    from mtnas.space import build_space
    from mtnas.tasks import build_tasks
    from mtnas.utils.specs import instantiate_spec

    space = [] if group == "space" or option == "static" else ["space=vit_demo"]
    cfg = compose_cfg([f"{group}={option}", *space])
    tasks = build_tasks(list(cfg.tasks), OmegaConf.to_container(cfg.data.available_tasks))
    if group == "model":
        out = build_model(cfg.model, tasks, (64, 64))(torch.zeros(1, 3, 64, 64))
        assert {t: v.shape[1] for t, v in out.items()} == {t: task.out_channels for t, task in tasks.items()}
    elif group == "space":
        built = build_space(cfg.space, list(tasks))
        assert built.contains(built.largest(task_specific=True)) and built.contains(built.smallest())
        assert cfg.method._target_.endswith("OneShotMethod")  # a ViT space selects the one-shot method
    elif group == "search":
        assert isinstance(instantiate_spec(cfg.search, "search"), Strategy)
    elif group == "method":
        method = build_method(cfg)
        assert isinstance(method, Method) and method.name == option
    else:
        Budget.from_config(OmegaConf.to_container(cfg.budget))


@pytest.mark.parametrize(
    "override,key",
    [
        ("tasks=[semseg,sky]", "tasks"),
        ("tasks=[]", "tasks"),
        ("tasks=[depth,depth]", "tasks"),
        ("data.format=kitti", "data.format"),
        ("stage=search_everything", "stage"),
        ("optim.lr=-1", "optim.lr"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("data.batch_size=0", "data.batch_size"),
        ("loss.weighting=magic", "loss.weighting"),
        ("loss.weights={edge:1.0}", "loss.weights.edge"),
        ("loss.weights={depth:-2}", "loss.weights.depth"),
        ("logger=csv logger.name=tensorboard", "logger.name"),
        ("delta_m.convention=median", "delta_m.convention"),
        ("baselines.source=config", "baselines.metrics.semseg.miou"),
        ("model.backbone.name=resnet_does_not_exist", "model.backbone.name"),
        ("data.synthetic.height=8", "data.synthetic"),
        ("seed=abc", "seed"),
        # NAS keys: wrong before any work starts, not after the baselines and the supernet trained.
        ("space=vit_demo search.population=0", "search.population"),
        ("space=vit_demo search.population=abc", "search.population"),
        ("space=vit_demo search.generations=-1", "search.generations"),
        ("space=vit_demo search.mutations=-1", "search.mutations"),
        ("space=vit_demo search.top_k=100", "search.top_k"),
        ("space=vit_demo search.parents=worst", "search.parents"),
        ("space=vit_demo supernet.lr_scale=0", "supernet.lr_scale"),
        ("space=vit_demo search=random search.num_candidates=0", "search.num_candidates"),
        ("space=vit_demo budget.flops_max=10G", "budget.flops_max"),
        ("space=vit_demo budget.params_max=-5", "budget.params_max"),
        ("space=vit_demo budget.params_min=4e5 budget.params_max=2e5", "budget.params_min"),
        ("space=vit_demo supernet.timm_init=vit_small_patch16_224", "supernet.timm_init"),
        # what an unquoted {model:...,checkpoint:...} becomes after the shell's brace expansion
        ("space=vit_demo supernet.timm_init=checkpoint:/no/such.pth", "supernet.timm_init"),
        # each method checks its own inputs; specs name the key of a wrong setting or target
        ("method=static space=vit_demo", "space"),
        ("supernet_ckpt=/no/such.ckpt", "supernet_ckpt"),
        ("method=autotaskformer", "space"),
        ("+model.foo=1", "model.foo"),
        ("model._target_=nope.Nope", "model._target_"),
        ("space=vit_demo search._target_=mtnas.search.nope.Nope", "search._target_"),
        ("space=vit_demo search.objectives=[memory]", "search.objectives"),
        ("space=vit_demo search.select=median", "search.select"),
        ("space=vit_demo search=nsga2 search.population=1", "search.population"),
        ("space=vit_demo search=nsga2 search.crossover_prob=2", "search.crossover_prob"),
        ("space=vit_demo space.embed_dims=[]", "space.embed_dims"),
        ("space=vit_demo +space.foo=1", "space.foo"),
        ("space=vit_demo retrain.init=warm", "retrain.init"),
        ("space=vit_demo supernet.max_epochs=0", "supernet.max_epochs"),
        ("space=vit_demo supernet.task_specific_largest=maybe", "supernet.task_specific_largest"),
        ("space=vit_demo supernet.largest_sharing=random", "supernet.largest_sharing"),
    ],
)
def test_bad_values_name_their_key(override, key):
    cfg = compose_cfg(override.split(" "))
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert e.value.key == key
    assert f"`{key}`" in str(e.value)


def test_nyuv2_needs_an_existing_root(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        validate(compose_cfg(["data=nyuv2"]))
    with pytest.raises(DataError, match="does not exist"):
        validate(compose_cfg(["data=nyuv2", f"data.root={tmp_path / 'missing'}"]))


def test_an_int_like_seed_from_the_environment_is_accepted(monkeypatch):
    monkeypatch.setenv("MTNAS_TEST_SEED", "3")
    validate(compose_cfg(["seed=${oc.env:MTNAS_TEST_SEED}"]))


def test_config_baselines_are_accepted_when_complete():
    metrics = "{semseg: {miou: 0.4, pixel_acc: 0.6}, depth: {abs_err: 0.5, rel_err: 0.2}}"
    validate(compose_cfg(["tasks=[semseg,depth]", "baselines.source=config", f"baselines.metrics={metrics}"]))


def test_arch_and_supernet_ckpt_files_are_checked_before_any_work(tmp_path):
    """A README given as arch=, a binary file, an arch with a value outside the space, or a YAML file as
    supernet_ckpt=: one paragraph naming the key, the file and the field, not a YAML/pickle traceback."""
    from mtnas.space import build_space

    cfg = compose_cfg(["space=vit_demo"])
    space = build_space(cfg.space, list(cfg.tasks))
    good = space.smallest().to_dict()
    (tmp_path / "README.md").write_text("# Title\n*emphasis* and `code`\n")
    (tmp_path / "model.ckpt").write_bytes(bytes(range(128, 256)))
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump({**good, "embed_dim": 56}))
    half = {**good, "layers": [{**good["layers"][0], "num_heads": 2.5}, *good["layers"][1:]]}
    (tmp_path / "half.yaml").write_text(yaml.safe_dump(half))
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(good))
    cases = [
        ("arch", "README.md", "is not an arch file"),
        ("arch", "model.ckpt", "is not an arch file"),
        ("arch", "wide.yaml", "embed_dim 56 is not one of the space's choices [48, 64]"),
        ("arch", "half.yaml", "2.5 is not an integer"),  # never silently truncated to 2
        ("supernet_ckpt", "arch.yaml", "is not a checkpoint"),
    ]
    for key, name, says in cases:
        with pytest.raises(ConfigError) as e:
            validate(compose_cfg(["space=vit_demo", f"{key}={tmp_path / name}"]))
        assert e.value.key == key and says in str(e.value) and name in str(e.value), str(e.value)
    validate(compose_cfg(["space=vit_demo", f"arch={tmp_path / 'arch.yaml'}"]))


def _numeric_keys(tree, prefix=""):
    """Every number (or list of numbers) in a composed config, by dotted key."""
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numeric_keys(value, f"{full}.")
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            or isinstance(value, list)
            and value
            and all(isinstance(v, int | float) for v in value)
        ):
            yield full, value


# -1 is a valid value of these: the out-of-range value to try instead.
OUT_OF_RANGE = {"trainer.num_sanity_val_steps": -2}


# Sections a recipe's method does not read (the one-shot method builds ViTs from `space`; the static method
# searches nothing): their values change nothing, and are not checked there.
UNUSED = {"demo": ("model.",), "synthetic_mtl": ("search.", "budget.")}


def _cases():
    for recipe in ("demo", "synthetic_mtl"):
        cfg = OmegaConf.to_container(compose_cfg([f"+experiment={recipe}"]))  # interpolations stay strings
        for key, value in _numeric_keys(cfg):
            # Task parameters are checked per task type (test_tasks.py).
            if not key.startswith(("data.available_tasks", "method.", *UNUSED[recipe])):
                yield recipe, key, str(OUT_OF_RANGE.get(key, [-1] if isinstance(value, list) else -1))


@pytest.mark.parametrize(
    "recipe,key,bad",
    [
        # Numbers only real-data recipes set (data.num_human_parts and data.value_scaling.* are checked by
        # their readers, test_data_pascal_context.py and test_data_taskonomy.py).
        ("nyuv2_search", "data.image_size", "[288,0]"),
        ("nyuv2_search", "search.val_batches", "0"),
    ],
)
def test_real_data_recipes_refuse_out_of_range_values(recipe, key, bad, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the recipes' GPU trainer
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg([f"+experiment={recipe}", f"data.root={tmp_path}", f"{key}={bad}"]))
    assert e.value.key == key, str(e.value)


@pytest.mark.parametrize("recipe,key,bad", sorted(set(_cases())))
def test_every_numeric_key_refuses_an_out_of_range_value(recipe, key, bad, tmp_path, cache_dir):
    """Each number of every recipe's config, set out of range, is one ConfigError naming that key before any
    training (global keys in `validate`, a method's own keys when it is built, a model's when it is checked)."""
    from mtnas.run import Run

    cfg = compose_cfg([f"+experiment={recipe}", f"{key}={bad}"], output_dir=tmp_path)
    with pytest.raises(ConfigError) as e:
        method = validate(cfg)
        run = Run(cfg, method)
        run.dm.setup()
        method.check(run, ("baselines", *method.stages))
    assert e.value.key == key, str(e.value)


@pytest.mark.parametrize(
    "recipe,backbone",
    [
        ("nyuv2_search", "resnet34"),
        ("cityscapes_search", "mobilenetv3_large_100"),
        ("taskonomy_search", "resnet18"),
    ],
)
def test_automtl_runs_with_the_real_data_recipes(recipe, backbone, tmp_path, monkeypatch):
    """`mtnas +experiment=<x>_search method=automtl model.backbone.name=...`: the recipe's data, tasks and budget
    with AutoMTL on that CNN (the recipe's ViT space is set aside)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = compose_cfg(
        [
            f"+experiment={recipe}",
            f"data.root={tmp_path}",
            "method=automtl",
            f"model.backbone.name={backbone}",
        ]
    )
    method = validate(cfg)
    assert method.name == "automtl" and method.stages == ("pretrain", "policy", "derive", "retrain")
    assert method.model["backbone"]["name"] == backbone and method.tasks == list(cfg.tasks)
    assert method.policy["tau"] == 5.0 and method.policy["tau_decay"] == 0.965  # AutoMTL's schedule
