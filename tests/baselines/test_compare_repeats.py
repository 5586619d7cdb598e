"""Baselines on the folds of every repeat of a repeated run, and the pooled comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainmaps.baselines.compare import compare_models, format_comparison
from brainmaps.baselines.run import run_baselines
from brainmaps.evaluation.statistics import corrected_repeated_kfold_ttest
from brainmaps.run.layout import RunLayout
from brainmaps.training.run import train_run
from tiny import tiny_config

MODELS = ("svm", "svm_linear")


@pytest.fixture(scope="module")
def repeated(tiny_cohort, tmp_path_factory):
    """A 2 x 3-fold run (two epochs: nothing asserts what the CNN learnt) and its voxel
    baselines."""
    base = tmp_path_factory.mktemp("repeated_baselines")
    config = tiny_config(
        tiny_cohort, base / "run", base / "cache", epochs=2, val_fraction=0.1, repeats=2
    )
    train_run(config, progress=False)
    comparison = run_baselines(base / "run", models=MODELS, progress=False)
    return base / "run", comparison


def _read(path, **dtypes) -> pd.DataFrame:
    dtype = {"subject": str, "session": str, "fold": str, "repeat": str, **dtypes}
    return pd.read_csv(path, sep="\t", dtype=dtype, keep_default_na=False)


def _tests(folds: pd.DataFrame, k: int) -> set:
    return set(folds.loc[(folds["fold"] == str(k)) & (folds["role"] == "test"), "subject"])


def test_every_repeat_gets_its_baseline_tables(repeated):
    run_dir, _ = repeated
    layout = RunLayout(run_dir)
    for name in ("metrics", "predictions", "params"):
        assert layout.baselines(name).is_file() and layout.repeat(1).baselines(name).is_file()
    assert layout.baselines("metrics_repeats").is_file()
    # the run's own baselines/ tables are those of repeat 0, as without repeats
    metrics = _read(layout.baselines("metrics"))
    assert list(metrics["fold"]) == ["0", "1", "2", "mean", "std"] * 2
    assert "repeat" not in metrics
    assert not list(layout.repeat(1).baselines_dir.glob("importances_*"))


def test_baseline_folds_are_the_cnn_repeat_folds(repeated):
    run_dir, _ = repeated
    layout = RunLayout(run_dir)
    for r in (0, 1):
        rep = layout.repeat(r)
        folds = _read(rep.folds)
        predictions = _read(rep.baselines("predictions"))
        for k in range(3):
            cnn = set(_read(rep.fold_predictions(k))["subject"])
            assert cnn == _tests(folds, k)
            for model in MODELS:
                rows = predictions[
                    (predictions["model"] == model) & (predictions["fold"] == str(k))
                ]
                assert set(rows["subject"]) == cnn and rows["subject"].is_unique
    # and the two repeats really are different splits
    first, second = (_read(layout.repeat(r).folds) for r in (0, 1))
    assert {frozenset(_tests(first, k)) for k in range(3)} != {
        frozenset(_tests(second, k)) for k in range(3)
    }


def _fold_accuracy(layout: RunLayout, model: str) -> np.ndarray:
    """Accuracy of every (repeat, fold) in repeat then fold order."""
    values = []
    for r in (0, 1):
        rep = layout.repeat(r)
        table = _read(rep.metrics if model == "cnn" else rep.baselines("metrics"))
        if model != "cnn":
            table = table[table["model"] == model]
        values += list(table.set_index("fold").loc[["0", "1", "2"], "accuracy"])
    return np.asarray(values, dtype=float)


def test_comparison_pools_all_repeat_folds(repeated):
    run_dir, comparison = repeated
    layout = RunLayout(run_dir)
    assert list(comparison["model"]) == ["cnn", *MODELS]
    assert (comparison["n_folds"] == 6).all() and (comparison["n_repeats"] == 2).all()
    folds = [_read(layout.repeat(r).folds) for r in (0, 1)]
    sizes = [((f["fold"] == str(k)) & (f["role"] != "test")).sum() for f in folds for k in range(3)]
    n_train = float(np.mean(sizes))
    n_test = float(np.mean([len(_tests(f, k)) for f in folds for k in range(3)]))
    cnn = _fold_accuracy(layout, "cnn")
    table = comparison.set_index("model")
    assert table.loc["cnn", "accuracy_mean"] == pytest.approx(cnn.mean(), rel=1e-5)
    assert np.isnan(table.loc["cnn", "reference_wins"])
    for model in MODELS:
        acc = _fold_accuracy(layout, model)
        row = table.loc[model]
        assert row["accuracy_mean"] == pytest.approx(acc.mean(), rel=1e-5)
        assert row["accuracy_std"] == pytest.approx(acc.std(ddof=1), rel=1e-5)
        t, p = corrected_repeated_kfold_ttest(acc, cnn, n_train, n_test)
        if np.isnan(t):
            assert np.isnan(row["t"])
        else:
            assert row["t"] == pytest.approx(t, rel=1e-4) and row["p"] == pytest.approx(p, rel=1e-4)
        d = cnn - acc
        assert row["reference_wins"] == pytest.approx(((d > 0) + 0.5 * (d == 0)).mean())
    written = pd.read_csv(layout.baselines("comparison"), sep="\t")
    pd.testing.assert_frame_equal(written, comparison, check_exact=False, rtol=1e-5)
    text = format_comparison(comparison)
    assert text.startswith("2 repeats x 3 folds = 6 folds pooled") and "cnn wins" in text


def test_pooled_baseline_metrics_table(repeated):
    run_dir, _ = repeated
    layout = RunLayout(run_dir)
    pooled = _read(layout.baselines("metrics_repeats"))
    for model in MODELS:
        rows = pooled[pooled["model"] == model]
        assert list(rows["repeat"]) == ["0"] * 3 + ["1"] * 3 + ["all", "all"]
        assert list(rows["fold"]) == ["0", "1", "2"] * 2 + ["mean", "std"]
        acc = _fold_accuracy(layout, model)
        assert np.allclose(rows["accuracy"].iloc[:6].astype(float), acc)
        assert float(rows["accuracy"].iloc[6]) == pytest.approx(acc.mean())


def _table(repeats, acc):
    return pd.DataFrame(
        {
            "repeat": [str(r) for r in repeats],
            "fold": [str(k) for k in range(len(acc) // 2)] * 2,
            "accuracy": acc,
            "balanced_accuracy": acc,
            "roc_auc": 1.0,
        }
    )


def test_compare_pairs_repeat_and_fold():
    # the same folds listed in another order pair by (repeat, fold), not by position
    cnn = _table([0, 0, 0, 1, 1, 1], [0.9, 0.8, 0.85, 0.9, 0.7, 0.8])
    svm = _table([0, 0, 0, 1, 1, 1], [0.8, 0.8, 0.9, 0.7, 0.7, 0.75])
    shuffled = svm.iloc[[5, 0, 3, 2, 4, 1]]
    a = compare_models({"cnn": cnn, "svm": svm}, n_train=20, n_test=10)
    b = compare_models({"cnn": cnn, "svm": shuffled}, n_train=20, n_test=10)
    pd.testing.assert_frame_equal(a, b)
    row = a.set_index("model").loc["svm"]
    t, p = corrected_repeated_kfold_ttest(
        svm["accuracy"].to_numpy(), cnn["accuracy"].to_numpy(), 20, 10
    )
    assert row["t"] == pytest.approx(t, rel=1e-4) and row["p"] == pytest.approx(p, rel=1e-4)
    # d = cnn - svm: 0.1, 0, -0.05, 0.2, 0, 0.05 -> 3 wins, 2 ties, 1 loss
    assert row["reference_wins"] == pytest.approx(4 / 6)
    assert row["n_folds"] == 6 and row["n_repeats"] == 2


def test_regression_win_means_a_lower_error():
    def frame(mae):
        return pd.DataFrame({"fold": ["0", "1", "2"], "mae": mae, "rmse": mae, "r": 0.5})

    table = compare_models(
        {"cnn": frame([5.0, 6.0, 7.0]), "lr": frame([6.0, 5.0, 7.5])},
        n_train=20,
        n_test=10,
        task="regression",
    )
    assert table.set_index("model").loc["lr", "reference_wins"] == pytest.approx(2 / 3)
    assert "n_repeats" not in table  # a run without repeats: the table as before
