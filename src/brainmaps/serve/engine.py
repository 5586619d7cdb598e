"""What the server does with one uploaded scan: validate, register, predict, explain.

The :class:`Engine` holds a run's fold ensemble, loaded once when the server starts,
and turns one NIfTI file into a result dictionary plus two NIfTI files on the model grid
(the scan as the models saw it, and one fold-ensemble map per attribution method). It
predicts through :class:`~brainmaps.training.ensembles.FoldEnsemble`, the path of
``brainmaps predict``, so a scan gets the same probabilities from both.

Space. A scan already in MNI space (as ``brainmaps preprocess`` writes, or a synthetic
cohort's) is used as uploaded; a native-space T1 is first registered with
:func:`~brainmaps.data.registration.register_img` (N4, brain mask, affine to MNI152, as
``brainmaps preprocess`` does). With ``space="auto"`` the scan is read by its own affine
and correlated with the template (:func:`~brainmaps.data.registration.
mni_template_correlation`): at or above :data:`MNI_SPACE_CORRELATION` it counts as
MNI-space. MNI-space scans give 0.45-0.7, native IXI scans read this way 0.05-0.25.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainmaps.attribution.ensemble import ensemble_map, method_settings
from brainmaps.data.io import load_img, save_img
from brainmaps.data.registration import (
    RegistrationConfig,
    mni_template_correlation,
    register_img,
)
from brainmaps.evaluation.operating_points import parse_rule
from brainmaps.exceptions import BrainmapsError, ConfigError, ImageError
from brainmaps.training.ensembles import FoldEnsemble
from brainmaps.training.oof_thresholds import resolve_threshold

__all__ = ["MIN_EXTENT_MM", "MNI_SPACE_CORRELATION", "SPACES", "Engine", "ScanError"]

#: Template correlation (as uploaded) from which ``space="auto"`` takes a scan as MNI-space.
MNI_SPACE_CORRELATION = 0.35
#: The smallest field of view (mm, every axis) accepted as a brain scan.
MIN_EXTENT_MM = 80.0
#: How the space of a scan is decided: measured, or said by the user.
SPACES = ("auto", "mni", "native")

Progress = Callable[[str, float], None]


class ScanError(BrainmapsError, ValueError):
    """One uploaded scan cannot be used; the message names it by its upload name."""


def _rename(exc: BaseException, path: Path, name: str) -> ScanError:
    """The error with the server's file path replaced by the name the user knows."""
    return ScanError(str(exc).replace(str(path), name))


class Engine:
    """A run's fold ensemble, ready to predict and explain uploaded scans.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A run folder written by ``brainmaps train`` (one input channel).
    methods : sequence of str
        Attribution methods computed for every scan (:func:`brainmaps.attribution.
        list_methods`); may be empty (prediction only).
    options : dict, optional
        Options per method, e.g. ``{"occlusion": {"window_mm": 12}}``.
    device : {"auto", "cpu", "cuda"}
    threshold : float or str, optional
        Binary runs only: the call is the second class when its probability is at least
        the threshold: a value in (0, 1), or a rule (``"youden"``, ``"sens=0.9"``,
        ``"spec=0.9"``) chosen once, here, on the run's out-of-fold predictions
        (:func:`~brainmaps.training.oof_thresholds.resolve_threshold`). Default: the class
        of the highest probability (0.5 for two classes).
    registration : RegistrationConfig, optional
        Settings of the registration of native-space scans.

    Raises
    ------
    ConfigError
        A run with several input channels (one file per subject is uploaded), an unknown
        method or option, or a threshold outside (0, 1) or for a non-binary run.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        methods: Sequence[str] = ("hires_cam",),
        options: dict[str, dict] | None = None,
        device: str = "auto",
        threshold: float | str | None = None,
        registration: RegistrationConfig | None = None,
    ) -> None:
        self.ensemble = FoldEnsemble(run_dir, device=device)
        run = self.ensemble.run
        if self.ensemble.channels:
            raise ConfigError(
                f"run {run.path} takes {len(self.ensemble.channels)} input channels "
                f"({', '.join(self.ensemble.channels)}); the web page takes one scan per "
                "subject, so serve a one-channel run (use 'brainmaps predict' for this one)."
            )
        self.settings = method_settings(methods, options, run.grid.shape)
        self.methods = tuple(self.settings)
        classes = self.ensemble.classes
        self.rule = None
        if threshold is not None:
            if len(classes) != 2:
                raise ConfigError(
                    f"threshold={threshold} needs a binary classification run; run "
                    f"{run.path} is {run.task.name} with classes {list(classes) or 'none'}."
                )
            name, threshold = resolve_threshold(run, threshold)
            if parse_rule(name).kind != "value":  # chosen on the out-of-fold predictions
                self.rule = f"{name}: p({classes[1]}) >= value"
        self.threshold = threshold
        self.registration = registration or RegistrationConfig()

    # -- description ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the page shows about the model: task, classes, grid, methods, folds."""
        run = self.ensemble.run
        return {
            "run": run.path.name,
            "task": "classification" if run.task.is_classification else "regression",
            "target": run.config.data.target,
            "classes": list(self.ensemble.classes),
            "n_models": len(self.ensemble.models),
            "model": self.ensemble.meta.get("model"),
            "grid": list(run.grid.shape),
            "methods": list(self.methods),
            "threshold": self.threshold,
        }

    # -- one scan ------------------------------------------------------------------------
    def validate(self, path: Path, name: str):
        """Read and check one scan (the synchronous part of an upload).

        Returns
        -------
        nibabel.Nifti1Image

        Raises
        ------
        ScanError
            Unreadable, corrupt, several volumes, non-finite or constant voxels, or a
            field of view too small to hold a brain. The message names ``name``.
        """
        try:
            img = load_img(path)
        except ImageError as exc:
            raise _rename(exc, path, name) from None
        zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
        extent = zooms * np.asarray(img.shape[:3])
        if np.any(extent < MIN_EXTENT_MM):
            raise ScanError(
                f"{name}: field of view {' x '.join(f'{e:.0f}' for e in extent)} mm (shape "
                f"{img.shape[:3]}, voxels {' x '.join(f'{z:g}' for z in zooms)} mm) is too "
                f"small for a brain scan (at least {MIN_EXTENT_MM:.0f} mm on every axis); "
                "upload the whole 3D T1 image."
            )
        return img

    def process(
        self,
        path: Path,
        name: str,
        outdir: Path,
        *,
        space: str = "auto",
        progress: Progress | None = None,
        img=None,
    ) -> dict[str, Any]:
        """Validate, place in MNI space, predict and explain one scan.

        Parameters
        ----------
        path : pathlib.Path
            The scan on disk (a server-made name).
        name : str
            The name the user gave it (used in messages and the result).
        outdir : pathlib.Path
            Where ``<stem>_scan.nii.gz`` and ``<stem>_<method>.nii.gz`` are written
            (``stem`` is ``path``'s name without its NIfTI suffix).
        space : {"auto", "mni", "native"}
            See the module docstring.
        progress : callable, optional
            Called as ``progress(stage, fraction)`` with stage ``validating``,
            ``registering``, ``predicting`` or ``explaining:<method>``.
        img : nibabel.Nifti1Image, optional
            The image :meth:`validate` returned (saves reading it again).

        Returns
        -------
        dict
            ``name``, ``space`` (``mni`` or ``registered``), ``template_correlation``,
            ``n_models``, ``seconds`` per stage, ``files`` (``scan`` and one per method),
            and for classification ``probabilities``, ``spread`` (std over the fold
            models), ``members`` (each model's probabilities), ``call`` and
            ``threshold``; for regression ``prediction``, ``prediction_std`` and
            ``members``.

        Raises
        ------
        ScanError
            A bad scan (see :meth:`validate`) or a failed registration.
        ConfigError
            ``space`` is not one of :data:`SPACES`.
        """
        if space not in SPACES:
            raise ConfigError(f"space must be one of {', '.join(SPACES)}, got {space!r}.")
        report = progress or (lambda stage, fraction: None)
        seconds: dict[str, float] = {}
        steps = 2 + len(self.methods)
        clock = time.perf_counter()
        report("validating", 0.0)
        img = self.validate(path, name) if img is None else img
        correlation = mni_template_correlation(img)
        seconds["validating"] = time.perf_counter() - clock
        native = space == "native" or (space == "auto" and correlation < MNI_SPACE_CORRELATION)
        if native:
            report("registering", 0.5 / steps)
            clock = time.perf_counter()
            try:
                result = register_img(img, config=self.registration)
            except ImageError as exc:
                raise ScanError(
                    f"{name}: {str(exc).replace('the image: ', '')} It was read as a native-space "
                    f"scan (correlation with the MNI template as uploaded r={correlation:.2f}, "
                    f"below {MNI_SPACE_CORRELATION} for MNI-space scans)."
                ) from None
            img, correlation = result.img, result.template_correlation
            seconds["registering"] = time.perf_counter() - clock
        report("predicting", 1 / steps)
        clock = time.perf_counter()
        try:
            volume = self.ensemble.volume(img)
        except ImageError as exc:
            raise _rename(exc, path, name) from None
        members = self.ensemble.member_outputs(volume[None])
        summary = self.ensemble.summarise(members)
        seconds["predicting"] = time.perf_counter() - clock
        out: dict[str, Any] = {
            "name": name,
            "space": "registered" if native else "mni",
            "template_correlation": round(float(correlation), 4),
            "n_models": len(self.ensemble.models),
        }
        unit = self._answer(out, summary, members)
        stem = path.name.removesuffix(".gz").removesuffix(".nii")
        grid = self.ensemble.run.grid
        files = {"scan": save_img(grid.to_img(volume), outdir / f"{stem}_scan.nii.gz").name}
        for i, method in enumerate(self.methods):
            report(f"explaining:{method}", (2 + i) / steps)
            clock = time.perf_counter()
            amap = ensemble_map(
                self.ensemble.models,
                volume,
                method,
                unit=unit,
                options=self.settings[method],
                device=self.ensemble.device,
            )
            files[method] = save_img(grid.to_img(amap), outdir / f"{stem}_{method}.nii.gz").name
            seconds[f"explaining:{method}"] = time.perf_counter() - clock
        out["files"] = files
        out["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        return out

    def _answer(self, out: dict, summary: dict, members: np.ndarray) -> int | None:
        """Fill the prediction fields of ``out``; return the unit the maps explain."""
        if not self.ensemble.task.is_classification:
            out["prediction"] = float(summary["prediction"][0])
            out["prediction_std"] = float(summary["prediction_std"][0])
            out["members"] = [float(v) for v in members[:, 0]]
            return None
        classes = self.ensemble.classes
        probs = {c: float(summary[f"p_{c}"][0]) for c in classes}
        out["probabilities"] = probs
        out["spread"] = {c: float(summary[f"std_{c}"][0]) for c in classes}
        out["members"] = [[float(v) for v in row] for row in members[:, 0]]
        if self.threshold is None:
            call = str(summary["predicted"][0])
            out["threshold"] = {"rule": "highest probability", "value": None}
        else:
            call = classes[1] if probs[classes[1]] >= self.threshold else classes[0]
            rule = f"p({classes[1]}) >= value"
            out["threshold"] = {"rule": self.rule or rule, "value": self.threshold}
        out["call"] = call
        return classes.index(call)
