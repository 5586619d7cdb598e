"""The thresholds step, its command and report section; predict and serve with a rule."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from brainmaps.cli.main import main
from brainmaps.evaluation.operating_points import choose_threshold, confusion_metrics, nested_calls
from brainmaps.exceptions import ConfigError
from brainmaps.reports.analyse import analyse_run
from brainmaps.reports.html import render_report
from brainmaps.reports.sections import collect_sections
from brainmaps.run.folder import open_run
from brainmaps.serve.engine import Engine
from brainmaps.steps import get_step
from brainmaps.steps.thresholds import thresholds
from brainmaps.training.ensembles import FoldEnsemble, predict_run
from brainmaps.training.oof_thresholds import oof_scores, resolve_threshold

RULES = ["0.5", "youden", "sens=0.9", "spec=0.9"]


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("thresholds") / "run"
    shutil.copytree(tiny_run, out)
    thresholds(out, n_bootstrap=200)
    return out


@pytest.fixture(scope="module")
def regression_run(tiny_cohort, tmp_path_factory):
    from brainmaps.training.run import train_run
    from tiny import tiny_config

    base = tmp_path_factory.mktemp("regression")
    config = tiny_config(tiny_cohort, base / "run", base / "cache", folds=2, epochs=1)
    train_run(dataclasses.replace(config, data=dataclasses.replace(config.data, target="age")))
    return base / "run"


def _images(cohort, n=3):
    return sorted(cohort.glob("sub-*/anat/*_T1w.nii.gz"))[:n]


def _section(html: str, key: str) -> str:
    start = html.index(f'<section id="{key}">')
    return html[start : html.index("</section>", start)]


def test_step_writes_operating_points_from_the_oof_predictions(run_dir):
    run = open_run(run_dir)
    table = pd.read_csv(run.layout.thresholds, sep="\t", dtype={"rule": str})
    assert table["rule"].tolist() == RULES and set(table["positive"]) == {"patient"}
    y, score, folds = oof_scores(run)
    preds = pd.read_csv(run.layout.predictions, sep="\t")
    assert y.tolist() == (preds["label"] == "patient").astype(int).tolist() and len(y) == 40
    for row in table.itertuples(index=False):
        assert row.threshold == pytest.approx(choose_threshold(y, score, row.rule))
        calls, per_fold = nested_calls(y, score, folds, row.rule)
        honest = confusion_metrics(y, calls)
        assert row.sensitivity == pytest.approx(honest["sensitivity"])
        assert row.npv == pytest.approx(honest["npv"], nan_ok=True)
        assert row.threshold_fold_mean == pytest.approx(np.mean(list(per_fold.values())))
        assert row.sensitivity_low <= row.sensitivity <= row.sensitivity_high
    assert table.loc[0, "threshold"] == 0.5 and table.loc[0, "threshold_fold_std"] == 0
    roc = pd.read_csv(run.layout.roc, sep="\t")
    assert roc[["fpr", "tpr"]].iloc[-1].tolist() == [1, 1]
    calibration = pd.read_csv(run.layout.calibration, sep="\t")
    assert calibration["n"].sum() == 40
    record = yaml.safe_load(run.layout.stage_record("thresholds").read_text())
    assert record["options"]["rules"] == RULES and record["options"]["n_bootstrap"] == 200
    # current while the predictions are older; analyse_run keeps it
    status = analyse_run(run_dir, ["thresholds"], progress=False, log=None)
    assert status["thresholds"].startswith("current")


def test_cli_adds_a_value_and_refuses_bad_targets(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    args = ["thresholds", str(copy), "--value", "0.3", "--sensitivity", "0.8", "--bootstrap"]
    assert main([*args, "50", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "positive class: patient" in out and "sens=0.8" in out
    table = pd.read_csv(copy / "analysis" / "thresholds.tsv", sep="\t", dtype={"rule": str})
    assert table["rule"].tolist() == ["0.5", "youden", "sens=0.8", "spec=0.9", "0.3"]
    assert main(["thresholds", str(copy), "--specificity", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "spec=1.5" in err[0] and "youden" in err[0]


def test_report_section_shows_the_table_and_figure(run_dir, tmp_path):
    sections = {s["id"]: s for s in collect_sections(run_dir)}
    ids = list(sections)
    assert ids.index("thresholds") == ids.index("performance") + 1
    blocks = sections["thresholds"]["blocks"]
    assert [b["kind"] for b in blocks] == ["table", "figure"]
    assert blocks[1]["png"].startswith(b"\x89PNG")
    assert [r[0] for r in blocks[0]["rows"]] == RULES
    html = _section(render_report(run_dir), "thresholds")
    assert "Operating points" in html and "youden" in html and "other folds" in html
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "analysis" / "thresholds.tsv").unlink()
    html = _section(render_report(bare), "thresholds")
    assert "Not computed — run <code>brainmaps thresholds " in html


def test_regression_runs_are_skipped_and_refused(regression_run, capsys):
    run = open_run(regression_run)
    step = get_step("thresholds")
    assert step.skip(run, [], {}) == "binary classification runs only"
    status = analyse_run(regression_run, ["thresholds"], progress=False, log=None)
    assert status["thresholds"] == "skipped: binary classification runs only"
    with pytest.raises(ConfigError, match="binary classification run"):
        thresholds(regression_run)
    assert main(["thresholds", str(regression_run)]) == 2
    assert "binary classification" in capsys.readouterr().err
    section = {s["id"]: s for s in collect_sections(run)}["thresholds"]
    assert "binary classification runs only" in section["blocks"][0]["text"]
    with pytest.raises(ConfigError, match="binary classification"):
        resolve_threshold(run, "youden")


def test_score_and_spread_of_hand_made_member_outputs(tiny_run):
    ensemble = FoldEnsemble(tiny_run, device="cpu")
    # two models, one scan: p(patient) 0.8 and 0.5 -> log-odds log 4 and 0
    stacked = np.array([[[0.2, 0.8]], [[0.5, 0.5]]])
    out = ensemble.summarise(stacked)
    assert out["score"] == pytest.approx([np.log(4) / 2])
    assert out["std_patient"] == pytest.approx([0.15]) and out["p_patient"] == pytest.approx([0.65])
    clipped = ensemble.summarise(np.array([[[0.0, 1.0]]]))  # clipped to [1e-7, 1 - 1e-7]
    assert clipped["score"] == pytest.approx([np.log((1 - 1e-7) / 1e-7)])


def test_predict_adds_score_spread_and_a_call(run_dir, tiny_cohort, tmp_path):
    images = _images(tiny_cohort)
    plain = predict_run(run_dir, images, device="cpu")
    base = ["path", "p_control", "p_patient", "predicted", "n_models"]
    assert list(plain) == [*base, "score", "std_control", "std_patient"]
    table = predict_run(run_dir, images, device="cpu", threshold="youden")
    assert list(table) == [*list(plain), "threshold_rule", "threshold", "call"]
    stored = pd.read_csv(run_dir / "analysis" / "thresholds.tsv", sep="\t", dtype={"rule": str})
    youden = float(stored.loc[stored["rule"] == "youden", "threshold"].iloc[0])
    assert (table["threshold"] == youden).all() and set(table["threshold_rule"]) == {"youden"}
    expected = np.where(table["p_patient"] >= youden, "patient", "control")
    assert table["call"].tolist() == expected.tolist()
    assert np.isfinite(table["score"]).all()
    assert (table["std_patient"] >= 0).all() and (table["std_control"] >= 0).all()
    np.testing.assert_allclose(table["p_patient"], plain["p_patient"])
    out = tmp_path / "p.tsv"
    assert main(["predict", str(run_dir), *map(str, images), "--threshold", "0.99",
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    written = pd.read_csv(out, sep="\t")
    assert (written["threshold"] == 0.99).all()
    assert written["call"].tolist() == np.where(written["p_patient"] >= 0.99, "patient",
                                                "control").tolist()  # fmt: skip


def test_rules_use_the_stored_table_only_while_it_is_current(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    run = open_run(copy)
    y, score, _ = oof_scores(run)
    table = pd.read_csv(run.layout.thresholds, sep="\t", dtype={"rule": str})
    table.loc[table["rule"] == "youden", "threshold"] = 0.123  # a marker value
    table.to_csv(run.layout.thresholds, sep="\t", index=False)
    assert resolve_threshold(run, "youden") == ("youden", 0.123)
    assert resolve_threshold(run, "sens=0.7") == (
        "sens=0.7",
        choose_threshold(y, score, "sens=0.7"),
    )
    later = run.layout.thresholds.stat().st_mtime + 10
    os.utime(run.layout.predictions, (later, later))  # predictions newer: table stale
    assert resolve_threshold(run, "youden") == ("youden", choose_threshold(y, score, "youden"))
    assert resolve_threshold(run, 0.25) == ("0.25", 0.25)
    with pytest.raises(ConfigError, match="threshold"):
        resolve_threshold(run, "sens=2")


def test_serve_engine_takes_a_rule(run_dir, tiny_cohort, tmp_path):
    path = _images(tiny_cohort, 1)[0]
    engine = Engine(run_dir, methods=[], device="cpu", threshold="spec=0.9")
    _, value = resolve_threshold(run_dir, "spec=0.9")
    assert engine.threshold == value
    result = engine.process(path, path.name, tmp_path)
    assert result["threshold"] == {"rule": "spec=0.9: p(patient) >= value", "value": value}
    p = result["probabilities"]["patient"]
    assert result["call"] == ("patient" if p >= value else "control")
    fixed = Engine(run_dir, methods=[], device="cpu", threshold="0.4")
    assert fixed.process(path, path.name, tmp_path)["threshold"]["rule"] == "p(patient) >= value"
    with pytest.raises(ConfigError, match="threshold"):
        Engine(run_dir, methods=[], threshold="median")
