"""Clinical measures of a synthetic cohort, tied to the planted effect with a known sign.

BrainImageNet (Lu et al.) related its network's score to MMSE and to progression
(converters vs stable patients). With ``SynthConfig(clinical=True)`` a synthetic cohort
gets measures whose relation to the images is known:

* ``mmse``: controls 29 +- 1; a patient's MMSE falls with the strength of its own planted
  effect (``24 - 4 z`` with ``z`` the patient's standardised effect strength, plus noise of
  sd 1.5), clipped to 0-30 and rounded. A score that reads the effect correlates
  *negatively* with MMSE among patients.
* ``progression``: patients with a stronger effect tend to be ``converter`` (``z`` plus
  noise of sd 0.5 above 0), the others ``stable``; empty for controls.
* ``batch``: ``A`` or ``B`` at random, independent of everything: a null subgroup, where
  any difference is chance.

``ground_truth_clinical.tsv`` holds each subject's effect strength (the multiplier of the
group effect; 0 for controls) and ``z``, the draw the image simulation used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CLINICAL_README", "clinical_tables"]

CLINICAL_README = (
    "Clinical measures (clinical=True): mmse (controls 29 +- 1; patients 24 - 4 z + noise sd "
    "1.5, z the patient's standardised effect strength, clipped 0-30), progression "
    "(patients: converter when z + noise sd 0.5 > 0, else stable) and batch (A/B at random, "
    "a null subgroup). Each subject's effect strength: ground_truth_clinical.tsv.\n"
)


def clinical_tables(config, participants: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Participants with ``mmse``, ``progression`` and ``batch``, and the ground truth.

    Parameters
    ----------
    config : SynthConfig
    participants : pandas.DataFrame
        From :func:`brainmaps.data.synthetic.draw_participants`, in cohort order (the
        position of a row seeds that subject's simulation).

    Returns
    -------
    participants : pandas.DataFrame
        With the three columns added.
    truth : pandas.DataFrame
        ``participant_id, group, effect_z, effect_strength`` (the group effect's strength as
        the simulation applied it: 0 for controls).
    """
    from brainmaps.data.synthetic import _rng, _strengths

    n = len(participants)
    # each subject's own generator draws these first in simulate_subject: z[0] is its effect
    draws = [_rng(config, 0, i).standard_normal(3) for i in range(n)]
    rows = participants.to_dict("records")
    strength = np.array([_strengths(config, r, d)[0] for r, d in zip(rows, draws, strict=True)])
    z = np.array([d[0] for d in draws])
    patient = (participants["group"] == "patient").to_numpy()
    rng = _rng(config, 7)  # a stream of its own: the images do not change
    mmse = np.where(patient, 24.0 - 4.0 * z + rng.normal(0, 1.5, n), 29.0 + rng.normal(0, 1, n))
    converter = z + rng.normal(0, 0.5, n) > 0
    progression = np.where(patient, np.where(converter, "converter", "stable"), "")
    batch = np.where(rng.random(n) < 0.5, "A", "B")
    out = participants.assign(
        mmse=np.clip(np.rint(mmse), 0, 30).astype(int), progression=progression, batch=batch
    )
    truth = pd.DataFrame(
        {
            "participant_id": participants["participant_id"],
            "group": participants["group"],
            "effect_z": np.round(np.where(patient, z, 0.0), 6),
            "effect_strength": np.round(strength, 6),
        }
    )
    return out, truth
