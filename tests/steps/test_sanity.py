"""Model-parameter randomisation (Adebayo et al. 2018): scores, cascade, rule and step."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import ndimage
from torch import nn

from brainmaps.analysis.sanity import (
    SPEARMAN_BOUND,
    display_scale,
    rank_correlation,
    sanity_summary,
    ssim,
)
from brainmaps.attribution import AttributionMethod, create_method, register_method
from brainmaps.attribution import base as attribution_base
from brainmaps.cli.main import main
from brainmaps.exceptions import ConfigError
from brainmaps.reports.analyse import analyse_run
from brainmaps.run import RunLayout
from brainmaps.run.folder import open_run
from brainmaps.steps import _sanity_data, explain, get_step
from brainmaps.steps.sanity import (
    cascading_randomisation,
    permuted_labels,
    randomisation_scores,
    randomisation_stages,
    sanity_run,
)

EDGES = "test_input_edges"


def _smooth(rng: np.random.Generator, shape) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)


# -- the scores ---------------------------------------------------------------------------
def test_rank_correlation_known_values():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 7, 8))
    mask = a > -0.5
    assert rank_correlation(a, np.exp(a), mask) == pytest.approx(1.0)
    assert rank_correlation(a, -a, mask) == pytest.approx(-1.0)
    assert rank_correlation(a, -a, mask, absolute=True) == pytest.approx(1.0)
    assert np.isnan(rank_correlation(a, np.zeros_like(a), mask))
    b = np.where(mask, a, 100.0)  # outside the mask nothing counts
    assert rank_correlation(a, b, mask) == pytest.approx(1.0)


def test_ssim_known_values():
    a = np.full((12, 12, 12), 0.2)
    b = np.full((12, 12, 12), 0.6)
    c1, c2 = 0.01**2, 0.03**2
    # constant volumes: no variance, so SSIM is the luminance term (Wang et al. eq. 6)
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1) * (c2 / c2)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)
    noise = display_scale(_smooth(np.random.default_rng(1), (12, 12, 12)))
    assert ssim(noise, noise) == pytest.approx(1.0)
    assert ssim(noise, noise[::-1]) < 0.5


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(2)
    a = display_scale(_smooth(rng, (20, 18, 16)))
    b = display_scale(a + 0.3 * _smooth(rng, (20, 18, 16)))
    kwargs = {"data_range": 1.0, "gaussian_weights": True, "sigma": 1.5,
              "use_sample_covariance": False}  # fmt: skip
    reference, full = metrics.structural_similarity(a, b, full=True, **kwargs)
    assert ssim(a, b) == pytest.approx(reference, abs=1e-10)
    mask = a > 0.3
    assert ssim(a, b, mask) == pytest.approx(full[mask].mean(), abs=1e-10)


def test_display_scale():
    data = np.linspace(-2, 2, 1000).reshape(10, 10, 10)
    scaled = display_scale(data, np.abs(data) < 1.5)
    assert scaled.min() == 0 and scaled.max() == 1
    assert np.all(scaled[np.abs(data) >= 1.5] == 0)
    assert np.all(display_scale(np.zeros((4, 4, 4))) == 0)


def test_summary_rule():
    def rows(method, values):
        return [{"method": method, "fold": 0, "subject": str(i), "stage": s,
                 "spearman_abs": v if s == 2 else 0.99, "spearman": v, "ssim": 0.5}
                for i, v in enumerate(values) for s in (1, 2)]  # fmt: skip

    table = pd.DataFrame(
        rows("changes", [0.1, 0.2, np.nan])  # NaN (constant map) counts as 0
        + rows("stays", [0.9, 0.95, 0.3])
        + rows("inverted", [-0.8, -0.9, -0.7])  # |rho|: inverted structure still stays
    )
    summary = sanity_summary(table).set_index("method")
    assert summary["passed"].to_dict() == {"changes": True, "stays": False, "inverted": False}
    assert summary.loc["changes", "spearman_abs"] == pytest.approx(0.1)
    assert summary.loc["stays", "spearman_abs"] == pytest.approx(0.9)
    assert summary["n_subjects"].tolist() == [3, 3, 3]
    assert summary["n_stages"].tolist() == [2, 2, 2]
    assert (summary["bound"] == SPEARMAN_BOUND).all()
    assert sanity_summary(table, bound=0.95).loc[1, "passed"]
    assert summary["data_passed"].isna().all()  # no data randomisation rows: not measured


def test_subjects_whose_trained_map_is_constant_are_left_out():
    def rows(method, values, constant, check="model"):
        return [{"method": method, "fold": 0, "subject": str(i), "check": check,
                 "stage": 0 if check == "data" else 1, "spearman_abs": v, "spearman": v,
                 "ssim": 0.5, "trained_constant": c, "accuracy": 0.5}
                for i, (v, c) in enumerate(zip(values, constant, strict=True))]  # fmt: skip

    # a flat trained map ranks nothing: its NaN once counted as 0 and passed the method
    table = pd.DataFrame(
        rows("some_flat", [np.nan, np.nan, 0.9], [True, True, False])
        + rows("all_flat", [np.nan, np.nan], [True, True])
        + rows("flat_after", [np.nan, np.nan, 0.9], [False, False, False])  # random: 0
    )
    summary = sanity_summary(table).set_index("method")
    assert summary.loc["some_flat", "spearman_abs"] == pytest.approx(0.9)
    assert summary.loc["some_flat", "n_subjects"] == 1
    assert summary.loc["some_flat", "n_constant"] == 2
    assert not summary.loc["some_flat", "passed"]
    # nothing left to compare: not a pass by default (NaN medians, failed)
    assert np.isnan(summary.loc["all_flat", "spearman_abs"])
    assert not summary.loc["all_flat", "passed"]
    assert summary.loc["flat_after", "spearman_abs"] == 0 and summary.loc["flat_after", "passed"]
    # the same rule for the data randomisation rows, and a method fails when either fails
    data = pd.DataFrame(
        rows("changes", [0.2, 0.1], [False, False])
        + rows("changes", [0.3, 0.2], [False, False], "data")
        + rows("sticks", [0.2, 0.1], [False, False])
        + rows("sticks", [np.nan, 0.8, 0.9], [True, False, False], "data")
    )
    summary = sanity_summary(data).set_index("method")
    assert summary.loc["changes", "data_spearman_abs"] == pytest.approx(0.25)
    assert summary.loc["changes", "data_passed"] and summary.loc["changes", "passed"]
    assert summary.loc["sticks", "data_n_subjects"] == 2
    assert summary.loc["sticks", "data_spearman_abs"] == pytest.approx(0.85)
    assert summary.loc["sticks", "spearman_abs"] == pytest.approx(0.15)
    assert not summary.loc["sticks", "data_passed"] and not summary.loc["sticks", "passed"]
    assert summary.loc["sticks", "data_accuracy"] == 0.5


def test_permuted_labels_shuffle_within_each_group():
    labels = np.repeat([0, 1, 2], [7, 5, 4])
    train, val = np.arange(0, 16, 2), np.array([1, 5, 9])
    out = permuted_labels(labels, [train, val], [3, 0])
    for rows in (train, val):  # same class counts in each group
        assert sorted(out[rows]) == sorted(labels[rows])
    others = np.setdiff1d(np.arange(16), np.r_[train, val])
    assert np.array_equal(out[others], labels[others])  # e.g. the test fold: untouched
    assert not np.array_equal(out[train], labels[train])
    assert np.array_equal(out, permuted_labels(labels, [train, val], [3, 0]))  # seeded
    assert not np.array_equal(out, permuted_labels(labels, [train, val], [4, 0]))
    assert np.array_equal(labels, np.repeat([0, 1, 2], [7, 5, 4]))  # not changed in place


# -- the cascade on a hand-built model ------------------------------------------------------
def _model_and_inputs(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8**3, 2),
    ).eval()  # fmt: skip
    x = _smooth(np.random.default_rng(seed), (3, 1, 16, 16, 16))
    return model, torch.as_tensor(x, dtype=torch.float32)


def _gradient(model, x):
    target = torch.tensor([0, 1, 0])
    return create_method("gradient", model, absolute=False).attribute(x, target=target).numpy()


def _input_edges(model, x):
    """A "map" that ignores the weights: the gradient magnitude of the input."""
    return torch.stack(torch.gradient(x[:, 0], dim=(1, 2, 3))).pow(2).sum(0).sqrt().numpy()


def test_stages_follow_the_forward_pass_with_norms_joined():
    model, x = _model_and_inputs()
    assert randomisation_stages(model, x) == [("0", "1"), ("4",), ("7",)]
    stages = [(s, g) for s, g, _ in cascading_randomisation(model, randomisation_stages(model, x))]
    assert stages == [(1, ("7",)), (2, ("4",)), (3, ("0", "1"))]


def test_cascade_is_cumulative_seeded_and_leaves_the_model():
    model, _ = _model_and_inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = list(cascading_randomisation(model, ["0", "4", "7"], random_state=5))
    again = list(cascading_randomisation(model, ["0", "4", "7"], random_state=5))
    other = list(cascading_randomisation(model, ["0", "4", "7"], random_state=6))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    w = [dict(m.state_dict()) for _, _, m in first]
    assert not torch.equal(w[0]["7.weight"], before["7.weight"])
    assert torch.equal(w[0]["4.weight"], before["4.weight"])  # stage 1: the output only
    assert torch.equal(w[1]["7.weight"], w[0]["7.weight"])  # cumulative
    assert not torch.equal(w[1]["4.weight"], before["4.weight"])
    assert torch.equal(w[2]["0.weight"], dict(again[2][2].state_dict())["0.weight"])
    assert not torch.equal(w[2]["0.weight"], dict(other[2][2].state_dict())["0.weight"])


def test_randomisation_changes_gradient_maps():
    model, x = _model_and_inputs(seed=0)
    scores = randomisation_scores(model, x, _gradient, random_state=0)
    assert list(scores.columns) == ["sample", "stage", "layer", "spearman_abs", "spearman",
                                    "ssim", "trained_constant"]  # fmt: skip
    assert not scores["trained_constant"].any()
    assert len(scores) == 3 * 3
    # measured over model/input seeds 0-9 (3 inputs each): max |rho| 0.39 after the
    # output layer alone, 0.09 (|map|), 0.05 (signed) and SSIM 0.14 after all layers
    first = scores[scores["stage"] == 1]
    last = scores[scores["stage"] == 3]
    assert first["spearman_abs"].abs().max() < 0.6
    assert last["spearman_abs"].abs().max() < 0.25
    assert last["spearman"].abs().max() < 0.25
    assert last["ssim"].max() < 0.35
    assert sanity_summary(scores.assign(method="gradient"))["passed"].item()


def test_a_map_that_ignores_the_weights_fails():
    model, x = _model_and_inputs(seed=0)
    scores = randomisation_scores(model, x, _input_edges, random_state=0)
    assert np.allclose(scores[["spearman_abs", "spearman", "ssim"]], 1.0)
    summary = sanity_summary(scores.assign(method="edges"))
    assert not summary["passed"].item() and summary["spearman_abs"].item() == pytest.approx(1)


# -- the step on the trained tiny run -------------------------------------------------------
@pytest.fixture
def input_edges_method():
    """A registered method whose maps ignore the model: removed from the registry after."""

    @register_method(EDGES)
    class InputEdges(AttributionMethod):
        def _attribute(self, x, targets):
            return torch.stack(torch.gradient(x.sum(1), dim=(1, 2, 3))).pow(2).sum(0).sqrt()

    try:
        yield EDGES
    finally:
        attribution_base._METHODS.pop(EDGES, None)


COLUMNS = ["method", "fold", "subject", "session", "label", "explained", "check", "stage",
           "layer", "spearman_abs", "spearman", "ssim", "trained_constant", "epochs", "accuracy",
           "balanced_accuracy"]  # fmt: skip


def test_cli_writes_the_tables(tiny_run, tmp_path, input_edges_method, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    explain(run_dir, ["gradient"], options={"gradient": {"absolute": False}}, progress=False)
    argv = ["sanity", str(run_dir), "--methods", f"gradient,{EDGES}",
            "--subjects-per-fold", "2", "--seed", "3", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "sanity checks written to" in capsys.readouterr().out
    layout, run = RunLayout(run_dir), open_run(run_dir)
    table = pd.read_csv(layout.analysis("sanity"), sep="\t", dtype={"subject": str})
    assert list(table.columns) == COLUMNS
    n_stages = 4  # xin2019: three conv+bn blocks and the linear layer
    assert len(table) == 2 * run.n_folds * 2 * n_stages
    assert set(table["stage"]) == set(range(1, n_stages + 1))
    assert table.loc[table["stage"] == 1, "layer"].unique().tolist() == ["classifier.fc"]
    for fold, part in table.groupby("fold"):  # test subjects of their own fold, both classes
        test = set(run.table["subject"].iloc[run.indices(int(fold), "test")].astype(str))
        assert set(part["subject"]) <= test and part["label"].nunique() == 2
    summary = pd.read_csv(layout.analysis("sanity_summary"), sep="\t").set_index("method")
    assert summary.loc[EDGES, "spearman_abs"] == pytest.approx(1.0)
    assert not summary.loc[EDGES, "passed"]
    record = yaml.safe_load(layout.stage_record("sanity").read_text())["options"]
    assert record["methods"] == ["gradient", EDGES]
    assert record["subjects_per_fold"] == 2 and record["random_state"] == 3
    assert record["explain"]["gradient"] == {"target": "predicted", "options": {"absolute": False}}
    assert analyse_run(run_dir, ["sanity"], log=None)["sanity"].startswith("current")

    # checking one method again keeps the others' results on the same sample ...
    again = ["sanity", str(run_dir), "--methods", "gradient", "--subjects-per-fold", "2",
             "--seed", "3", "--no-progress"]  # fmt: skip
    assert main(again) == 0
    summary = pd.read_csv(layout.analysis("sanity_summary"), sep="\t").set_index("method")
    assert set(summary.index) == {"gradient", EDGES} and not summary.loc[EDGES, "passed"]
    assert len(pd.read_csv(layout.analysis("sanity"), sep="\t")) == len(table)
    record = yaml.safe_load(layout.stage_record("sanity").read_text())["options"]
    assert record["methods"] == [EDGES, "gradient"]
    # ... and drops them when the sample changes (they are no longer comparable)
    assert main([*again[:-2], "4", "--no-progress"]) == 0
    summary = pd.read_csv(layout.analysis("sanity_summary"), sep="\t")
    assert summary["method"].tolist() == ["gradient"]


def test_data_randomisation_changes_gradient_maps_not_edges(
    tiny_run, tmp_path, input_edges_method, monkeypatch
):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run, layout = open_run(run_dir), RunLayout(run_dir)
    given = []

    def spy(run, fold, volumes, labels, **kwargs):
        given.append((fold, labels, kwargs))
        return retrain_fold(run, fold, volumes, labels, **kwargs)

    retrain_fold = _sanity_data.retrain_fold
    monkeypatch.setattr(_sanity_data, "retrain_fold", spy)
    # fold 0, 2 subjects: median |rho| of the permuted-label model's gradient maps for
    # seeds 0-4 was 0.260, 0.254, 0.297, 0.276, 0.275 (subjects 0.23-0.31); the same
    # retraining on the true labels gives the fold model again (|rho| 1.00). The model's
    # test accuracy (true labels, 14 subjects) was 0.50, 0.50, 0.71, 0.57, 0.14.
    for seed in (0, 1, 2):
        sanity_run(run_dir, ["gradient", EDGES], random_state=seed, data_randomisation=True,
                   progress=False)  # fmt: skip
        table = pd.read_csv(layout.analysis("sanity"), sep="\t", dtype={"subject": str})
        assert list(table.columns) == COLUMNS
        data = table[table["check"] == "data"]
        assert len(table[table["check"] == "model"]) == 2 * run.n_folds * 2 * 4  # the cascade
        assert set(data["fold"]) == {0} and len(data) == 2 * 2  # default: fold 0
        assert (data["layer"] == "labels permuted").all() and (data["stage"] == 0).all()
        assert (data["epochs"] == run.config.training.epochs).all()
        assert data["accuracy"].between(0, 1).all() and data["accuracy"].nunique() == 1
        gradient = data[data["method"] == "gradient"]
        assert gradient["spearman_abs"].abs().median() < 0.4
        summary = pd.read_csv(layout.analysis("sanity_summary"), sep="\t").set_index("method")
        assert summary.loc["gradient", "data_passed"] and summary.loc["gradient", "passed"]
        assert summary.loc["gradient", "data_accuracy"] == pytest.approx(data["accuracy"].iloc[0])
        # a map that ignores the weights is the same for a model that learnt nothing
        assert summary.loc[EDGES, "data_spearman_abs"] == pytest.approx(1.0)
        assert not summary.loc[EDGES, "data_passed"] and not summary.loc[EDGES, "passed"]

    # the training labels were a seeded permutation of the fold's own: same counts in
    # training and validation, the test labels untouched
    assert [g[0] for g in given] == [0, 0, 0]
    for _, labels, kwargs in given:
        for role in ("train", "val"):
            rows = run.indices(0, role)
            assert sorted(labels[rows]) == sorted(run.labels[rows])
        assert not np.array_equal(labels[run.indices(0, "train")],
                                  run.labels[run.indices(0, "train")])  # fmt: skip
        test = run.indices(0, "test")
        assert np.array_equal(labels[test], run.labels[test])
        assert kwargs.get("random_state", 0) == 0  # the fold model's training seed
    assert not np.array_equal(given[0][1], given[1][1])  # another seed, another permutation
    sanity_run(run_dir, [EDGES], random_state=2, data_randomisation=True, progress=False)
    assert np.array_equal(given[-1][1], given[2][1])  # the same seed: the same permutation


def test_data_randomisation_cli_keeps_rows_and_the_report_never_trains(
    tiny_run, tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    layout = RunLayout(run_dir)
    explain(run_dir, ["gradient"], progress=False)
    argv = ["sanity", str(run_dir), "--methods", "gradient", "--data-randomisation",
            "--folds-subset", "1", "--epochs", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "data_spearman_abs" in out and "data_passed" in out
    table = pd.read_csv(layout.analysis("sanity"), sep="\t")
    data = table[table["check"] == "data"]
    assert set(data["fold"]) == {1} and (data["epochs"] == 2).all()
    record = yaml.safe_load(layout.stage_record("sanity").read_text())["options"]
    assert record["data_randomisation"] == {"folds": [1], "epochs": 2}
    assert record["data_folds"] == [1]

    def no_training(*args, **kwargs):
        raise AssertionError("the report's sanity step trained a model")

    monkeypatch.setattr(_sanity_data, "retrain_fold", no_training)
    # the cascade alone, again (as the report runs it): the trained rows are kept
    assert main(["sanity", str(run_dir), "--methods", "gradient", "--no-progress"]) == 0
    again = pd.read_csv(layout.analysis("sanity"), sep="\t")
    assert len(again) == len(table) and (again["check"] == "data").sum() == len(data)
    assert analyse_run(run_dir, ["sanity"], overwrite=True, log=None)["sanity"].startswith(
        "written"
    )
    summary = pd.read_csv(layout.analysis("sanity_summary"), sep="\t").set_index("method")
    assert summary.loc["gradient", "data_n_folds"] == 1  # kept: the recorded sample reused
    capsys.readouterr()
    assert main([*argv[:-5], "--epochs", "0", "--no-progress"]) == 2
    assert "epochs" in capsys.readouterr().err


def test_step_defaults_and_errors(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    step, run = get_step("sanity"), open_run(run_dir)
    assert step.skip(run, [], {}).startswith("no maps")
    assert "--methods occlusion" in step.skip(run, ["occlusion"], {})
    assert step.skip(run, ["occlusion", "gradient"], {}) is None
    with pytest.raises(ConfigError, match="no method to check"):
        sanity_run(run_dir, progress=False)
    with pytest.raises(ConfigError, match="unknown attribution method 'nope'"):
        sanity_run(run_dir, ["nope"], progress=False)
    with pytest.raises(ConfigError, match="subjects_per_fold: expected an integer"):
        sanity_run(run_dir, ["gradient"], subjects_per_fold=0, progress=False)
    with pytest.raises(ConfigError, match="random_state: expected an integer"):
        sanity_run(run_dir, ["gradient"], random_state=-1, progress=False)
    with pytest.raises(ConfigError, match="bound"):
        sanity_run(run_dir, ["gradient"], bound=2.0, progress=False)
    # data randomisation: checked before any work
    data = {"data_randomisation": True, "progress": False}
    with pytest.raises(ConfigError, match="epochs: expected an integer >= 1, got 0"):
        sanity_run(run_dir, ["gradient"], epochs=0, **data)
    with pytest.raises(ConfigError, match=r"folds: fold 3 is not a fold of .* 0\.\.2"):
        sanity_run(run_dir, ["gradient"], folds=[0, 3], **data)
    with pytest.raises(ConfigError, match="folds is empty"):
        sanity_run(run_dir, ["gradient"], folds=[], **data)
    with pytest.raises(ConfigError, match="pass data_randomisation=True"):
        sanity_run(run_dir, ["gradient"], epochs=3, progress=False)
    assert not RunLayout(run_dir).analysis("sanity").exists()


def test_a_stage_record_with_refused_options_names_the_file_and_the_mm_option(tiny_run, tmp_path):
    # maps made by a brainmaps whose Meaningful Perturbations took its sizes in voxels
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    layout = RunLayout(run_dir)
    record = layout.stage_record("explain-meaningful_perturbation")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(yaml.safe_dump({"options": {"target": "predicted",
                                                  "options": {"sigma_mask": 1.0}}}))  # fmt: skip
    with pytest.raises(ConfigError, match="sigma_mask is now sigma_mask_mm") as err:
        sanity_run(run_dir, ["meaningful_perturbation"], progress=False)
    assert str(record) in str(err.value) and "Explain the run again." in str(err.value)


def test_cli_names_the_flags_that_need_data_randomisation(tiny_run, capsys):
    code = main(["sanity", str(tiny_run), "--methods", "gradient", "--folds-subset", "1",
                 "--epochs", "2", "--no-progress"])  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err
    assert "--folds-subset and --epochs choose the models" in err
    assert "add --data-randomisation" in err
