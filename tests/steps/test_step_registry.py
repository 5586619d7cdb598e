"""The step registry: order, lookup, and the option records each step writes."""

from __future__ import annotations

import shutil

import pytest
import yaml

from brainmaps.exceptions import ConfigError
from brainmaps.reports.analyse import analyse_run
from brainmaps.run import RunLayout
from brainmaps.steps import explain, get_step, list_steps
from brainmaps.steps.compare import compare


def test_steps_run_in_the_documented_order():
    assert list_steps() == [
        "thresholds", "compare", "localise", "regions", "faithfulness", "sanity", "masked_eval",
        "roar", "clinical", "anatomy", "first_layer", "trust",
    ]  # fmt: skip
    assert get_step("masked_eval").command == "brainmaps masked-eval"
    with pytest.raises(ConfigError, match="unknown analysis step 'dice'"):
        get_step("dice")


def test_each_step_records_the_options_that_made_its_table(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    explain(run_dir, ["gradient", "grad_cam"], progress=False)
    done = analyse_run(run_dir, ["compare", "localise"], progress=False, log=None)
    assert all(v.startswith("written") for v in done.values()), done
    layout = RunLayout(run_dir)
    record = yaml.safe_load(layout.stage_record("compare").read_text())
    assert record["options"] == {
        "methods": ["grad_cam", "gradient"], "threshold": "top10%", "absolute": True,
    }  # fmt: skip
    assert layout.stage_record("localise").is_file()
    compare(run_dir, ["gradient", "grad_cam"], threshold="top5%")
    again = yaml.safe_load(layout.stage_record("compare").read_text())
    assert again["options"]["threshold"] == "top5%" and again["hash"] != record["hash"]
    assert analyse_run(run_dir, ["compare"], log=None)["compare"].startswith("current")
