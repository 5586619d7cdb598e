"""The configuration of a training run, validated on creation and stored as YAML.

A run is described by one :class:`RunConfig` made of four frozen *science* sections,
which define the result: where the cohort comes from (:class:`DataConfig`), how images
are brought to the model grid (:class:`~brainmaps.data.preprocess.PreprocessConfig`),
which network (:class:`ModelConfig`) and how it is trained and cross-validated
(:class:`TrainingConfig`); and one *execution* section (:class:`ExecutionConfig`: device,
jobs, workers, cache folder, progress) that may change when a run is resumed on another
machine. ``config.yaml`` holds the science sections, so replaying it (``--config``)
reproduces the run; ``execution.yaml`` records how the last writer ran.

A key added to a section after run folders were first written takes its default when a
user's config leaves it out, but a run folder's own ``config.yaml`` that lacks it was
written before the key existed (:meth:`RunConfig.to_yaml` writes every key), so it is read
with the value that run was trained with (:data:`SAVED_DEFAULTS`, with a warning naming
the file): ``training.bn_recalibration`` is ``False`` there, so resuming an older run
trains its remaining folds (and ``brainmaps roar`` its retrains) as its first ones.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brainmaps.data.cache import resolve_cache_dir
from brainmaps.data.channels import channel_names
from brainmaps.data.preprocess import PreprocessConfig
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.run.layout import RunLayout
from brainmaps.utils import atomic_write_text

__all__ = [
    "SAVED_DEFAULTS",
    "DataConfig",
    "ExecutionConfig",
    "ModelConfig",
    "RunConfig",
    "TrainingConfig",
    "load_config",
]

_TASKS = ("auto", "classification", "regression")
_DEVICES = ("auto", "cpu", "cuda")
_TRANSFER = ("all", "stem")
_FREEZE = ("none", "stem")


def _positive(section: str, name: str, value: Any, kind: type = int) -> None:
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        raise ConfigError(
            f"{section}.{name} must be a positive {kind.__name__}, got {value!r}; "
            f"set it in the config or with --{name.replace('_', '-')}."
        )


@dataclass(frozen=True)
class DataConfig:
    """Where the cohort comes from.

    Parameters
    ----------
    source : str
        A cohort table (TSV/CSV) or a BIDS folder. :meth:`RunConfig.resolved` makes it
        absolute, so a run's ``config.yaml`` replays from any working directory.
    target : str
        Label column to predict (e.g. ``"group"``, ``"sex"``, ``"age"``).
    subject_col : str or None
        Subject column of a table; ``None`` guesses it (see
        :func:`brainmaps.data.cohort.load_cohort`).
    path_col : str or None
        Image path column of a table; ``None`` guesses it. Several columns,
        comma-separated (``path_gm,path_wm``), give several input channels per subject
        (channels ``gm``, ``wm``).
    suffix : str
        BIDS image suffix (``"T1w"``, ``"FA"``, ...). Several, comma-separated
        (``T1w,FLAIR``), give several input channels per subject/session.
    task : {"auto", "classification", "regression"}
        How to treat the target; ``"auto"`` decides from its values.
    drop_missing : bool
        Drop subjects whose label is missing (with a warning) instead of failing.
    """

    source: str
    target: str
    subject_col: str | None = None
    path_col: str | None = None
    suffix: str = "T1w"
    task: str = "auto"
    drop_missing: bool = False

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("data.source is empty; give a cohort table or a BIDS folder.")
        if not self.target:
            raise ConfigError("data.target is empty; name the label column with --target.")
        if self.task not in _TASKS:
            raise ConfigError(f"data.task must be one of {_TASKS}, got {self.task!r}.")
        channel_names(self.path_col, self.suffix)  # a bad channel list fails here


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train.

    Parameters
    ----------
    name : str
        A name from :func:`brainmaps.models.list_models`.
    options : dict
        Extra constructor arguments (e.g. ``{"channels": [8, 16, 32]}``); the input
        shape, channel count and class count are filled in from the data.
    """

    name: str = "xin2019"
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.options, dict):
            raise ConfigError(f"model.options must be a mapping, got {self.options!r}.")
        reserved = {"in_channels", "n_classes", "input_shape"} & set(self.options)
        if reserved:
            raise ConfigError(
                f"model.options sets {sorted(reserved)}, which brainmaps derives from the data; "
                "remove them from the config."
            )


@dataclass(frozen=True)
class TrainingConfig:
    """How the network is trained and cross-validated.

    Defaults follow Kan et al.: 10 folds, seed 42, Adam with lr 3e-4, 20 epochs.

    Parameters
    ----------
    folds : int
        Number of outer cross-validation folds (stratified, grouped by subject).
    folds_file : str or None
        A user-supplied split: a TSV with ``subject`` and ``fold`` columns. It is
        checked for subjects in two folds (:class:`~brainmaps.DataLeakageError`).
    cv : {"stratified", "leave-sites-out", "leave-one-site-out", "file"}
        How the outer folds are made: by subject, stratified by label (default); by
        groups of whole acquisition sites (``folds`` of them, stratified as far as the
        sites allow); one fold per site; or ``folds_file`` (set by giving one). With the
        site schemes no site is in the training and test data of one fold.
    epochs : int
        Training epochs per fold.
    batch_size : int
        Mini-batch size.
    lr : float
        Adam learning rate.
    seed : int
        Seeds the split, the weights and the batch order: same seed, same metrics (CPU).
    val_fraction : float
        Fraction of each training fold held out to pick the best epoch (0 keeps the last).
    amp : bool
        Automatic mixed precision on CUDA (ignored on CPU).
    bn_recalibration : bool
        Recompute the BatchNorm running statistics over the training volumes before each
        validation ("precise BN"), so the epoch is picked, and the model kept, as it
        predicts in eval mode; False keeps training's moving averages (brainmaps <= 0.3).
    init_from : str or None
        Start every fold from trained weights (transfer learning, Lu et al.): a run folder
        (fold k starts from its fold k), one fold of a run (``RUN/fold-<k>``: every fold
        starts from it) or a PyTorch state_dict file (``.pt``/``.pth``) of the same
        architecture. The source's training subjects must not be the fold's test subjects
        (see allow_overlap).
    transfer : {"all", "stem"}
        What init_from gives: every layer that matches by name and shape but the output
        layer (kept too when the source predicts the same classes), or only the stem
        (inception_resnet_v2: features.stem, and Lu et al.'s new head after it; xin2019,
        gap_cnn: the first conv block).
    freeze : {"none", "stem"}
        Keep the transferred stem fixed while training: no gradient, and its BatchNorm
        normalises with the source's statistics.
    allow_overlap : bool
        Train even when the source's training subjects include the fold's test subjects
        (the test metrics are then optimistic), with a warning and the overlap recorded.
    ensemble : int
        Members per fold: models trained on the same fold with different seeds (member 0
        with the fold's own seed, as without an ensemble); the fold's predictions are their
        mean, with their spread (Hofmann et al.'s brain-age ensembles).
    repeats : int
        Repeated cross-validation: the k-fold split is drawn this many times with
        different seeds (repeat 0 is the run's own split, which every later stage
        explains; the others only add folds to the metrics and the paired comparison
        with the baselines, Bouckaert & Frank 2004).

    Notes
    -----
    Where the run executes (device, jobs, workers, cache) is :class:`ExecutionConfig`.
    """

    folds: int = 10
    folds_file: str | None = None
    cv: str = "stratified"
    epochs: int = 20
    lr: float = 3e-4
    batch_size: int = 8
    seed: int = 42
    val_fraction: float = 0.1
    amp: bool = True
    bn_recalibration: bool = True
    ensemble: int = 1
    repeats: int = 1
    init_from: str | None = None
    transfer: str = "all"
    freeze: str = "none"
    allow_overlap: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "ensemble", "repeats"):
            _positive("training", name, getattr(self, name))
        if not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigError(f"training.folds must be an integer >= 2, got {self.folds!r}.")
        _positive("training", "lr", float(self.lr), float)
        if not 0.0 <= float(self.val_fraction) < 0.5:
            raise ConfigError(
                f"training.val_fraction must be in [0, 0.5), got {self.val_fraction!r}."
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"training.seed must be a non-negative integer, got {self.seed!r}.")
        self._check_cv()
        self._check_transfer()

    def _check_transfer(self) -> None:
        for name, allowed in (("transfer", _TRANSFER), ("freeze", _FREEZE)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"training.{name} must be one of {', '.join(allowed)}, got "
                    f"{getattr(self, name)!r}; set it with --{name}."
                )
        if self.init_from is not None and (
            not isinstance(self.init_from, str) or not self.init_from
        ):
            raise ConfigError(
                f"training.init_from must be a path (a run folder, RUN/fold-<k> or a .pt "
                f"file), got {self.init_from!r}."
            )
        if self.init_from is None:
            given = [
                f"{name}={getattr(self, name)!r}"
                for name, default in (
                    ("transfer", "all"),
                    ("freeze", "none"),
                    ("allow_overlap", False),
                )
                if getattr(self, name) != default
            ]
            if given:
                raise ConfigError(
                    f"training.{', '.join(given)} apply only to transfer learning, but no "
                    "init_from is given; add --init-from SOURCE or drop them."
                )

    def _check_cv(self) -> None:
        from brainmaps.evaluation.sites import CV_SCHEMES

        if self.cv not in CV_SCHEMES:
            raise ConfigError(
                f"training.cv must be one of {', '.join(CV_SCHEMES)}, got {self.cv!r}; set it "
                "with --cv."
            )
        if self.cv == "file" and not self.folds_file:
            raise ConfigError("training.cv is 'file' but no folds_file is given; add --folds-file.")
        if self.folds_file and self.cv not in ("file", "stratified"):
            raise ConfigError(
                f"training.cv={self.cv!r} and a folds_file were both given; the file defines "
                "the folds (its sites are checked), so drop --cv or --folds-file."
            )
        if self.folds_file:
            object.__setattr__(self, "cv", "file")


@dataclass(frozen=True)
class ExecutionConfig:
    """Where and how a run executes; never part of its identity.

    Resuming a run with another device, job count, worker count or cache folder
    continues the same run.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or "cuda:<n>"
        ``"auto"`` uses CUDA when present.
    n_jobs : int
        Parallel preprocessing jobs.
    num_workers : int
        DataLoader worker processes.
    cache_dir : str or None
        Where preprocessed volumes are cached; ``None`` uses ``$BRAINMAPS_CACHE_DIR`` or
        ``~/.cache/brainmaps``.
    progress : bool
        Show progress bars.
    """

    device: str = "auto"
    n_jobs: int = 1
    num_workers: int = 0
    cache_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        _positive("execution", "n_jobs", self.n_jobs)
        name = str(self.device)
        if name not in _DEVICES and not name.startswith("cuda:"):
            raise ConfigError(
                f"execution.device must be one of {_DEVICES} or 'cuda:<n>', got "
                f"{self.device!r}; set it with --device."
            )
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int):
            raise ConfigError(
                f"execution.num_workers must be an integer >= 0, got {self.num_workers!r}."
            )
        if self.num_workers < 0:
            raise ConfigError(f"execution.num_workers must be >= 0, got {self.num_workers!r}.")

    def resolved_cache_dir(self) -> Path:
        """Return the cache folder, expanding the default location."""
        return resolve_cache_dir(self.cache_dir)

    def to_dict(self) -> dict:
        """Return plain Python types, ready for YAML."""
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}
#: Keys that older run folders kept in ``training`` and that are execution settings now.
_LEGACY_EXECUTION = ("device", "n_jobs", "num_workers", "cache_dir")
#: ``{section: {key: value}}``: keys added after run folders were first written, with the
#: value a run folder's own ``config.yaml`` without them was trained with (the behaviour
#: before the key existed). A user's config without them gets the dataclass default.
SAVED_DEFAULTS = {"training": {"bn_recalibration": False}}
#: Saved configs already warned about (one warning per file and process).
_WARNED: set[str] = set()


@dataclass(frozen=True)
class RunConfig:
    """The full, resolved configuration of a training run.

    Parameters
    ----------
    data : DataConfig
    preprocess : PreprocessConfig
    model : ModelConfig
    training : TrainingConfig
    out : str
        The run folder.
    execution : ExecutionConfig
        Device, jobs, workers, cache folder, progress (not part of the run's identity).
    """

    data: DataConfig
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    out: str = "runs/run"
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def to_dict(self) -> dict:
        """Return the science sections (and ``out``) as plain Python types, for YAML."""
        return {
            "data": dataclasses.asdict(self.data),
            "preprocess": self.preprocess.to_dict(),
            "model": {"name": self.model.name, "options": dict(self.model.options)},
            "training": dataclasses.asdict(self.training),
            "out": self.out,
        }

    def identity(self) -> dict:
        """The sections that define the result (everything but ``out`` and execution)."""
        raw = self.to_dict()
        raw.pop("out")
        return raw

    def differences(self, other: RunConfig) -> list[str]:
        """``section.key`` names whose values differ between two configs' identities."""
        mine, theirs = self.identity(), other.identity()
        return sorted(
            f"{section}.{key}"
            for section in mine
            for key in set(mine[section]) | set(theirs[section])
            if mine[section].get(key) != theirs[section].get(key)
        )

    def resolved(self) -> RunConfig:
        """A copy whose relative paths (source, folds file) are absolute."""
        data = dataclasses.replace(self.data, source=_absolute(self.data.source))
        t = self.training
        training = dataclasses.replace(
            t,
            folds_file=_absolute(t.folds_file) if t.folds_file else None,
            init_from=_absolute(t.init_from) if t.init_from else None,
        )
        return dataclasses.replace(self, data=data, training=training)

    @classmethod
    def from_dict(cls, raw: dict, origin: str = "config", *, saved: bool = False) -> RunConfig:
        """Build and validate a config from a mapping (e.g. parsed YAML).

        Parameters
        ----------
        raw : dict
            Sections of the config; missing keys take their defaults.
        origin : str
            Where ``raw`` comes from (a path, ``"command line"``), for the messages.
        saved : bool
            ``raw`` is a run folder's own ``config.yaml``: keys missing from it take the
            value that run was trained with (:data:`SAVED_DEFAULTS`), not the current
            default, with a :class:`~brainmaps.exceptions.BrainmapsWarning` naming
            ``origin`` (once per file).

        Raises
        ------
        ConfigError
            On unknown sections or keys (named), or invalid values.
        """
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{origin}: expected a mapping of sections, got {type(raw).__name__}."
            )
        unknown = set(raw) - {"data", "preprocess", "model", "training", "out", "execution"}
        if unknown:
            raise ConfigError(
                f"{origin}: unknown section(s) {sorted(unknown)}; "
                "expected data, preprocess, model, training, execution, out."
            )
        if "data" not in raw:
            raise ConfigError(f"{origin}: the 'data' section (source, target) is missing.")
        if saved:
            raw = _saved_defaults(raw, origin)
        raw, execution = _split_execution(raw, origin)
        parts = {
            name: _build(section, raw.get(name) or {}, name, origin)
            for name, section in _SECTIONS.items()
        }
        try:
            preprocess = PreprocessConfig.from_dict(raw.get("preprocess") or {})
        except TypeError as exc:
            raise ConfigError(f"{origin}: bad 'preprocess' section: {exc}") from None
        out = str(raw.get("out", "runs/run"))
        return cls(preprocess=preprocess, out=out, execution=execution, **parts)

    def to_yaml(self, path: str | os.PathLike) -> None:
        """Write the config atomically as YAML."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        atomic_write_text(path, text)

    def replace(self, **sections: Any) -> RunConfig:
        """Return a copy with some sections or fields replaced."""
        return dataclasses.replace(self, **sections)


def _saved_defaults(raw: dict, origin: str) -> dict:
    """``raw`` with the :data:`SAVED_DEFAULTS` of the keys it lacks (warned once per file)."""
    raw = dict(raw)
    filled = []
    for name, keys in SAVED_DEFAULTS.items():
        values = raw.get(name)
        if values is None:
            values = {}
        if not isinstance(values, dict):
            continue  # _build names the bad section
        values = dict(values)
        for key, value in keys.items():
            if key not in values:
                values[key] = value
                filled.append(f"{name}.{key}: {value}")
        raw[name] = values
    if filled and origin not in _WARNED:
        _WARNED.add(origin)
        warnings.warn(
            f"{origin} was written by an older brainmaps without {', '.join(filled)}; read "
            "as that value, the behaviour its folds were trained with, so a resumed run and "
            "its retrains match them. To resume such a run from the command line, replay "
            "this file with --config (or give the key, e.g. --no-bn-recalibration); to train "
            "with the new default, start a new --out.",
            BrainmapsWarning,
            stacklevel=3,
        )
    return raw


def _is_saved_config(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run folder's own ``config.yaml`` (beside its ``cohort.tsv``).

    ``brainmaps train`` writes both into the run folder together; a config a user wrote
    elsewhere is not one, even if it is named ``config.yaml``.
    """
    path = Path(path)
    layout = RunLayout(path.parent)
    return path.name == layout.CONFIG and layout.cohort.is_file()


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def _split_execution(raw: dict, origin: str) -> tuple[dict, ExecutionConfig]:
    """Take the execution settings out of ``raw`` (also the legacy ``training`` keys)."""
    raw = dict(raw)
    values = dict(raw.pop("execution", None) or {})
    training = raw.get("training")
    if isinstance(training, dict):
        training = dict(training)
        for key in _LEGACY_EXECUTION:
            if key in training:
                values.setdefault(key, training.pop(key))
        raw["training"] = training
    return raw, _build(ExecutionConfig, values, "execution", origin)


def _build(section: type, values: dict, name: str, origin: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{origin}: section '{name}' must be a mapping, got {values!r}.")
    known = {f.name for f in dataclasses.fields(section)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(
            f"{origin}: unknown key(s) {sorted(unknown)} in section '{name}'; "
            f"known keys: {sorted(known)}."
        )
    try:
        return section(**values)
    except TypeError as exc:
        raise ConfigError(f"{origin}: section '{name}': {exc}") from None


def load_config(path: str | os.PathLike, *, saved: bool | None = None) -> RunConfig:
    """Read a run configuration from a YAML file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``config.yaml`` (e.g. the one written to every run folder).
    saved : bool, optional
        Read it as a run folder's own config (keys it lacks take the value the run was
        trained with, :data:`SAVED_DEFAULTS`) or as a user's (they take the defaults).
        Default: saved when ``path`` is a run folder's ``config.yaml``, beside its
        ``cohort.tsv``, so replaying an older run's file
        (``brainmaps train --config RUN/config.yaml``) reproduces that run.

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML or holds invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the --config path.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if saved is None:
        saved = _is_saved_config(path)
    return RunConfig.from_dict(raw, origin=str(path), saved=saved)
