"""The HTML report: every section, embedded PNGs, no external references, notes for
missing inputs, known values in the tables, atomic writing. No browser needed."""

from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from brainmaps.cli import report as report_cli
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.reports import build_report, render_report
from brainmaps.reports import figures as report_figures
from brainmaps.reports.sections import SECTIONS, dice_matrix, mean_std_table
from brainmaps.run.folder import open_run
from brainmaps.steps.clinical import clinical_run
from brainmaps.steps.thresholds import thresholds
from brainmaps.steps.trust import trust_run

pytestmark = pytest.mark.filterwarnings("error::brainmaps.exceptions.BrainmapsWarning")

METHODS = ("gradient", "grad_cam")
TITLES = [title for _, title, _, _ in SECTIONS]


def _tsv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)


def write_fake_maps(run_dir: Path) -> None:
    """Class-mean maps of two methods on the run grid: a blob, signed for grad_cam."""
    run = open_run(run_dir)
    ijk = np.indices(run.grid.shape).transpose(1, 2, 3, 0)
    for m, method in enumerate(METHODS):
        folder = run_dir / "maps" / method
        folder.mkdir(parents=True)
        for c, name in enumerate([*run.classes, "conjoined"]):
            centre = np.array(run.grid.shape) / 2 + (c - 1)
            blob = np.exp(-((ijk - centre) ** 2).sum(-1) / 8.0).astype(np.float32)
            data = blob * (c + 1) - (0.3 * blob[::-1] if m == 1 else 0)
            nib.save(nib.Nifti1Image(data, run.grid.affine), folder / f"mean_{name}.nii.gz")
        _tsv(folder / "maps.tsv", [{"subject": "01", "fold": 0, "file": "sub-01.nii.gz"}])


def write_fake_analysis(run_dir: Path, classes=("control", "patient")) -> None:
    """Every analysis table the report reads, with recognisable values."""
    a, b = classes
    out = run_dir / "analysis"
    maps = ["conjoined", a, b]
    pairs = [("gradient", "grad_cam", 0.4321), ("gradient", "guided", 0.1234),
             ("grad_cam", "guided", 0.5678)]  # fmt: skip
    _tsv(out / "overlap.tsv", [
        {"map": m, "method_a": x, "method_b": y, "threshold": "top10%", "dice": d,
         "jaccard": d / (2 - d), "spearman": 0.5, "pearson": 0.6}
        for m in maps for x, y, d in pairs
    ])  # fmt: skip
    regions = []
    for method in METHODS:
        for rank in range(1, 13):
            regions.append({
                "method": method, "map": "conjoined", "rank": rank, "label": rank,
                "name": f"Region_{method}_{rank}", "hemisphere": "L",
                "hemisphere_ok": rank != 3, "fraction": 0.5 / rank,
                "fraction_norm": 0.1 / rank, "mean_value": 1.0 / rank,
                "mean_norm": 0.2 / rank, "n_voxels": 100 + rank, "centroid_x": -20.0,
                "centroid_y": 4.0, "centroid_z": 8.0, "threshold": "top10%",
            })  # fmt: skip
    _tsv(out / "regions_aal.tsv", regions)
    _tsv(out / "localisation.tsv", [
        {"method": m, "map": "conjoined", "roc_auc": 0.9137, "relevance_mass": 0.42,
         "mass_baseline": 0.1, "pointing_game": 1.0} for m in METHODS
    ])  # fmt: skip
    _tsv(out / "localisation_roc.tsv", [
        {"method": m, "fpr": f, "tpr": min(1.0, 2 * f)} for m in METHODS
        for f in np.linspace(0, 1, 11)
    ])  # fmt: skip
    _tsv(out / "faithfulness.tsv", [
        {"method": m, "mode": mode, "fill": "blur", "auc": auc, "auc_random": 0.5,
         "auc_std": 0.01, "n_subjects": 12}
        for m in METHODS for mode, auc in (("deletion", 0.3141), ("insertion", 0.6859))
    ])  # fmt: skip
    _tsv(out / "faithfulness_curves.tsv", [
        {"method": m, "mode": mode, "fraction": f,
         "probability": (1 - f if mode == "deletion" else f) ** (2 if m != "random" else 1)}
        for m in [*METHODS, "random"] for mode in ("deletion", "insertion")
        for f in np.linspace(0, 1, 6)
    ])  # fmt: skip
    _tsv(out / "sanity.tsv", [
        {"method": m, "fold": 0, "subject": str(i), "session": "", "label": a,
         "explained": a, "check": "model", "stage": s, "layer": layer,
         "spearman_abs": 0.9 / s, "spearman": 0.8 / s, "ssim": 0.7 / s}
        for m in METHODS for i in range(2)
        for s, layer in enumerate(["classifier.fc", "features.block1.conv+features.block1.bn"],
                                  start=1)
    ] + [
        {"method": m, "fold": 0, "subject": str(i), "session": "", "label": a,
         "explained": a, "check": "data", "stage": 0, "layer": "labels permuted",
         "spearman_abs": 0.25, "spearman": 0.2, "ssim": 0.3, "epochs": 5, "accuracy": 0.5}
        for m in METHODS for i in range(2)
    ])  # fmt: skip
    _tsv(out / "sanity_summary.tsv", [
        {"method": "gradient", "n_subjects": 2, "n_stages": 2, "spearman_abs": 0.1234,
         "spearman": 0.1, "ssim": 0.2, "bound": 0.5, "data_n_subjects": 2,
         "data_spearman_abs": 0.2468, "data_accuracy": 0.5, "data_passed": True,
         "passed": True},
        {"method": "grad_cam", "n_subjects": 2, "n_stages": 2, "spearman_abs": 0.4321,
         "spearman": 0.4, "ssim": 0.7, "bound": 0.5, "data_n_subjects": 2,
         "data_spearman_abs": 0.8765, "data_accuracy": 0.5, "data_passed": False,
         "passed": False},
    ])  # fmt: skip
    masked = []
    for method in METHODS:
        for mask in ["none", a, b, "conjoined"]:
            accs = [0.8, 0.85, 0.9]
            for fold, acc in [*enumerate(accs), ("mean", 0.85), ("std", 0.05)]:
                masked.append({
                    "method": method, "mask": mask, "weighting": "fold_means", "fold": fold,
                    "n_test": 10, "accuracy": acc, "balanced_accuracy": acc, "roc_auc": 0.9,
                })  # fmt: skip
    _tsv(out / "masked_eval.tsv", masked)
    for mode, (acc, rnd) in {"roar": (0.6123, 0.8), "kar": (0.85, 0.7)}.items():
        _tsv(out / f"{mode}.tsv", [
            {"method": m, "mode": mode, "fraction": f, "accuracy": a, "accuracy_random": r,
             "roc_auc": a, "roc_auc_random": r, "accuracy_std": 0.05, "n_folds": 2,
             "folds": "0,1", "seeds": "0", "epochs": 5}
            for m in METHODS for f, a, r in ((0.0, 0.9, 0.9), (0.5, acc, rnd), (0.9, acc, rnd))
        ])  # fmt: skip
    _tsv(out / "first_layer_summary.tsv", [
        {"fold": k, "feature": feat, "n_filters": 8, "n_significant": 3,
         f"larger_in_{a}": 2, f"larger_in_{b}": 1}
        for k in ["0", "1", "2", "all"] for feat in ("mean_activation", "entropy")
    ])  # fmt: skip
    trust_run(run_dir)  # from the tables above: gradient passes, grad_cam fails sanity


def write_fake_baselines(run_dir: Path) -> None:
    """A comparison table and an importance plot like 'brainmaps baseline' writes."""
    _tsv(run_dir / "baselines" / "comparison.tsv", [
        {"model": "cnn", "n_folds": 3, "accuracy_mean": 0.8, "accuracy_std": 0.1,
         "roc_auc_mean": 0.9, "roc_auc_std": 0.05, "t": np.nan, "p": np.nan},
        {"model": "svm", "n_folds": 3, "accuracy_mean": 0.7654, "accuracy_std": 0.0321,
         "roc_auc_mean": 0.85, "roc_auc_std": 0.04, "t": 1.5, "p": 0.0271},
    ])  # fmt: skip
    fig = Figure(figsize=(3, 2))
    fig.subplots().barh(["a", "b"], [1, 2])
    (run_dir / "baselines" / "importances_lr.png").write_bytes(report_figures.figure_to_png(fig))


def write_fake_anatomy(run_dir: Path, n: int = 12) -> None:
    """``analysis/anatomy_fake.tsv`` (+ subjects) of made-up relevance and volumes."""
    from brainmaps.analysis.anatomy import anatomy_table, parse_pairs
    from brainmaps.utils import write_tsv

    rng = np.random.default_rng(0)
    relevance = pd.DataFrame(
        {"Left_Lateral_Ventricle": rng.random(n), "Right_Hippo": rng.random(n)}
    )
    volumes = pd.DataFrame({"v1": rng.random(n), "v2": rng.random(n)})
    pairs = parse_pairs(["ventricles=Left_Lateral_Ventricle:v1", "hippocampus=Right_Hippo:v2"])
    groups = {"all": np.ones(n, bool), "young": np.arange(n) < 6}
    table, subjects = anatomy_table(relevance, volumes, pairs, groups=groups, method="gradient")
    ids = pd.DataFrame({"subject": [f"{i:02d}" for i in range(n)], "label": rng.random(n) * 60})
    write_tsv(table, run_dir / "analysis" / "anatomy_fake.tsv")
    subjects = pd.concat([ids.assign(method="gradient"), subjects], axis=1)
    write_tsv(subjects, run_dir / "analysis" / "anatomy_fake_subjects.tsv")


def make_report_run(tiny_run: Path, dest: Path, *, analysis: bool = True) -> Path:
    """A copy of ``tiny_run`` with fake maps (and analysis tables)."""
    run_dir = dest / "run"
    shutil.copytree(tiny_run, run_dir)
    write_fake_maps(run_dir)
    if analysis:
        write_fake_analysis(run_dir, open_run(run_dir).classes)
        write_fake_baselines(run_dir)
        thresholds(run_dir, n_bootstrap=50)
        clinical_run(run_dir, measures=["age"], covariates=["sex"], n_permutations=200)
        write_fake_anatomy(run_dir)
    return run_dir


def img_sources(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\bsrc="([^"]*)"', html)


@pytest.fixture(scope="module")
def full_report(tiny_run, tmp_path_factory):
    run_dir = make_report_run(tiny_run, tmp_path_factory.mktemp("report"))
    path = build_report(run_dir)
    return run_dir, path.read_text(encoding="utf-8")


def _section(html: str, key: str) -> str:
    start = html.index(f'<section id="{key}">')
    return html[start : html.index("</section>", start)]


def test_every_section_is_present_and_computed(full_report):
    run_dir, html = full_report
    assert (run_dir / "report.html").is_file()
    for number, title in enumerate(TITLES, start=1):
        assert f"<h2>{number}. {title}</h2>" in html
    assert "Not computed" not in html and "could not be drawn" not in html
    assert html.count("<section") == len(TITLES) == 16


def test_every_image_is_an_embedded_png(full_report):
    _, html = full_report
    sources = img_sources(html)
    # ROC, operating points, score vs age (clinical), baseline importance, 2 methods' maps,
    # Dice, localisation ROC, relevance vs volume (anatomy), faithfulness, sanity (cascading
    # randomisation), ROAR / KAR
    assert len(sources) == 12
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = mpimg.imread(io.BytesIO(data), format="png")
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50
        assert pixels.std() > 0.01  # not a blank image


def test_no_external_references(full_report):
    _, html = full_report
    refs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', html)
    assert refs
    assert not [r for r in refs if re.match(r"(?i)(https?|file|ftp):|//", r)]
    assert "<link" not in html and "@import" not in html and "url(" not in html


def test_tables_hold_the_values_written(full_report):
    _, html = full_report
    assert "0.4321" in _section(html, "overlap")
    perf = _section(html, "performance")
    assert "0.765 ± 0.032" in perf and "0.0271" in perf  # baseline comparison
    assert "mean ± std" in perf
    assert "0.9137" in _section(html, "localisation")
    assert "0.3141" in _section(html, "faithfulness")
    sanity = _section(html, "sanity")
    flagged = re.findall(r'<tr class="flag">(.*?)</tr>', sanity, flags=re.DOTALL)
    assert len(flagged) == 1 and "grad_cam" in flagged[0] and "0.8765" in flagged[0]
    assert "0.1234" in sanity and "Adebayo" in sanity
    assert "0.2468" in sanity and "permuted training labels" in sanity  # data randomisation
    trust = _section(html, "trust")
    flagged = re.findall(r'<tr class="flag">(.*?)</tr>', trust, flags=re.DOTALL)
    assert len(flagged) == 1 and "grad_cam" in flagged[0] and ">fails<" in flagged[0]
    # grad_cam passes the cascade and fails the data randomisation: it fails sanity
    assert (
        "sanity failed (|rho| 0.43 &lt;= 0.5; labels permuted: median |rho| 0.88 &gt; 0.5)"
        in flagged[0]
    )
    assert ">passes<" in trust and "0.314 (0.5)" in trust and "0.9137" in trust
    assert "ROAR drop +0.19 beyond random" in trust
    masked = _section(html, "masked_eval")
    assert "0.850 ± 0.050" in masked and "conjoined 0.82" in masked
    roar = _section(html, "roar")
    assert "0.6123" in roar and "Hooker" in roar and "(5 epochs)" in roar
    flagged = re.findall(r'<tr class="flag">(.*?)</tr>', roar, flags=re.DOTALL)
    assert flagged == []  # ROAR below random, KAR above it: every row as a good map's
    assert "larger_in_patient" in _section(html, "first_layer")
    assert "maps/gradient/sub-*.nii.gz" not in html  # no subject maps were written
    assert "analysis/regions_aal.tsv" in _section(html, "files")


def test_regions_show_top_ten_and_flag_hemisphere_mismatches(full_report):
    _, html = full_report
    regions = _section(html, "regions")
    assert "Region_gradient_10" in regions and "Region_gradient_11" not in regions
    flagged = re.findall(r'<tr class="flag">(.*?)</tr>', regions, flags=re.DOTALL)
    assert len(flagged) == 2  # rank 3 of each method
    assert all("Region_" in row and "_3<" in row for row in flagged)


def test_missing_inputs_give_not_computed_notes(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    html = render_report(run_dir)
    for number, title in enumerate(TITLES, start=1):
        assert f"<h2>{number}. {title}</h2>" in html
    for key, command in [("maps", "brainmaps explain"), ("trust", "brainmaps trust"),
                         ("thresholds", "brainmaps thresholds"),
                         ("overlap", "brainmaps compare"),
                         ("regions", "brainmaps regions"),
                         ("faithfulness", "brainmaps faithfulness"),
                         ("sanity", "brainmaps sanity"),
                         ("masked_eval", "brainmaps masked-eval"),
                         ("roar", "brainmaps roar"),
                         ("first_layer", "brainmaps first-layer")]:  # fmt: skip
        assert f"Not computed — run <code>{command} " in _section(html, key)
    assert "Baselines not computed" in html
    assert len(img_sources(html)) == 1  # only the ROC curves
    assert "Not computed" not in _section(html, "summary") + _section(html, "performance")


def test_malformed_table_gives_a_note_and_a_warning(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    _tsv(run_dir / "analysis" / "overlap.tsv", [{"wrong": 1, "columns": 2}])
    with pytest.warns(BrainmapsWarning, match="Overlap between methods"):
        html = render_report(run_dir)
    assert "could not be drawn" in _section(html, "overlap")


def test_write_is_atomic(tiny_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "report.html").write_text("previous report")

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while drawing")

    monkeypatch.setattr(report_figures, "plot_roc", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        build_report(run_dir)
    assert (run_dir / "report.html").read_text() == "previous report"
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(RuntimeError):
        build_report(run_dir, out=tmp_path / "elsewhere" / "r.html")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a brainmaps run folder"):
        build_report(tmp_path)


def test_cli_writes_the_report(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    parser = argparse.ArgumentParser()
    report_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(run_dir), "--out", str(tmp_path / "r.html")])
    assert args.run(args) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert "report written to" in capsys.readouterr().out


def test_dice_matrix_is_symmetric_with_unit_diagonal():
    rows = pd.DataFrame({
        "map": ["conjoined", "conjoined", "a"], "method_a": ["x", "x", "x"],
        "method_b": ["y", "z", "y"], "dice": [0.25, 0.5, 0.9],
    })  # fmt: skip
    m = dice_matrix(rows, "conjoined")
    assert list(m.index) == list(m.columns) == ["x", "y", "z"]
    np.testing.assert_allclose(np.diag(m), 1.0)
    assert m.loc["y", "x"] == m.loc["x", "y"] == 0.25
    assert m.loc["z", "x"] == 0.5 and np.isnan(m.loc["y", "z"])


def test_mean_std_table_computes_missing_summary_rows():
    df = pd.DataFrame({"method": ["g"] * 3, "fold": ["0", "1", "2"], "accuracy": [0.7, 0.8, 0.9]})
    out = mean_std_table(df, ["method"], ["accuracy", "absent"])
    assert out.to_dict("records") == [{"method": "g", "accuracy": "0.800 ± 0.100"}]
