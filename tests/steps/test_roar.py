"""ROAR / KAR: exact masks on hand-made arrays, a planted cohort whose oracle map must
beat random removal, and the step end to end on a copy of the tiny run."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from torch import nn

from brainmaps.analysis.roar import (
    SUMMARY_COLUMNS,
    UNIT_COLUMNS,
    fill_like,
    modified_volumes,
    replace_voxels,
    replaced_voxels,
    roar_summary,
    smooth_random,
    training_mean,
)
from brainmaps.cli.main import main
from brainmaps.exceptions import ConfigError
from brainmaps.reports.analyse import analyse_run
from brainmaps.reports.html import build_report
from brainmaps.run import RunLayout
from brainmaps.steps import explain, get_step, list_steps
from brainmaps.steps import roar as roar_step
from brainmaps.steps.trust import trust_run
from brainmaps.training.retrain import retrain_and_score

# -- the masks, exactly --------------------------------------------------------------


def _ranked_volume():
    """4x4x4 map whose values are a permutation of 0..63; brain = all but the first x-slab."""
    values = np.random.default_rng(0).permutation(64).astype(np.float32).reshape(4, 4, 4)
    mask = np.ones((4, 4, 4), dtype=bool)
    mask[0] = False
    return values, mask


def test_roar_replaces_the_top_and_kar_the_bottom_inside_the_mask():
    values, mask = _ranked_volume()
    inside = np.sort(values[mask])[::-1]  # 48 brain voxels, highest first
    top12 = mask & (values >= inside[11])  # round(0.25 * 48) = 12
    roar = replaced_voxels(values, mask, 0.25, "roar")
    np.testing.assert_array_equal(roar, top12)
    assert not roar[0].any()  # the first slab is outside the brain, whatever its values
    kar = replaced_voxels(values, mask, 0.25, "kar")
    np.testing.assert_array_equal(kar, mask & (values <= inside[-12]))
    # KAR at fraction f keeps exactly what ROAR at 1 - f replaces
    np.testing.assert_array_equal(~replaced_voxels(values, mask, 0.75, "kar") & mask, top12)
    assert not replaced_voxels(values, mask, 0.0, "roar").any()
    np.testing.assert_array_equal(replaced_voxels(values, mask, 1.0, "kar"), mask)
    flipped = -values  # |map| ranks the most negative voxels first
    np.testing.assert_array_equal(replaced_voxels(flipped, mask, 0.25, absolute=True), top12)
    with pytest.raises(ConfigError, match="mode"):
        replaced_voxels(values, mask, 0.25, "remove")


def test_ties_are_broken_at_random_inside_the_mask_and_reproducibly():
    attribution = np.zeros((4, 4, 4), dtype=np.float32)
    attribution[1, 1, 1], attribution[2, 2, 2], attribution[3, 3, 3] = 3.0, 2.0, 1.0
    mask = np.ones((4, 4, 4), dtype=bool)
    mask[0] = False  # 48 brain voxels: 3 ranked, 45 tied at zero
    peaks = attribution > 0
    picks = []
    for seed in range(5):
        roar = replaced_voxels(attribution, mask, 5 / 48, random_state=seed)
        assert roar.sum() == 5 and (roar & peaks).sum() == 3 and not roar[0].any()
        np.testing.assert_array_equal(roar, replaced_voxels(attribution, mask, 5 / 48,
                                                            random_state=seed))  # fmt: skip
        picks.append(tuple(np.flatnonzero(roar & ~peaks)))
    assert len(set(picks)) > 1  # the two tied voxels differ between seeds
    kar = replaced_voxels(attribution, mask, 45 / 48, "kar", random_state=0)
    np.testing.assert_array_equal(kar, mask & ~peaks)  # the 45 tied voxels, not the peaks


def test_fills_and_replacement():
    volumes = [np.full((2, 3, 4, 5), v, dtype=np.float32) for v in (1.0, 3.0, 8.0)]
    mean = training_mean(volumes, [0, 1])
    np.testing.assert_array_equal(mean, np.full((2, 3, 4, 5), 2.0))
    replaced = np.zeros((3, 4, 5), dtype=bool)
    replaced[0] = True
    out = replace_voxels(volumes[2], replaced, fill_like(volumes[2], "train_mean", mean=mean))
    assert (out[:, 0] == 2.0).all() and (out[:, 1:] == 8.0).all()  # every channel
    assert (fill_like(volumes[2], "zero") == 0).all()
    with pytest.raises(ConfigError, match="fill"):
        fill_like(volumes[2], "noise")
    maps = [np.arange(60, dtype=np.float32).reshape(3, 4, 5)] * 3
    modified = modified_volumes(volumes, maps.__getitem__, None, 0.5, mean=mean)
    assert [float((m == 2.0).mean()) for m in modified] == [0.5, 0.5, 0.5]


def test_summary_pairs_each_method_with_the_random_models_of_its_folds():
    base = {"seed": 0, "n_train": 8, "n_val": 0, "n_test": 4, "epochs": 3, "best_epoch": 3,
            "balanced_accuracy": 0.5, "seconds": 1.0, "options": "h", "maps": ""}  # fmt: skip
    rows = [
        ("none", "none", 0.0, 0, 0.9), ("none", "none", 0.0, 1, 0.8),
        ("random", "both", 0.5, 0, 0.7), ("random", "both", 0.5, 1, 0.6),
        ("grad", "roar", 0.5, 0, 0.5), ("grad", "roar", 0.5, 1, 0.3),
        ("grad", "kar", 0.5, 0, 0.8),  # fold 1 of KAR not trained yet
    ]  # fmt: skip
    keys = ["method", "mode", "fraction", "fold", "accuracy"]
    units = pd.DataFrame([dict(zip(keys, r, strict=True)) for r in rows]).assign(**base)
    units = units.assign(roc_auc=units["accuracy"])[UNIT_COLUMNS]
    roar = roar_summary(units, "roar")
    assert list(roar.columns) == SUMMARY_COLUMNS
    assert roar["fraction"].tolist() == [0.0, 0.5] and set(roar["method"]) == {"grad"}
    assert roar["accuracy"].tolist() == pytest.approx([0.85, 0.4])
    assert roar["accuracy_random"].tolist() == pytest.approx([0.85, 0.65])
    assert roar["folds"].tolist() == ["0,1", "0,1"]
    kar = roar_summary(units, "kar").set_index("fraction")
    assert kar.loc[0.5, "accuracy_random"] == pytest.approx(0.7)  # fold 0's random model
    assert kar.loc[0.5, "n_folds"] == 1
    # fraction 0 of KAR is fold 0's reference (0.9), not the mean over both folds (0.85)
    assert kar.loc[0.0, "accuracy"] == pytest.approx(0.9) and kar.loc[0.0, "folds"] == "0"
    assert kar.loc[0.5, ["drop", "drop_random"]].tolist() == pytest.approx([0.1, 0.2])


def _units(rows, **columns) -> pd.DataFrame:
    """Per-model rows from ``(method, mode, fraction, fold, accuracy)``."""
    base = {"seed": 0, "n_train": 8, "n_val": 0, "n_test": 4, "epochs": 3, "best_epoch": 3,
            "balanced_accuracy": 0.5, "seconds": 1.0, "options": "h", "maps": ""}  # fmt: skip
    keys = ["method", "mode", "fraction", "fold", "accuracy"]
    units = pd.DataFrame([dict(zip(keys, r, strict=True)) for r in rows]).assign(**base)
    return units.assign(roc_auc=units["accuracy"], **columns)[UNIT_COLUMNS]


def test_summary_pairs_the_reference_and_the_random_control_with_the_method_folds():
    units = _units([
        ("none", "none", 0.0, 0, 0.9), ("none", "none", 0.0, 1, 0.5), ("none", "none", 0.0, 2, 0.4),
        ("random", "both", 0.5, 0, 0.8), ("random", "both", 0.5, 1, 0.2),
        ("random", "both", 0.5, 2, 0.3),
        ("grad", "roar", 0.5, 0, 0.6),  # folds-subset 0: only fold 0 of the method
        ("grad", "roar", 0.5, 2, 0.1),  # fold 2's method model ...
    ])  # fmt: skip
    units = units[~((units["method"] == "random") & (units["fold"] == 2))]  # ... has no random
    table = roar_summary(units, "roar").set_index("fraction")
    assert table.index.tolist() == [0.0, 0.5]
    row = table.loc[0.5]
    assert row["folds"] == "0" and row["n_folds"] == 1  # fold 2 waits for its random model
    assert row[["accuracy", "accuracy_random", "accuracy_reference"]].tolist() == pytest.approx(
        [0.6, 0.8, 0.9]
    )
    assert row[["drop", "drop_random"]].tolist() == pytest.approx([0.3, 0.1])
    ref = table.loc[0.0]
    assert ref["folds"] == "0"  # not the reference of folds 0, 1 and 2 (0.6)
    assert ref[["accuracy", "accuracy_random", "drop"]].tolist() == pytest.approx([0.9, 0.9, 0])
    # seeds pair too: a second seed's method model meets its own seed's reference
    more = _units([("none", "none", 0.0, 0, 0.7), ("random", "both", 0.5, 0, 0.6),
                   ("grad", "roar", 0.5, 0, 0.2)], seed=1)  # fmt: skip
    both = roar_summary(pd.concat([units, more], ignore_index=True), "roar").set_index("fraction")
    assert both.loc[0.5, "seeds"] == "0,1" and both.loc[0.0, "accuracy"] == pytest.approx(0.8)
    assert both.loc[0.5, "drop"] == pytest.approx(((0.9 - 0.6) + (0.7 - 0.2)) / 2)


# -- a planted cohort: removing the oracle's top voxels hurts, the anti-oracle's does not -

SIZE = 12
CUBE = (slice(4, 8),) * 3


def _cube_cohort(seed: int, n: int = 96, effect: float = 1.0):
    """Noise volumes; odd ones (class 1) carry a +1 cube of 4^3 voxels."""
    rng = np.random.default_rng(seed)
    volumes = rng.normal(0.0, 1.0, (n, SIZE, SIZE, SIZE)).astype(np.float32)
    labels = np.arange(n) % 2
    volumes[labels == 1, 4:8, 4:8, 4:8] += effect
    return list(volumes), labels


def _detector() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool3d(1), nn.Flatten(),
        nn.Linear(4, 2),
    )  # fmt: skip


def test_oracle_removal_costs_more_than_random_and_the_anti_oracle_less():
    oracle = np.zeros((SIZE,) * 3, dtype=np.float32)
    oracle[CUBE] = 1.0
    accuracy: dict[tuple[str, str], list[float]] = {}
    for seed in range(4):
        volumes, labels = _cube_cohort(seed)
        train, test = np.arange(48), np.arange(48, 96)
        mean = training_mean(volumes, train)
        rankings = {
            "oracle": lambda i: oracle,
            "anti": lambda i: -oracle,  # every voxel outside the cube first
            "random": lambda i, s=seed: np.random.default_rng([s, 99, i]).random(oracle.shape),
        }
        for mode in ("roar", "kar"):
            for name, ranking in rankings.items():
                x = modified_volumes(volumes, ranking, None, 0.7, mode, mean=mean,
                                     random_state=seed)  # fmt: skip
                score = retrain_and_score(
                    _detector, x, labels, train, [], test, epochs=15, lr=1e-2, batch_size=8,
                    seed=seed, device="cpu",
                )  # fmt: skip
                accuracy.setdefault((mode, name), []).append(score["accuracy"])
    mean_acc = {key: float(np.mean(v)) for key, v in accuracy.items()}
    # measured over seeds 0-3, 4-7, 8-11, 12-15 (1 and 2 threads): ROAR at 70 % replaced,
    # oracle 0.48-0.52, random 0.71-0.85, anti-oracle 0.995-1.0; KAR oracle 0.98-1.0,
    # random 0.74-0.80, anti-oracle 0.49-0.56
    assert mean_acc["roar", "random"] - mean_acc["roar", "oracle"] > 0.1, mean_acc
    assert mean_acc["roar", "anti"] - mean_acc["roar", "random"] > 0.1, mean_acc
    assert mean_acc["kar", "oracle"] - mean_acc["kar", "random"] > 0.1, mean_acc
    assert mean_acc["kar", "random"] - mean_acc["kar", "anti"] > 0.1, mean_acc


# -- the step on a copy of the tiny run ----------------------------------------------


def test_step_is_registered_before_trust_and_never_run_by_analyse_run(tiny_run, tmp_path):
    steps = list_steps()
    assert steps.index("masked_eval") < steps.index("roar") < steps.index("trust")
    assert get_step("roar").command == "brainmaps roar"
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    status = analyse_run(run_dir, ["roar"], log=None)
    assert status["roar"].startswith("skipped: no maps")


def test_cli_writes_the_tables_and_resumes(tiny_run, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    explain(run_dir, ["gradient"], progress=False)
    layout = RunLayout(run_dir)
    status = analyse_run(run_dir, ["roar"], log=None)["roar"]
    assert status.startswith("skipped: retrains") and f"brainmaps roar {run_dir}" in status
    argv = ["roar", str(run_dir), "--epochs", "1", "--folds-subset", "0", "--fractions",
            "0.5", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "remove-and-retrain table written to" in capsys.readouterr().out
    units = pd.read_csv(layout.analysis("roar_folds"), sep="\t", keep_default_na=False)
    assert list(units.columns) == UNIT_COLUMNS
    assert sorted(zip(units["method"], units["mode"], units["fraction"], strict=True)) == [
        ("gradient", "kar", 0.5), ("gradient", "roar", 0.5), ("none", "none", 0.0),
        ("random", "both", 0.5),
    ]  # fmt: skip
    assert set(units["fold"]) == {0} and set(units["epochs"]) == {1}
    for mode in ("roar", "kar"):
        table = pd.read_csv(layout.analysis(mode), sep="\t")
        assert list(table.columns) == SUMMARY_COLUMNS
        assert table[["method", "mode"]].drop_duplicates().values.tolist() == [["gradient", mode]]
        assert table["fraction"].tolist() == [0.0, 0.5]
        assert table["accuracy"].between(0, 1).all() and table["n_folds"].tolist() == [1, 1]
    record = yaml.safe_load(layout.stage_record("roar").read_text())["options"]
    assert record == {"epochs": 1, "fill": "train_mean", "ranking": "subject",
                      "absolute": False, "sigma_mm": None}  # fmt: skip

    # a second call finds every model and trains nothing
    before = layout.analysis("roar_folds").read_bytes()
    mtime = layout.analysis("roar_folds").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(roar_step, "retrain_and_score", no_training)
    assert main(argv) == 0
    assert layout.analysis("roar_folds").read_bytes() == before
    assert layout.analysis("roar_folds").stat().st_mtime_ns == mtime
    # other options are refused, naming the change
    assert main([*argv[:2], "--epochs", "2", *argv[4:]]) == 2
    assert "epochs: 1 -> 2" in capsys.readouterr().err

    # the trust table reads the ROAR rows; the report draws them
    row = pd.read_csv(trust_run(run_dir), sep="\t").set_index("method").loc["gradient"]
    assert np.isfinite(row["roar_drop"]) and row["roar_reading"].startswith("ROAR accuracy")
    html = build_report(run_dir).read_text(encoding="utf-8")
    start = html.index('<section id="roar">')
    section = html[start : html.index("</section>", start)]
    assert "data:image/png;base64," in section and "Hooker" in section
    assert html.index('id="masked_eval"') < start


def test_default_methods_leave_sampled_maps_out_and_bad_fractions_train_nothing(tiny_run, tmp_path):
    from brainmaps.exceptions import BrainmapsWarning
    from brainmaps.run.folder import open_run

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    explain(run_dir, ["gradient"], progress=False)
    explain(run_dir, ["grad_cam"], subjects_per_fold=1, progress=False)
    with pytest.warns(BrainmapsWarning, match="grad_cam left out"):
        assert roar_step._covering(open_run(run_dir), ["gradient", "grad_cam"]) == ["gradient"]
    with pytest.raises(ConfigError, match="no method's maps cover every subject"):
        roar_step._covering(open_run(run_dir), ["grad_cam"])
    for bad in ([float("nan")], [1.5], [-0.2]):
        with pytest.raises(ConfigError, match="fractions must lie strictly between 0 and 1"):
            roar_step.roar_run(run_dir, ["gradient"], fractions=bad, epochs=1, progress=False)
    layout = RunLayout(run_dir)
    assert not layout.stage_record("roar").exists()
    assert not layout.analysis("roar_folds").exists()


def _fake_retrain(scores: dict):
    """A stand-in for ``retrain_and_score``: the accuracy of ``scores[method, mode]``."""

    def retrain(*args, desc, epochs, **kwargs):
        _, method, mode, *_ = desc.split()
        acc = scores[method, mode]
        return {"best_epoch": epochs, "accuracy": acc, "balanced_accuracy": acc,
                "roc_auc": acc, "seconds": 0.0}  # fmt: skip

    return retrain


def test_summary_leaves_out_rows_of_other_options_fractions_and_older_maps(
    tiny_run, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    explain(run_dir, ["gradient"], progress=False)
    layout = RunLayout(run_dir)
    scores = {("none", "none"): 0.9, ("random", "both"): 0.7, ("gradient", "roar"): 0.4,
              ("gradient", "kar"): 0.8}  # fmt: skip
    monkeypatch.setattr(roar_step, "retrain_and_score", _fake_retrain(scores))
    call = {"fractions": [0.5], "folds": [0], "epochs": 1, "device": "cpu", "progress": False}
    with pytest.raises(ConfigError, match="sigma_mm: expected a number > 0"):
        roar_step.roar_run(run_dir, ["gradient"], **call, fill="blur", sigma_mm=0.0)
    roar_step.roar_run(run_dir, ["gradient"], **call)
    units = pd.read_csv(layout.analysis("roar_folds"), sep="\t", dtype=str,
                        keep_default_na=False)  # fmt: skip
    options = units["options"].iloc[0]
    maps = units.loc[units["method"] == "gradient", "maps"].iloc[0]
    assert maps and set(units["options"]) == {options}

    def row(method, mode, fraction, fold, acc, **kw):
        return {**units.iloc[0].to_dict(), "method": method, "mode": mode,
                "fraction": fraction, "fold": fold, "accuracy": acc, "roc_auc": acc,
                "maps": maps if method == "gradient" else "", **kw}  # fmt: skip

    stale = [
        row("gradient", "roar", 0.5, 0, 0.0, options="0123456789abcdef"),  # other options
        row("gradient", "roar", 0.5, 1, 0.0, maps="fedcba9876543210"),  # earlier maps
        row("random", "both", 0.5, 1, 0.7), row("none", "none", 0.0, 1, 0.9),
        row("gradient", "roar", 0.9, 0, 0.1), row("random", "both", 0.9, 0, 0.6),  # 0.9
        row("none", "none", 0.0, 2, 0.1),  # a reference of a fold the method lacks
    ]  # fmt: skip
    pd.concat([units, pd.DataFrame(stale)]).to_csv(layout.analysis("roar_folds"), sep="\t",
                                                    index=False)  # fmt: skip
    layout.analysis("roar").unlink()

    def summary(mode="roar"):
        return pd.read_csv(layout.analysis(mode), sep="\t", dtype={"folds": str}).set_index(
            "fraction"
        )

    def no_training(*args, **kwargs):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(roar_step, "retrain_and_score", no_training)
    roar_step.roar_run(run_dir, ["gradient"], **call)
    roar = summary()
    assert roar.index.tolist() == [0.0, 0.5] and roar["folds"].tolist() == ["0", "0"]
    assert roar["accuracy"].tolist() == pytest.approx([0.9, 0.4])
    assert roar.loc[0.5, ["accuracy_random", "drop", "drop_random"]].tolist() == pytest.approx(
        [0.7, 0.5, 0.2]
    )

    # a call with fraction 0.9 too summarises it (KAR at 0.9 is trained), one without
    # it drops it again from the tables, though its rows stay in roar_folds.tsv
    monkeypatch.setattr(roar_step, "retrain_and_score", _fake_retrain(scores))
    roar_step.roar_run(run_dir, ["gradient"], **{**call, "fractions": [0.5, 0.9]})
    assert summary().loc[0.9, "accuracy"] == pytest.approx(0.1)
    assert summary("kar").index.tolist() == [0.0, 0.5, 0.9]
    monkeypatch.setattr(roar_step, "retrain_and_score", no_training)
    roar_step.roar_run(run_dir, ["gradient"], **call)
    assert summary().index.tolist() == [0.0, 0.5] and summary("kar").index.tolist() == [0, 0.5]
    assert (pd.read_csv(layout.analysis("roar_folds"), sep="\t")["fraction"] == 0.9).sum() == 3

    # explaining again rewrites maps.tsv: the method's rows are older maps, trained again
    manifest = layout.maps_manifest("gradient")
    table = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    table["seconds"] = "0.125"
    table.to_csv(manifest, sep="\t", index=False)
    scores["gradient", "roar"] = 0.2
    monkeypatch.setattr(roar_step, "retrain_and_score", _fake_retrain(scores))
    roar_step.roar_run(run_dir, ["gradient"], **call)
    assert summary()["accuracy"].tolist() == pytest.approx([0.9, 0.2])

    # other options with overwrite: the earlier rows stay in roar_folds.tsv, unsummarised
    roar_step.roar_run(run_dir, ["gradient"], **{**call, "epochs": 2}, overwrite=True)
    assert summary()["epochs"].tolist() == [2, 2]
    epochs = pd.read_csv(layout.analysis("roar_folds"), sep="\t")["epochs"]
    assert set(epochs) == {1, 2}


def test_cli_sign_and_blur_flags_reach_roar_run(tmp_path, monkeypatch, capsys):
    from brainmaps.cli import roar as roar_cli

    calls = []

    def fake(run_dir, methods, **kwargs):
        calls.append(kwargs)
        return tmp_path / "roar.tsv"

    monkeypatch.setattr(roar_cli, "roar_run", fake)
    argv = ["roar", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert main([*argv, "--absolute", "--fill", "blur", "--sigma-mm", "4"]) == 0
    assert main([*argv, "--signed", "--random-sigma-mm", "6"]) == 0
    assert [(c["absolute"], c["fill"], c["sigma_mm"]) for c in calls] == [
        (False, "train_mean", 8.0), (True, "blur", 4.0), (False, "train_mean", 8.0),
    ]  # fmt: skip
    assert [c["random_sigma_mm"] for c in calls] == [0.0, 0.0, 6.0]
    capsys.readouterr()
    assert main([*argv, "--sigma-mm", "4"]) == 2  # the train_mean fill has no blur
    assert "--sigma-mm 4 applies to --fill blur only" in capsys.readouterr().err
    assert main([*argv, "--absolute", "--signed"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert len(calls) == 3


def test_cli_number_lists_reach_roar_run_and_bad_ones_name_the_flag(tmp_path, monkeypatch, capsys):
    from brainmaps.cli import roar as roar_cli

    calls = []
    monkeypatch.setattr(roar_cli, "roar_run", lambda run_dir, methods, **kw: calls.append(kw))
    argv = ["roar", str(tmp_path), "--no-progress"]
    assert main([*argv, "--folds-subset", "0,2", "--fractions", "0.1, 0.5"]) == 0
    assert calls[0]["folds"] == [0, 2] and calls[0]["fractions"] == [0.1, 0.5]
    assert main(argv) == 0 and calls[1]["folds"] is None
    capsys.readouterr()
    assert main([*argv, "--folds-subset", "0,a"]) == 2
    assert "--folds-subset: expected ints separated by commas" in capsys.readouterr().err
    assert main([*argv, "--fractions", "0.1,x"]) == 2
    assert "--fractions: expected floats separated by commas" in capsys.readouterr().err
    assert len(calls) == 2


def _top_components(ranking: np.ndarray, share: float = 0.1) -> int:
    from scipy.ndimage import label

    top = ranking >= np.quantile(ranking, 1 - share)
    return int(label(top)[1])


def test_smooth_random_ranking_removes_compact_blobs_not_scattered_voxels():
    """White noise's top 10 % on a 30^3 grid is hundreds of pieces; blurred by 2 voxels it
    is a few dozen blobs (measured over seeds 0-4: 1000+ against 10-30)."""
    for seed in range(5):
        noise = np.random.default_rng(seed).standard_normal((30, 30, 30))
        assert _top_components(noise) > 500
        assert _top_components(smooth_random(noise, 2.0)) < 60


def test_random_sigma_mm_smooths_the_random_control_and_is_recorded_only_when_used(
    tiny_run, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    explain(run_dir, ["gradient"], progress=False)
    seen = {}

    def retrain(make_model, volumes, labels, *args, desc, epochs, **kwargs):
        seen[desc.split()[1]] = volumes
        return {"best_epoch": epochs, "accuracy": 0.5, "balanced_accuracy": 0.5,
                "roc_auc": 0.5, "seconds": 0.0}  # fmt: skip

    monkeypatch.setattr(roar_step, "retrain_and_score", retrain)
    call = {"fractions": [0.3], "folds": [0], "epochs": 1, "mode": "roar", "device": "cpu",
            "progress": False}  # fmt: skip
    roar_step.roar_run(run_dir, ["gradient"], **call)
    layout = RunLayout(run_dir)
    assert (
        "random_sigma_mm" not in yaml.safe_load(layout.stage_record("roar").read_text())["options"]
    )
    plain = seen["random"]
    with pytest.raises(ConfigError, match="random_sigma_mm"):
        roar_step.roar_run(run_dir, ["gradient"], **call, random_sigma_mm=-1.0, overwrite=True)
    roar_step.roar_run(run_dir, ["gradient"], **call, random_sigma_mm=16.0, overwrite=True)
    record = yaml.safe_load(layout.stage_record("roar").read_text())["options"]
    assert record["random_sigma_mm"] == 16.0
    smooth = seen["random"]
    original = seen["none"]
    from scipy.ndimage import label

    counts = [int(label(np.asarray(c[0]) != np.asarray(original[0]))[1]) for c in (plain, smooth)]
    assert counts[1] * 5 < counts[0], counts  # blobs, not scattered voxels
