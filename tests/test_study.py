"""The study's statistics against hand-computed values, its choice of archs, its settings."""

from __future__ import annotations

import random

import pytest

from mtnas.methods.study import StudySettings, mean_std, paired_differences, rank_correlations, spread_by_cost


def test_rank_correlations_by_hand():
    # y swaps the middle pair of x: 5 concordant pairs, 1 discordant → τ = (5 − 1)/6; rank differences
    # (0, 1, −1, 0) → ρ = 1 − 6·2/(4·(16 − 1)) = 0.8.
    out = rank_correlations([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0])
    assert out["kendall_tau"] == pytest.approx(4 / 6)
    assert out["spearman_rho"] == pytest.approx(0.8)
    assert rank_correlations([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == {"kendall_tau": -1.0, "spearman_rho": -1.0}
    # Too few pairs, or a constant sample: no correlation to report.
    assert rank_correlations([1.0, 2.0], [1.0, 2.0]) == {"kendall_tau": None, "spearman_rho": None}
    assert rank_correlations([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])["kendall_tau"] is None


def test_spread_by_cost_spans_the_range_evenly():
    records = [{"arch": {"i": i}, "cost": {"params": p}, "delta_m": 0.0} for i, p in enumerate(range(1, 11))]
    random.Random(0).shuffle(records)
    picked = [r["cost"]["params"] for r in spread_by_cost(records, 3)]
    assert picked == [1, 5, 10]  # cheapest, middle (index round(4.5) = 4), costliest
    assert [r["cost"]["params"] for r in spread_by_cost(records, 1)] == [6]
    assert spread_by_cost(records, 0) == []
    assert len(spread_by_cost(records[:2], 5)) == 2  # never the same arch twice


def test_mean_std_and_settings():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
    assert mean_std([4.0]) == {"mean": 4.0, "std": None, "n": 1}
    from mtnas.errors import ConfigError

    assert StudySettings.from_config({"archs": 2, "seeds": 1}).seeds == 1
    for key, bad in (
        ("seeds", 0),
        ("archs", -1),
        ("front", 1.5),
        ("random", "yes"),
        ("max_epochs", 0),
        ("hard_sharing_band", -0.1),
    ):
        with pytest.raises(ConfigError, match=f"study.{key}"):
            StudySettings.from_config({key: bad})


def test_paired_differences_and_a_searched_arch_that_is_the_hard_sharing_arch():
    from mtnas.report.study import study_lines

    searched = {"roles": ["searched"], "test_delta_m": [5.0, 4.0]}
    hard = {"roles": ["hard sharing"], "test_delta_m": [4.5, 4.5]}
    out = paired_differences({"searched": searched, "hard-sharing": hard})
    assert out == {
        "searched_minus_hard_sharing": {
            "mean": 0.0,
            "std": pytest.approx(2**0.5 / 2),
            "n": 2,
            "outcome": "tie",
            "with": "hard-sharing",
            "of": 1,
        }
    }
    # The search returned the hard-sharing arch itself: one candidate, both roles; 0 by construction, and said so.
    same = {"roles": ["searched", "hard sharing"], "test_delta_m": [5.0, 4.0]}
    out = paired_differences({"searched": same})
    assert out["searched_minus_hard_sharing"]["same_arch"] and out["searched_minus_hard_sharing"]["mean"] == 0
    assert out["searched_minus_hard_sharing"]["outcome"] == "same arch"
    result = {"archs": {"searched": same}, "inherited_vs_retrained_val": {"kendall_tau": None}, **out}
    assert study_lines(result) == ["searched − hard sharing: 0 (the searched arch is the hard sharing arch)"]


def test_with_several_hard_sharing_archs_the_comparison_is_with_the_best_by_val_not_test():
    from mtnas.report.study import study_lines

    def arch(roles, val, test):
        return {"roles": roles, "val": {"mean": val}, "test_delta_m": test}

    candidates = {
        "searched": arch(["searched"], 1.0, [3.0, 3.2]),
        "hard-sharing": arch(["hard sharing"], 0.5, [4.0, 4.0]),  # the nearest in params; best on test
        "hard-sharing-1": arch(["hard sharing"], 0.9, [2.0, 2.4]),  # best on val: the one compared with
        "random": arch(["best random"], 2.0, [9.0, 9.0]),
    }
    out = paired_differences(candidates)["searched_minus_hard_sharing"]
    assert (out["with"], out["of"], out["mean"], out["outcome"]) == (
        "hard-sharing-1",
        2,
        pytest.approx(0.9),
        "better",
    )
    line = study_lines({"archs": candidates, **paired_differences(candidates)})[0]
    assert line.startswith("searched − hard sharing (the best by val Δm of 2: hard-sharing-1): +0.90 ± 0.14")
    # The searched arch is one of them (the nearest uniform arch) and the best on val: 0 by construction.
    candidates["searched"]["roles"].append("hard sharing")
    out = paired_differences(candidates)["searched_minus_hard_sharing"]
    assert out["same_arch"] and (out["with"], out["of"]) == ("searched", 3)
    assert study_lines({"archs": candidates, **paired_differences(candidates)})[0] == (
        "searched − hard sharing: 0 (the searched arch is the hard sharing arch, the best by val Δm of 3)"
    )
    # ...unless another of them retrains better on val.
    candidates["hard-sharing-1"]["val"]["mean"] = 1.5
    assert paired_differences(candidates)["searched_minus_hard_sharing"]["with"] == "hard-sharing-1"


def test_a_difference_is_better_or_worse_only_beyond_twice_its_standard_error():
    from mtnas.report.study import difference_outcome, study_lines

    # std / √n = 0.2 / √4 = 0.1, so the margin is 0.2: 0.21 is beyond it, 0.19 is not.
    assert difference_outcome({"mean": 0.21, "std": 0.2, "n": 4}) == "better"
    assert difference_outcome({"mean": 0.19, "std": 0.2, "n": 4}) == "tie"
    assert difference_outcome({"mean": -0.19, "std": 0.2, "n": 4}) == "tie"
    assert difference_outcome({"mean": -0.21, "std": 0.2, "n": 4}) == "worse"
    # Two replicates: the margin is 2 · 0.48 / √2 ≈ 0.68, so +0.51 ± 0.48 is a tie and +0.49 ± 0.10 a win.
    assert difference_outcome({"mean": 0.51, "std": 0.48, "n": 2}) == "tie"
    assert difference_outcome({"mean": 0.49, "std": 0.10, "n": 2}) == "better"
    # The same gap on both replicates: no spread, so any gap counts.
    assert difference_outcome({"mean": 0.95, "std": 0.0, "n": 2}) == "better"
    assert difference_outcome({"mean": 0.0, "std": 0.0, "n": 2, "same_arch": True}) == "same arch"
    assert difference_outcome({"mean": 3.0, "std": None, "n": 1}) == "one replicate"
    result = {
        "archs": {},
        "inherited_vs_retrained_val": {"kendall_tau": None},
        "searched_minus_hard_sharing": {"mean": 0.49, "std": 0.10, "n": 2},
        "searched_minus_random": {"mean": 0.51, "std": 0.48, "n": 2},
    }
    assert study_lines(result) == [
        "searched − hard sharing: +0.49 ± 0.10 test Δm points (n = 2): better, beyond 2 standard errors",
        "searched − best random: +0.51 ± 0.48 test Δm points (n = 2): a tie, within 2 standard errors",
    ]


@pytest.mark.parametrize("budget", [None, 200_000])
def test_the_hard_sharing_baselines_are_the_uniform_archs_near_the_searched_params(tmp_path, budget):
    """Hand-made, as a person would build it: the same heads and MLP in every layer, every task head as wide;
    a mixed arch with narrow heads at the same params is a weaker baseline that flatters the search. The closest
    in params first, then every other within the band, nearest first."""
    from types import SimpleNamespace

    from mtnas.methods.base import build_method
    from mtnas.tasks import build_tasks

    from .conftest import compose_cfg

    cfg = compose_cfg(
        ["+experiment=demo_sharing", f"budget.params_max={budget or 'null'}"], output_dir=tmp_path
    )
    method = build_method(cfg)
    run = SimpleNamespace(
        task_objs=build_tasks(list(cfg.tasks), cfg.data.available_tasks), image_size=(64, 64)
    )
    params = lambda a: method.analytic_cost(run, a)["params"]  # noqa: E731
    uniform = method.space.uniform_archs()
    assert len(uniform) == len(set(uniform)) == 32  # 2^5 choices, all distinct (archs are hashable)
    rng, banded = random.Random(0), 0
    for searched in [method.space.sample(rng) for _ in range(20)] + uniform:
        assert method.hard_sharing_archs(run, searched) == method.hard_sharing_archs(run, searched, 0.0)
        hards = method.hard_sharing_archs(run, searched, 0.05)
        hard = hards[0]
        assert set(hards) <= set(uniform) and not any(
            a.task_specific[i] for a in hards for i in range(a.depth)
        )
        assert len(set(hard.num_heads)) == len(set(hard.mlp_ratio)) == len(set(hard.heads.values())) == 1
        allowed = [a for a in uniform if budget is None or params(a) <= budget]
        assert budget is None or all(params(a) <= budget for a in hards)
        gap = lambda a, s=searched: abs(params(a) - params(s))  # noqa: E731
        assert gap(hard) == min(gap(a) for a in allowed)
        others = [a for a in allowed if a != hard and gap(a) <= 0.05 * params(searched)]
        assert hards[1:] == sorted(others, key=lambda a: (gap(a), -params(a)))
        banded += len(hards) > 1
    assert banded > 5  # the band adds archs where uniform archs lie close together


def test_a_replicate_folder_of_another_arch_is_set_aside_and_one_of_this_arch_restored(tmp_path):
    from types import SimpleNamespace

    import yaml

    from mtnas.methods.study import Study
    from mtnas.search.population import arch_digest

    said: list[str] = []
    study = Study(None, SimpleNamespace(out=tmp_path, announce=said.append), None)
    folder, a, b = tmp_path / "study/spread-0/seed0", {"arch": "a"}, {"arch": "b"}
    folder.mkdir(parents=True)
    (folder / "arch.yaml").write_text(yaml.safe_dump(a))
    (folder / "fit.json").write_text("{}")
    study.set_aside_if_another_arch("spread-0", folder, a)  # its own arch: left alone
    assert not said and (folder / "fit.json").exists()
    study.set_aside_if_another_arch("spread-0", folder, b)
    kept_a = folder.with_name(f"seed0-{arch_digest(a)}")
    assert yaml.safe_load((kept_a / "arch.yaml").read_text()) == a and not folder.exists()
    assert said[-1].endswith(", retraining")
    folder.mkdir()  # b trains there; then the study picks a again: b is kept, a comes back
    (folder / "arch.yaml").write_text(yaml.safe_dump(b))
    study.set_aside_if_another_arch("spread-0", folder, a)
    assert yaml.safe_load((folder / "arch.yaml").read_text()) == a and (folder / "fit.json").exists()
    assert yaml.safe_load((folder.with_name(f"seed0-{arch_digest(b)}") / "arch.yaml").read_text()) == b
    assert not kept_a.exists() and "restored" in said[-1]
