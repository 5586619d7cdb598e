"""Support vector machines on voxels: the voxel baseline of Kan et al. (RBF SVM, 0.90 ± 0.02).

The preprocessed volumes are flattened inside a brain mask into one ``float32`` matrix,
read one volume at a time (a memory map in a temporary file for large cohorts). In each
outer fold every voxel is standardised with the mean and standard deviation of the
training rows only, and the SVM works on a precomputed kernel: the Gram matrix of the
standardised rows is accumulated in ``float32`` blocks of voxels, so no standardised
copy of the data is ever held and the inner grid search reuses one kernel.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.svm import SVC, SVR
from tqdm.auto import tqdm

from brainmaps.baselines.core import BaselineResult, check_rows, nested_cv
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.tasks import get_task

__all__ = [
    "KERNELS",
    "VOXEL_MODELS",
    "KernelSVC",
    "KernelSVR",
    "cross_validate_voxels",
    "fold_kernel",
    "nonzero_mask",
    "voxel_matrix",
]

#: Kernels of the voxel SVM.
KERNELS = ("rbf", "linear")
#: Baseline names of the voxel SVM, with their kernel.
VOXEL_MODELS = {"svm": "rbf", "svm_linear": "linear"}
_C_GRID = [1.0, 10.0, 100.0]
_GAMMA_GRID = {"rbf": [0.1, 1.0], "linear": [1.0]}
#: Grid of the kernel SVMs per kernel (``gamma``: multiples of scikit-learn's "scale").
SVM_GRID = {kernel: {"C": _C_GRID, "gamma": gammas} for kernel, gammas in _GAMMA_GRID.items()}
_BLOCK_BYTES = 64 * 2**20


def nonzero_mask(volumes) -> np.ndarray:
    """Voxels that are non-zero in at least one volume (one pass, one volume at a time)."""
    mask = None
    for volume in volumes:
        mask = volume != 0 if mask is None else mask | (volume != 0)
    if mask is None:
        raise ShapeError("no volumes given; the cohort is empty.")
    return mask


def voxel_matrix(
    volumes: Sequence[np.ndarray],
    mask: np.ndarray,
    *,
    memmap_threshold: int = 2**30,
    temp_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Flatten volumes inside a mask into an ``(n_volumes, n_voxels)`` float32 matrix.

    Volumes are read one at a time into a preallocated array; when it would exceed
    ``memmap_threshold`` bytes it is a :class:`numpy.memmap` on an unlinked temporary
    file (freed when the array is), so memory stays bounded by the page cache.

    Parameters
    ----------
    volumes : sequence of numpy.ndarray
        E.g. :class:`~brainmaps.data.cache.CachedVolumes`; every volume has
        ``mask.shape``.
    mask : numpy.ndarray of bool
        Voxels kept, in C order.
    memmap_threshold : int
        Size in bytes above which a memory map is used.
    temp_dir : str or os.PathLike, optional
        Folder of the memory-mapped file (default: the system's temporary folder).
    progress : bool
        Show a progress bar.

    Returns
    -------
    numpy.ndarray or numpy.memmap of float32
    """
    mask = np.asarray(mask, dtype=bool)
    n_voxels = int(mask.sum())
    if n_voxels == 0:
        raise ShapeError("the voxel mask is empty; no voxel is left to classify.")
    shape = (len(volumes), n_voxels)
    if 4 * shape[0] * shape[1] > memmap_threshold:
        fd, name = tempfile.mkstemp(prefix="brainmaps-voxels-", suffix=".f32", dir=temp_dir)
        os.close(fd)
        try:
            out = np.memmap(name, dtype=np.float32, mode="w+", shape=shape)
        finally:
            os.unlink(name)  # the mapping keeps the data alive; no file is left behind
    else:
        out = np.empty(shape, dtype=np.float32)
    for i in tqdm(range(len(volumes)), desc="voxels", disable=not progress):
        volume = np.asarray(volumes[i])
        if volume.shape != mask.shape:
            raise ShapeError(f"volume {i} has shape {volume.shape}, the mask {mask.shape}.")
        out[i] = volume[mask]
    return out


def _gram(x, rows: np.ndarray, n_train: int, block_bytes: int) -> np.ndarray:
    """Gram matrix of ``x[rows]`` standardised with the statistics of its first rows.

    Works on one block of voxels at a time, in place in ``float32``: the only copies are
    one block and the ``(len(rows), len(rows))`` result.
    """
    gram = np.zeros((len(rows), len(rows)), dtype=np.float64)
    step = max(1, block_bytes // (4 * len(rows)))
    for start in range(0, x.shape[1], step):
        block = np.ascontiguousarray(x[rows, start : start + step], dtype=np.float32)
        train = block[:n_train]
        mean = train.mean(axis=0, dtype=np.float64)
        block -= mean.astype(np.float32)
        std = np.sqrt(np.einsum("ij,ij->j", train, train, dtype=np.float64) / n_train)
        std[std <= 1e-5 * np.abs(mean)] = 1.0  # constant voxels, up to float32 rounding
        block /= std.astype(np.float32)
        gram += block @ block.T
    return gram


def fold_kernel(
    x, train, test=None, kernel: str = "rbf", *, block_bytes: int = _BLOCK_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Kernels of one fold, with voxels standardised on the training rows only.

    Parameters
    ----------
    x : numpy.ndarray or numpy.memmap, shape (n, n_voxels)
        See :func:`voxel_matrix`.
    train, test : array-like of int
        Row indices; ``test`` may be empty or None.
    kernel : {"rbf", "linear"}
        ``"linear"``: ``z_i . z_j / s``; ``"rbf"``: ``exp(-||z_i - z_j||^2 / s)``, where
        ``z`` are the standardised rows and ``s`` is the mean squared norm of the
        training rows, so the RBF width is scikit-learn's ``gamma="scale"`` and ``C``
        has the same meaning for both kernels.
    block_bytes : int
        Size of the ``float32`` voxel blocks read at once.

    Returns
    -------
    k_train : numpy.ndarray, shape (n_train, n_train)
    k_test : numpy.ndarray, shape (n_test, n_train)
    """
    if kernel not in KERNELS:
        raise ConfigError(f"kernel must be one of {KERNELS}, got {kernel!r}.")
    train = np.asarray(train, dtype=np.int64)
    test = np.asarray([] if test is None else test, dtype=np.int64)
    n_train = len(train)
    gram = _gram(x, np.concatenate([train, test]), n_train, block_bytes)
    sq = np.diag(gram).copy()
    scale = float(sq[:n_train].mean()) or 1.0
    if kernel == "linear":
        k = gram[:, :n_train] / scale
    else:
        dist = np.maximum(sq[:, None] + sq[None, :n_train] - 2.0 * gram[:, :n_train], 0.0)
        k = np.exp(-dist / scale)
    return k[:n_train], k[n_train:]


class _KernelSVM(BaseEstimator):
    """An SVM on a precomputed kernel ``K``, fitted on ``K ** gamma``.

    For the RBF kernel of :func:`fold_kernel`, ``K ** gamma = exp(-gamma ||z_i - z_j||^2 /
    s)``: ``gamma`` is a multiple of scikit-learn's ``"scale"``, so one kernel per fold
    serves the whole grid. ``gamma`` must be 1 for the linear kernel.
    """

    def __init__(self, C: float = 1.0, gamma: float = 1.0) -> None:
        self.C = C
        self.gamma = gamma

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = True  # grid search slices rows and columns of K
        return tags

    def _kernel(self, k) -> np.ndarray:
        k = np.asarray(k, dtype=np.float64)
        return k if self.gamma == 1.0 else k**self.gamma

    def fit(self, k, y):
        """Fit on the kernel between training rows."""
        self.svm_ = self._make().fit(self._kernel(k), y)
        return self

    def predict(self, k):
        """Predict from the kernel between new rows and the training rows."""
        return self.svm_.predict(self._kernel(k))


class KernelSVC(ClassifierMixin, _KernelSVM):
    """:class:`sklearn.svm.SVC` on a precomputed kernel raised to ``gamma``."""

    def _make(self):
        return SVC(kernel="precomputed", C=self.C)

    def fit(self, k, y):
        """Fit on the kernel between training rows."""
        super().fit(k, y)
        self.classes_ = self.svm_.classes_
        return self

    def decision_function(self, k):
        """Signed distances to the separating hyperplane(s)."""
        return self.svm_.decision_function(self._kernel(k))


class KernelSVR(RegressorMixin, _KernelSVM):
    """:class:`sklearn.svm.SVR` on a precomputed kernel raised to ``gamma``."""

    def _make(self):
        return SVR(kernel="precomputed", C=self.C)


def cross_validate_voxels(
    x,
    y,
    folds,
    kernel: str = "rbf",
    *,
    groups=None,
    task: str = "classification",
    inner_folds: int = 5,
    random_state: int = 0,
    n_jobs: int = 1,
    progress: bool = False,
    bias_rows: Sequence | None = None,
) -> BaselineResult:
    """Cross-validate an SVM on voxels, with ``C`` chosen by a nested grid search.

    Classification uses :class:`sklearn.svm.SVC` (the ``p_`` outputs are the logistic of
    its decision function: accuracy and AUC follow from it, but they are not calibrated
    probabilities); regression uses :class:`sklearn.svm.SVR` on the training-standardised
    target. The grid is ``C`` in {1, 10, 100} and, for the RBF kernel, ``gamma`` in
    {0.1, 1} times scikit-learn's ``"scale"``. The kernel of each outer fold is computed
    once (:func:`fold_kernel`); the inner grid search slices it, so its scaling
    statistics come from the outer training part (the outer test rows are never used).

    Parameters
    ----------
    x : numpy.ndarray or numpy.memmap, shape (n, n_voxels)
        See :func:`voxel_matrix`.
    y : array-like, shape (n,)
        Class indices 0..K-1 or values.
    folds : array-like or sequence of (train, test)
        Outer folds (see :func:`~brainmaps.baselines.core.as_splits`).
    kernel : {"rbf", "linear"}
    groups, task, inner_folds, random_state, n_jobs, progress, bias_rows
        See :func:`~brainmaps.baselines.core.nested_cv` (regression results carry the
        bias-corrected predictions of :mod:`brainmaps.baselines.bias`).

    Returns
    -------
    BaselineResult
    """
    check_rows(x, y)
    if kernel not in KERNELS:
        raise ConfigError(f"kernel must be one of {KERNELS}, got {kernel!r}.")
    estimator = KernelSVR() if not get_task(task).is_classification else KernelSVC()
    return nested_cv(
        estimator,
        SVM_GRID[kernel],
        y,
        folds,
        lambda train, test: fold_kernel(x, train, test, kernel),
        groups=groups,
        task=task,
        inner_folds=inner_folds,
        random_state=random_state,
        n_jobs=n_jobs,
        name="svm" if kernel == "rbf" else "svm_linear",
        progress=progress,
        bias_rows=bias_rows,
    )
