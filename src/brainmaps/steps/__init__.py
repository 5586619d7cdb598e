"""Steps run on a run folder: each described once and recorded with its options.

``explain`` computes the maps; the analysis steps (``thresholds``: operating points of
a binary run, ``anatomy`` (relevance in atlas regions against their volumes: run only
on request), ``clinical`` (the score against clinical measures: run only on request),
``compare``, ``localise``,
``regions``, ``faithfulness``, ``sanity``, ``masked_eval``, ``roar`` (remove and
retrain: run only on request, never by the report), ``first_layer``, and ``trust``,
which gathers their verdicts per method) are registered
:class:`~brainmaps.steps.base.Step` objects, in the order :func:`list_steps` gives, which
``brainmaps report`` and :func:`brainmaps.reports.analyse.analyse_run` iterate. Each
writes ``stages/<name>.yaml`` with the options that made its outputs (see
:mod:`brainmaps.run.stages`).
"""

from brainmaps.steps import (
    anatomy,
    clinical,
    compare,
    faithfulness,
    first_layer,
    localise,
    masked_eval,
    regions,
    roar,
    sanity,
    thresholds,
    trust,
)
from brainmaps.steps.base import Step, get_step, list_steps, register_step, run_step
from brainmaps.steps.explain import explain

__all__ = [
    "Step",
    "anatomy",
    "clinical",
    "compare",
    "explain",
    "faithfulness",
    "first_layer",
    "get_step",
    "list_steps",
    "localise",
    "masked_eval",
    "regions",
    "register_step",
    "roar",
    "run_step",
    "sanity",
    "thresholds",
    "trust",
]
