"""`mtnas-report`: run folders and a multirun sweep side by side, seeds averaged, on folders written in the
exact layout a run leaves (`results.json`, `.hydra/overrides.yaml`, `.hydra/config.yaml`)."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml

from mtnas.report.compare import main, report


def write_run(folder, overrides, seed, delta_m, params, miou, references=None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra/overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra/config.yaml").write_text(yaml.safe_dump({"seed": seed, "experiment_name": "x"}))

    def model(dm, p, m):
        return {"test": {"semseg": {"miou": m, "pixel_acc": 0.9}}, "params": p, "flops": 2 * p, "delta_m": dm}

    models = {"baseline/semseg": model(None, 5e5, 0.5), "multitask": model(delta_m, params, miou)}
    for name, (dm, p, m) in (references or {}).items():
        models[name] = model(dm, p, m)
    results = {
        "method": overrides[0].split("=")[1] if overrides[0].startswith("method=") else "static",
        "experiment": "x",
        "dataset": "synthetic",
        "tasks": ["semseg"],
        "delta_m_metrics": {"semseg": ["miou", "pixel_acc"]},
        "models": models,
        **({"references": list(references)} if references else {}),
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_runs_and_a_sweep_side_by_side_with_seeds_averaged(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    # A sweep over seeds of one setting (logging / progress overrides differ: they change no result)...
    for job, (seed, dm, p) in enumerate([(0, 4.0, 1.0e6), (1, 6.0, 1.0e6), (2, 8.0, 1.0e6)]):
        write_run(
            sweep / str(job),
            ["method=automtl", f"seed={seed}", f"logger={'csv' if job else 'none'}"],
            seed,
            dm,
            p,
            0.5 + dm / 100,
        )
    # ... and a single run with a reference model beside its own.
    single = tmp_path / "single"
    write_run(single, ["model=mqtransformer"], 0, -18.0, 1.26e6, 0.41, {"hard sharing": (2.5, 1.02e6, 0.51)})
    out = tmp_path / "cmp"
    comparison = report([sweep, single], out)
    rows = {r["name"]: r for r in comparison["rows"]}
    assert set(rows) == {"method=automtl", "model=mqtransformer", "model=mqtransformer · hard sharing"}
    automtl = rows["method=automtl"]
    assert automtl["seeds"] == [0, 1, 2] and len(automtl["runs"]) == 3
    assert automtl["delta_m"][0] == pytest.approx(6.0)
    assert automtl["delta_m"][1] == pytest.approx(statistics.stdev([4.0, 6.0, 8.0]))  # 2.0
    assert automtl["params"] == (pytest.approx(1.0), 0.0)  # in M; the same every seed
    assert rows["model=mqtransformer · hard sharing"]["delta_m"] == (2.5, None)  # one seed: no std
    assert rows["model=mqtransformer"]["semseg/miou"] == (0.41, None)
    md = (out / "comparison.md").read_text()
    assert "| method=automtl | 0,1,2 | 1 ± 0 | 0.002 ± 0 | – | 0.56 ± 0.02 | 0.9 ± 0 | +6.00 ± 2 |" in md
    assert "| model=mqtransformer · hard sharing | 0 | 1.02 | 0.00204 | – | 0.51 | 0.9 | +2.50 |" in md
    assert (out / "comparison.png").stat().st_size > 0
    assert json.loads((out / "comparison.json").read_text())["metrics"] == ["semseg/miou", "semseg/pixel_acc"]
    main([str(sweep), str(single), "--out", str(out)])  # the command prints the same table
    assert "method=automtl" in capsys.readouterr().out


def test_a_folder_without_results_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "no results.json in it or below it" in err and "Traceback" not in err


def write_study(run, tau_inherited, hard, random, tau_finetuned=None):
    """`study/study.json` as `stage=study` writes it (only the keys the comparison reads, plus an arch)."""

    def diff(values):
        if values == "same":
            return {"mean": 0.0, "std": 0.0, "n": 2, "same_arch": True}
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values), "n": len(values)}

    study = {
        "archs": {"searched": {"roles": ["searched"], "test_delta_m": [1.0, 2.0]}},
        "inherited_vs_retrained_val": {"kendall_tau": tau_inherited, "spearman_rho": tau_inherited},
        "searched_minus_hard_sharing": diff(hard),
        "searched_minus_random": diff(random),
    }
    if tau_finetuned is not None:
        study["finetuned_vs_retrained_val"] = {"kendall_tau": tau_finetuned, "spearman_rho": tau_finetuned}
    (run / "study").mkdir()
    (run / "study/study.json").write_text(json.dumps(study))


def test_studies_of_a_sweep_are_tallied_per_setting(tmp_path, capsys):
    """After `mtnas -m ... seed=0,1,2` and `stage=study` in each run folder: one row per study and, per setting,
    in how many seeds the searched arch beat hard sharing and random beyond twice the standard error."""
    sweep = tmp_path / "multirun"
    for seed in range(3):
        write_run(
            sweep / str(seed), ["tasks=[semseg,depth]", f"seed={seed}", "study.seeds=2"], seed, 4.0, 2e5, 0.5
        )
    write_study(sweep / "0", 0.8, [1.0, 1.2], [0.5, -0.5], tau_finetuned=0.9)  # better; tie
    write_study(sweep / "1", 0.6, "same", [-2.0, -2.2])  # the search returned hard sharing; worse than random
    # seed 2 has no study: it has a row in the models' table only.
    out = tmp_path / "cmp"
    studies = report([sweep], out)["studies"]
    assert [(r["seed"], r["name"]) for r in studies["rows"]] == [
        (0, "tasks=[semseg,depth]"),
        (1, "tasks=[semseg,depth]"),
    ]
    assert studies["rows"][0]["searched_minus_hard_sharing"]["outcome"] == "better"
    assert studies["rows"][0]["tau_finetuned"] == 0.9 and studies["rows"][1]["tau_finetuned"] is None
    assert studies["tallies"]["tasks=[semseg,depth]"] == {
        "runs": 2,
        "searched_minus_hard_sharing": {"better": 1, "same arch": 1},
        "searched_minus_random": {"tie": 1, "worse": 1},
    }
    md = (out / "comparison.md").read_text()
    assert "| tasks=[semseg,depth] | 0 | +0.80 | +0.90 | +1.10 ± 0.14 (better) | +0.00 ± 0.71 (tie) |" in md
    assert "| tasks=[semseg,depth] | 1 | +0.60 | – | 0 (same arch) | -2.10 ± 0.14 (worse) |" in md
    line = (
        "tasks=[semseg,depth]: searched arch better than hard sharing in 1 of 2 runs (same arch 1); "
        "better than best random in 0 of 2 runs (tie 1, worse 1)"
    )
    assert f"- {line}" in md
    main([str(sweep), "--out", str(out)])
    printed = " ".join(capsys.readouterr().out.split())  # rich may wrap a line
    # `[semseg,depth]` printed as it is, not taken for rich markup: the models' row, 2 study rows, the tally.
    assert printed.count(line) == 1 and printed.count("tasks=[semseg,depth]") == 4


def test_a_run_without_a_study_has_no_studies_section(tmp_path):
    write_run(tmp_path / "run", ["space=vit_demo"], 0, 4.0, 2e5, 0.5)
    assert report([tmp_path / "run"], tmp_path / "cmp")["studies"] == {"rows": [], "tallies": {}}
    assert "Studies" not in (tmp_path / "cmp/comparison.md").read_text()


def test_an_unreadable_study_file_is_one_line(tmp_path, capsys):
    write_run(tmp_path / "run", ["space=vit_demo"], 0, 4.0, 2e5, 0.5)
    (tmp_path / "run/study").mkdir()
    for text in ("{not json", "[1, 2]", '{"searched_minus_random": 1}'):
        (tmp_path / "run/study/study.json").write_text(text)
        with pytest.raises(SystemExit) as exc:
            main([str(tmp_path / "run"), "--out", str(tmp_path / "cmp")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "study/study.json: not a study file mtnas wrote" in err, text
        assert "Traceback" not in err
