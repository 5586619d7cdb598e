"""The trust step on the trained tiny run: its table, its staleness, its report section."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from brainmaps.analysis.trust import COLUMNS, LOCALISATION_BOUND
from brainmaps.cli.main import main
from brainmaps.reports.analyse import analyse_run
from brainmaps.reports.html import build_report
from brainmaps.run import RunLayout
from brainmaps.run.folder import open_run
from brainmaps.steps import explain, get_step, list_steps
from brainmaps.steps.localise import localise
from brainmaps.steps.trust import trust_run


def _tsv(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"method": str})


def _later(path, than) -> None:
    """Give ``path`` an mtime after ``than``'s (file systems with coarse times)."""
    t = than.stat().st_mtime + 10
    os.utime(path, (t, t))


@pytest.fixture
def gradient_run(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    explain(run_dir, ["gradient"], progress=False)
    return run_dir


def test_runs_after_the_steps_it_reads():
    steps = list_steps()
    assert steps[-1] == "trust"
    assert {"localise", "faithfulness", "sanity"} < set(steps[: steps.index("trust")])
    assert get_step("trust").command == "brainmaps trust"


def test_without_analyses_everything_is_not_measured(gradient_run, capsys):
    run = open_run(gradient_run)
    assert get_step("trust").skip(run, [], {}).startswith("no maps")
    assert main(["trust", str(gradient_run)]) == 0
    out = capsys.readouterr().out
    assert "gradient: INCOMPLETE - " in out and "trust table written to" in out
    row = _read(RunLayout(gradient_run).analysis("trust")).iloc[0]
    # the tiny cohort is synthetic: its truth exists, so localisation is a missing step;
    # the command names the run folder itself, ready to paste
    assert row["localisation_reading"] == f"not measured: run `brainmaps localise {run.path}`"
    assert row["verdict"] == "incomplete" and np.isnan(row["deletion_auc"])
    if "roar" in list_steps():  # once a ROAR step exists, its command is named
        command = f"{get_step('roar').command} {run.path}"
        assert row["roar_reading"] == f"not measured: run `{command}`"
    else:
        assert row["roar_reading"] == "not measured: no ROAR step in this brainmaps"
    manifest = _read(RunLayout(gradient_run).maps_manifest("gradient"))
    assert row["seconds_per_map"] == pytest.approx(manifest["seconds"].mean(), rel=1e-5)


def test_step_gathers_the_tables_and_the_report_shows_them(gradient_run):
    layout = RunLayout(gradient_run)
    localise(gradient_run, ["gradient"])
    # hand-written: the deletion area is worse than random's, so gradient fails whatever
    # its trained maps localise
    _tsv(layout.analysis("faithfulness"), [
        {"method": m, "mode": mode, "fill": "blur", "auc": auc, "auc_random": rnd,
         "auc_std": 0.05, "n_subjects": 6}
        for m, areas in {"gradient": (0.7, 0.8), "random": (0.66, 0.6)}.items()
        for mode, auc, rnd in zip(("deletion", "insertion"), areas, (0.66, 0.6), strict=True)
    ])  # fmt: skip
    _tsv(layout.analysis("roar"), [
        {"method": "gradient", "fraction": f, "accuracy": acc, "accuracy_random": 0.8}
        for f, acc in ((0.1, 0.7), (0.3, 0.6))
    ])  # fmt: skip
    status = analyse_run(gradient_run, ["trust"], log=None)
    assert status["trust"] == f"written {layout.analysis('trust')}"

    table = _read(layout.analysis("trust"))
    assert list(table.columns) == COLUMNS and table["method"].tolist() == ["gradient"]
    row = table.iloc[0]
    localisation = _read(layout.analysis("localisation")).set_index("map")
    auc = localisation.loc["conjoined", "roc_auc"]
    assert row["localisation_auc"] == pytest.approx(auc, rel=1e-5)
    assert bool(row["localisation_passed"]) == (auc > LOCALISATION_BOUND)
    assert (row["deletion_auc"], row["deletion_auc_random"]) == (0.7, 0.66)
    assert not row["deletion_passed"] and row["insertion_passed"] and row["roar_passed"]
    assert row["roar_drop"] == pytest.approx(0.15)
    assert row["verdict"] == "fails"
    assert "deletion 0.70 vs random 0.66 (not better than random)" in row["reading"]
    assert "ROAR drop +0.15 beyond random" in row["reading"]
    path = open_run(gradient_run).path
    assert row["sanity_reading"] == f"not measured: run `brainmaps sanity {path}`"
    record = yaml.safe_load(layout.stage_record("trust").read_text())["options"]
    assert record["methods"] == ["gradient"]
    assert record["sources"] == ["localisation", "faithfulness", "roar"]
    assert analyse_run(gradient_run, ["trust"], log=None)["trust"].startswith("current")

    html = build_report(gradient_run).read_text(encoding="utf-8")
    start = html.index('<section id="trust">')
    section = html[start : html.index("</section>", start)]
    assert html.index('<section id="trust">') < html.index('<section id="overlap">')
    flagged = re.findall(r'<tr class="flag">(.*?)</tr>', section, flags=re.DOTALL)
    assert len(flagged) == 1 and "gradient" in flagged[0] and "fails" in flagged[0]
    assert "0.700 (0.66)" in flagged[0]  # deletion area (random's)
    assert f"Not measured yet: <code>brainmaps sanity {path}</code>" in section

    # a sanity summary written later makes the table stale; the step reads it
    _tsv(layout.analysis("sanity_summary"), [
        {"method": "gradient", "n_subjects": 3, "n_stages": 4, "spearman_abs": 0.9,
         "spearman": 0.9, "ssim": 0.8, "bound": 0.5, "passed": False},
    ])  # fmt: skip
    _later(layout.analysis("sanity_summary"), layout.analysis("trust"))
    assert analyse_run(gradient_run, ["trust"], log=None)["trust"].startswith("written")
    row = _read(layout.analysis("trust")).iloc[0]
    assert not row["sanity_passed"] and "sanity failed (|rho| 0.90 > 0.5)" in row["reading"]


def test_methods_from_the_tables_are_never_left_out(gradient_run):
    layout = RunLayout(gradient_run)
    _tsv(layout.analysis("sanity_summary"), [
        {"method": m, "n_subjects": 3, "n_stages": 4, "spearman_abs": rho, "spearman": rho,
         "ssim": 0.5, "bound": 0.5, "passed": rho <= 0.5}
        for m, rho in (("gradient", 0.2), ("edges", 1.0))
    ])  # fmt: skip
    table = _read(trust_run(gradient_run)).set_index("method")
    assert table.index.tolist() == ["gradient", "edges"]
    assert table.loc["gradient", "verdict"] == "passes"  # only sanity measured
    assert table.loc["edges", "verdict"] == "fails"
    assert table.loc["edges", "cost_reading"].startswith("not measured for this method")


def test_checks_of_earlier_maps_read_not_measured(gradient_run):
    # maps made again after the localisation table (explain --overwrite): its AUC was
    # measured on other maps, so it no longer counts for them
    layout = RunLayout(gradient_run)
    localise(gradient_run, ["gradient"])
    trust_run(gradient_run)
    assert np.isfinite(_read(layout.analysis("trust")).iloc[0]["localisation_auc"])
    _later(layout.maps_manifest("gradient"), layout.analysis("localisation"))
    trust_run(gradient_run)
    row = _read(layout.analysis("trust")).iloc[0]
    assert np.isnan(row["localisation_auc"]) and pd.isna(row["localisation_passed"])
    assert row["localisation_reading"].startswith("not measured")
    localise(gradient_run, ["gradient"])  # measured again on the new maps: it counts again
    _later(layout.analysis("localisation"), layout.maps_manifest("gradient"))
    trust_run(gradient_run)
    assert np.isfinite(_read(layout.analysis("trust")).iloc[0]["localisation_auc"])


def test_readings_quote_a_run_folder_with_a_space(gradient_run):
    spaced = gradient_run.with_name("my run")
    gradient_run.rename(spaced)
    row = _read(trust_run(spaced)).iloc[0]
    quoted = f"'{open_run(spaced).path}'"
    assert row["sanity_reading"] == f"not measured: run `brainmaps sanity {quoted}`"
