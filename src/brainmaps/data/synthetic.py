"""Synthetic BIDS cohorts with planted group and age effects, built on the MNI152 template.

Each subject is nilearn's MNI152 T1 template (bundled in its wheel) warped and altered:

* **group effect** (patients only) in ``regions``: ``"atrophy"`` contracts the tissue of each
  region smoothly toward its centre (the centre shrinks, its surroundings stretch); with
  ``"intensity"`` the tissue of the region gets darker;
* **age effect** (everyone, independent of group) in ``age_regions``: the lateral ventricles
  enlarge linearly with age;
* **sex**: men are larger than women by ``sex_effect`` (linear size), plus a random size;
* a smooth random deformation, a smooth multiplicative bias field and Rician noise;
* with ``n_sites > 1`` each site has its own intensity scale, contrast (gamma) and noise.

Images are written on the MNI grid of ``voxel_size`` (they are "already registered"), with
intensities in about 0..1000 (int16). ``ground_truth_mask.nii.gz`` and
``ground_truth_age_mask.nii.gz`` hold the voxels of the planted effects on the same grid.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from brainmaps.data._regions import (
    DEFAULT_AGE_REGIONS,
    TemplateSpace,
    get_region,
    intensity_weight,
    list_regions,
    load_template_space,
    radial_warp,
    region_mask,
    smooth_field,
)
from brainmaps.data.io import write_nifti
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.utils import atomic_path, atomic_write_text, stable_hash
from brainmaps.validation import check_float, check_int, check_output_dir

__all__ = [
    "DEFAULT_AGE_REGIONS",
    "DEFAULT_EFFECT_SIZE",
    "DEFAULT_REGIONS",
    "HIPPOCAMPI",
    "PRESET_DIFFICULTY",
    "SYNTH_PRESETS",
    "SynthConfig",
    "draw_participants",
    "list_regions",
    "make_synthetic_cohort",
    "simulate_subject",
]

#: Default ``effect_size`` of each kind of effect (see ``SynthConfig``).
DEFAULT_EFFECT_SIZE: dict[str, float] = {"atrophy": 0.4, "intensity": 0.3}
#: Regions of the planted group effect by default (those of the demo): both hippocampi,
#: both superior frontal gyri and the precuneus.
DEFAULT_REGIONS: tuple[str, ...] = (
    "left_hippocampus",
    "right_hippocampus",
    "left_superior_frontal",
    "right_superior_frontal",
    "precuneus",
)
#: Both hippocampi (the planted regions of the ``"hippocampus"`` preset).
HIPPOCAMPI: tuple[str, ...] = ("left_hippocampus", "right_hippocampus")
#: Named settings of the planted group effect, easiest first; ``"default"`` is what
#: ``SynthConfig()`` plants. How well each is learnt: :data:`PRESET_DIFFICULTY`.
SYNTH_PRESETS: dict[str, dict[str, Any]] = {
    "easy": {"effect": "intensity", "effect_size": 0.5, "regions": DEFAULT_REGIONS},
    "default": {"effect": "intensity", "effect_size": 0.3, "regions": DEFAULT_REGIONS},
    "hard": {"effect": "intensity", "effect_size": 0.15, "regions": DEFAULT_REGIONS},
    "hippocampus": {"effect": "atrophy", "effect_size": 0.4, "regions": HIPPOCAMPI},
}
#: How well each preset is learnt: 120 subjects (seed 0, 2 mm), the demo's 36x44x36 grid,
#: 5-fold CV accuracy (mean +- sd); voxel SVM: linear SVC on the brain voxels with C
#: chosen by inner CV; xin2019: the demo's training (20 epochs, Adam 1e-3).
PRESET_DIFFICULTY: dict[str, str] = {
    "easy": "voxel SVM 0.93 +- 0.04; a small CNN learns it from 40 subjects",
    "default": "xin2019 0.79 +- 0.09 (the demo), voxel SVM 0.85 +- 0.05",
    "hard": "xin2019 0.55 +- 0.03, voxel SVM 0.59 +- 0.08: close to chance",
    "hippocampus": "chance: voxel SVM 0.49 +- 0.16, xin2019 0.62 on one fold; needs far "
    "more subjects",
}
_EFFECTS = ("atrophy", "intensity")
_GENERATOR_VERSION = 1  # bump when the simulation changes: cohorts on disk are regenerated
_SCALE_CENTRE = np.array([0.0, -18.0, 10.0], dtype=np.float32)  # about the brain's centre
_SIZE_SD = 0.01  # random linear brain size, sd (images are "registered": small)
_EFFECT_SD = 0.2  # per-patient variation of the group effect, relative
_AGE_SD = 0.5  # natural ventricle size variation, in decades of ageing
_TISSUE_NAMES = {"gm": "grey matter", "wm": "white matter", "brain": "brain mask"}
_WM_LEVEL = 1000.0  # written intensity of template value 1.0 (white matter is ~860)


def _check_number(name: str, value: Any, lo: float, hi: float, integer: bool = False) -> Any:
    check = check_int if integer else check_float
    return check(f"SynthConfig.{name}", value, min=lo, max=hi)


def _check_regions(name: str, value: Any) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or len(set(names)) != len(names):
        raise ConfigError(
            f"SynthConfig.{name}: expected one or more distinct region names, found {value!r}. "
            f"Choose from {', '.join(list_regions())}."
        )
    for n in names:
        get_region(n, parameter=f"SynthConfig.{name}")
    return names


@dataclass(frozen=True)
class SynthConfig:
    """Settings of a synthetic cohort (validated on creation).

    Parameters
    ----------
    n_subjects : int
        Number of subjects, at least 2; groups (``"control"``/``"patient"``) and sexes are
        balanced (within one) and assigned at random from ``seed``.
    seed : int
        Random seed; the same configuration gives bit-identical images.
    effect : {"atrophy", "intensity"}
        Kind of group effect planted in the patients' ``regions``.
    effect_size : float, optional
        Dimensionless strength of the group effect at a region's centre, before a +-20 %
        per-patient variation. ``"atrophy"``: the fraction by which radii shrink at the
        centre (0.4: tissue at the very centre is scaled by 0.6, a local volume loss of
        ~80 %, fading smoothly to nothing at the sphere's edge); at most 0.5.
        ``"intensity"``: the fraction by which the region's tissue intensity drops at its
        centre (0.3: 30 % darker; flat to half the radius, then fading); at most 0.9.
        Defaults to :data:`DEFAULT_EFFECT_SIZE` (0.4 / 0.3). With the default regions
        the default (intensity 0.3) is learnt from 120 subjects (xin2019 in the demo:
        accuracy 0.79 +- 0.09; whole-brain voxel SVM 0.85 +- 0.05), while atrophy 0.4 in
        both hippocampi alone stays at chance (the ``"hippocampus"`` preset); see
        :data:`SYNTH_PRESETS` and :data:`PRESET_DIFFICULTY`.
        0 gives a cohort without group effect.
    regions : tuple of str
        Built-in regions (:func:`list_regions`) of the group effect; default
        :data:`DEFAULT_REGIONS` (both hippocampi, both superior frontal gyri, precuneus).
    n_sites : int
        Number of acquisition sites (``"site1"``, ...), balanced over subjects.
    site_confound : float
        In [0, 1]: how strongly the group decides the site. The first half of the sites
        (``site1`` .. ``site<n/2>``) lean to controls, the others to patients; each subject
        is moved, with this probability, to a site of its group's half drawn at random.
        0 (default) leaves sites independent of group (the same participants as before
        the option existed); 1 puts every control at a control site. Needs ``n_sites >= 2``.
        The confound that leave-sites-out cross-validation guards against.
    clinical : bool
        Also write clinical measures (:mod:`brainmaps.data.synthetic_clinical`): an MMSE
        that falls with each patient's planted effect strength, a progression subgroup
        (converter / stable) linked to it, and a ``batch`` flag independent of everything,
        plus ``ground_truth_clinical.tsv`` with each subject's effect strength.
    site_bias : float
        Sd of the log of a smooth multiplicative field of each site (its coil profile),
        shared by all the site's scans, on top of each scan's own ``bias_field``: a site
        signature that survives intensity normalisation. 0 (default) adds none.
    voxel_size : float
        Voxel size of the written images in mm, in [1, 8].
    noise : float
        Sd of the Rician noise relative to the white-matter-like level (1000).
    age_range : tuple of float
        Ages are uniform in ``[low, high]`` years.
    age_effect : float
        Ventricle enlargement per decade of age relative to the middle of ``age_range``:
        the relative expansion of radii at the centre of ``age_regions`` (0.1: 10 % per
        decade, plus a natural variation of +-0.5 decade). Negative values shrink them.
    age_regions : tuple of str
        Built-in regions of the age effect; must differ from ``regions``.
    sex_effect : float
        Relative linear size difference between men and women (0.03: men 3 % larger).
    deformation_mm : float
        Sd (mm) of the smooth random deformation at the nodes of its 6 x 7 x 6 control grid.
    bias_field : float
        Sd of the log of the smooth multiplicative bias field (0.1: about +-10 %).
    """

    n_subjects: int = 120
    seed: int = 0
    effect: str = "intensity"
    effect_size: float | None = None
    regions: tuple[str, ...] = DEFAULT_REGIONS
    n_sites: int = 1
    site_confound: float = 0.0
    site_bias: float = 0.0
    clinical: bool = False
    voxel_size: float = 2.0
    noise: float = 0.03
    age_range: tuple[float, float] = (20.0, 80.0)
    age_effect: float = 0.1
    age_regions: tuple[str, ...] = DEFAULT_AGE_REGIONS
    sex_effect: float = 0.03
    deformation_mm: float = 2.0
    bias_field: float = 0.1

    def __post_init__(self) -> None:
        """Validate and normalise the fields (raises ConfigError naming the parameter)."""
        if self.effect not in _EFFECTS:
            raise ConfigError(
                f"SynthConfig.effect: expected one of {_EFFECTS}, found {self.effect!r}. "
                "Pick one of those."
            )
        size = self.effect_size
        size = DEFAULT_EFFECT_SIZE[self.effect] if size is None else size
        top = 0.5 if self.effect == "atrophy" else 0.9
        values = {
            "n_subjects": _check_number("n_subjects", self.n_subjects, 2, 100_000, True),
            "seed": _check_number("seed", self.seed, 0, 2**63 - 1, True),
            "effect_size": _check_number("effect_size", size, 0.0, top),
            "n_sites": _check_number("n_sites", self.n_sites, 1, 1000, True),
            "site_confound": _check_number("site_confound", self.site_confound, 0.0, 1.0),
            "site_bias": _check_number("site_bias", self.site_bias, 0.0, 1.0),
            "voxel_size": _check_number("voxel_size", self.voxel_size, 1.0, 8.0),
            "noise": _check_number("noise", self.noise, 0.0, 0.5),
            "age_effect": _check_number("age_effect", self.age_effect, -0.5, 0.5),
            "sex_effect": _check_number("sex_effect", self.sex_effect, 0.0, 0.3),
            "deformation_mm": _check_number("deformation_mm", self.deformation_mm, 0.0, 10.0),
            "bias_field": _check_number("bias_field", self.bias_field, 0.0, 1.0),
            "regions": _check_regions("regions", self.regions),
            "age_regions": _check_regions("age_regions", self.age_regions),
            "age_range": self._checked_age_range(),
        }
        if values["n_sites"] > values["n_subjects"]:
            raise ConfigError(
                f"SynthConfig.n_sites: expected at most n_subjects={self.n_subjects} sites, "
                f"found {self.n_sites}. Lower n_sites or raise n_subjects."
            )
        if not isinstance(self.clinical, bool):
            raise ConfigError(
                f"SynthConfig.clinical: expected true or false, found {self.clinical!r}."
            )
        if values["site_confound"] > 0 and values["n_sites"] < 2:
            raise ConfigError(
                f"SynthConfig.site_confound: {self.site_confound} needs at least 2 sites, "
                f"found n_sites={self.n_sites}. Raise n_sites or set site_confound to 0."
            )
        shared = set(values["regions"]) & set(values["age_regions"])
        if shared:
            raise ConfigError(
                f"SynthConfig.age_regions: must differ from regions, found {sorted(shared)} "
                "in both. Plant the age effect in other regions."
            )
        for key, value in values.items():
            object.__setattr__(self, key, value)
        _warn_overlap(values["regions"], values["age_regions"])

    def _checked_age_range(self) -> tuple[float, float]:
        try:
            low, high = (float(a) for a in self.age_range)
        except (TypeError, ValueError):
            low, high = math.nan, math.nan
        if not (0.0 <= low < high <= 120.0):
            raise ConfigError(
                "SynthConfig.age_range: expected (low, high) years with 0 <= low < high <= "
                f"120, found {self.age_range!r}. Pass two increasing ages."
            )
        return (low, high)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON/YAML-friendly dictionary (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SynthConfig:
        """Build a configuration from :meth:`to_dict` output (unknown keys: ConfigError)."""
        return _apply_overrides(None, dict(values))


def _warn_overlap(regions: tuple[str, ...], age_regions: tuple[str, ...]) -> None:
    for a, b in itertools.product(map(get_region, regions), map(get_region, age_regions)):
        if math.dist(a.centre, b.centre) < a.radius + b.radius:
            warnings.warn(
                f"SynthConfig.regions: {a.name} overlaps age region {b.name}, so the age "
                "effect also changes voxels of the group effect's ground truth. Choose "
                "regions away from age_regions (or other age_regions) to keep them apart.",
                BrainmapsWarning,
                stacklevel=4,
            )


def _apply_overrides(config: SynthConfig | None, overrides: dict[str, Any]) -> SynthConfig:
    names = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(
            f"make_synthetic_cohort: unknown parameter(s) {unknown}; expected SynthConfig "
            f"fields {sorted(names)}. Fix the parameter name."
        )
    if config is None:
        return SynthConfig(**overrides)
    if "effect" in overrides and "effect_size" not in overrides:
        if config.effect_size == DEFAULT_EFFECT_SIZE[config.effect]:
            overrides["effect_size"] = None  # the default of the new effect
    return dataclasses.replace(config, **overrides)


def _rng(config: SynthConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=key))


def _balanced(rng: np.random.Generator, labels: list[str], n: int) -> np.ndarray:
    return rng.permutation(np.resize(np.array(labels, dtype=object), n))


def draw_participants(config: SynthConfig) -> pd.DataFrame:
    """Return the participants table (participant_id, group, age, sex, site) of a cohort."""
    n = config.n_subjects
    rng = _rng(config, 2)
    width = max(4, len(str(n)))
    table = pd.DataFrame(
        {
            "participant_id": [f"sub-{i + 1:0{width}d}" for i in range(n)],
            "group": _balanced(rng, ["control", "patient"], n),
            "age": np.round(rng.uniform(*config.age_range, size=n), 2),
            "sex": _balanced(rng, ["F", "M"], n),
            "site": _balanced(rng, [f"site{k + 1}" for k in range(config.n_sites)], n),
        }
    )
    if config.site_confound > 0:
        table["site"] = _confounded_sites(config, table["group"].to_numpy(), table["site"])
    return table


def _confounded_sites(config: SynthConfig, groups: np.ndarray, sites: pd.Series) -> np.ndarray:
    """Sites moved toward the group's half of the sites (see ``site_confound``)."""
    rng = _rng(config, 5)  # a stream of its own: site_confound=0 keeps the old draws
    half = config.n_sites // 2
    control_sites = [f"site{k + 1}" for k in range(half)]
    patient_sites = [f"site{k + 1}" for k in range(half, config.n_sites)]
    out = sites.to_numpy(dtype=object).copy()
    moved = rng.random(len(out)) < config.site_confound
    for i in np.flatnonzero(moved):
        out[i] = rng.choice(control_sites if groups[i] == "control" else patient_sites)
    return out


def _site_params(config: SynthConfig, site: str) -> tuple[float, float, float]:
    """Intensity scale, gamma and noise multiplier of a site (neutral with one site)."""
    if config.n_sites == 1:
        return 1.0, 1.0, 1.0
    rng = _rng(config, 1, int(site.removeprefix("site")))
    return rng.uniform(0.75, 1.25), rng.uniform(0.8, 1.25), rng.uniform(0.6, 1.6)


def _strengths(config: SynthConfig, row: dict, z: np.ndarray) -> tuple[float, float, float]:
    """Group-effect strength, age strength (expansion) and size scale of one subject."""
    group = 0.0
    if row["group"] == "patient":
        group = config.effect_size * max(0.0, 1.0 + _EFFECT_SD * float(z[0]))
        if config.effect == "atrophy":  # radial contraction: radii scaled by 1 / (1 + a)
            group = min(group, 0.55)
            group = group / (1.0 - group)
        else:
            group = min(group, 0.95)
    decades = (row["age"] - sum(config.age_range) / 2.0) / 10.0 + _AGE_SD * float(z[1])
    age = float(np.clip(config.age_effect * decades, -0.6, 0.6))
    sex = 1.0 if row["sex"] == "M" else -1.0
    size = 1.0 + sex * config.sex_effect / 2.0 + _SIZE_SD * float(z[2])
    return group, age, size


def simulate_subject(config: SynthConfig, row: dict, index: int) -> np.ndarray:
    """Simulate one subject's T1 image on the template grid of ``config.voxel_size``.

    Parameters
    ----------
    config : SynthConfig
        Cohort settings.
    row : dict
        The subject's participants row (needs ``group``, ``age``, ``sex``, ``site``).
    index : int
        Position of the subject in the cohort; with ``config.seed`` it seeds the subject's
        random generator, so results do not depend on the order or on parallelism.

    Returns
    -------
    ndarray of int16
        The image, intensities in about 0..1000 plus noise.
    """
    space = load_template_space(config.voxel_size)
    rng = _rng(config, 0, index)
    group, age, size = _strengths(config, row, rng.standard_normal(3))
    nodes = rng.normal(0.0, config.deformation_mm, size=(3, 6, 7, 6))
    log_bias = rng.normal(0.0, config.bias_field, size=(4, 4, 4))
    if config.site_bias > 0 and config.n_sites > 1:  # the site's coil profile
        site_rng = _rng(config, 6, int(row["site"].removeprefix("site")))
        log_bias = log_bias + site_rng.normal(0.0, config.site_bias, size=(4, 4, 4))
    centre = _SCALE_CENTRE[:, None]
    warp = smooth_field(nodes, space.shape).reshape(3, -1)[:, space.support]
    points = centre + (space.points - centre) / np.float32(size) + warp
    for name in config.age_regions:
        region = get_region(name)
        radial_warp(points, region.centre, region.radius, -age)
    template = space.t1
    if config.effect == "atrophy":
        for name in config.regions:
            region = get_region(name)
            radial_warp(points, region.centre, region.radius, group)
    elif group > 0.0:
        template = space.t1 * (1.0 - np.float32(group) * intensity_weight(*_key(config)))
    values = ndimage.map_coordinates(
        template, space.world_to_voxel(points), order=1, mode="constant", prefilter=False
    )
    return _finish(config, space, values, row["site"], log_bias, rng)


def _key(config: SynthConfig) -> tuple[float, tuple[str, ...]]:
    return config.voxel_size, config.regions


def _finish(config, space: TemplateSpace, values, site: str, log_bias, rng) -> np.ndarray:
    """Site contrast, bias field, scanner scale and Rician noise; returns int16."""
    scale, gamma, noise_mult = _site_params(config, site)
    image = np.zeros(space.shape, dtype=np.float32)
    image.reshape(-1)[space.support] = scale * np.power(np.clip(values, 0.0, None), gamma)
    image *= np.exp(smooth_field(log_bias, space.shape)) * np.float32(_WM_LEVEL)
    sigma = np.float32(config.noise * _WM_LEVEL * noise_mult)
    if sigma > 0:
        real = image + sigma * rng.standard_normal(space.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(space.shape, dtype=np.float32)
        image = np.sqrt(real * real + imag * imag)
    return np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)


def _save(array: np.ndarray, space: TemplateSpace, path: Path) -> None:
    img = nib.Nifti1Image(array, space.affine)
    img.header.set_xyzt_units("mm")
    img.set_sform(space.affine, code=4)  # 4: MNI152 space
    img.set_qform(space.affine, code=4)
    with atomic_path(path) as tmp:
        write_nifti(img, tmp, path)


def _image_path(out: Path, participant_id: str) -> Path:
    return out / participant_id / "anat" / f"{participant_id}_T1w.nii.gz"


def _write_subject(out: Path, config: SynthConfig, row: dict, index: int) -> None:
    path = _image_path(out, row["participant_id"])
    if not path.is_file():  # files are written atomically, so an existing one is complete
        array = simulate_subject(config, row, index)
        _save(array, load_template_space(config.voxel_size), path)


def _description(config: SynthConfig) -> dict[str, Any]:
    from brainmaps import __version__

    return {
        "Name": "brainmaps synthetic cohort",
        "BIDSVersion": "1.8.0",
        "DatasetType": "raw",
        "GeneratedBy": [
            {
                "Name": "brainmaps",
                "Version": __version__,
                "Description": "brainmaps.data.synthetic.make_synthetic_cohort",
            }
        ],
        "SynthConfig": config.to_dict(),
        "SynthConfigHash": stable_hash([_hashed(config), _GENERATOR_VERSION]),
    }


#: Fields added after cohorts were first written, with the value that changes nothing: left
#: out of the hash at that value, so existing cohorts keep their hash (and their images).
_NEUTRAL = {"site_confound": 0.0, "site_bias": 0.0, "clinical": False}


def _hashed(config: SynthConfig) -> dict[str, Any]:
    """The settings that define the cohort's content (see :data:`_NEUTRAL`)."""
    return {k: v for k, v in config.to_dict().items() if _NEUTRAL.get(k, object()) != v}


def _read_description(out: Path) -> dict[str, Any] | None:
    """The folder's brainmaps synthetic description, or None if it is not such a cohort."""
    try:
        desc = json.loads((out / "dataset_description.json").read_text(encoding="utf-8"))
        is_ours = desc["GeneratedBy"][0]["Name"] == "brainmaps" and "SynthConfig" in desc
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return desc if is_ours else None


def _prepare_out_dir(out: Path, description: dict[str, Any]) -> None:
    """Create ``out``; refuse foreign non-empty folders; clear a cohort of another config."""
    check_output_dir(out, "out_dir")
    out.mkdir(parents=True, exist_ok=True)
    if not any(out.iterdir()):
        return
    previous = _read_description(out)
    if previous is None:
        raise ConfigError(
            f"out_dir: {out} is not empty and is not a brainmaps synthetic cohort (no "
            "dataset_description.json generated by brainmaps). Choose an empty or new folder."
        )
    if previous.get("SynthConfigHash") != description["SynthConfigHash"]:
        for image in out.glob("sub-*/anat/sub-*_T1w.nii.gz"):  # images of the old cohort
            image.unlink()
        for folder in sorted(out.glob("sub-*/anat")) + sorted(out.glob("sub-*")):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        (out / "participants.tsv").unlink(missing_ok=True)


def _readme(config: SynthConfig) -> str:
    def where(names: tuple[str, ...]) -> str:
        return "; ".join(
            f"{r.name} ({r.description}): {r.radius:g} mm sphere at MNI "
            f"({', '.join(f'{c:g}' for c in r.centre)}) x {_TISSUE_NAMES[r.tissue]}"
            for r in map(get_region, names)
        )

    kind = {
        "atrophy": "a smooth radial contraction of tissue toward each region's centre (radii "
        f"shrink by {config.effect_size:.0%} at the centre, fading to 0 at the sphere's edge)",
        "intensity": f"a smooth {config.effect_size:.0%} decrease of the tissue's intensity",
    }[config.effect]
    return (
        f"Synthetic cohort of {config.n_subjects} subjects made by brainmaps from the MNI152 "
        f"template on a {config.voxel_size:g} mm MNI grid (seed {config.seed}). Patients "
        f"carry {kind}, +-{_EFFECT_SD:.0%} per patient, in {where(config.regions)}; these "
        "voxels are ground_truth_mask.nii.gz. Independently of group, everyone's "
        f"{where(config.age_regions)} expand with age (radii at the centre grow by "
        f"{config.age_effect:.0%} per decade above age {sum(config.age_range) / 2:g}); these "
        f"voxels are ground_truth_age_mask.nii.gz. Men are {config.sex_effect:.1%} larger "
        "than women; every image also has a random size, a smooth random deformation (sd "
        f"{config.deformation_mm:g} mm), a bias field (sd {config.bias_field:g}), Rician noise "
        f"(sd {config.noise:g}) and one of {config.n_sites} site(s), each with its own "
        "intensity scale, contrast and noise. All settings: dataset_description.json.\n"
    )


def _union_mask(space: TemplateSpace, names: tuple[str, ...]) -> np.ndarray:
    masks = [region_mask(space, get_region(n)) for n in names]
    return np.logical_or.reduce(masks).astype(np.uint8)


def _run_subjects(out: Path, config: SynthConfig, rows: list[dict], n_jobs: int, progress):
    bar = tqdm(total=len(rows), desc="synthetic cohort", unit="subject", disable=not progress)
    with bar:
        if n_jobs == 1:
            for i, row in enumerate(rows):
                _write_subject(out, config, row, i)
                bar.update()
            return
        from joblib import Parallel, delayed

        jobs = (delayed(_write_subject)(out, config, row, i) for i, row in enumerate(rows))
        for _ in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
            bar.update()


def make_synthetic_cohort(
    out_dir: str | os.PathLike,
    config: SynthConfig | None = None,
    *,
    n_jobs: int = 1,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Write a synthetic BIDS cohort with planted group and age effects.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output folder: created if missing; it must be empty or hold a brainmaps synthetic
        cohort (same settings: finished images are kept; other settings: replaced).
    config : SynthConfig, optional
        Settings; defaults to ``SynthConfig()``.
    n_jobs : int
        Subjects simulated in parallel (joblib; -1: all cores). Results do not depend on it.
    progress : bool
        Show a progress bar.
    **overrides
        :class:`SynthConfig` fields replacing those of ``config``, e.g. ``n_subjects=20``.

    Returns
    -------
    pathlib.Path
        ``out_dir``, holding ``dataset_description.json``, ``participants.tsv``
        (participant_id, group, age, sex, site), ``sub-XXXX/anat/sub-XXXX_T1w.nii.gz``,
        ``ground_truth_mask.nii.gz``, ``ground_truth_age_mask.nii.gz`` and ``README``.

    Raises
    ------
    ConfigError
        Invalid settings, or ``out_dir`` is a non-empty folder that is not such a cohort.
    """
    config = _apply_overrides(config, overrides)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(f"n_jobs: expected a non-zero integer, found {n_jobs!r}. Use 1 or -1.")
    out = Path(out_dir)
    description = _description(config)
    _prepare_out_dir(out, description)
    atomic_write_text(out / "dataset_description.json", json.dumps(description, indent=2))
    participants = draw_participants(config)
    _run_subjects(out, config, participants.to_dict("records"), n_jobs, progress)
    space = load_template_space(config.voxel_size)
    _save(_union_mask(space, config.regions), space, out / "ground_truth_mask.nii.gz")
    _save(_union_mask(space, config.age_regions), space, out / "ground_truth_age_mask.nii.gz")
    readme = _readme(config)
    if config.clinical:
        from brainmaps.data.synthetic_clinical import CLINICAL_README, clinical_tables

        participants, truth = clinical_tables(config, participants)
        atomic_write_text(out / "ground_truth_clinical.tsv", truth.to_csv(sep="\t", index=False))
        readme += CLINICAL_README
    atomic_write_text(out / "README", readme)
    atomic_write_text(out / "participants.tsv", participants.to_csv(sep="\t", index=False))
    return out
