"""Importance tables (mean, sd and rank over folds) and their bar plot."""

from __future__ import annotations

import numpy as np
import pytest

from brainmaps.baselines.plots import importance_table, plot_importances
from brainmaps.exceptions import ConfigError, ShapeError


def test_importance_table_ranks_by_absolute_mean():
    per_fold = [np.array([0.1, -2.0, 1.0]), np.array([0.3, -4.0, 1.0])]
    table = importance_table(per_fold, ["a", "b", "c"])
    assert table["feature"].tolist() == ["b", "c", "a"]
    assert table["rank"].tolist() == [1, 2, 3]
    assert table.loc[0, "importance"] == pytest.approx(-3.0)
    assert table.loc[0, "std"] == pytest.approx(np.std([-2.0, -4.0], ddof=1))
    assert table.loc[2, "fold_1"] == pytest.approx(0.3)
    with pytest.raises(ShapeError):
        importance_table(per_fold, ["a", "b"])


def test_plot_writes_a_png(tmp_path):
    table = importance_table([np.arange(30.0) - 10, np.arange(30.0) - 9], list("abcdefghij") * 3)
    path = tmp_path / "importances.png"
    plot_importances(table, path, top=5, title="lr")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["importances.png"]
    with pytest.raises(ConfigError):
        plot_importances(table, path, top=0)
