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
from brainmaps.models.soft_bins import SoftBinExpectation

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

    Notes
    -----
    Cost of one ``attribute`` call: the model itself runs once, on the first sample
    (the layer trace, and the output the replay of the chain is checked against); the
    chain is then replayed over the batch, each affine layer computing its output and
    its rule's denominators (``z+``, ``z-``) in one map with stacked weights; relevance
    goes back down in one pass of the transposed maps. The target ``"predicted"`` is
    read from the replay's outputs (no separate forward pass). Per layer, no more is
    kept than autograd keeps for a backward pass (inputs, the denominators, the argmax
    of each pooling window); tensors the backward pass no longer needs are reused in
    place. With alpha-beta, an input layer whose inputs take both signs (raw
    intensities) costs about three times a plain convolution forward and two
    transposed maps backward, its inputs being split into positive and negative parts.

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
        if any(isinstance(m, SoftBinExpectation) for m in model.modules()):
            raise ConfigError(
                "LRP cannot explain an SFCN trained with soft_bins: its output is the "
                "softmax-weighted mean of the bin centres, which no LRP rule redistributes. "
                "Use grad_cam, gradient or integrated_gradients, or train without "
                "--model-option soft_bins."
            )
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
    predicts_own_targets = True

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Trace the chain, replay it over the batch (saving what the rules need), propagate.

        The model runs once, on the first sample (:func:`trace_layers`: the chain and the
        output its replay is checked against). The replay of the chain over the whole
        batch is the only other forward pass: it keeps, per layer, what its rule's
        backward step needs (:meth:`_step_forward`), and gives the outputs that
        ``target="predicted"`` (``targets`` None) is taken from. Relevance then goes back
        down the chain in one pass (:meth:`_step_backward`), each layer's saved tensors
        being released (or reused in place) once it is passed.
        """
        dtype = self.dtype or x.dtype
        layers, reference = trace_layers(self.model, x[:1], self._forward, dtype)
        first = next((i for i, layer in enumerate(layers) if layer.is_affine), -1)
        rules = [self._layer_rule(layer, i == first) for i, layer in enumerate(layers)]
        with torch.no_grad():
            # ``owned``: nothing else refers to ``out`` (never the caller's input)
            out, owned, saved = x.to(dtype), False, []
            for layer, rule in zip(layers, rules, strict=True):
                out, owned, kept = self._step_forward(layer, out, owned, rule)
                saved.append(kept)
            self._check_replay(out[:1], reference)
            if targets is None:
                targets = self._predicted_targets(out.reshape(out.shape[0], -1))
            relevance = _top_relevance(out, targets)
            del out
            for i in range(len(layers) - 1, -1, -1):
                relevance = self._step_backward(layers[i], saved.pop(), relevance, rules[i])
        return self._reduce_channels(relevance)

    def _layer_rule(self, layer: Layer, first: bool) -> Rule | None:
        """The rule of ``layer`` (None for a layer without one: pooling, ReLU, ...)."""
        if first and self._first_rule is not None:
            return self._first_rule
        return self._rules.get(layer.kind)

    def _step_forward(
        self, layer: Layer, a: torch.Tensor, owned: bool, rule: Rule | None
    ) -> tuple[torch.Tensor, bool, Any]:
        """The output of ``layer`` for inputs ``a``, whether it is owned, and what is kept.

        ``owned`` tells that no kept tensor and not the caller refer to ``a``, so that it
        may be overwritten (ReLU in place) or kept by max pooling to receive the
        relevance of its inputs. Affine layers keep their inputs and the denominators of
        their rule (for the epsilon rule, the output itself, which is then not owned; for
        alpha-beta, ``z+`` and, with ``beta``, ``z-``); max pooling keeps the argmax of
        each window (and its input, when owned), average pooling its inputs, reshapes
        the input shape; ReLU and identities keep nothing.
        """
        if layer.is_affine:
            if rule.kind == "epsilon":
                z = layer.forward(a)
                return z, False, (a, z)
            if rule.kind == "alphabeta":
                z, kept = _alpha_beta_forward(layer, a, rule)
                return z, True, kept
            return layer.forward(a), True, a  # zb, flat, wsquare: all from a, backward
        if layer.kind == "maxpool":
            out, indices = layer.fn(a)
            return out, True, (indices, a.shape, a if owned else None)
        if layer.kind == "avgpool":
            return layer.forward(a), True, a
        if layer.kind == "relu":
            return (a.relu_() if owned else torch.relu(a)), True, None
        if layer.kind == "reshape":
            return layer.forward(a), owned, a.shape
        return layer.forward(a), owned, None

    def _step_backward(
        self, layer: Layer, kept: Any, relevance: torch.Tensor, rule: Rule | None
    ) -> torch.Tensor:
        """Relevance of the inputs of ``layer`` given its output relevance.

        The kept denominators are overwritten (each layer's ``kept`` is used once).
        """
        eps = self.epsilon
        if layer.is_affine:
            if rule.kind == "epsilon":
                a, z = kept
                return _share(layer, [a], [layer.weight], z, relevance, eps)
            if rule.kind == "alphabeta":
                return _alpha_beta_backward(layer, kept, relevance, rule, eps)
            return self._first_layer(layer, kept, relevance, rule)
        if layer.kind == "maxpool":
            return _winner_takes_all(*kept, relevance)
        if layer.kind == "avgpool":
            parts = [(kept, None)]
            return _redistribute(lambda t, _: layer.forward(t), parts, relevance, eps)
        if layer.kind == "reshape":
            return relevance.reshape(kept)
        return relevance

    def _first_layer(
        self, layer: Layer, a: torch.Tensor, relevance: torch.Tensor, rule: Rule
    ) -> torch.Tensor:
        """The first-layer-only rules ``zb``, ``flat`` and ``wsquare`` (biases ignored)."""
        w, eps = layer.weight, self.epsilon
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
    return torch.where(z >= 0, z + epsilon, z - epsilon)


def _ratio(relevance: torch.Tensor, z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``relevance / _stabilize(z, epsilon)``, computed in place in ``z`` (returned)."""
    if bool(z.min() >= 0):  # z+ always, and often z: one pass fewer
        z.add_(epsilon)
    else:
        up, down = (torch.tensor(v, dtype=z.dtype, device=z.device) for v in (epsilon, -epsilon))
        z.add_(torch.where(z < 0, down, up))  # epsilon * sign(z), sign(0) = +1
    return torch.div(relevance, z, out=z)


def _total(terms: list[torch.Tensor]) -> torch.Tensor:
    """The sum of ``terms`` (at least one), without adding a zero first."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _contributions(
    layer: Layer,
    inputs: list[torch.Tensor],
    weights: list[torch.Tensor],
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """``z = sum_k apply(x_k, w_k) (+ bias)``: the denominators of one share rule.

    Several parts are one map of the inputs stacked as channels (weights stacked alike)
    where the layer allows it (:attr:`Layer.ungrouped`).
    """
    if len(inputs) > 1 and layer.ungrouped:
        z = layer.apply(torch.cat(inputs, dim=1), torch.cat(weights, dim=1))
    else:
        z = _total([layer.apply(x, w) for x, w in zip(inputs, weights, strict=True)])
    return z if bias is None else z + channel_view(bias, z)


def _share(
    layer: Layer,
    inputs: list[torch.Tensor],
    weights: list[torch.Tensor],
    z: torch.Tensor,
    relevance: torch.Tensor,
    epsilon: float,
) -> torch.Tensor:
    """Share each output's relevance among the contributions ``x_k * w_k`` to ``z``.

    ``z = sum_k apply(x_k, w_k) (+ bias)`` (:func:`_contributions`, computed in the
    forward replay); input ``i`` of part ``k`` receives ``x_ki sum_j w_kij R_j / z_j``
    (``z_j`` stabilised), i.e. gradient x input of the linear map with ``R / z`` as the
    output gradient, computed with the transposed map (:meth:`Layer.transpose`). ``z``
    is overwritten.
    """
    s = _ratio(relevance, z, epsilon)
    if len(inputs) > 1 and layer.ungrouped:
        stacked = torch.cat(inputs, dim=1)
        shares = layer.transpose(s, stacked, torch.cat(weights, dim=1)).mul_(stacked)
        return _total(list(shares.split(inputs[0].shape[1], dim=1)))
    shares = [layer.transpose(s, x, w).mul_(x) for x, w in zip(inputs, weights, strict=True)]
    return _total(shares)


def _redistribute(
    apply: Callable[[torch.Tensor, Any], torch.Tensor],
    parts: list[tuple[torch.Tensor, Any]],
    relevance: torch.Tensor,
    epsilon: float,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`_share` for any linear ``apply``, with ``z`` computed here, by autograd.

    ``z = sum_k apply(x_k, w_k) (+ bias)``; input ``i`` of part ``k`` receives
    ``sum_j x_ki d z_j / d x_ki * R_j / z_j``, i.e. its share of ``z_j`` (computed as
    gradient x input of the linear map, the usual LRP implementation trick). Used where
    ``z`` is not the replay's (average pooling and the first-layer rules).
    """
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x, _ in parts]
        z = _total([apply(x, w) for x, (_, w) in zip(leaves, parts, strict=True)])
        if bias is not None:
            z = z + channel_view(bias, z)
        s = relevance / _stabilize(z.detach(), epsilon)
        grads = torch.autograd.grad(z, leaves, s)
    return _total([x.detach() * g for x, g in zip(leaves, grads, strict=True)])


def _signed_parts(
    a: torch.Tensor, w: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Inputs, positive-part weights and negative-part weights of the alpha-beta rule.

    ``z_ij+ = a_i+ w_ij+ + a_i- w_ij-`` and ``z_ij- = a_i+ w_ij- + a_i- w_ij+``; for
    non-negative inputs (after a ReLU) the ``a-`` terms vanish and are left out.
    """
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    if bool(a.min() < 0):
        return [a.clamp(min=0), a.clamp(max=0)], [wp, wn], [wn, wp]
    return [a], [wp], [wn]


def _alpha_beta_forward(
    layer: Layer, a: torch.Tensor, rule: Rule
) -> tuple[torch.Tensor, tuple[Any, ...]]:
    """The output of an alpha-beta layer, and its kept inputs and ``z+`` (``z-``).

    The positive (negative) part of the bias enters ``z+`` (``z-``), as in Bach et al.
    """
    w, b = layer.weight, layer.bias
    inputs, positive, negative = _signed_parts(a, w)
    bp = None if b is None else b.clamp(min=0)
    bn = None if b is None else b.clamp(max=0)
    if layer.ungrouped:
        # one map of the (signed parts of the) inputs, stacked as channels, gives the
        # output, z+ and z-: their weights and biases are stacked as outputs. z+ and z-
        # are kept as slices of it, which keeps the output alive too: two or three
        # outputs per layer, no more than autograd keeps for a conv-BN-ReLU-pool block
        rows = [[w] * len(inputs), positive, negative][: 3 if rule.beta else 2]
        weight = torch.cat([torch.cat(row, dim=1) for row in rows])
        bias = None if b is None else torch.cat([b, bp, bn][: len(rows)])
        stacked = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)
        out = layer.apply(stacked, weight, bias).split(w.shape[0], dim=1)
        return out[0], (inputs, positive, negative, out[1], out[2] if rule.beta else None)
    zp = _contributions(layer, inputs, positive, bp)
    zn = _contributions(layer, inputs, negative, bn) if rule.beta else None
    return layer.forward(a), (inputs, positive, negative, zp, zn)


def _alpha_beta_backward(
    layer: Layer, kept: tuple[Any, ...], relevance: torch.Tensor, rule: Rule, epsilon: float
) -> torch.Tensor:
    """The alpha-beta rule: positive and negative contributions normalised separately."""
    inputs, positive, negative, zp, zn = kept
    result = _share(layer, inputs, positive, zp, relevance, epsilon)
    if rule.alpha != 1.0:
        result = rule.alpha * result
    if rule.beta:
        result = result - rule.beta * _share(layer, inputs, negative, zn, relevance, epsilon)
    return result


def _winner_takes_all(
    indices: torch.Tensor,
    shape: torch.Size,
    spare: torch.Tensor | None,
    relevance: torch.Tensor,
) -> torch.Tensor:
    """Send each pooling window's relevance to its argmax input (summed over windows).

    ``indices`` are the argmax of each window (from the replay), ``shape`` the shape of
    the pooling's input; ``spare``, if given, is that input, no longer needed, which is
    zeroed and receives the relevance (sparing a new tensor).
    """
    n, c = shape[0], shape[1]
    flat = None
    if spare is not None and spare.dtype == relevance.dtype:
        try:
            flat = spare.view(n, c, -1).zero_()
        except RuntimeError:  # not viewable as (N, C, voxels) without a copy
            flat = None
    if flat is None:
        flat = relevance.new_zeros((n, c, shape[2:].numel()))
    flat.scatter_add_(2, indices.flatten(2), relevance.flatten(2))
    return flat.view(shape)


def _top_relevance(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Relevance at the output: the target unit's value, zero elsewhere."""
    flat = outputs.reshape(outputs.shape[0], -1)
    index = targets.view(-1, 1).to(flat.device)
    relevance = torch.zeros_like(flat).scatter_(1, index, flat.gather(1, index))
    return relevance.reshape(outputs.shape)
