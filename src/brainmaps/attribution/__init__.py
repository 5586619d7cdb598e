"""Attribution methods: one class per method, one shape for all.

Examples
--------
>>> from brainmaps.attribution import GradCAM
>>> cam = GradCAM(model, layer="features.block3.relu")  # doctest: +SKIP
>>> maps = cam.attribute(x, target="predicted")  # doctest: +SKIP

Every method returns raw maps of shape ``(N, X, Y, Z)``; :func:`get_method` looks a
method up by its registry (and CLI) name.
"""

from __future__ import annotations

from brainmaps.attribution.base import (
    AttributionMethod,
    create_method,
    get_method,
    list_methods,
    register_method,
)
from brainmaps.attribution.cam import CAM
from brainmaps.attribution.cam_variants import HiResCAM, LayerCAM
from brainmaps.attribution.grad_cam import GradCAM
from brainmaps.attribution.gradient import Gradient
from brainmaps.attribution.guided_backprop import GuidedBackprop
from brainmaps.attribution.integrated_gradients import IntegratedGradients
from brainmaps.attribution.lrp import LRP
from brainmaps.attribution.meaningful_perturbation import MeaningfulPerturbation
from brainmaps.attribution.occlusion import Occlusion, occlusion_accuracy_map
from brainmaps.attribution.smoothgrad import SmoothGrad

__all__ = [
    "CAM",
    "LRP",
    "AttributionMethod",
    "GradCAM",
    "Gradient",
    "GuidedBackprop",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "MeaningfulPerturbation",
    "Occlusion",
    "SmoothGrad",
    "create_method",
    "get_method",
    "list_methods",
    "occlusion_accuracy_map",
    "register_method",
]
