"""Every path of a run folder, named once.

No other module spells a run-folder path: writers and readers ask a :class:`RunLayout`
(or a :class:`~brainmaps.run.folder.RunFolder`'s ``layout``) for it. The tree::

    <run>/
      config.yaml                 the science configuration (replaying it reproduces the run)
      execution.yaml              how the last writer ran (device, jobs, workers, cache dir)
      cohort.tsv                  one row per scan: subject, session, label, y, path, cache slot
      folds.tsv                   (fold, scan) -> role train / val / test
      fold-<k>/model.pt           state_dict + metadata (loaded with weights_only=True)
      fold-<k>/predictions.tsv    the fold's test predictions
      fold-<k>/history.tsv        one row per epoch
      predictions.tsv             out-of-fold predictions of every scan
      metrics.tsv                 per fold, then mean and std rows (repeat 0)
      metrics_repeats.tsv         repeated CV (training.repeats > 1): one row per (repeat,
                                  fold) of every repeat, then mean and std over them all
      repeats/repeat-<r>/         repeat r > 0 of a repeated CV, itself laid out as a run:
                                  folds.tsv, fold-<k>/..., predictions.tsv, metrics.tsv,
                                  baselines/{metrics,predictions,params}.tsv; no stage but
                                  the metrics and the baseline comparison reads it
      maps/<method>/maps.tsv      one row per subject map (the method's manifest)
      maps/<method>/sub-<id>[_ses-<s>].nii.gz
      maps/<method>/mean_<group>.nii.gz    class means (mean_conjoined) or mean_all
      maps/<method>/native/       the subject maps in each scan's own space
      maps/<method>/channel-<name>/sub-<id>[_ses-<s>].nii.gz, mean_<group>.nii.gz
                                  per input channel (several channels, gradient-type methods)
      maps/occlusion/cohort_accuracy_drop.nii.gz
      analysis/<table>.tsv        overlap, regions_<atlas>, localisation, faithfulness, ...
      analysis/sanity.tsv         model-randomisation scores per method, subject and stage;
                                  sanity_summary.tsv: pass / fail per method
      analysis/roar.tsv           remove-and-retrain accuracy per method and fraction;
                                  kar.tsv: keep and retrain; roar_folds.tsv: per model
      analysis/trust.tsv          per method: every check, its reading, and a verdict
      analysis/thresholds.tsv     binary runs: operating points per threshold rule (nested
                                  out-of-fold metrics with bootstrap CIs); roc.tsv and
                                  calibration.tsv: the out-of-fold curves
      baselines/<table>.tsv       metrics, predictions, params, comparison, importances_<m>;
                                  metrics_repeats (repeated CV: model x repeat x fold)
      stages/<stage>.yaml         which options made each stage's outputs (with their hash)
      .lock                       held by the process writing the run
      report.html                 the self-contained report
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["RunLayout", "map_filename"]

_FOLD = re.compile(r"^fold-(\d+)$")
_REPEAT = re.compile(r"^repeat-(\d+)$")


def map_filename(subject: str, session: str = "") -> str:
    """``sub-<id>[_ses-<session>].nii.gz``: the file name of one subject's map."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "") + ".nii.gz"


class RunLayout:
    """The paths of one run folder.

    Parameters
    ----------
    root : str or os.PathLike
        The run folder (``--out`` of ``brainmaps train``).

    Notes
    -----
    Only names paths: nothing is created or read, so a layout of a folder that does not
    exist yet is fine.
    """

    CONFIG = "config.yaml"
    EXECUTION = "execution.yaml"
    COHORT = "cohort.tsv"
    FOLDS = "folds.tsv"
    PREDICTIONS = "predictions.tsv"
    METRICS = "metrics.tsv"
    METRICS_SITES = "metrics_sites.tsv"
    METRICS_REPEATS = "metrics_repeats.tsv"
    REPEATS = "repeats"
    HISTORY = "history.tsv"
    CHECKPOINT = "model.pt"
    MAPS_MANIFEST = "maps.tsv"
    REPORT = "report.html"
    LOCK = ".lock"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunLayout({str(self.root)!r})"

    # -- the run itself ----------------------------------------------------------------
    @property
    def config(self) -> Path:
        """pathlib.Path : ``config.yaml``."""
        return self.root / self.CONFIG

    @property
    def execution(self) -> Path:
        """pathlib.Path : ``execution.yaml``."""
        return self.root / self.EXECUTION

    @property
    def cohort(self) -> Path:
        """pathlib.Path : ``cohort.tsv``."""
        return self.root / self.COHORT

    @property
    def folds(self) -> Path:
        """pathlib.Path : ``folds.tsv``."""
        return self.root / self.FOLDS

    @property
    def predictions(self) -> Path:
        """pathlib.Path : ``predictions.tsv`` (out-of-fold)."""
        return self.root / self.PREDICTIONS

    @property
    def metrics(self) -> Path:
        """pathlib.Path : ``metrics.tsv``."""
        return self.root / self.METRICS

    @property
    def metrics_sites(self) -> Path:
        """pathlib.Path : ``metrics_sites.tsv`` (per fold and test site; cohorts with sites)."""
        return self.root / self.METRICS_SITES

    @property
    def metrics_repeats(self) -> Path:
        """pathlib.Path : ``metrics_repeats.tsv`` (per repeat and fold; repeated CV)."""
        return self.root / self.METRICS_REPEATS

    @property
    def report(self) -> Path:
        """pathlib.Path : ``report.html``."""
        return self.root / self.REPORT

    @property
    def lock(self) -> Path:
        """pathlib.Path : ``.lock``, held by the writing process."""
        return self.root / self.LOCK

    # -- folds -------------------------------------------------------------------------
    def fold_dir(self, fold: int) -> Path:
        """``fold-<k>/``."""
        return self.root / f"fold-{int(fold)}"

    def checkpoint(self, fold: int) -> Path:
        """``fold-<k>/model.pt``."""
        return self.fold_dir(fold) / self.CHECKPOINT

    def fold_predictions(self, fold: int) -> Path:
        """``fold-<k>/predictions.tsv``."""
        return self.fold_dir(fold) / self.PREDICTIONS

    def fold_history(self, fold: int) -> Path:
        """``fold-<k>/history.tsv``."""
        return self.fold_dir(fold) / self.HISTORY

    def member_dir(self, fold: int, member: int) -> Path:
        """``fold-<k>/member-<j>/`` (member 0 is the fold's own ``fold-<k>/``)."""
        if int(member) == 0:
            return self.fold_dir(fold)
        return self.fold_dir(fold) / f"member-{int(member)}"

    def member_checkpoint(self, fold: int, member: int) -> Path:
        """``fold-<k>/model.pt`` for member 0, ``fold-<k>/member-<j>/model.pt`` otherwise."""
        return self.member_dir(fold, member) / self.CHECKPOINT

    def member_predictions(self, fold: int, member: int) -> Path:
        """``fold-<k>/member-<j>/predictions.tsv``: one member's test predictions (members
        of an ensemble; the fold's ``predictions.tsv`` is their mean)."""
        return self.fold_dir(fold) / f"member-{int(member)}" / self.PREDICTIONS

    def member_history(self, fold: int, member: int) -> Path:
        """``history.tsv`` of a member (member 0: the fold's own)."""
        return self.member_dir(fold, member) / self.HISTORY

    def member_checkpoints(self, fold: int) -> list[Path]:
        """The fold's member checkpoints present, member 0 first (``[]`` if none)."""
        first = self.checkpoint(fold)
        others = sorted(
            (p for p in self.fold_dir(fold).glob(f"member-*/{self.CHECKPOINT}") if p.is_file()),
            key=lambda p: int(p.parent.name.removeprefix("member-")),
        )
        return ([first] if first.is_file() else []) + others

    def existing_checkpoints(self) -> dict[int, Path]:
        """``{fold: fold-<k>/model.pt}`` for the checkpoint files present, in fold order."""
        found = {}
        for path in self.root.glob(f"fold-*/{self.CHECKPOINT}"):
            match = _FOLD.match(path.parent.name)
            if match and path.is_file():
                found[int(match.group(1))] = path
        return dict(sorted(found.items()))

    # -- repeats of a repeated cross-validation ---------------------------------------
    @property
    def repeats_dir(self) -> Path:
        """pathlib.Path : ``repeats/``, the folder of the repeats r > 0."""
        return self.root / self.REPEATS

    def repeat_dir(self, repeat: int) -> Path:
        """``repeats/repeat-<r>/`` (repeat 0 is the run folder itself)."""
        if int(repeat) < 0:
            raise ValueError(f"repeat must be >= 0, got {repeat!r}.")
        if int(repeat) == 0:
            return self.root
        return self.repeats_dir / f"repeat-{int(repeat)}"

    def repeat(self, repeat: int) -> RunLayout:
        """The layout of repeat ``r``: ``self`` for r = 0, else one rooted at
        :meth:`repeat_dir` (its ``folds``, ``fold_dir(k)``, ``checkpoint(k)``,
        ``fold_predictions(k)``, ``predictions``, ``metrics``, ``baselines(name)`` are the
        repeat's own)."""
        return self if int(repeat) == 0 else RunLayout(self.repeat_dir(repeat))

    def existing_repeats(self) -> list[int]:
        """The repeats r > 0 with a ``repeats/repeat-<r>/folds.tsv``, sorted."""
        if not self.repeats_dir.is_dir():
            return []
        found = (_REPEAT.match(p.name) for p in self.repeats_dir.iterdir())
        return sorted(
            int(m.group(1))
            for m in found
            if m and int(m.group(1)) > 0 and (self.repeats_dir / m.group(0) / self.FOLDS).is_file()
        )

    # -- maps --------------------------------------------------------------------------
    @property
    def maps_root(self) -> Path:
        """pathlib.Path : ``maps/``."""
        return self.root / "maps"

    def maps_dir(self, method: str) -> Path:
        """``maps/<method>/``."""
        return self.maps_root / method

    def maps_manifest(self, method: str) -> Path:
        """``maps/<method>/maps.tsv``."""
        return self.maps_dir(method) / self.MAPS_MANIFEST

    def subject_map(self, method: str, subject: str, session: str = "") -> Path:
        """``maps/<method>/sub-<id>[_ses-<session>].nii.gz``."""
        return self.maps_dir(method) / map_filename(subject, session)

    def native_map(self, method: str, name: str) -> Path:
        """``maps/<method>/native/<name>``: a subject map in its scan's space."""
        return self.maps_dir(method) / "native" / name

    def group_map(self, method: str, group: str) -> Path:
        """``maps/<method>/mean_<group>.nii.gz`` (a class, ``conjoined`` or ``all``)."""
        return self.maps_dir(method) / f"mean_{group}.nii.gz"

    def channel_map_dir(self, method: str, channel: str) -> Path:
        """``maps/<method>/channel-<name>/``: the maps of one input channel."""
        return self.maps_dir(method) / f"channel-{channel}"

    def channel_subject_map(
        self, method: str, channel: str, subject: str, session: str = ""
    ) -> Path:
        """``maps/<method>/channel-<name>/sub-<id>[_ses-<session>].nii.gz``."""
        return self.channel_map_dir(method, channel) / map_filename(subject, session)

    def channel_group_map(self, method: str, channel: str, group: str) -> Path:
        """``maps/<method>/channel-<name>/mean_<group>.nii.gz``."""
        return self.channel_map_dir(method, channel) / f"mean_{group}.nii.gz"

    def map_channels(self, method: str) -> list[str]:
        """The channels with a ``maps/<method>/channel-<name>/`` folder, sorted."""
        folder = self.maps_dir(method)
        if not folder.is_dir():
            return []
        return sorted(
            p.name.removeprefix("channel-")
            for p in folder.iterdir()
            if p.is_dir() and p.name.startswith("channel-")
        )

    def occlusion_cohort_map(self, fold: int | None = None) -> Path:
        """``maps/occlusion/cohort_accuracy_drop.nii.gz`` (``..._fold-<k>.nii.gz``: one fold)."""
        name = "cohort_accuracy_drop" if fold is None else f"cohort_accuracy_drop_fold-{fold}"
        return self.maps_dir("occlusion") / f"{name}.nii.gz"

    def map_methods(self) -> list[str]:
        """Folders under ``maps/`` that hold a ``maps.tsv``, sorted."""
        if not self.maps_root.is_dir():
            return []
        return sorted(
            p.name for p in self.maps_root.iterdir() if (p / self.MAPS_MANIFEST).is_file()
        )

    # -- analysis, baselines, stage records --------------------------------------------
    @property
    def analysis_dir(self) -> Path:
        """pathlib.Path : ``analysis/``."""
        return self.root / "analysis"

    def analysis(self, name: str) -> Path:
        """``analysis/<name>.tsv`` (``name`` without the suffix)."""
        return self.analysis_dir / f"{name}.tsv"

    @property
    def thresholds(self) -> Path:
        """pathlib.Path : ``analysis/thresholds.tsv`` (operating points of a binary run)."""
        return self.analysis("thresholds")

    @property
    def roc(self) -> Path:
        """pathlib.Path : ``analysis/roc.tsv`` (the pooled out-of-fold ROC curve)."""
        return self.analysis("roc")

    @property
    def calibration(self) -> Path:
        """pathlib.Path : ``analysis/calibration.tsv`` (out-of-fold calibration curve)."""
        return self.analysis("calibration")

    def analysis_tables(self, prefix: str) -> list[Path]:
        """``analysis/<prefix>*.tsv`` that exist, sorted."""
        return sorted(self.analysis_dir.glob(f"{prefix}*.tsv"))

    @property
    def baselines_dir(self) -> Path:
        """pathlib.Path : ``baselines/``."""
        return self.root / "baselines"

    def baselines(self, name: str) -> Path:
        """``baselines/<name>.tsv`` (``name`` without the suffix)."""
        return self.baselines_dir / f"{name}.tsv"

    def importances(self, model: str, ext: str = "tsv") -> Path:
        """``baselines/importances_<model>.<ext>`` (the table, or ``ext="png"``: its plot)."""
        return self.baselines_dir / f"importances_{model}.{ext}"

    def importance_plots(self) -> list[Path]:
        """The feature-importance plots under ``baselines/`` that exist, sorted."""
        return sorted(self.baselines_dir.glob("*importance*.png"))

    def stage_record(self, stage: str) -> Path:
        """``stages/<stage>.yaml``: the options that made a stage's outputs."""
        return self.root / "stages" / f"{stage}.yaml"
