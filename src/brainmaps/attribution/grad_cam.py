"""Grad-CAM for 3D networks, on any layer and any class, and the flow it shares with
the other gradient-weighted class activation maps."""

from __future__ import annotations

import torch
from torch import nn

from brainmaps.attribution._spatial import layer_geometry, upsample_aligned
from brainmaps.attribution.base import (
    AttributionMethod,
    find_module,
    hooks,
    register_method,
    target_scores,
)
from brainmaps.attribution.gradient import check_bool
from brainmaps.exceptions import ConfigError
from brainmaps.models.tracing import feature_layers

__all__ = [
    "AUTO_MIN_VOXELS",
    "GradCAM",
    "GradientCAM",
    "auto_layer",
    "default_layer",
    "layer_activations",
]

#: ``layer="auto"``: the deepest layer whose feature grid keeps this many voxels per axis.
AUTO_MIN_VOXELS = 8


def default_layer(model: nn.Module) -> str:
    """The model's ``target_layer`` attribute, else the name of its last ``Conv3d``."""
    name = getattr(model, "target_layer", None)
    if isinstance(name, str):
        return name
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv3d)]
    if not convs:
        raise ConfigError(
            f"{type(model).__name__} has no Conv3d layer; give layer=... (a module name)."
        )
    return convs[-1]


def auto_layer(model: nn.Module, x: torch.Tensor, min_voxels: int = AUTO_MIN_VOXELS) -> str:
    """The layer ``layer="auto"`` picks for inputs shaped like ``x``.

    The deepest activation or pooling layer (in forward order) whose feature grid keeps
    at least ``min_voxels`` voxels along every spatial axis at this input size: deeper
    layers see more of the network's evidence, shallower ones keep resolution. At the
    demo grid (36x44x36) this is ``features.block2.relu`` of ``xin2019`` (15x19x15); at
    Kan et al.'s 58x70x58 it is ``features.block3.relu`` (11x14x11). When no layer keeps
    that many, the first one is taken.

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor
        An input batch ``(N, C, *spatial)``.
    min_voxels : int
        Smallest feature-grid size per axis (:data:`AUTO_MIN_VOXELS`).

    Returns
    -------
    str
        The module's name in ``model.named_modules()``.
    """
    layers = feature_layers(model, x)
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no activation or pooling layer with a spatial "
            "output; give layer=... (a module name)."
        )
    fine = [name for name, grid in layers if min(grid) >= min_voxels]
    return fine[-1] if fine else layers[0][0]


def layer_activations(
    method: AttributionMethod, layer: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model, keeping the output of ``layer``; returns ``(outputs, activations)``."""
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() < 3:
            raise ConfigError(
                f"layer {type(_module).__name__} does not output a spatial feature map "
                f"(got {type(output).__name__}); choose a convolution block or activation."
            )
        store["a"] = output

    with hooks() as handles:
        handles.append(layer.register_forward_hook(keep))
        outputs = method._forward(x)
    return outputs, store["a"]


class GradientCAM(AttributionMethod):
    """The shared flow of the gradient-weighted class activation maps (not registered).

    At one layer, the activations ``A`` and the gradients ``∂y/∂A`` of the target
    output are taken in one forward and one backward pass; :meth:`_combine` (the one
    step each method overrides) turns them into a feature map ``(N, *feat)``, the final
    ReLU is applied when ``relu`` is set, and the map is upsampled onto the input grid
    with every feature voxel at the centre of its receptive field
    (:func:`~brainmaps.attribution._spatial.upsample_aligned`). Used by
    :class:`GradCAM`, :class:`~brainmaps.attribution.cam_variants.HiResCAM` and
    :class:`~brainmaps.attribution.cam_variants.LayerCAM`.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str, optional
        Name of the module whose output is used (``model.named_modules()``), or
        ``"auto"`` (:func:`auto_layer`, chosen per input size). Default:
        :meth:`default_layer`.
    relu : bool
        Apply the final ReLU.
    """

    #: The ``layer`` recorded with a run's maps when none is given (None: the model's own
    #: ``target_layer``, nothing to record).
    recorded_layer: str | None = None

    def __init__(self, model: nn.Module, *, layer: str | None = None, relu: bool = True) -> None:
        super().__init__(model)
        self.layer_name = layer if layer is not None else self.default_layer(model)
        self._auto: dict[tuple[int, ...], str] = {}
        if self.layer_name != "auto":
            self.layer = find_module(model, self.layer_name)
        self.relu = check_bool(self.name or type(self).__name__, "relu", relu)

    def default_layer(self, model: nn.Module) -> str:
        """The layer used when none is given (Grad-CAM: :func:`default_layer`)."""
        return default_layer(model)

    def layer_for(self, x: torch.Tensor) -> nn.Module:
        """The module explained for inputs shaped like ``x`` (resolves ``"auto"``)."""
        if self.layer_name != "auto":
            return self.layer
        shape = tuple(x.shape[1:])
        if shape not in self._auto:
            self._auto[shape] = auto_layer(self.model, x)
        return find_module(self.model, self._auto[shape])

    def resolved_layer(self, x: torch.Tensor) -> str:
        """Name of the module explained for inputs shaped like ``x``."""
        if self.layer_name != "auto":
            return self.layer_name
        self.layer_for(x)
        return self._auto[tuple(x.shape[1:])]

    def _combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Feature map ``(N, *feat)`` from activations and gradients ``(N, K, *feat)``."""
        raise NotImplementedError

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        layer = self.layer_for(x)
        geometry = layer_geometry(self.model, layer, x)
        with torch.enable_grad():
            outputs, acts = layer_activations(self, layer, x.requires_grad_(True))
            (grads,) = torch.autograd.grad(target_scores(outputs, targets).sum(), acts)
        cam = self._combine(acts.detach(), grads)
        if self.relu:
            cam = cam.clamp(min=0)
        return upsample_aligned(cam, tuple(x.shape[2:]), geometry)


@register_method("grad_cam")
class GradCAM(GradientCAM):
    """Gradient-weighted Class Activation Mapping, correct in 3D.

    For the chosen layer's activations ``A`` (``K`` channels) and target output ``y``,
    the channel weights are the gradients averaged over *all three* spatial axes,
    ``w_k = mean_xyz ∂y/∂A_k``, and the map is ``ReLU(Σ_k w_k A_k)``. It is then
    upsampled trilinearly to the input grid with every feature voxel placed at the
    centre of its receptive field (see :mod:`brainmaps.attribution._spatial`), rather
    than stretched by array shape. Any output unit can be explained (the papers' code
    always used one fixed class).

    Parameters
    ----------
    model : torch.nn.Module
    layer : str, optional
        Name of the module whose output is used (``model.named_modules()``), or
        ``"auto"`` (:func:`auto_layer`). Default: the model's ``target_layer`` (the last
        block's activation for the brainmaps networks), else the last ``Conv3d``. A
        module called more than once is explained at its last call.
    relu : bool
        Apply the final ReLU (default, as in the paper); False keeps negative evidence.

    See Also
    --------
    brainmaps.attribution.cam_variants.HiResCAM : the same without averaging the
        gradients, faithful to networks with a dense head such as ``xin2019``.

    References
    ----------
    .. [1] R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
       Gradient-based Localization", ICCV 2017.
    .. [2] M. Kan et al., "Interpretation of 3D CNNs for Brain MRI Data Classification",
       AIST 2020.
    """

    def _combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        spatial = tuple(range(2, acts.dim()))
        weights = grads.mean(dim=spatial, keepdim=True)
        return (weights * acts).sum(dim=1)
