"""The built-in demo: synthetic cohort, cross-validated xin2019, maps, analyses, report.

The demo runs the same public functions a user calls (:func:`make_synthetic_cohort`,
:func:`train_run`, :func:`explain_run`, :func:`analyse_run`, :func:`build_report`) at a
reduced model grid so that it ends in about 15 minutes on two CPU cores. Its output
folder holds the cohort, the preprocessing cache and the run (with ``maps/`` for every
attribution method, ``analysis/`` and ``report.html``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from brainmaps.data.preprocess import PreprocessConfig
from brainmaps.data.synthetic import SYNTH_PRESETS, make_synthetic_cohort
from brainmaps.reports.analyse import analyse_run
from brainmaps.reports.html import build_report
from brainmaps.run.config import DataConfig, ExecutionConfig, RunConfig, TrainingConfig
from brainmaps.steps import explain as explain_run
from brainmaps.training.run import RunResult, train_run

__all__ = ["DemoSettings", "run_demo"]

DEMO_METHODS = (
    "grad_cam",
    "hires_cam",
    "guided_backprop",
    "gradient",
    "smoothgrad",
    "integrated_gradients",
    "lrp",
)
#: The slow methods explain a class-balanced sample of each fold's test subjects.
DEMO_SAMPLED_METHODS = ("occlusion", "meaningful_perturbation")
#: Cheaper settings than the defaults for the demo's 120 subjects on 2 CPU cores, and
#: Meaningful Perturbations at sizes for the demo's 5 mm voxels and small planted
#: regions (the 6, 1 and 1 voxels and 2-voxel mask cells that were used at 36x44x36; the
#: 10.2 mm cells give its 18x22x18 mask): a mask smoothing of 10 voxels here (50 mm)
#: blurs the mask far beyond the planted regions.
DEMO_OPTIONS = {
    "smoothgrad": {"n_samples": 5},
    "integrated_gradients": {"n_steps": 8},
    "occlusion": {"window_mm": 18.0, "stride_mm": 18.0},
    "meaningful_perturbation": {
        "sigma_blur_mm": 30.0,
        "sigma_mask_mm": 5.0,
        "mask_voxel_mm": 10.2,
        "jitter_mm": 5.0,
        "l1_coeff": 1.0,
        "max_iter": 30,
        "n_draws": 4,
    },
}


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo, chosen to finish in about 15 minutes on 2 CPU cores.

    Parameters
    ----------
    n_subjects : int
        Synthetic subjects (half controls, half patients).
    grid_shape : tuple of int
        Model grid over the MNI152 box (the paper's 58x70x58 is the full protocol).
    effect : {"atrophy", "intensity"}
        Kind of planted group effect (see :class:`brainmaps.data.synthetic.SynthConfig`).
    effect_size : float
        Its strength; chosen so the CNN learns it well above chance but not perfectly.
    regions : tuple of str
        Regions that carry the effect (see :func:`brainmaps.data.synthetic.list_regions`).
    folds, epochs, batch_size, seed : int
        Cross-validation and training settings.
    lr : float
        Adam learning rate (higher than the paper's 3e-4 so the short demo converges).
    n_jobs : int
        Parallel jobs for synthesis and preprocessing.
    methods : tuple of str
        Attribution methods run on every subject (``()`` skips maps, analyses and
        report). CAM is not among them: it needs a global-average-pooling network and
        the demo trains xin2019.
    sampled_methods : tuple of str
        Slow methods run on ``subjects_per_fold`` test subjects of each fold.
    subjects_per_fold : int
        Sample size per fold for ``sampled_methods``.
    method_options : dict
        Per-method options that keep the slower methods within the demo's time.
    report : bool
        Run the analyses and write ``run/report.html``.
    """

    n_subjects: int = 120
    grid_shape: tuple[int, int, int] = (36, 44, 36)
    # the default preset of 'brainmaps synth': 30 % darker tissue in both hippocampi,
    # both superior frontal gyri and the precuneus
    effect: str = SYNTH_PRESETS["default"]["effect"]
    effect_size: float = SYNTH_PRESETS["default"]["effect_size"]
    regions: tuple[str, ...] = SYNTH_PRESETS["default"]["regions"]
    folds: int = 5
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 8
    seed: int = 42
    n_jobs: int = 2
    methods: tuple[str, ...] = DEMO_METHODS
    sampled_methods: tuple[str, ...] = DEMO_SAMPLED_METHODS
    subjects_per_fold: int = 4
    method_options: dict = field(default_factory=lambda: dict(DEMO_OPTIONS))
    report: bool = True


def run_demo(
    out: str | os.PathLike, settings: DemoSettings | None = None, *, progress: bool = True
) -> RunResult:
    """Run the demo into ``out`` (``cohort/``, ``cache/`` and ``run/`` inside it).

    Re-running reuses the cohort, the cache and finished folds.

    Parameters
    ----------
    out : str or os.PathLike
        Demo folder.
    settings : DemoSettings, optional
        Sizes; the defaults finish in about 15 minutes on 2 CPU cores.
    progress : bool
        Show progress bars.

    Returns
    -------
    RunResult
        The training run (metrics, out-of-fold predictions, folder).
    """
    s = settings or DemoSettings()
    out = Path(out)
    cohort_dir = out / "cohort"
    if not (cohort_dir / "participants.tsv").is_file():
        make_synthetic_cohort(
            cohort_dir,
            n_subjects=s.n_subjects,
            seed=0,
            effect=s.effect,
            effect_size=s.effect_size,
            regions=tuple(s.regions),
            n_jobs=s.n_jobs,
            progress=progress,
        )
    config = RunConfig(
        data=DataConfig(source=str(cohort_dir), target="group"),
        preprocess=PreprocessConfig(grid_shape=tuple(s.grid_shape)),
        training=TrainingConfig(
            folds=s.folds,
            epochs=s.epochs,
            lr=s.lr,
            batch_size=s.batch_size,
            seed=s.seed,
        ),
        out=str(out / "run"),
        execution=ExecutionConfig(n_jobs=s.n_jobs, cache_dir=str(out / "cache")),
    )
    result = train_run(config, progress=progress)
    if not s.methods:
        return result
    for methods, per_fold in ((s.methods, None), (s.sampled_methods, s.subjects_per_fold)):
        if methods:
            options = {m: o for m, o in s.method_options.items() if m in methods}
            explain_run(
                config.out,
                methods,
                options=options,
                batch_size=8,
                subjects_per_fold=per_fold,
                progress=progress,
            )
    if s.report:
        analyse_run(config.out, progress=progress)
        build_report(config.out)
    return result
