"""Read a run folder's tables and maps into the sections of the report.

Each section is a plain dict (``id``, ``title``, ``blocks``, ``missing``) whose blocks
are tables, figures (PNG bytes), notes, headings, lists and key/value facts, so the
template only lays them out. A section whose inputs are absent keeps its title and
carries a ``missing`` note naming the command that computes them. The report only reads
what is in the run folder: nothing here trains, explains or analyses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from brainmaps import __version__
from brainmaps.analysis.maps import as_img, class_mean_maps, list_map_methods, run_brain_mask
from brainmaps.analysis.overlap import pair_matrix as dice_matrix
from brainmaps.analysis.sanity import MODEL_CHECK
from brainmaps.analysis.trust import LOCALISATION_BOUND, LOCALISATION_CHANCE
from brainmaps.exceptions import BrainmapsError, BrainmapsWarning
from brainmaps.reports import figures
from brainmaps.reports.section_anatomy import anatomy_section
from brainmaps.reports.section_brain_age import bias_blocks
from brainmaps.reports.section_clinical import clinical_section
from brainmaps.reports.section_protocol import protocol_facts, site_blocks, transfer_warning
from brainmaps.reports.section_thresholds import thresholds_section
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.run.stages import read_stage
from brainmaps.steps import get_step, list_steps
from brainmaps.utils import falsy, truthy

__all__ = ["SECTIONS", "collect_sections", "dice_matrix", "mean_std_table"]

_NUMBER = re.compile(r"[-+0-9.eE]+( ± [-+0-9.eE]+)?|–|nan|inf|")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Accuracy of the CNN on mask-restricted inputs in Kan et al. (Section 4.3).
PAPER_MASKED = "men 0.59, women 0.59, conjoined 0.82"


def _cell(value) -> str:
    """Format one table cell: floats to 4 significant digits, NaN as a dash."""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return "–" if not np.isfinite(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def table(df: pd.DataFrame, caption: str = "", flags: list[bool] | None = None) -> dict:
    """A table block: column names, rows of formatted strings, row flags, numeric columns."""
    rows = [[_cell(v) for v in row] for row in df.itertuples(index=False)]
    numeric = [all(_NUMBER.fullmatch(r[j]) for r in rows) for j in range(df.shape[1])]
    return {
        "kind": "table",
        "inline": True,
        "caption": caption,
        "columns": [str(c) for c in df.columns],
        "numeric": numeric,
        "rows": rows,
        "flags": list(flags) if flags is not None else [False] * len(rows),
    }


def figure(png: bytes, caption: str = "", inline: bool = False, max_width: int = 0) -> dict:
    """A figure block holding PNG bytes; inline ones flow beside tables and figures."""
    return {"kind": "figure", "caption": caption, "png": png, "inline": inline,
            "max_width": max_width}  # fmt: skip


def block(kind: str, value) -> dict:
    """A ``note`` or ``heading`` (text), ``facts`` (key/value pairs) or ``list`` block."""
    return {"kind": kind, "items" if kind in ("facts", "list") else "text": value}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str, "fold": str})


def mean_std_table(df: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Summarise per-fold rows as ``"mean ± std"`` strings per group of ``keys``.

    Rows whose ``fold`` is ``"mean"`` / ``"std"`` are used when present; otherwise the
    mean and standard deviation (ddof=1) of the numeric folds are computed.

    Parameters
    ----------
    df : pandas.DataFrame
        Long table with a ``fold`` column, the ``keys`` and the ``metrics`` columns.
    keys : list of str
        Grouping columns (e.g. ``["method", "mask"]``); absent ones are ignored.
    metrics : list of str
        Metric columns to summarise; absent ones are ignored.

    Returns
    -------
    pandas.DataFrame
        One row per group, with the ``keys`` and one string column per metric.
    """
    keys = [k for k in keys if k in df]
    metrics = [m for m in metrics if m in df]
    folds = df["fold"].astype(str)
    rows = []
    for group, part in df.groupby(keys, sort=False) if keys else [((), df)]:
        group = group if isinstance(group, tuple) else (group,)
        fold = folds.loc[part.index]
        row = dict(zip(keys, group, strict=True))
        for m in metrics:
            if {"mean", "std"} <= set(fold):
                mean = float(part.loc[fold == "mean", m].iloc[0])
                std = float(part.loc[fold == "std", m].iloc[0])
            else:
                values = pd.to_numeric(part.loc[~fold.isin(["mean", "std"]), m])
                mean, std = float(values.mean()), float(values.std(ddof=1))
            row[m] = f"{mean:.3f} ± {std:.3f}"
        rows.append(row)
    return pd.DataFrame(rows, columns=keys + metrics)


def _summary(run: RunFolder) -> list[dict]:
    cfg, table = run.config.to_dict(), run.table
    training = cfg.get("training") or {}
    model = cfg.get("model") or {}
    options = [json.dumps(model["options"])] if model.get("options") else []
    if run.task.is_classification:
        counts = table["label"].astype(str).value_counts()
        classes = ", ".join(f"{c} ({int(counts.get(c, 0))})" for c in run.classes)
    else:
        y = pd.to_numeric(table["y"])
        classes = f"regression target: mean {y.mean():.3g} ± {y.std():.3g}"
    metrics = run.layout.metrics
    trained = dt.datetime.fromtimestamp(metrics.stat().st_mtime) if metrics.is_file() else None
    voxel = " x ".join(f"{v:.3g}" for v in run.grid.voxel_size)
    grid = f"{' x '.join(map(str, run.grid.shape))} voxels of {voxel} mm"
    return [
        block(
            "facts",
            [
                ("run", f"{run.path.name} ({run.path.resolve()})"),
                ("task", f"{run.task}; target '{(cfg.get('data') or {}).get('target', '?')}'"),
                ("classes (scans)", classes),
                ("subjects / scans", f"{table['subject'].nunique()} / {len(table)}"),
                ("model", " ".join([str(model.get("name", "?")), *options])),
                ("grid", grid),
                ("folds", str(run.n_folds)),
                *protocol_facts(run),
                ("epochs", str(training.get("epochs", "?"))),
                ("trained", trained.strftime("%Y-%m-%d %H:%M") if trained else "unknown"),
                ("report", f"brainmaps {__version__}, {dt.datetime.now():%Y-%m-%d %H:%M}"),
                ("source cohort", str((cfg.get("data") or {}).get("source", "?"))),
            ],
        ),
        *([block("note", warning)] if (warning := transfer_warning(run)) else []),
    ]


def _comparison(run: RunFolder, path: Path) -> list[dict]:
    df = _read(path)
    shown = pd.DataFrame({"model": df["model"]})
    for col in df.columns:
        if col.endswith("_mean") and f"{col[:-5]}_std" in df:
            std = df[f"{col[:-5]}_std"]
            shown[col[:-5]] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(df[col], std, strict=True)]
    for col in ("t", "p"):
        if col in df:
            shown[col] = df[col]
    caption = "Baselines on the same folds; t and p: corrected resampled t-test vs the CNN."
    blocks = [block("heading", "Baselines"), table(shown, caption)]
    for png in run.layout.importance_plots():
        data = png.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            caption = f"{png.parent.name}/{png.name}"
            blocks.append(figure(data, caption, inline=True, max_width=540))
    return blocks


def _performance(run: RunFolder) -> list[dict] | None:
    metrics, preds = run.layout.metrics, run.layout.predictions
    comparison = run.layout.baselines("comparison")
    if not (metrics.is_file() or preds.is_file() or comparison.is_file()):
        return None
    blocks = []
    if metrics.is_file():
        df = _read(metrics)
        names = [c for c in df.columns if c not in ("fold", "n_test")]
        summary = mean_std_table(df.assign(_=""), ["_"], names).drop(columns="_")
        per_fold = df[~df["fold"].isin(["mean", "std"])]
        summary.insert(0, "fold", "mean ± std")
        shown = pd.concat([per_fold.drop(columns="n_test", errors="ignore"), summary])
        blocks.append(table(shown, "Out-of-fold test metrics per fold."))
        blocks += site_blocks(run, table, block)
    if preds.is_file():
        df = _read(preds)
        if run.task.is_classification and all(f"p_{c}" in df for c in run.classes):
            png = figures.plot_roc(df, run.classes)
            blocks.append(figure(png, "Out-of-fold ROC curves.", inline=True))
        elif "prediction" in df:
            png = figures.plot_regression(df)
            blocks.append(figure(png, "Out-of-fold predictions.", inline=True))
            blocks += bias_blocks(run, table, figure, block)
    if comparison.is_file():
        blocks += _comparison(run, comparison)
    else:
        blocks.append(
            block("note", f"Baselines not computed — run `brainmaps baseline {run.path}`.")
        )
    return blocks


def _maps(run: RunFolder) -> list[dict] | None:
    methods = list_map_methods(run)
    occlusion = run.layout.occlusion_cohort_map()
    if not methods and not occlusion.is_file():
        return None
    mask = run_brain_mask(run)
    blocks = [
        block(
            "note",
            "Class-mean maps (each class, then their sum 'conjoined') over MNI152, cut "
            "through the conjoined map's peak; above, ortho slices; below, glass brains. "
            "The class maps share one colour scale (saturating at the 99th percentile of "
            "|value| in the brain), the conjoined map has its own; the 75% smallest "
            "values are hidden.",
        )
    ]
    for method in methods:
        try:
            maps = class_mean_maps(run, method)
        except BrainmapsError as err:
            blocks += [block("heading", method), block("note", str(err))]
            continue
        png = figures.plot_class_maps(maps, mask)
        pattern = run.layout.group_map(method, "*").relative_to(run.path)
        blocks += [block("heading", method), figure(png, str(pattern))]
    if occlusion.is_file():
        png = figures.plot_class_maps({"cohort accuracy drop": as_img(occlusion)}, mask)
        blocks += [
            block("heading", "occlusion: cohort accuracy drop"),
            figure(png, str(occlusion.relative_to(run.path))),
        ]
    return blocks


def _versus(value, other) -> str:
    """``"value (other)"`` with 3 decimals; a dash when the value is not measured."""
    if not np.isfinite(value):
        return "–"
    return f"{value:.3f} ({other:.3g})" if np.isfinite(other) else f"{value:.3f}"


_CHECK_READINGS = ("localisation", "deletion", "insertion", "sanity", "roar", "cost")


def _trust(run: RunFolder) -> list[dict] | None:
    path = run.layout.analysis("trust")
    if not path.is_file():
        return None
    df = _read(path)
    pairs = {
        "deletion AUC (random)": ("deletion_auc", "deletion_auc_random"),
        "insertion AUC (random)": ("insertion_auc", "insertion_auc_random"),
        "sanity |rho| (bound)": ("sanity_spearman_abs", "sanity_bound"),
    }
    shown = df[["method", "verdict", "localisation_auc"]].rename(
        columns={"localisation_auc": "localisation AUC"}
    )
    for name, (value, other) in pairs.items():
        shown[name] = [
            _versus(float(v), float(o)) for v, o in zip(df[value], df[other], strict=True)
        ]
    shown["ROAR drop vs random"] = df["roar_drop"]
    shown["s / map"] = df["seconds_per_map"]
    shown["reading"] = df["reading"]
    caption = (
        "What the run's checks found about each method: localisation AUC against the "
        f"planted mask above {LOCALISATION_BOUND:g} (chance {LOCALISATION_CHANCE:g}); "
        "deletion area below and insertion area above a random ranking's; sanity median "
        "|Spearman| after full model randomisation at most its bound; ROAR accuracy drop "
        "larger than random removal's. A method fails (red) when any measured check fails; "
        f"{path.name} holds each check's reading."
    )
    blocks = [table(shown, caption, flags=[v == "fails" for v in df["verdict"]])]
    readings = [str(r) for c in _CHECK_READINGS for r in df.get(f"{c}_reading", [])]
    todo = dict.fromkeys(
        cmd
        for r in readings
        if r.startswith("not measured:")
        for cmd in re.findall(r"`([^`]+)`", r)
    )
    if todo:
        blocks.append(block("note", "Not measured yet: " + "; ".join(f"`{c}`" for c in todo)))
    return blocks


def _overlap(run: RunFolder) -> list[dict] | None:
    path = run.layout.analysis("overlap")
    if not path.is_file():
        return None
    df = _read(path)
    names = list(dict.fromkeys(df["map"].astype(str)))
    names = sorted(names, key=lambda n: n != "conjoined")
    caption = "Dice between binarised maps, restricted to the brain"
    if "threshold" in df:
        first = df["threshold"].astype(str).iloc[0]
        df_fig = df[df["threshold"].astype(str) == first]
        caption += f" (threshold {first})"
    else:
        df_fig = df
    matrices = {n: dice_matrix(df_fig, n) for n in names}
    return [figure(figures.plot_dice_matrices(matrices), caption + "."), table(df, path.name)]


_REGION_COLUMNS = ["rank", "name", "hemisphere", "fraction_norm", "mean_norm", "n_voxels"]


def _region_table(rows: pd.DataFrame, caption: str) -> dict:
    rows = rows.sort_values("rank").head(10)
    shown = rows[[c for c in _REGION_COLUMNS if c in rows]].copy()
    if {"centroid_x", "centroid_y", "centroid_z"} <= set(rows):
        xyz = rows[["centroid_x", "centroid_y", "centroid_z"]].to_numpy(dtype=float)
        shown["centroid (mm)"] = [", ".join(f"{v:.0f}" for v in p) for p in xyz]
    flags = None
    if "hemisphere_ok" in rows:
        # NA (a region whose name states no side) is not a mismatch
        flags = [falsy(v) for v in rows["hemisphere_ok"]]
        shown["hemisphere_ok"] = [
            "NO" if f else ("yes" if truthy(v) else "—")
            for f, v in zip(flags, rows["hemisphere_ok"], strict=True)
        ]
    return table(shown, caption, flags=flags)


def _regions(run: RunFolder) -> list[dict] | None:
    paths = run.layout.analysis_tables("regions_")
    if not paths:
        return None
    blocks = [
        block(
            "note",
            "Top 10 atlas regions of each method's conjoined map (of each group map on a "
            "regression run); rows flagged in red have "
            "a centroid on the other side than the hemisphere in their name.",
        )
    ]
    for path in paths:
        df = _read(path)
        blocks.append(block("heading", f"atlas: {path.stem[len('regions_') :]}"))
        for method, part in df.groupby("method", sort=False):
            maps = part["map"].astype(str) if "map" in part else pd.Series("conjoined", part.index)
            if run.task.is_classification or not len(maps):
                chosen = ["conjoined" if (maps == "conjoined").any() else maps.iloc[0]]
            else:  # a regression run: every group (all, young, old, gap signs)
                chosen = list(dict.fromkeys(maps))
            for name in chosen:
                blocks.append(_region_table(part[maps == name], f"{method} ({name})"))
    return blocks


def _localisation(run: RunFolder) -> list[dict] | None:
    path = run.layout.analysis("localisation")
    curves = run.layout.analysis("localisation_roc")
    if not (path.is_file() or curves.is_file()):
        return None
    blocks = []
    if path.is_file():
        caption = "Maps against the planted ground-truth mask of the synthetic cohort."
        blocks.append(table(_read(path), caption))
    if curves.is_file():
        png = figures.plot_localisation_roc(_read(curves))
        caption = "ROC of each map's voxels against the planted mask."
        blocks.append(figure(png, caption, inline=True))
    return blocks


def _faithfulness(run: RunFolder) -> list[dict] | None:
    path = run.layout.analysis("faithfulness")
    curves = run.layout.analysis("faithfulness_curves")
    if not (path.is_file() or curves.is_file()):
        return None
    blocks = []
    if path.is_file():
        caption = (
            "Area under the deletion (lower is better) and insertion (higher is "
            "better) curves, against a random-map control."
        )
        blocks.append(table(_read(path), caption))
    if curves.is_file():
        png = figures.plot_faithfulness(_read(curves))
        blocks.append(figure(png, "Class probability as voxels are removed or inserted."))
    return blocks


def _sanity(run: RunFolder) -> list[dict] | None:
    path = run.layout.analysis("sanity")
    summary = run.layout.analysis("sanity_summary")
    if not (path.is_file() or summary.is_file()):
        return None
    blocks = []
    if summary.is_file():
        df = _read(summary).dropna(axis="columns", how="all")  # data test not run: no columns
        flags = [falsy(v) for v in df["passed"]] if "passed" in df else None
        caption = (
            "Model-parameter randomisation (Adebayo et al. 2018): medians over the sampled "
            "test subjects of each map's similarity to the trained model's map after every "
            "layer is re-initialised"
        )
        if "data_spearman_abs" in df:
            caption += (
                "; data randomisation (data_*): the same with a model trained from scratch "
                "on permuted training labels (data_accuracy: its test accuracy on the true "
                "labels, near chance when the labels were destroyed)"
            )
        caption += (
            ". Subjects whose trained map is constant are left out (n_constant). A method "
            "fails (red) when a median |Spearman| stays above the bound: its maps do not "
            "depend on what the model learnt."
        )
        blocks.append(table(df, caption, flags=flags))
    if path.is_file():
        df = _read(path)
        if "check" in df:
            df = df[df["check"].fillna(MODEL_CHECK).astype(str) == MODEL_CHECK]
        bound = float(_read(summary)["bound"].iloc[0]) if summary.is_file() else None
        if len(df):
            png = figures.plot_sanity(df, bound)
            caption = "Cascading randomisation, from the output layer down to the input."
            blocks.append(figure(png, caption))
    return blocks


def _masked_eval(run: RunFolder) -> list[dict] | None:
    path = run.layout.analysis("masked_eval")
    if not path.is_file():
        return None
    df = _read(path)
    summary = mean_std_table(
        df, ["method", "mask", "weighting", "means"], ["accuracy", "balanced_accuracy", "roc_auc"]
    )
    caption = (
        f"Accuracy of the CNN on inputs multiplied by a class-mean mask, mean ± std "
        f"over folds. Kan et al. report {PAPER_MASKED}."
    )
    return [table(summary, caption)]


_ROAR_COLUMNS = ["method", "mode", "fraction", "accuracy", "accuracy_random", "roc_auc",
                 "roc_auc_random", "n_folds"]  # fmt: skip


def _roar_flags(df: pd.DataFrame) -> list[bool]:
    """Rows where the map does no better than random: ROAR accuracy not below random's,
    KAR accuracy not above it (fraction 0, the reference, is never flagged)."""
    acc, rnd = df["accuracy"].astype(float), df["accuracy_random"].astype(float)
    worse = np.where(df["mode"].astype(str) == "kar", acc <= rnd, acc >= rnd)
    return list((df["fraction"].astype(float) > 0) & worse)


def _own_accuracy(run: RunFolder, df: pd.DataFrame) -> str:
    """The run's own test accuracy on the retrained folds (``metrics.tsv``)."""
    if not run.layout.metrics.is_file() or "folds" not in df:
        return ""
    folds = {f for text in df["folds"].astype(str) for f in text.split(",")}
    metrics = _read(run.layout.metrics)
    own = pd.to_numeric(metrics.loc[metrics["fold"].astype(str).isin(folds), "accuracy"])
    return f" The run's own models score {own.mean():.3f} on these folds." if len(own) else ""


def _roar_fill(run: RunFolder) -> str:
    """What replaced voxels became and how they were ranked (``stages/roar.yaml``)."""
    options = (read_stage(run.layout.stage_record("roar")) or {}).get("options") or {}
    fill = options.get("fill", "train_mean")
    fill = "the fold's per-voxel training mean" if fill == "train_mean" else f"the {fill} fill"
    if options.get("ranking") == "fold_mean":
        return f"ranked by the fold's mean map, were replaced by {fill}"
    return f"ranked by each volume's own map, were replaced by {fill}"


def _roar(run: RunFolder) -> list[dict] | None:
    tables = {m: run.layout.analysis(m) for m in ("roar", "kar")}
    found = {m: _read(p) for m, p in tables.items() if p.is_file()}
    found = {m: df.assign(mode=df.get("mode", m)) for m, df in found.items() if len(df)}
    if not found:
        return None
    df = pd.concat(found.values(), ignore_index=True)
    epochs = ", ".join(sorted({str(e) for e in df.get("epochs", [])}))
    caption = (
        "Remove and retrain (Hooker et al. 2019): a model is trained from scratch on "
        f"volumes whose top (ROAR) or bottom (KAR) brain voxels, {_roar_fill(run)}, and "
        "tested on volumes modified the same way; a random ranking is the control. A "
        "faithful map makes ROAR accuracy fall below random's and keeps KAR accuracy "
        "above it (red: not). Fraction 0 is the unmodified retrain"
        + (f" ({epochs} epochs)." if epochs else ".")
        + _own_accuracy(run, df)
        + " The mask-restricted re-evaluation beside it (Kan et al.) does not retrain: "
        "its drop mixes lost information with inputs the model never saw."
    )
    png = figures.plot_roar(found)
    shown = df[[c for c in _ROAR_COLUMNS if c in df]]
    return [figure(png, "Test accuracy of the retrained models."),
            table(shown, caption, flags=_roar_flags(df))]  # fmt: skip


def _first_layer(run: RunFolder) -> list[dict] | None:
    path = run.layout.analysis("first_layer_summary")
    if not path.is_file():
        return None
    caption = "First-layer filters whose statistic differs between the groups (FDR)."
    return [table(_read(path), caption)]


def _files(run: RunFolder) -> list[dict]:
    counts: dict[str, int] = {}
    for path in sorted(run.path.rglob("*")):
        rel = path.relative_to(run.path)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        if rel.name == run.layout.REPORT:
            continue
        key = str(rel.parent / "sub-*.nii.gz") if rel.name.startswith("sub-") else str(rel)
        counts[key] = counts.get(key, 0) + 1
    items = [k if n == 1 else f"{k} ({n} files)" for k, n in counts.items()]
    return [block("note", f"Relative to {run.path.resolve()}."), block("list", items)]


#: (id, title, builder, the step that computes the inputs or the command) in report order.
SECTIONS: tuple[tuple[str, str, Callable, str], ...] = (
    ("summary", "Summary", _summary, "brainmaps train"),
    ("performance", "Performance", _performance, "brainmaps train"),
    ("thresholds", "Operating points", thresholds_section, "thresholds"),
    ("clinical", "Clinical measures", clinical_section, "clinical"),
    ("maps", "Attribution maps", _maps, "brainmaps explain"),
    ("trust", "Trust: what the checks found per method", _trust, "trust"),
    ("overlap", "Overlap between methods", _overlap, "compare"),
    ("regions", "Atlas regions", _regions, "regions"),
    ("anatomy", "Relevance and anatomy", anatomy_section, "anatomy"),
    ("localisation", "Localisation of the planted effect", _localisation, "localise"),
    ("faithfulness", "Faithfulness", _faithfulness, "faithfulness"),
    ("sanity", "Sanity checks: model randomisation", _sanity, "sanity"),
    ("masked_eval", "Mask-restricted re-evaluation", _masked_eval, "masked_eval"),
    ("roar", "Remove and retrain (ROAR / KAR)", _roar, "roar"),
    ("first_layer", "First-layer statistics", _first_layer, "first_layer"),
    ("files", "Files", _files, "brainmaps train"),
)


def _build(builder: Callable, run: RunFolder, title: str) -> list[dict] | None:
    """Run one section builder; a malformed input table gives a note, not a crash."""
    try:
        return builder(run)
    except (KeyError, ValueError, TypeError, IndexError, pd.errors.ParserError) as err:
        message = f"section '{title}' could not be drawn from {run.path}: {err!r}"
        warnings.warn(message + "; check the tables it reads.", BrainmapsWarning, stacklevel=3)
        return [block("note", message + ".")]


def collect_sections(run: str | os.PathLike | RunFolder) -> list[dict]:
    """Every section of the report, in order, from what is in the run folder.

    Parameters
    ----------
    run : str, os.PathLike or RunFolder

    Returns
    -------
    list of dict
        ``{"id", "number", "title", "blocks", "missing"}``; ``missing`` is a note
        (``"not computed — run `brainmaps <cmd> RUN`"``) when the inputs are absent.
    """
    run = run if isinstance(run, RunFolder) else open_run(run)
    out = []
    steps = set(list_steps())
    for number, (key, title, builder, source) in enumerate(SECTIONS, start=1):
        command = get_step(source).command if source in steps else source
        blocks = _build(builder, run, title)
        missing = None if blocks else f"Not computed — run `{command} {run.path}`."
        out.append(
            {
                "id": key,
                "number": number,
                "title": title,
                "blocks": blocks or [],
                "missing": missing,
            }
        )
    return out
