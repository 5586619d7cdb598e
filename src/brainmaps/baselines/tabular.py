"""Baselines on tables of features (morphometry): LR, KNN, XGBoost, SVR, GPR with grid search.

Kan et al. compare their CNN with logistic regression, k-nearest neighbours and XGBoost
trained on 935 FreeSurfer features, each tuned by grid search. Here each model is
cross-validated on the given outer folds with a grid search nested in every training
part (:func:`~brainmaps.baselines.core.nested_cv`): the median imputer and the
standardisation are steps of the pipeline, so they are fitted on training rows only.
Regression uses ridge regression (``lr`` or ``ridge``), a KNN regressor and an XGBoost
regressor, and has three more models, for brain age on regional volumes: support vector
regression with an RBF (``svr``) or linear (``svr_linear``) kernel -- the kernel of the
voxel SVM (:func:`~brainmaps.baselines.voxels.fold_kernel`) on the median-imputed table,
with its grid -- and Gaussian-process regression (``gpr``, as brainageR).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from brainmaps.baselines.core import BaselineResult, check_rows, nested_cv, table_features
from brainmaps.baselines.plots import importance_table
from brainmaps.baselines.voxels import SVM_GRID, KernelSVR, fold_kernel
from brainmaps.exceptions import ConfigError
from brainmaps.tasks import get_task

__all__ = ["TABULAR_MODELS", "cross_validate_tabular", "make_tabular_model"]

#: Names of the table baselines.
TABULAR_MODELS = ("lr", "knn", "xgb", "ridge", "svr", "svr_linear", "gpr")
#: Table baselines for regression only (``ridge`` is ``lr`` of a regression task).
REGRESSION_MODELS = ("ridge", "svr", "svr_linear", "gpr")
_SVR_KERNELS = {"svr": "rbf", "svr_linear": "linear"}
_C_GRID = [0.01, 0.1, 1.0, 10.0]
_ALPHA_GRID = [0.1, 1.0, 10.0, 100.0]
_K_GRID = [3, 5, 9, 15]


def _pipeline(model) -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", model),
        ]
    )


def _knn_grid(smallest_train: int) -> dict:
    ks = [k for k in _K_GRID if k <= smallest_train] or [max(1, smallest_train)]
    return {"model__n_neighbors": ks, "model__weights": ["uniform", "distance"]}


def make_tabular_model(name: str, task: str = "classification", random_state: int = 0):
    """Return ``(estimator, param_grid)`` of a table baseline.

    Parameters
    ----------
    name : {"lr", "knn", "xgb", "ridge", "svr", "svr_linear", "gpr"}
        ``"lr"``: logistic regression (ridge regression for regression) on standardised
        features, ``C`` (``alpha``) searched; ``"knn"``: k-nearest neighbours on
        standardised features, ``k`` and the weighting searched; ``"xgb"``: gradient
        boosted trees (XGBoost, 100 trees), depth and learning rate searched. Regression
        only: ``"ridge"`` (``"lr"`` by its regression name); ``"svr"`` /
        ``"svr_linear"``: :class:`~brainmaps.baselines.voxels.KernelSVR` on the kernel of
        :func:`_kernel_features`, ``C`` in {1, 10, 100} and (RBF) ``gamma`` in {0.1, 1}
        times scikit-learn's ``"scale"``; ``"gpr"``: Gaussian-process regression on
        standardised features, kernel ``ConstantKernel * RBF + WhiteKernel`` with its
        amplitude, length scale and noise fitted by marginal likelihood (one restart),
        ``normalize_y=True``; no grid.
    task : {"classification", "regression"}
    random_state : int
        Seeds XGBoost.

    Returns
    -------
    estimator : sklearn estimator
    param_grid : dict or callable
        As accepted by :func:`~brainmaps.baselines.core.nested_cv`.
    """
    regression = not get_task(task).is_classification
    if name in REGRESSION_MODELS and not regression:
        raise ConfigError(
            f"model: {name!r} is a regression baseline, found a {task} task; for "
            "classification choose from lr, knn, xgb (tables) or svm, svm_linear (voxels)."
        )
    if name in ("lr", "ridge"):
        if regression:
            return _pipeline(Ridge()), {"model__alpha": _ALPHA_GRID}
        return _pipeline(LogisticRegression(max_iter=5000)), {"model__C": _C_GRID}
    if name == "knn":
        knn = KNeighborsRegressor() if regression else KNeighborsClassifier()
        return _pipeline(knn), _knn_grid
    if name == "xgb":
        kind = XGBRegressor if regression else XGBClassifier
        xgb = kind(n_estimators=100, tree_method="hist", n_jobs=1, random_state=random_state)
        return xgb, {"max_depth": [2, 4], "learning_rate": [0.05, 0.2]}
    if name in _SVR_KERNELS:
        return KernelSVR(), SVM_GRID[_SVR_KERNELS[name]]
    if name == "gpr":
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(10.0, (1e-2, 1e4)) + WhiteKernel(
            0.1, (1e-6, 1e1)
        )
        gpr = GaussianProcessRegressor(
            kernel, normalize_y=True, n_restarts_optimizer=1, random_state=random_state
        )
        return _pipeline(gpr), {}
    raise ConfigError(
        f"model: unknown table baseline {name!r}; choose from {', '.join(TABULAR_MODELS)} "
        "(the voxel SVMs 'svm' and 'svm_linear' take volumes, not a table; on a regression "
        "run they are SVRs)."
    )


def _kernel_features(x, kernel: str):
    """``features(train, test)``: the table median-imputed with the training rows, then the
    kernel of :func:`~brainmaps.baselines.voxels.fold_kernel` (columns standardised on the
    training rows)."""
    x = np.asarray(x.to_numpy(dtype=np.float64) if isinstance(x, pd.DataFrame) else x, float)

    def features(train, test):
        filled = x.copy()
        missing = np.isnan(filled)
        if missing.any():
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN training columns
                median = np.nan_to_num(np.nanmedian(x[train], axis=0))
            filled[missing] = np.broadcast_to(median, x.shape)[missing]
        return fold_kernel(filled, train, test, kernel)

    return features


def _lr_importance(estimator) -> np.ndarray:
    """Standardised coefficients: class 1 for binary, mean |coef| over classes otherwise."""
    coef = np.atleast_2d(estimator.named_steps["model"].coef_)
    return coef[0] if coef.shape[0] == 1 else np.abs(coef).mean(axis=0)


def _xgb_importance(estimator, n_features: int) -> np.ndarray:
    """Average gain of the splits on each feature (0 for features never used)."""
    gain = estimator.get_booster().get_score(importance_type="gain")
    values = np.zeros(n_features)
    for key, value in gain.items():
        values[int(key[1:])] = value
    return values


def _importances(name: str, result: BaselineResult, names: Sequence[str]) -> pd.DataFrame | None:
    if name in ("lr", "ridge"):
        return importance_table([_lr_importance(e) for e in result.estimators], names)
    if name == "xgb":
        per_fold = [_xgb_importance(e, len(names)) for e in result.estimators]
        return importance_table(per_fold, names)
    return None


def cross_validate_tabular(
    x,
    y,
    folds,
    model: str = "lr",
    *,
    groups=None,
    task: str = "classification",
    feature_names: Sequence[str] | None = None,
    inner_folds: int = 5,
    random_state: int = 0,
    n_jobs: int = 1,
    progress: bool = False,
    bias_rows: Sequence | None = None,
) -> BaselineResult:
    """Cross-validate a table baseline on given outer folds, with nested grid search.

    Parameters
    ----------
    x : pandas.DataFrame or array-like, shape (n, n_features)
        Numeric features, one row per sample (NaN allowed: imputed with the training
        median for ``lr``/``knn``, handled natively by ``xgb``). See
        :func:`~brainmaps.baselines.tables.load_features`.
    y : array-like, shape (n,)
        Class indices 0..K-1, or values for regression.
    folds : array-like or sequence of (train, test)
        Outer folds (see :func:`~brainmaps.baselines.core.as_splits`).
    model : {"lr", "knn", "xgb", "ridge", "svr", "svr_linear", "gpr"}
        See :func:`make_tabular_model`.
    groups : array-like of str, optional
        Subject of each row (inner folds are grouped by subject).
    task : {"classification", "regression"}
    feature_names : sequence of str, optional
        Defaults to the columns of ``x`` (or ``f0, f1, ...``).
    inner_folds, random_state, n_jobs, progress, bias_rows
        See :func:`~brainmaps.baselines.core.nested_cv` (regression results carry the
        bias-corrected predictions of :mod:`brainmaps.baselines.bias`).

    Returns
    -------
    BaselineResult
        With ``importances`` for ``lr``/``ridge`` (standardised coefficients; positive
        values favour class 1) and ``xgb`` (gain).
    """
    check_rows(x, y)
    if feature_names is None:
        columns = x.columns if isinstance(x, pd.DataFrame) else range(np.shape(x)[1])
        feature_names = [str(c) if isinstance(x, pd.DataFrame) else f"f{c}" for c in columns]
    estimator, grid = make_tabular_model(model, task, random_state)
    features = _kernel_features(x, _SVR_KERNELS[model]) if model in _SVR_KERNELS else None
    result = nested_cv(
        estimator,
        grid,
        y,
        folds,
        features or table_features(x),
        groups=groups,
        task=task,
        inner_folds=inner_folds,
        random_state=random_state,
        n_jobs=n_jobs,
        name=model,
        progress=progress,
        bias_rows=bias_rows,
    )
    importances = _importances(model, result, list(feature_names))
    return BaselineResult(**{**result.__dict__, "importances": importances})
