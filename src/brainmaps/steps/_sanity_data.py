"""The data randomisation test of Adebayo et al. (2018), for :mod:`brainmaps.steps.sanity`.

Used by :func:`~brainmaps.steps.sanity.sanity_run` with ``data_randomisation=True``
(opt-in because it trains): a chosen fold's model is trained again from scratch with the
run's configuration (:func:`brainmaps.training.retrain.retrain_fold`: the checkpoint's model,
the run's learning rate, batch size, epochs and training seed, so it starts from the
fold model's initial weights and batch order) on the fold's training volumes with their
labels permuted (:func:`permuted_labels`), and its maps of the same sampled subjects,
for the same output units, are scored against the trained model's. Nothing but the
labels differs (trained again on the true labels with the run's epochs, it is the fold
model again), so a map that stays the same explains the input and the initial
weights, not what the labels taught. The permuted-label model's accuracy on the fold's
test subjects (true labels) is recorded: near chance, it shows the labels were
destroyed.

Default folds: fold 0 only. Each fold costs one training of the run's length (the
run's own training time divided by its folds), against seconds for the cascade, and one
model already shows whether a method's maps follow the labels (Adebayo et al. retrain
one model per data set); more folds (``folds``) add subjects to the medians.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder
from brainmaps.training.retrain import check_folds, retrain_fold
from brainmaps.validation import check_int

__all__ = ["DATA_FOLDS", "data_options", "permuted_labels", "permuted_model"]

#: Folds retrained on permuted labels by default (see the module docstring).
DATA_FOLDS = (0,)


def permuted_labels(
    labels: np.ndarray, groups: Sequence[Sequence[int]], random_state=0
) -> np.ndarray:
    """A copy of ``labels`` whose entries in each group of rows are shuffled among them.

    Each group keeps its class counts (the training set stays as balanced as it was,
    and so does the validation set that picks the best epoch), but which volume has
    which label is random: a model trained on them can learn nothing about the images'
    classes (Adebayo et al.'s data randomisation test).

    Parameters
    ----------
    labels : numpy.ndarray
        One label per volume.
    groups : sequence of sequences of int
        Disjoint rows (e.g. a fold's training and its validation rows); rows in no group
        keep their label.
    random_state : int or sequence of int
        Seed (the same seed gives the same permutation).

    Returns
    -------
    numpy.ndarray
    """
    out = np.array(labels, copy=True)
    rng = np.random.default_rng([int(v) for v in np.atleast_1d(random_state)])
    for rows in groups:
        rows = np.asarray(rows, dtype=int)
        out[rows] = out[rows][rng.permutation(len(rows))]
    return out


#: A stream of the label permutation's seed of its own (the sample uses ``[seed, fold]``
#: and the cascade ``[seed, fold, stage]`` with stages from 1).
_PERMUTATION_STREAM = 104729


def data_options(run: RunFolder, data_randomisation, folds, epochs) -> dict | None:
    """The folds and epochs of the data randomisation test, checked; None: not run.

    Raises
    ------
    ConfigError
        ``folds`` or ``epochs`` without ``data_randomisation``, a regression run, a
        fold the run does not have, or fewer than one epoch.
    """
    if not isinstance(data_randomisation, bool):
        raise ConfigError(f"data_randomisation must be true or false, got {data_randomisation!r}.")
    if not data_randomisation:
        if folds is not None or epochs is not None:
            raise ConfigError(
                "folds and epochs choose the models trained on permuted labels; pass "
                "data_randomisation=True (--data-randomisation) with them, or leave them out."
            )
        return None
    if not run.task.is_classification:
        raise ConfigError(
            "data randomisation trains a classifier on permuted labels; this run "
            "regresses. Run the cascading check alone (without data_randomisation, "
            "--data-randomisation)."
        )
    folds = check_folds(run, DATA_FOLDS if folds is None else folds, name="folds")
    epochs = run.config.training.epochs if epochs is None else epochs
    return {"folds": folds, "epochs": check_int("epochs", epochs, min=1)}


def permuted_model(run: RunFolder, k: int, volumes, epochs, random_state, device, progress):
    """Fold ``k``'s model trained again on its training and validation labels permuted.

    Returns
    -------
    model : torch.nn.Module
    scores : dict
        :func:`brainmaps.training.retrain.retrain_fold`'s, on the fold's test subjects.
    """
    train, val = run.indices(k, "train"), run.indices(k, "val")
    labels = permuted_labels(run.labels, [train, val], [random_state, k, _PERMUTATION_STREAM])
    # the training seed is the fold model's: same initial weights and batch order, so the
    # labels are all that differs (another seed alone moves the tiny test models' gradient
    # maps to |rho| ~0.2-0.3, as much as permuting the labels)
    return retrain_fold(
        run, k, volumes, labels, epochs=epochs, device=device, progress=progress,
        desc=f"sanity: fold {k} on permuted labels",
    )  # fmt: skip
