"""brainmaps' metrics against Quantus (Hedström et al. 2023) on small 3D volumes.

Quantus flattens each explanation, so its localisation metrics, its Spearman similarity and
its pixel-flipping curve apply to 3D volumes unchanged; each is compared here with the
brainmaps metric that computes the same quantity, with the inputs set so that both do:

- ``quantus.AUC`` = ``localisation_scores(...)["roc_auc"]`` (both: scikit-learn's ROC
  curve, ties counted half). Quantus has no brain mask: it is given the brain voxels only.
- ``quantus.PointingGame`` = ``pointing_game`` with ``tolerance_mm=0`` (Quantus has no
  tolerance; on a tied maximum it counts a hit if any tied voxel is inside, brainmaps takes
  the first in C order: the maps here have no ties).
- ``quantus.RelevanceMassAccuracy`` = ``relevance_mass``. Difference of definition: for a
  signed map (``absolute=False``) brainmaps scores the share of the *positive* relevance
  (negative voxels count 0), Quantus the signed sum inside over the signed total; they
  agree on non-negative maps, so the signed case gives Quantus the clipped map.
- ``quantus.similarity_func.correlation_spearman`` = ``rank_correlation`` (both call
  ``scipy.stats.spearmanr``: this checks brainmaps' masking and absolute values).
- ``quantus.PixelFlipping`` (a zero baseline, ``features_in_step`` = n / steps) =
  ``deletion_curve(fill="zero", mask=None)`` without its first point (Quantus predicts
  after each step only). Quantus's area is the trapezoid over the step index (dx = 1),
  ``steps`` times brainmaps' ``curve_auc`` over the same points; its
  ``return_auc_per_sample`` calls ``np.trapz``, gone in NumPy 2.4, so the curves are
  compared.

Not compared: Quantus's ``ssim`` is scikit-image's default SSIM (uniform 7-voxel window,
sample covariance, data range of the two maps), not the Gaussian SSIM of Wang et al. that
brainmaps computes, so brainmaps' ``ssim`` is checked against scikit-image (a Quantus
dependency) with the Gaussian settings it documents; on the maps below Quantus's gives
0.42-0.48 where the Gaussian SSIM is 0.28-0.41. ``RegionPerturbation`` and ``Selectivity``
cut 2D patches of the last two axes and pad 4D arrays only (on a 5D batch: "pad_width and
padded_axes have different lengths"), ``Focus`` builds 2x2 mosaics of images. ``MPRT``
re-initialises each layer under ``torch.manual_seed(seed + 1)``, brainmaps' cascade under a
seed per stage, so the random models, and the scores, differ. ``TopKIntersection``,
``RelevanceRankAccuracy`` and ``AttributionLocalisation`` have no brainmaps counterpart.
"""

from __future__ import annotations

import numpy as np
import pytest

quantus = pytest.importorskip("quantus")

import nibabel as nib  # noqa: E402
import torch  # noqa: E402

from brainmaps.analysis.faithfulness import deletion_curve  # noqa: E402
from brainmaps.analysis.localisation import localisation_scores, pointing_game  # noqa: E402
from brainmaps.analysis.sanity import display_scale, rank_correlation, ssim  # noqa: E402

SHAPE = (12, 14, 12)
SEEDS = range(6)
#: Noise levels of the maps: from a clear hit to a map that misses the planted cube.
NOISE = (0.2, 0.5, 1.0, 2.0)
#: Measured over the seeds and noise levels here: 0.0 for AUC and Spearman, 5.6e-17 for
#: relevance mass (float64 sums of the same float32 values); the bound leaves room for
#: another order of summation in a later NumPy or Quantus.
EXACT = 1e-12


def _planted() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros(SHAPE)
    truth[3:7, 4:9, 5:9] = 1.0  # an 80-voxel box
    brain = np.zeros(SHAPE)
    brain[1:11, 1:13, 1:11] = 1.0
    return truth, brain


def _img(data: np.ndarray) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data, dtype=np.float64), np.diag([4.0, 4.0, 4.0, 1.0]))


def _map(seed: int, noise: float, signed: bool = False, decimals: int | None = None):
    truth, _ = _planted()
    rng = np.random.default_rng(seed)
    values = truth + rng.normal(0.0, noise, SHAPE)
    if decimals is not None:
        values = np.round(values, decimals)  # ties
    # float32 values: brainmaps reads maps as float32 (``as_img``) and sums in float64
    values = values.astype(np.float32).astype(np.float64)
    return values if signed else np.abs(values)


def _quantus(metric, values: np.ndarray, truth: np.ndarray) -> float:
    """One Quantus localisation score of one map (any shape: Quantus flattens it)."""
    a = np.asarray(values, dtype=np.float64)[None, None]
    s = np.asarray(truth, dtype=np.float64)[None, None]
    out = metric(
        model=None, x_batch=a, y_batch=np.array([0]), a_batch=a, s_batch=s, channel_first=True
    )
    return float(out[0])


@pytest.mark.parametrize("absolute", [True, False])
@pytest.mark.parametrize("with_brain", [False, True])
def test_roc_auc_and_relevance_mass_match_quantus(absolute, with_brain):
    truth, brain = _planted()
    keep = brain > 0 if with_brain else np.ones(SHAPE, dtype=bool)
    q_auc = quantus.AUC(abs=absolute, disable_warnings=True)
    q_mass = quantus.RelevanceMassAccuracy(abs=absolute, disable_warnings=True)
    aucs = []
    for seed in SEEDS:
        for noise in NOISE:
            # odd seeds: rounded values, with ties (both count a tied pair half)
            values = _map(seed, noise, signed=True, decimals=1 if seed % 2 else None)
            ours = localisation_scores(
                _img(values), _img(truth), _img(brain) if with_brain else None, absolute=absolute
            )
            # brainmaps' signed relevance mass is the share of the positive relevance
            positive = values if absolute else np.clip(values, 0.0, None)
            ref_auc = _quantus(q_auc, values[keep], truth[keep])
            ref_mass = _quantus(q_mass, positive[keep], truth[keep])
            assert abs(ours["roc_auc"] - ref_auc) < EXACT, (seed, noise)
            assert abs(ours["relevance_mass"] - ref_mass) < EXACT, (seed, noise)
            aucs.append(ours["roc_auc"])
    assert min(aucs) < 0.7 and max(aucs) > 0.95  # the cases span weak to clear maps


def test_signed_relevance_mass_is_the_positive_share_not_quantus_signed_ratio():
    """The one deliberate difference: negative relevance counts 0 in brainmaps."""
    truth, _ = _planted()
    values = _map(0, 1.0, signed=True)
    ours = localisation_scores(_img(values), _img(truth), absolute=False)["relevance_mass"]
    metric = quantus.RelevanceMassAccuracy(abs=False, disable_warnings=True)
    signed = _quantus(metric, values, truth)
    inside, total = values[truth > 0], values.sum()
    assert signed == pytest.approx(inside.sum() / total, abs=EXACT)
    # measured: brainmaps 0.103, Quantus 4.28 (a signed total near 0 inflates the ratio)
    assert abs(ours - signed) > 0.01


@pytest.mark.parametrize("absolute", [True, False])
@pytest.mark.parametrize("with_brain", [False, True])
def test_pointing_game_matches_quantus(absolute, with_brain):
    truth, brain = _planted()
    keep = brain > 0 if with_brain else np.ones(SHAPE, dtype=bool)
    metric = quantus.PointingGame(abs=absolute, disable_warnings=True)
    # before pointing_game took ``absolute``, localisation_scores(absolute=False) pointed at
    # the absolute maximum: 9 of these 24 signed cases disagreed with Quantus
    hits = []
    for seed in SEEDS:
        for noise in NOISE:
            values = _map(seed, noise, signed=True)
            # a strongly negative voxel outside the box, inside the brain: the absolute
            # maximum, not the signed one
            values[9, 11, 2] = -8.0 if seed % 2 else values[9, 11, 2]
            ours = pointing_game(
                _img(values),
                _img(truth),
                _img(brain) if with_brain else None,
                absolute=absolute,
            )
            assert (
                ours
                == localisation_scores(
                    _img(values),
                    _img(truth),
                    _img(brain) if with_brain else None,
                    absolute=absolute,
                )["pointing_game"]
            )
            assert float(ours) == _quantus(metric, values[keep], truth[keep]), (seed, noise)
            hits.append(ours)
    assert 0 < sum(hits) < len(hits)  # both outcomes occur


def test_spearman_matches_quantus():
    _, brain = _planted()
    keep = brain > 0
    rhos = []
    for seed in SEEDS:
        a = _map(seed, 1.0, signed=True)
        b = 0.5 * a + np.random.default_rng(100 + seed).normal(0.0, 1.0, SHAPE)
        spearman = quantus.similarity_func.correlation_spearman
        cases = [
            (rank_correlation(a, b), spearman(a.ravel(), b.ravel())),
            (rank_correlation(a, b, brain), spearman(a[keep], b[keep])),
            (
                rank_correlation(a, b, brain, absolute=True),
                spearman(np.abs(a[keep]), np.abs(b[keep])),
            ),
        ]
        for ours, ref in cases:
            assert abs(ours - ref) < EXACT, seed
            rhos.append(ours)
    assert 0.1 < min(rhos) and max(rhos) < 0.9


def test_ssim_matches_scikit_image_gaussian_ssim():
    """Quantus's ssim is another SSIM (see the module docstring): check brainmaps' own."""
    from skimage.metrics import structural_similarity

    _, brain = _planted()
    keep = brain > 0
    settings = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    worst, gap = 0.0, []
    for seed in SEEDS:
        a = display_scale(_map(seed, 1.0), brain)
        b = display_scale(0.5 * a + np.random.default_rng(100 + seed).random(SHAPE), brain)
        mean, full = structural_similarity(a, b, data_range=1.0, full=True, **settings)
        worst = max(worst, abs(ssim(a, b) - mean), abs(ssim(a, b, brain) - full[keep].mean()))
        gap.append(abs(ssim(a, b) - quantus.similarity_func.ssim(a, b)))
    # measured: 0.0, with and without the mask (the same filters in float64)
    assert worst < 1e-12
    assert min(gap) > 1e-3  # the two definitions do differ on these maps


def _model() -> torch.nn.Module:
    """A tiny 3D CNN whose class-1 logit grows with local intensity in the planted box."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(1, 3, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(3, 2),
    )
    with torch.no_grad():
        model[4].weight.mul_(20.0)
    return model.eval()


def test_deletion_curve_matches_quantus_pixel_flipping():
    model = _model()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(batch)[:, None]), dim=1).numpy()

    truth, _ = _planted()
    n, steps = truth.size, 16  # 2016 voxels: 126 per step
    drops = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        x = (rng.normal(1.0, 0.5, SHAPE) + truth).astype(np.float32)
        a = (truth + rng.normal(0.0, 0.5, SHAPE)).astype(np.float32)
        target = int(np.argmax(predict(x[None])[0]))
        _, ours = deletion_curve(predict, x, a, target, fill="zero", steps=steps)
        metric = quantus.PixelFlipping(
            features_in_step=n // steps,
            perturb_baseline=0.0,
            abs=False,
            normalise=False,
            disable_warnings=True,
        )
        ref = metric(
            model=model,
            x_batch=x[None, None],
            y_batch=np.array([target]),
            a_batch=a[None, None],
            channel_first=True,
            softmax=True,
            device="cpu",
        )
        ref = np.asarray(ref[0], dtype=np.float64)
        # measured: max 1.8e-7 over the seeds (float32 forward passes of one volume in
        # Quantus, of a batch of 17 in brainmaps); the curves fall by 0.24
        assert np.abs(ours[1:] - ref).max() < 1e-5, seed
        drops.append(ours[0] - ours[-1])
    assert max(drops) > 0.1  # the curves do fall: a real comparison
