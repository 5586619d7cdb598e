"""Network architectures, looked up by name.

>>> from brainmaps.models import create_model, list_models
>>> "xin2019" in list_models()
True
"""

from __future__ import annotations

from brainmaps.models.gap_cnn import GapCNN
from brainmaps.models.inception_resnet_v2 import InceptionResNetV2
from brainmaps.models.mrinet import MRInet
from brainmaps.models.registry import create_model, get_model_class, list_models, register_model
from brainmaps.models.sfcn import SFCN
from brainmaps.models.xin2019 import Xin2019

__all__ = [
    "SFCN",
    "GapCNN",
    "InceptionResNetV2",
    "MRInet",
    "Xin2019",
    "create_model",
    "get_model_class",
    "list_models",
    "register_model",
]
