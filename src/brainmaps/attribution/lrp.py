"""Layer-wise Relevance Propagation (LRP) for sequential 3D CNNs.

Written here rather than taken from a library: zennit requires torchvision, which
brainmaps must not depend on, and Captum's LRP has no rules for ``Conv3d``,
``BatchNorm3d`` or 3D average pooling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from brainmaps.attribution._lrp_graph import Layer, channel_view, trace_layers
from brainmaps.attribution._lrp_rules import (
    Rule,
    check_bounds,
    check_dtype,
    check_epsilon,
    layer_rules,
    parse_rule,
)
from brainmaps.attribution.base import AttributionMethod, register_method
from brainmaps.exceptions import ConfigError

__all__ = ["LRP"]


@register_method("lrp")
class LRP(AttributionMethod):
    """Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019).

    The relevance of the explained output unit is its logit (for a regression model,
    the output); every other output unit starts at zero. Relevance is redistributed
    layer by layer down to the input voxels and summed over input channels
    (``attribute(..., keep_channels=True)``: one map per input channel). Maps are
    raw: positive voxels speak for the target, negative ones against it, and with a
    bias-free network and a small ``epsilon`` they sum to the explained logit
    (conservation); biases absorb the rest otherwise.

    Per layer type:

    - ``Conv3d`` and ``Linear``: the chosen ``rule`` (``first_layer_rule`` for the
      first of them). BatchNorm right after a convolution (``BatchNorm3d``) or a linear
      layer (``BatchNorm1d``) is folded into it, on copies of the weights.
    - ``ReLU``, ``Dropout`` (identity in eval mode), ``Identity``, ``Flatten`` and
      reshapes: relevance passes through unchanged.
    - ``MaxPool3d``: winner takes all: the relevance of each window goes to its
      argmax input; an input that wins several overlapping windows receives the sum.
    - ``AvgPool3d`` and ``AdaptiveAvgPool3d``: proportionally to the inputs (the
      epsilon rule on a linear layer).

    Rules (``z_ij = a_i w_ij`` is the contribution of input ``i`` to output ``j``):

    - ``"epsilon"``: ``R_i = sum_j z_ij / (z_j + epsilon sign(z_j)) R_j`` with
      ``z_j = sum_i z_ij + b_j`` (LRP-epsilon; gradient x input as epsilon -> 0).
    - ``"alpha<a>beta<b>"`` with ``a - b = 1``, ``b >= 0`` (``"alpha1beta0"``,
      ``"alpha2beta1"``, ...): positive and negative contributions are normalised
      separately, ``R_i = sum_j (a z_ij+ / z_j+ - b z_ij- / z_j-) R_j``, where the
      positive (negative) part of the bias enters ``z_j+`` (``z_j-``), as in Bach et
      al. With ``"alpha1beta0"`` the map has the sign of the explained logit.
    - ``"composite"`` (alias ``"preset_a"``): iNNvestigate's ``LRPSequentialPresetA``,
      the rule set of Hofmann et al. [4]_: ``"alpha1beta0"`` (z+, bias included as
      above) in every ``Conv3d`` and ``"epsilon"`` (with the ``epsilon`` option,
      bias included) in every ``Linear`` layer, the first layer included unless
      ``first_layer_rule`` is given. iNNvestigate's default epsilon is 0.1 (pass
      ``epsilon=0.1`` to match it); its BatchNorm rule is not needed here, as BatchNorm
      is folded into the layer before it (which then gets that layer's rule).
    - First layer only: ``"zb"`` (z^B rule for inputs bounded by ``bounds``,
      Montavon et al. 2017), ``"flat"`` (all connected inputs share equally) and
      ``"wsquare"`` (shares ``w_ij^2``). These three ignore the biases.

    Parameters
    ----------
    model : torch.nn.Module
        A sequential network: every module reads the output of the module called
        before it (reshapes in ``forward`` are allowed) and the model returns the last
        module's output (logits, not probabilities).
    rule : str
        Rule of the convolution and linear layers: ``"epsilon"`` (default),
        ``"alpha1beta0"``, ``"alpha2beta1"`` or another ``"alpha<a>beta<b>"``; or
        ``"composite"`` / ``"preset_a"`` (alpha1beta0 in convolutions, epsilon in
        linear layers).
    epsilon : float
        Stabiliser added to every denominator with the denominator's sign, in the units
        of the layer's pre-activations (the logit units at the top). Default 1e-6, which
        makes the epsilon rule gradient x input up to rounding; larger values (e.g.
        0.01-0.25 of the typical pre-activation) absorb weak or contradictory
        contributions and give sparser maps. Must be > 0.
    first_layer_rule : str, optional
        Rule of the first convolution/linear layer: any ``rule``, or ``"zb"``,
        ``"flat"``, ``"wsquare"``. Default: the rule ``rule`` gives that layer.
    bounds : (float, float), optional
        Lowest and highest admissible input value for ``first_layer_rule="zb"``, in the
        input's intensity units. Default: each sample's own minimum and maximum.
    dtype : torch.dtype or str, optional
        Compute dtype (``torch.float64`` or ``"float64"`` for exact checks); default
        the input's dtype. Maps are returned in this dtype.

    Raises
    ------
    ConfigError
        On invalid options; at ``attribute`` time, if the model has a module type
        without a rule (the first one is named), is not sequential, or has a BatchNorm
        that does not follow a convolution/linear layer.

    References
    ----------
    .. [1] S. Bach, A. Binder, G. Montavon, F. Klauschen, K.-R. Müller, W. Samek, "On
       pixel-wise explanations for non-linear classifier decisions by layer-wise
       relevance propagation", PLoS ONE 10(7):e0130140, 2015.
    .. [2] G. Montavon, A. Binder, S. Lapuschkin, W. Samek, K.-R. Müller, "Layer-wise
       relevance propagation: an overview", in Explainable AI, LNCS 11700, 2019.
    .. [3] G. Montavon, S. Lapuschkin, A. Binder, W. Samek, K.-R. Müller, "Explaining
       nonlinear classification decisions with deep Taylor decomposition", Pattern
       Recognition 65:211-222, 2017.
    .. [4] S. M. Hofmann et al., "Towards the interpretability of deep learning models
       for multi-modal neuroimaging: Finding structural changes of the ageing brain",
       NeuroImage 261:119504, 2022.

    Examples
    --------
    >>> LRP(model, rule="alpha1beta0").attribute(x, target=1)  # doctest: +SKIP
    >>> LRP(model, rule="composite", epsilon=0.1).attribute(x)  # brain age  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        rule: str = "epsilon",
        epsilon: float = 1e-6,
        first_layer_rule: str | None = None,
        bounds: Sequence[float] | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(model)
        self.rule = rule
        self.epsilon = check_epsilon(epsilon)
        self.first_layer_rule = first_layer_rule
        self._rules = layer_rules(rule)
        self._first_rule = (
            None
            if first_layer_rule is None
            else parse_rule(first_layer_rule, "first_layer_rule", first_layer=True)
        )
        self.bounds = check_bounds(bounds, self._first_rule)
        self.dtype = check_dtype(dtype)

    channel_maps = True

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype or x.dtype
        layers, reference = trace_layers(self.model, x[:1], self._forward, dtype)
        activations = [x.to(dtype)]
        with torch.no_grad():
            for layer in layers:
                activations.append(layer.forward(activations[-1]))
        self._check_replay(activations[-1][:1], reference)
        relevance = _top_relevance(activations[-1], targets)
        first = next((i for i, layer in enumerate(layers) if layer.is_affine), -1)
        for i in range(len(layers) - 1, -1, -1):
            rule = self._layer_rule(layers[i], i == first)
            relevance = self._propagate(layers[i], activations[i], relevance, rule)
        return self._reduce_channels(relevance)

    def _layer_rule(self, layer: Layer, first: bool) -> Rule | None:
        """The rule of ``layer`` (None for a layer without one: pooling, ReLU, ...)."""
        if first and self._first_rule is not None:
            return self._first_rule
        return self._rules.get(layer.kind)

    def _propagate(
        self, layer: Layer, a: torch.Tensor, relevance: torch.Tensor, rule: Rule | None
    ) -> torch.Tensor:
        """Relevance of the inputs ``a`` of ``layer`` given its output relevance."""
        if layer.is_affine:
            return self._affine(layer, a, relevance, rule)
        if layer.kind == "maxpool":
            return _winner_takes_all(layer, a, relevance)
        if layer.kind == "avgpool":
            parts = [(a, None)]
            return _redistribute(lambda t, _: layer.forward(t), parts, relevance, self.epsilon)
        if layer.kind == "reshape":
            return relevance.reshape(a.shape)
        return relevance

    def _affine(
        self, layer: Layer, a: torch.Tensor, relevance: torch.Tensor, rule: Rule
    ) -> torch.Tensor:
        w, b, eps = layer.weight, layer.bias, self.epsilon
        if rule.kind == "epsilon":
            return _redistribute(layer.apply, [(a, w)], relevance, eps, b)
        if rule.kind == "alphabeta":
            return _alpha_beta(layer, a, relevance, rule, eps)
        if rule.kind == "zb":
            low, high = self._input_bounds(a, layer)
            wp, wn = w.clamp(min=0), w.clamp(max=0)
            parts = [(a, w), (low, -wp), (high, -wn)]
            return _redistribute(layer.apply, parts, relevance, eps)
        ones = torch.ones_like(a)
        share = torch.ones_like(w) if rule.kind == "flat" else w * w
        return _redistribute(layer.apply, [(ones, share)], relevance, eps)

    def _input_bounds(self, a: torch.Tensor, layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bounds is None:
            axes = tuple(range(1, a.dim()))
            low, high = a.amin(dim=axes, keepdim=True), a.amax(dim=axes, keepdim=True)
            return torch.ones_like(a) * low, torch.ones_like(a) * high
        lo, hi = self.bounds
        found = (float(a.min()), float(a.max()))
        if found[0] < lo or found[1] > hi:
            raise ConfigError(
                f"LRP bounds={list(self.bounds)} must contain every input value of the first "
                f"layer {layer.name!r} for first_layer_rule='zb', but the inputs range over "
                f"[{found[0]:.4g}, {found[1]:.4g}]. Widen bounds or leave them as None (each "
                "sample's own minimum and maximum)."
            )
        return torch.full_like(a, lo), torch.full_like(a, hi)

    def _check_replay(self, replayed: torch.Tensor, reference: torch.Tensor) -> None:
        ref = reference.reshape(replayed.shape).to(replayed.dtype)
        tolerance = 1e-3 * (1.0 + float(ref.abs().nan_to_num().max()))
        if bool(((replayed - ref).abs() > tolerance).any()):
            raise ConfigError(
                f"LRP's layer-by-layer replay of {type(self.model).__name__} does not "
                f"reproduce its output (max difference "
                f"{float((replayed - ref).abs().max()):.3g}): its forward does something the "
                "modules do not show (an in-place operation, a custom layer subclass, ...). "
                "Use a sequential model or another attribution method."
            )


def _stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)`` with sign(0) = +1."""
    return z + epsilon * (2.0 * (z >= 0).to(z.dtype) - 1.0)


def _redistribute(
    apply: Callable[[torch.Tensor, Any], torch.Tensor],
    parts: list[tuple[torch.Tensor, Any]],
    relevance: torch.Tensor,
    epsilon: float,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Share each output's relevance among the contributions ``x_k * w_k`` of ``parts``.

    ``z = sum_k apply(x_k, w_k) (+ bias)``; input ``i`` of part ``k`` receives
    ``sum_j x_ki d z_j / d x_ki * R_j / z_j``, i.e. its share of ``z_j`` (computed as
    gradient x input of the linear map, the usual LRP implementation trick).
    """
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x, _ in parts]
        z = sum(apply(x, w) for x, (_, w) in zip(leaves, parts, strict=True))
        if bias is not None:
            z = z + channel_view(bias, z)
        s = relevance / _stabilize(z.detach(), epsilon)
        grads = torch.autograd.grad(z, leaves, s)
    return sum(x.detach() * g for x, g in zip(leaves, grads, strict=True))


def _alpha_beta(
    layer: Layer, a: torch.Tensor, relevance: torch.Tensor, rule: Rule, epsilon: float
) -> torch.Tensor:
    """The alpha-beta rule: positive and negative contributions normalised separately."""
    w = layer.weight
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    ap, an = a.clamp(min=0), a.clamp(max=0)
    mixed = bool((a < 0).any())
    bias = layer.bias
    bp = None if bias is None else bias.clamp(min=0)
    positive = [(ap, wp), (an, wn)] if mixed else [(ap, wp)]
    result = rule.alpha * _redistribute(layer.apply, positive, relevance, epsilon, bp)
    if rule.beta:
        bn = None if bias is None else bias.clamp(max=0)
        negative = [(ap, wn), (an, wp)] if mixed else [(ap, wn)]
        result = result - rule.beta * _redistribute(layer.apply, negative, relevance, epsilon, bn)
    return result


def _winner_takes_all(layer: Layer, a: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Send each pooling window's relevance to its argmax input (summed over windows)."""
    _, indices = layer.fn(a)
    flat = torch.zeros(
        a.shape[0], a.shape[1], a[0, 0].numel(), dtype=relevance.dtype, device=relevance.device
    )
    flat.scatter_add_(2, indices.flatten(2), relevance.flatten(2))
    return flat.view(a.shape)


def _top_relevance(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Relevance at the output: the target unit's value, zero elsewhere."""
    flat = outputs.reshape(outputs.shape[0], -1)
    index = targets.view(-1, 1).to(flat.device)
    relevance = torch.zeros_like(flat).scatter_(1, index, flat.gather(1, index))
    return relevance.reshape(outputs.shape)
