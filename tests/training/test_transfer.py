"""Transfer learning (training.init_from): weights copied, frozen stem, refusals, overlap."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from brainmaps.data.cohort import load_cohort
from brainmaps.data.preprocess import PreprocessConfig
from brainmaps.data.stacked import cache_channels
from brainmaps.exceptions import BrainmapsWarning, ConfigError, DataLeakageError
from brainmaps.models import create_model
from brainmaps.models.checkpoints import load_checkpoint, save_checkpoint
from brainmaps.models.state_dicts import FrozenBatchNorm, stem_prefix
from brainmaps.run.folder import open_run
from brainmaps.training.loop import train_model
from brainmaps.training.run import train_run
from brainmaps.training.transfer import TransferPlan, plan_transfer, resolve_source
from conftest import STRONG_REGIONS
from tiny import TINY_CHANNELS, TINY_GRID, tiny_config

MODEL_CONFIG = {
    "in_channels": 1,
    "n_classes": 2,
    "input_shape": list(TINY_GRID),
    "channels": TINY_CHANNELS,
}
CLASSES = ("control", "patient")


@pytest.fixture(scope="module")
def other_cohort(tmp_path_factory) -> Path:
    """A second cohort, same planted regions, other seed, subjects renamed ``b0001``...

    Written as a table so its subject ids differ from ``tiny_cohort``'s; its labels are
    renamed ``CN``/``AD`` (so its classes differ from the source's).
    """
    from brainmaps.data.synthetic import make_synthetic_cohort

    base = tmp_path_factory.mktemp("other")
    folder = make_synthetic_cohort(
        base / "synth",
        n_subjects=40,
        seed=11,
        voxel_size=4.0,
        effect="intensity",
        effect_size=0.5,
        regions=STRONG_REGIONS,
        progress=False,
    )
    table = load_cohort(folder, "group").table
    renamed = pd.DataFrame(
        {
            "subject": ["b" + s.removeprefix("sub-") for s in table["subject"]],
            "path": table["path"],
            "group": table["label"].map({"control": "CN", "patient": "AD"}),
        }
    )
    renamed.to_csv(base / "cohort.tsv", sep="\t", index=False)
    return base / "cohort.tsv"


def _plan(tiny_cohort, tiny_run, tmp_path, *, classes=CLASSES, **training) -> TransferPlan:
    config = tiny_config(tiny_cohort, tmp_path / "t", tmp_path / "c", init_from=str(tiny_run))
    config = config.replace(
        training=config.training.__class__(**{**config.training.__dict__, **training})
    )
    roles = open_run(tiny_run).folds
    return plan_transfer(config.resolved(), classes, "classification", roles, MODEL_CONFIG)


def _fresh(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("xin2019", **MODEL_CONFIG)


def test_all_copies_every_tensor_and_the_output_layer_only_for_the_same_classes(
    tiny_cohort, tiny_run, tmp_path
):
    source, _ = load_checkpoint(Path(tiny_run) / "fold-1" / "model.pt")
    model = _fresh()
    record = _plan(tiny_cohort, tiny_run, tmp_path).apply(model, 1)
    assert record["n_copied"] == len(source) and record["source_fold"] == 1
    assert record["overlap"] == 0 and record["overlap_checked"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, source[key], rtol=0, atol=0)
    other = _fresh()
    init = {k: v.clone() for k, v in other.state_dict().items()}
    _plan(tiny_cohort, tiny_run, tmp_path, classes=("AD", "CN")).apply(other, 1)
    for key, value in other.state_dict().items():
        expected = init[key] if key.startswith("classifier.fc.") else source[key]
        torch.testing.assert_close(value, expected, rtol=0, atol=0)


def test_stem_copies_only_the_first_block(tiny_cohort, tiny_run, tmp_path):
    source, _ = load_checkpoint(Path(tiny_run) / "fold-0" / "model.pt")
    model = _fresh()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    record = _plan(tiny_cohort, tiny_run, tmp_path, transfer="stem").apply(model, 0)
    stem = [k for k in init if k.startswith("features.block1.")]
    assert record["n_copied"] == len(stem) == 7
    for key, value in model.state_dict().items():
        expected = source[key] if key in stem else init[key]
        torch.testing.assert_close(value, expected, rtol=0, atol=0)


def test_frozen_stem_is_unchanged_by_training_and_the_rest_moves(tiny_cohort, tiny_run, tmp_path):
    run = open_run(tiny_run)
    model = _fresh()
    record = _plan(tiny_cohort, tiny_run, tmp_path, freeze="stem").apply(model, 0)
    assert record["n_frozen"] == 7
    assert isinstance(model.features.block1.bn, FrozenBatchNorm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_model(
        model, run.volumes(), run.labels, run.indices(0, "fit")[:12], run.indices(0, "test")[:4],
        epochs=1, batch_size=4, lr=1e-3, device="cpu", progress=False,
    )  # fmt: skip
    for key, value in result.state_dict.items():
        if key.startswith("features.block1."):
            torch.testing.assert_close(value, before[key], rtol=0, atol=0)
        elif value.is_floating_point():
            assert not torch.equal(value, before[key]), key
    fresh = create_model("xin2019", **MODEL_CONFIG)
    fresh.load_state_dict(result.state_dict)  # same keys as an unfrozen model
    assert list(fresh.state_dict()) == list(result.state_dict)


def test_incompatible_sources_are_refused(tiny_cohort, tiny_run, tmp_path):
    state, meta = load_checkpoint(Path(tiny_run) / "fold-0" / "model.pt")
    bad = {
        "model": ({**meta, "model": "gap_cnn"}, "same architecture"),
        "channels": (
            {**meta, "model_config": {**meta["model_config"], "in_channels": 2}},
            "input channel",
        ),
        "grid": ({**meta, "grid_shape": [58, 70, 58]}, "grid"),
    }
    for name, (changed, words) in bad.items():
        path = save_checkpoint(tmp_path / name / "model.pt", state, changed)
        config = tiny_config(tiny_cohort, tmp_path / "o", tmp_path / "c", init_from=str(path))
        with pytest.raises(ConfigError, match=words) as info:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", BrainmapsWarning)  # no subject list
                plan_transfer(
                    config.resolved(), CLASSES, "classification", open_run(tiny_run).folds,
                    MODEL_CONFIG,
                )  # fmt: skip
        assert str(path) in str(info.value) and str(tmp_path / "o") in str(info.value)
    torch.save({"x.weight": torch.zeros(3)}, tmp_path / "junk.pt")
    config = tiny_config(tiny_cohort, tmp_path / "o", tmp_path / "c", init_from=str(tmp_path))
    with pytest.raises(ConfigError, match="neither a run folder"):
        plan_transfer(config.resolved(), CLASSES, "classification", open_run(tiny_run).folds, {})
    with pytest.raises(ConfigError, match="no stem definition"):
        stem_prefix("sfcn")
    with pytest.raises(ConfigError, match="init_from"):
        tiny_config(tiny_cohort, tmp_path, tmp_path, freeze="stem")
    with pytest.raises(ConfigError, match="transfer must be one of"):
        tiny_config(tiny_cohort, tmp_path, tmp_path, init_from="x", transfer="head")


def test_bare_state_dict_by_name_and_by_order(tiny_cohort, tiny_run, tmp_path):
    state, _ = load_checkpoint(Path(tiny_run) / "fold-0" / "model.pt")
    renamed = {k.replace("features.block", "hidden").replace(".conv.", ".0.")
               .replace(".bn.", ".1.").replace("classifier.fc.", "linear."): v
               for k, v in state.items()}  # fmt: skip
    for name, file_state in (("byname", state), ("byorder", renamed)):
        torch.save(file_state, tmp_path / f"{name}.pt")
        config = tiny_config(
            tiny_cohort, tmp_path / "o", tmp_path / "c", init_from=str(tmp_path / f"{name}.pt")
        )
        with pytest.warns(BrainmapsWarning, match="cannot be checked"):
            plan = plan_transfer(
                config.resolved(), CLASSES, "classification", open_run(tiny_run).folds,
                MODEL_CONFIG,
            )  # fmt: skip
        assert resolve_source(str(tmp_path / f"{name}.pt")).kind == "state_dict"
        model = _fresh()
        record = plan.apply(model, 2)
        assert record["overlap"] is None and record["n_copied"] == len(state) - 2  # no fc
        for key, value in model.state_dict().items():
            if not key.startswith("classifier.fc."):
                torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    torch.save({"a": torch.zeros(2), "b": torch.zeros(3)}, tmp_path / "other.pt")
    config = tiny_config(
        tiny_cohort, tmp_path / "o", tmp_path / "c", init_from=str(tmp_path / "other.pt")
    )
    with pytest.raises(ConfigError, match="cannot be paired by order"):
        with pytest.warns(BrainmapsWarning):
            plan_transfer(
                config.resolved(), CLASSES, "classification", open_run(tiny_run).folds, MODEL_CONFIG
            )


def test_overlap_is_refused_allowed_with_a_warning_and_absent_for_other_subjects(
    tiny_cohort, tiny_run, other_cohort, tmp_path
):
    one_fold = str(Path(tiny_run) / "fold-0")  # trained on the test subjects of folds 1, 2
    config = tiny_config(tiny_cohort, tmp_path / "a", tmp_path / "c", epochs=1, init_from=one_fold)
    with pytest.raises(DataLeakageError, match=r"fold 1: \d+, fold 2: \d+; e\.g\. "):
        train_run(config)
    assert not (tmp_path / "a" / "config.yaml").exists()  # refused before writing
    allowed = tiny_config(
        tiny_cohort, tmp_path / "b", tmp_path / "c", epochs=1, init_from=one_fold,
        allow_overlap=True,
    )  # fmt: skip
    with pytest.warns(BrainmapsWarning, match="allowed"):
        train_run(allowed)
    overlaps = [load_checkpoint(tmp_path / "b" / f"fold-{k}" / "model.pt")[1]["transfer"]
                ["overlap"] for k in range(3)]  # fmt: skip
    assert overlaps[0] == 0 and overlaps[1] > 0 and overlaps[2] > 0
    from brainmaps.reports.section_protocol import protocol_facts, transfer_warning

    warning = transfer_warning(open_run(tmp_path / "b"))  # what the report's summary says
    assert "optimistic" in warning and f"fold 1: {overlaps[1]}" in warning
    assert ("initialised from", f"{one_fold} (all layers)") in protocol_facts(
        open_run(tmp_path / "b")
    )
    disjoint = tiny_config(other_cohort, tmp_path / "d", tmp_path / "c", epochs=1,
                           init_from=one_fold, transfer="stem", freeze="stem")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", BrainmapsWarning)
        train_run(disjoint)
    meta = load_checkpoint(tmp_path / "d" / "fold-2" / "model.pt")[1]
    assert meta["transfer"]["overlap"] == 0 and meta["transfer"]["n_frozen"] == 7
    assert open_run(tmp_path / "d").config.training.init_from == one_fold
    assert transfer_warning(open_run(tmp_path / "d")) is None


def test_transferred_model_learns_in_fewer_epochs_than_scratch(tiny_run, other_cohort, tmp_path):
    """A model initialised from a run on another cohort with the same planted regions.

    Source: ``tiny_run`` fold 0 (group of ``tiny_cohort``); target: group of
    ``other_cohort`` (other seed, same regions, other class names, so the output layer is
    re-initialised and only the features are transferred). 24 training / 16 validation
    subjects, Adam lr 1e-3, batch 4, 4 epochs; this test's setup, seeds 0-5, 1 thread:

    ====  ==================================  ==================================
    seed  val accuracy scratch / transfer     val loss scratch / transfer
    ====  ==================================  ==================================
    0     .44 .81 .44 .56 / .75 .88 1.0 1.0   .75 .65 .69 .65 / .54 .43 .35 .34
    1     .56 .56 .62 .56 / .31 .38 .50 .69   .65 .68 .67 .63 / .94 .84 .77 .69
    2     .31 .44 .69 .62 / .44 .50 .94 1.0   1.18 .75 .61 .67 / .68 .64 .44 .39
    3     .44 .56 .62 .56 / .88 .94 .94 1.0   .73 .64 .63 .66 / .47 .39 .35 .30
    4     .56 .69 .56 .56 / .88 1.0 1.0 .69   .68 .66 .66 .70 / .51 .43 .44 .45
    5     .44 .50 .56 .56 / .88 .62 .94 .94   .70 .73 .69 .66 / .51 .56 .43 .37
    ====  ==================================  ==================================

    Validation accuracy 0.85 is reached at epoch 2, -, 3, 1, 1, 1 with transfer and never
    within 4 epochs from scratch (best 0.81). The benefit is clear on average but not in
    every seed (seed 1: transfer worse), so the assertions are over seeds 0-3: transfer
    reaches 0.85 in fewer epochs in >= 2 of 4 seeds (measured 3), and the mean validation
    loss of epochs 2-4, averaged over the seeds, is lower by >= 0.07 (measured 0.49 vs
    0.66; seeds 0-5: 0.48 vs 0.67).
    """
    cohort = load_cohort(other_cohort, "group")
    volumes = cache_channels(
        cohort.table, cohort.channels, PreprocessConfig(grid_shape=TINY_GRID), tmp_path / "c",
        progress=False,
    )  # fmt: skip
    config = tiny_config(other_cohort, tmp_path / "o", tmp_path / "c", init_from=str(tiny_run))
    plan = TransferPlan(
        config.resolved(), resolve_source(str(tiny_run)), cohort.classes, "classification",
        MODEL_CONFIG,
    )  # fmt: skip
    faster, losses = 0, {"scratch": [], "transfer": []}
    for seed in range(4):
        perm = np.random.default_rng(seed).permutation(len(cohort.labels))
        curves = {}
        for mode in ("scratch", "transfer"):
            model = _fresh(seed)
            if mode == "transfer":
                plan.apply(model, 0)
            curves[mode] = train_model(
                model, volumes, cohort.labels, perm[:24], perm[24:], epochs=4, lr=1e-3,
                batch_size=4, seed=seed, device="cpu", progress=False,
            ).history  # fmt: skip
        for mode, history in curves.items():
            losses[mode].append(history["val_loss"].iloc[1:].mean())
        reached = {m: _first_epoch(h["val_accuracy"].to_numpy(), 0.85) for m, h in curves.items()}
        faster += reached["transfer"] < reached["scratch"]
    assert faster >= 2, losses
    assert np.mean(losses["transfer"]) <= np.mean(losses["scratch"]) - 0.07, losses


def _first_epoch(accuracy: np.ndarray, level: float) -> int:
    """1-based epoch where ``accuracy`` first reaches ``level`` (len + 1 if never)."""
    hits = np.flatnonzero(accuracy >= level - 1e-9)
    return int(hits[0]) + 1 if len(hits) else len(accuracy) + 1


def test_inception_stem_into_lu_transfer_head(tiny_cohort, tmp_path):
    """transfer='stem' on inception_resnet_v2: the stem of a full network, Lu et al.'s head."""
    from brainmaps.run.config import ModelConfig
    from brainmaps.training.transfer import with_transfer_head

    small = {"in_channels": 1, "n_classes": 2, "width": 0.125}
    torch.manual_seed(0)
    source = create_model(
        "inception_resnet_v2", input_shape=(37, 37, 37), blocks=(1, 1, 1), **small
    )
    torch.save(source.state_dict(), tmp_path / "sex.pt")
    config = tiny_config(
        tiny_cohort, tmp_path / "o", tmp_path / "c", init_from=str(tmp_path / "sex.pt"),
        transfer="stem", freeze="stem",
    ).replace(model=ModelConfig("inception_resnet_v2", {"width": 0.125}))  # fmt: skip
    config = with_transfer_head(config.resolved())
    assert config.model.options == {"width": 0.125, "head": "transfer"}
    target_config = {**small, "input_shape": [69, 69, 69], **config.model.options}
    plan = TransferPlan(config, resolve_source(str(tmp_path / "sex.pt")), CLASSES,
                        "classification", target_config)  # fmt: skip
    model = create_model("inception_resnet_v2", **target_config)
    assert [name for name, _ in model.features.named_children()] == ["stem", "head"]
    record = plan.apply(model, 0)
    stem = {k: v for k, v in source.state_dict().items() if k.startswith("features.stem.")}
    assert record["n_copied"] == len(stem) and record["n_frozen"] == len(stem)
    for key, value in stem.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert model.classifier.fc.in_features == 2 * 32  # [max-pool | conv] of 256 * width
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 1, 69, 69, 69)).shape == (1, 2)
    with pytest.raises(Exception, match="at least 69"):
        create_model("inception_resnet_v2", input_shape=(68, 69, 69), head="transfer", width=0.125)
