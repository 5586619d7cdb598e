"""What is predicted: the task objects (:class:`Classification`, :class:`Regression`).

A task owns everything that differs between predicting a class and predicting a value:
the number of network outputs, the loss, the output activation, the dtype of the
targets, the columns of a predictions table, which metrics describe it, which validation
score picks the best epoch, how subject maps are grouped into group maps (class means;
for regression the mean of all subjects, of the young and the old, and of the subjects
with a positive or negative prediction gap), and the default attribution target. Code
elsewhere asks the task instead of comparing a task name, so a new task (ordinal,
multi-label, ...) is one new class here plus its metrics function in
:mod:`brainmaps.evaluation.metrics`.

Torch is imported only inside the methods that need it, so the torch-free layers can use
the task objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from brainmaps.exceptions import ConfigError, ShapeError

__all__ = [
    "DEFAULT_AGE_GROUPS",
    "TASK_NAMES",
    "Classification",
    "Regression",
    "Task",
    "check_age_groups",
    "get_task",
    "target_stats",
]

#: Cutoffs of the young (< 47) and old (>= 60) groups of Hofmann et al. (2022), in years.
DEFAULT_AGE_GROUPS: tuple[float, float] = (47.0, 60.0)
_REGRESSION_GROUPS = ("all", "young", "old", "gap_positive", "gap_negative")


def check_age_groups(value: Any) -> tuple[float, float] | None:
    """Validate the cutoffs of the young and old map groups of a regression run.

    Parameters
    ----------
    value : (float, float), str or None
        ``(young_below, old_from)`` in the target's units, ``"47,60"``, or ``None`` /
        ``"none"`` (no age groups).

    Returns
    -------
    (float, float) or None

    Raises
    ------
    ConfigError
        If ``value`` is not two finite numbers with ``young_below <= old_from``.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        low, high = (float(v) for v in parts)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ConfigError(
            f"age_groups (--groups) must be two numbers YOUNG_BELOW,OLD_FROM with "
            f"YOUNG_BELOW <= OLD_FROM in the target's units (default 47,60: Hofmann et al.'s "
            f"young < 47 and old >= 60 years), or 'none'; got {value!r}."
        )
    return low, high


def target_stats(values: Any) -> tuple[float, float]:
    """``(mean, std)`` with which regression targets are standardised for training.

    The mean and population standard deviation of the training targets (a std of 0, a
    constant target, counts as 1). :func:`brainmaps.training.loop.train_model` divides by
    them, and a model whose outputs depend on them (SFCN's ``soft_bins``) is built with
    the same numbers.

    Parameters
    ----------
    values : array-like
        The training targets, in target units.

    Returns
    -------
    (float, float)
    """
    train = np.asarray(values, dtype=np.float64)
    std = float(train.std())
    return float(train.mean()), std if std > 0 else 1.0


@dataclass(frozen=True)
class Task:
    """Base class of the task objects; subclasses set :attr:`name` and override methods.

    Parameters
    ----------
    classes : tuple of str
        Class names in index order (empty for tasks without classes).
    """

    classes: tuple[str, ...] = ()

    #: Registry name, as written in configs (``data.task``) and checkpoints.
    name: ClassVar[str] = ""
    #: Whether the targets are class indices.
    is_classification: ClassVar[bool] = False
    #: Column of ``history.tsv`` with the validation score.
    score_name: ClassVar[str] = ""

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):  # legacy comparisons with the task name
            return other == self.name
        if isinstance(other, Task):
            return type(self) is type(other) and self.classes == other.classes
        return NotImplemented

    def __hash__(self) -> int:  # equal to the name's hash, as __eq__ accepts the name
        return hash(self.name)

    @property
    def n_outputs(self) -> int:
        """int : Number of network outputs."""
        raise NotImplementedError

    def targets(self, y: Any) -> np.ndarray:
        """Targets as the loss expects them (int64 indices or float32 values)."""
        raise NotImplementedError

    def loss(self, outputs: Any, targets: Any) -> Any:
        """The training loss of a batch (``torch.Tensor``), from :meth:`shape_outputs`."""
        raise NotImplementedError

    def shape_outputs(self, outputs: Any) -> Any:
        """Check a model's raw outputs and bring them to the task's shape."""
        raise NotImplementedError

    def activate(self, outputs: Any) -> Any:
        """Turn raw network outputs into predictions (probabilities or values)."""
        raise NotImplementedError

    def prediction_columns(self) -> list[str]:
        """Columns a predictions table adds to ``subject, session, label, y``."""
        raise NotImplementedError

    def prediction_frame(self, rows: pd.DataFrame, outputs: np.ndarray) -> pd.DataFrame:
        """Append the prediction columns of ``outputs`` to ``rows`` (same order)."""
        raise NotImplementedError

    def outputs_from_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Read back what :meth:`prediction_frame` wrote (for metrics)."""
        raise NotImplementedError

    def map_groups(
        self,
        y: np.ndarray,
        *,
        gap: np.ndarray | None = None,
        age_groups: Sequence[float] | None = None,
    ) -> dict[str, np.ndarray]:
        """Boolean row masks of the subject groups whose mean map is written.

        ``gap`` (prediction - true value per row) and ``age_groups`` (cutoffs, see
        :func:`check_age_groups`) are used by regression only; groups without rows are
        left out.
        """
        raise NotImplementedError

    def combined_map(self) -> str | None:
        """Name of the group map that sums the others (``None``: no such map)."""
        return None

    def map_names(self) -> list[str]:
        """Names of every group map the task writes: the groups, then :meth:`combined_map`."""
        raise NotImplementedError

    def label_targets(self, labels: Sequence) -> np.ndarray:
        """Targets of values of a table's ``label`` column (what :meth:`map_groups` takes)."""
        raise NotImplementedError

    @property
    def default_target(self) -> str:
        """str : What attribution explains by default."""
        return "predicted"


@dataclass(frozen=True, eq=False)
class Classification(Task):
    """Predict one of ``classes``: softmax outputs, cross-entropy, class-mean maps."""

    name: ClassVar[str] = "classification"
    is_classification: ClassVar[bool] = True
    score_name: ClassVar[str] = "val_accuracy"

    @property
    def n_outputs(self) -> int:
        """int : One logit per class."""
        return len(self.classes)

    def targets(self, y: Any) -> np.ndarray:
        """Class indices as int64."""
        return np.asarray(y).astype(np.int64)

    def loss(self, outputs: Any, targets: Any) -> Any:
        """Cross-entropy of the logits (computed in float32)."""
        from torch.nn import functional

        outputs = outputs.float()
        if int(targets.max()) >= outputs.shape[1]:
            raise ShapeError(
                f"target class {int(targets.max())} does not exist in a model with "
                f"{outputs.shape[1]} outputs; build the model with n_classes = number of "
                "classes."
            )
        return functional.cross_entropy(outputs, targets)

    def shape_outputs(self, outputs: Any) -> Any:
        """Logits of shape (N, n_classes)."""
        if outputs.dim() != 2:
            raise ShapeError(
                f"a classifier must output (N, n_classes), got {tuple(outputs.shape)}."
            )
        return outputs

    def score(self, outputs: Any, targets: Any, scale: float = 1.0) -> float:
        """Number of correct predictions in a batch (summed for the validation accuracy)."""
        return float((outputs.argmax(dim=1) == targets).sum())

    def activate(self, outputs: Any) -> Any:
        """Softmax over the class axis."""
        return outputs.softmax(dim=1)

    def prediction_columns(self) -> list[str]:
        """``p_<class>`` for every class, then ``predicted``."""
        return [f"p_{c}" for c in self.classes] + ["predicted"]

    def prediction_frame(self, rows: pd.DataFrame, outputs: np.ndarray) -> pd.DataFrame:
        """Class probabilities and the most probable class."""
        outputs = np.asarray(outputs).reshape(len(rows), self.n_outputs)
        probs = pd.DataFrame(outputs, columns=[f"p_{c}" for c in self.classes])
        predicted = np.asarray(self.classes, dtype=object)[outputs.argmax(axis=1)]
        rows = rows.reset_index(drop=True)
        return pd.concat([rows, probs], axis=1).assign(predicted=predicted)

    def outputs_from_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """The ``p_<class>`` columns as an (n, n_classes) array."""
        return frame[[f"p_{c}" for c in self.classes]].to_numpy()

    def map_groups(
        self,
        y: np.ndarray,
        *,
        gap: np.ndarray | None = None,
        age_groups: Sequence[float] | None = None,
    ) -> dict[str, np.ndarray]:
        """One group per true class present, named by the class (``gap`` and
        ``age_groups`` are ignored)."""
        y = np.asarray(y).astype(int)
        return {c: y == k for k, c in enumerate(self.classes) if np.any(y == k)}

    def combined_map(self) -> str | None:
        """``"conjoined"``: the sum of the class means (when every class has maps)."""
        return "conjoined"

    def map_names(self) -> list[str]:
        """Every class, then ``conjoined``."""
        return [*self.classes, self.combined_map()]

    def label_targets(self, labels: Sequence) -> np.ndarray:
        """Class index of each label (compared as text); -1 for a label not in the classes."""
        index = {c: k for k, c in enumerate(self.classes)}
        return np.array([index.get(str(v), -1) for v in labels], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Regression(Task):
    """Predict a value: one linear output, MSE on standardised targets, group mean maps
    of all subjects, the young, the old and the positive and negative gaps."""

    name: ClassVar[str] = "regression"
    score_name: ClassVar[str] = "val_mae"

    @property
    def n_outputs(self) -> int:
        """int : One output."""
        return 1

    def targets(self, y: Any) -> np.ndarray:
        """Values as float32."""
        return np.asarray(y).astype(np.float32)

    def loss(self, outputs: Any, targets: Any) -> Any:
        """Mean squared error of the (standardised) targets (computed in float32)."""
        from torch.nn import functional

        return functional.mse_loss(outputs.float(), targets)

    def shape_outputs(self, outputs: Any) -> Any:
        """One value per sample, shape (N,)."""
        if outputs.dim() == 2 and outputs.shape[1] == 1:
            outputs = outputs[:, 0]
        if outputs.dim() != 1:
            raise ShapeError(
                f"a regression model must output one value per sample (n_classes=1), got "
                f"{tuple(outputs.shape)}; build the model with n_classes=1."
            )
        return outputs

    def score(self, outputs: Any, targets: Any, scale: float = 1.0) -> float:
        """Sum of absolute errors in target units (``scale`` undoes standardisation)."""
        return float((outputs.float() - targets).abs().sum()) * scale

    def activate(self, outputs: Any) -> Any:
        """The single output, as a flat vector."""
        return outputs.reshape(-1)

    def prediction_columns(self) -> list[str]:
        """``prediction``."""
        return ["prediction"]

    def prediction_frame(self, rows: pd.DataFrame, outputs: np.ndarray) -> pd.DataFrame:
        """The predicted value."""
        return rows.assign(prediction=np.asarray(outputs, dtype=float).ravel())

    def outputs_from_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """The ``prediction`` column."""
        return frame["prediction"].to_numpy()

    def map_groups(
        self,
        y: np.ndarray,
        *,
        gap: np.ndarray | None = None,
        age_groups: Sequence[float] | None = DEFAULT_AGE_GROUPS,
    ) -> dict[str, np.ndarray]:
        """``all``; ``young`` and ``old``; ``gap_positive`` and ``gap_negative``.

        As in Hofmann et al. (2022): ``young`` are the rows with ``y < age_groups[0]``,
        ``old`` those with ``y >= age_groups[1]`` (default 47 and 60 years; ``None``: no
        age groups); with ``gap`` (prediction - true value, e.g. the brain-age gap),
        ``gap_positive`` has the rows with ``gap > 0`` (predicted older) and
        ``gap_negative`` those with ``gap < 0``. Rows with a missing value are in
        ``all`` only; a group without rows is left out. (Hofmann et al., "Towards the
        interpretability of deep learning models for multi-modal neuroimaging", NeuroImage
        261:119504, 2022.)
        """
        y = np.asarray(y, dtype=float)
        groups = {"all": np.ones(len(y), dtype=bool)}
        cutoffs = check_age_groups(age_groups)
        if cutoffs is not None:
            groups["young"], groups["old"] = y < cutoffs[0], y >= cutoffs[1]
        if gap is not None:
            g = np.asarray(gap, dtype=float)
            if g.shape != y.shape:
                raise ShapeError(
                    f"gap must hold one value per row of y ({y.shape}), found {g.shape}; "
                    "pass the gap of the same subjects in the same order."
                )
            groups["gap_positive"], groups["gap_negative"] = g > 0, g < 0
        return {k: v for k, v in groups.items() if k == "all" or v.any()}

    def map_names(self) -> list[str]:
        """Every group :meth:`map_groups` can write: ``all``, ``young``, ``old``,
        ``gap_positive``, ``gap_negative``."""
        return list(_REGRESSION_GROUPS)

    def label_targets(self, labels: Sequence) -> np.ndarray:
        """The labels as float values (NaN where not a number)."""
        return pd.to_numeric(pd.Series(list(labels)), errors="coerce").to_numpy(dtype=float)


_TASKS: dict[str, type[Task]] = {t.name: t for t in (Classification, Regression)}
#: Names accepted by ``data.task`` besides ``"auto"``.
TASK_NAMES: tuple[str, ...] = tuple(_TASKS)


def get_task(name: str | Task, classes: Sequence[str] = ()) -> Task:
    """Return the task object of ``name`` (a task object is returned as it is).

    Parameters
    ----------
    name : str or Task
        ``"classification"`` or ``"regression"`` (see :data:`TASK_NAMES`).
    classes : sequence of str
        Class names in index order (classification).

    Returns
    -------
    Task

    Raises
    ------
    ConfigError
        If the name is unknown.
    """
    if isinstance(name, Task):
        return name
    if name not in _TASKS:
        raise ConfigError(
            f"task must be one of {TASK_NAMES}, got {name!r}; set it with --task "
            "(or leave it at auto to decide from the label values)."
        )
    return _TASKS[name](classes=tuple(str(c) for c in classes))
