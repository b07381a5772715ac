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
