"""analyse_run: every analysis computed once, kept while current, redone when maps change."""

from __future__ import annotations

import os
import shutil

import pytest

from brainmaps.attribution.cohort import explain_run
from brainmaps.exceptions import ConfigError
from brainmaps.reports.analyse import STEPS, analyse_run
from brainmaps.reports.html import build_report


@pytest.fixture(scope="module")
def analysed(tiny_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("analyse") / "run"
    shutil.copytree(tiny_run, run_dir)
    explain_run(run_dir, ["gradient", "grad_cam"], progress=False)
    first = analyse_run(run_dir, faithfulness_subjects=6, progress=False, log=None)
    return run_dir, first


def test_every_step_is_written_then_kept(analysed):
    run_dir, first = analysed
    assert list(first) == list(STEPS)
    # ROAR retrains models, clinical needs the user's columns: analyse_run names the commands
    first = dict(first)
    roar = first.pop("roar")
    assert roar.startswith("skipped: retrains") and f"brainmaps roar {run_dir}" in roar
    clinical = first.pop("clinical")
    assert clinical.startswith("skipped: the clinical columns") and "--measures" in clinical
    anatomy = first.pop("anatomy")
    assert anatomy.startswith("skipped: the regions and volumes") and "--atlas" in anatomy
    assert all(status.startswith("written") for status in first.values()), first
    for name in ("overlap", "localisation", "regions_aal", "faithfulness", "sanity",
                 "sanity_summary", "masked_eval", "trust"):  # fmt: skip
        assert (run_dir / "analysis" / f"{name}.tsv").is_file()
    again = analyse_run(run_dir, faithfulness_subjects=6, progress=False, log=None)
    assert again.pop("roar").startswith("skipped: retrains")
    assert again.pop("clinical").startswith("skipped")
    assert again.pop("anatomy").startswith("skipped")
    assert all(status.startswith("current") for status in again.values()), again


def test_changed_maps_make_map_tables_stale(analysed, tmp_path):
    run_dir = tmp_path / "run"  # a copy (times kept): the other tests expect current tables
    shutil.copytree(analysed[0], run_dir)
    manifest = run_dir / "maps" / "gradient" / "maps.tsv"
    later = (run_dir / "analysis" / "overlap.tsv").stat().st_mtime + 10
    os.utime(manifest, (later, later))
    status = analyse_run(run_dir, ["compare", "first_layer"], progress=False, log=None)
    assert status["compare"].startswith("written")
    assert status["first_layer"].startswith("current")


def test_report_has_no_missing_analysis(analysed):
    run_dir, _ = analysed
    html = build_report(run_dir).read_text()
    for command in ("compare", "regions", "localise", "faithfulness", "sanity", "masked-eval",
                    "trust"):  # fmt: skip
        assert f"run `brainmaps {command}" not in html, command


def test_skips_and_errors(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    status = analyse_run(run_dir, ["compare", "localise", "faithfulness", "sanity"], log=None)
    assert all(s.startswith("skipped: no maps") for s in status.values()), status
    with pytest.raises(ConfigError, match="unknown analysis steps"):
        analyse_run(run_dir, ["dice"], log=None)
