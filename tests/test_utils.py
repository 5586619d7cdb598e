"""Shared helpers: reading the yes / no cells of tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainmaps.utils import falsy, truthy


@pytest.mark.parametrize("value", [True, "True", "true", " TRUE ", 1, "1", 1.0, "1.0", "yes"])
def test_truthy(value):
    assert truthy(value) and not falsy(value)


@pytest.mark.parametrize("value", [False, "False", "false", 0, "0", 0.0, "0.0", "no"])
def test_falsy(value):
    assert falsy(value) and not truthy(value)


@pytest.mark.parametrize("value", [None, np.nan, "", "maybe", 2, "passes"])
def test_unknown_is_neither(value):
    assert not truthy(value) and not falsy(value)


def test_a_boolean_column_with_gaps_reads_back_as_floats(tmp_path):
    # why 1.0 / 0.0 count: a yes / no column with a gap (NaN) that went through floats
    path = tmp_path / "t.tsv"
    pd.DataFrame({"passed": [1.0, 0.0, np.nan]}).to_csv(path, sep="\t", index=False)
    cells = pd.read_csv(path, sep="\t")["passed"].tolist()
    assert [truthy(v) for v in cells] == [True, False, False]
    assert [falsy(v) for v in cells] == [False, True, False]
