"""The clinical step on a trained tiny run of a synthetic cohort with clinical measures."""

from __future__ import annotations

import pandas as pd
import pytest

from brainmaps.exceptions import CohortError, ConfigError
from conftest import STRONG_REGIONS
from tiny import tiny_config


@pytest.fixture(scope="module")
def clinical_run_dir(tmp_path_factory):
    from brainmaps.data.synthetic import make_synthetic_cohort
    from brainmaps.training.run import train_run

    base = tmp_path_factory.mktemp("clinical")
    cohort = make_synthetic_cohort(
        base / "synth",
        n_subjects=40,
        seed=3,
        voxel_size=4.0,
        effect="intensity",
        effect_size=0.5,
        regions=STRONG_REGIONS,
        clinical=True,
        progress=False,
    )
    train_run(tiny_config(cohort, base / "run", base / "cache"), progress=False)
    return base / "run"


def test_the_planted_mmse_relation_is_found_with_its_sign(clinical_run_dir):
    """Measured on tiny runs of this cohort with training seeds 7 (the fixture's), 0, 1, 2:
    Spearman(score, mmse) over everyone -0.737, -0.786, -0.813, -0.752; within patients
    -0.396, -0.616, -0.393, -0.487; OLS class coefficient 4.4, 4.3, 4.1, 3.4 (p < 1e-3);
    the null batch flag's permutation p 0.40, 0.47, 0.30, 0.40. Asserted with margins."""
    from brainmaps.steps.clinical import clinical_run

    path = clinical_run(
        clinical_run_dir,
        measures=["mmse"],
        covariates=["age", "sex"],
        subgroups=["batch", "progression"],
        n_permutations=2000,
    )
    table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    rho = table[table["analysis"] == "spearman"].set_index("within")["estimate"]
    assert rho["all"] < -0.5 and rho["patient"] < -0.1, rho
    cls = table[(table["analysis"] == "ols") & (table["variable"] == "class")].iloc[0]
    assert cls["level"] == "patient" and cls["estimate"] > 1.5 and cls["p_value"] < 0.01
    assert {"age", "sex"} <= set(table.loc[table["analysis"] == "ols", "variable"])
    perm = table[table["analysis"] == "permutation"].set_index("variable")
    assert perm.loc["batch", "p_value"] > 0.05
    assert perm.loc["progression", "n"] == 20  # patients only
    stage = (clinical_run_dir / "stages" / "clinical.yaml").read_text()
    assert "mmse" in stage and "n_permutations: 2000" in stage


def test_clinical_refusals(clinical_run_dir, tiny_run):
    from brainmaps.steps.clinical import clinical_run

    with pytest.raises(CohortError, match="moca"):
        clinical_run(clinical_run_dir, measures=["moca"])
    with pytest.raises(CohortError, match="1 level"):
        clinical_run(tiny_run, subgroups=["site"])  # one site only
    with pytest.raises(ConfigError, match="give measures"):
        clinical_run(clinical_run_dir)
