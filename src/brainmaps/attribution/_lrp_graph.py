"""Layer discovery and BatchNorm folding for LRP (private to :mod:`.lrp`).

:func:`trace_layers` runs the model once through :func:`brainmaps.models.tracing.trace`
(forward hooks on its leaf modules) and turns the modules it called, in call order, into
:class:`Layer` records that :mod:`brainmaps.attribution.lrp` replays and propagates
relevance through. It checks that the network is a chain: every module must read the
output of the module called before it (a reshape such as ``x.view(n, -1)`` in
``forward`` is allowed and becomes a ``reshape`` layer), and the model must return the
last module's output. BatchNorm layers are folded into the convolution or linear layer
right before them, on copies of the weights: the model is never changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brainmaps.exceptions import ConfigError
from brainmaps.models.tracing import DROPOUTS, Call, trace

__all__ = ["SUPPORTED", "Layer", "fold_batchnorm", "trace_layers"]

_AVGPOOL = (nn.AvgPool3d, nn.AdaptiveAvgPool3d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm3d)
#: Module types LRP can propagate through (named in error messages).
SUPPORTED = (
    "Conv3d, Linear, BatchNorm3d after Conv3d and BatchNorm1d after Linear (folded), "
    "ReLU, MaxPool3d, AvgPool3d, AdaptiveAvgPool3d, Flatten, Dropout, Identity"
)


@dataclass(frozen=True)
class Layer:
    """One module of the chain, detached from the model.

    Attributes
    ----------
    kind : str
        ``"conv"``, ``"linear"`` (affine layers, BatchNorm folded in), ``"relu"``,
        ``"identity"`` (dropout in eval mode, ``nn.Identity``), ``"reshape"``
        (``nn.Flatten`` or a reshape in ``forward``), ``"maxpool"`` or ``"avgpool"``.
    name : str
        Name of the module in ``model.named_modules()`` (for messages).
    weight, bias : torch.Tensor or None
        Affine layers only: copies of the (folded) parameters in the compute dtype.
    fn : callable or None
        Pooling layers: the pooling function of one tensor (max pooling returns indices).
    shape : tuple of int
        Reshape layers: the output shape without the batch axis.
    conv : dict
        Convolutions: ``stride``, ``padding``, ``dilation`` and ``groups``.
    """

    kind: str
    name: str
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    fn: Callable[..., Any] | None = None
    shape: tuple[int, ...] = ()
    conv: dict[str, Any] = field(default_factory=dict)

    @property
    def is_affine(self) -> bool:
        """True for convolution and linear layers."""
        return self.kind in ("conv", "linear")

    @property
    def ungrouped(self) -> bool:
        """Affine layers: every output reads every input channel (a linear layer, or a
        convolution with ``groups=1``), so weights may be stacked along either axis."""
        return self.kind == "linear" or self.conv.get("groups", 1) == 1

    def apply(
        self, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The affine layer's linear map of ``a`` with ``weight`` (and ``bias``, if given)."""
        if self.kind == "conv":
            return F.conv3d(a, weight, bias, **self.conv)
        return F.linear(a, weight, bias)

    def transpose(self, s: torch.Tensor, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`apply` applied to ``s``: ``d <s, apply(a, weight)> / d a``.

        ``s`` has the shape of ``apply(a, weight)``; ``a`` is the input whose shape the
        result takes. This is what autograd computes for the input of ``apply`` (``s @
        weight`` for a linear layer, the transposed convolution for a convolution), without
        building a graph.
        """
        if self.kind == "linear":
            return s @ weight
        stride, padding, dilation = (self.conv[k] for k in ("stride", "padding", "dilation"))
        if isinstance(padding, str):  # "same" / "valid": let autograd pad as the layer does
            with torch.enable_grad():
                leaf = a.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.apply(leaf, weight), leaf, s)
            return grad
        # the inputs a strided convolution does not reach at the far end come back as
        # output padding (always < stride)
        reach = [
            (n - 1) * st - 2 * p + d * (k - 1) + 1
            for n, st, p, d, k in zip(
                s.shape[2:], stride, padding, dilation, weight.shape[2:], strict=True
            )
        ]
        extra = [size - r for size, r in zip(a.shape[2:], reach, strict=True)]
        return F.conv_transpose3d(
            s, weight, None, stride, padding, extra, self.conv["groups"], dilation
        )

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """The layer's output for input ``a`` (as the model computes it in eval mode)."""
        if self.is_affine:
            z = self.apply(a, self.weight)
            return z if self.bias is None else z + channel_view(self.bias, z)
        if self.kind == "relu":
            return torch.relu(a)
        if self.kind == "reshape":
            return a.reshape(a.shape[0], *self.shape)
        if self.kind == "maxpool":
            return self.fn(a)[0]
        if self.kind == "avgpool":
            return self.fn(a)
        return a


def channel_view(vector: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-channel ``vector`` so that it broadcasts over ``like`` (N, C, ...)."""
    return vector.view(1, -1, *([1] * (like.dim() - 2)))


def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the affine layer before it, in float64.

    ``bn(conv(x; W, b)) == conv(x; W * s, (b - mean) * s + beta)`` with
    ``s = gamma / sqrt(running_var + eps)``. New tensors are returned; ``weight``,
    ``bias`` and ``bn`` are not modified.

    Parameters
    ----------
    weight : torch.Tensor
        ``(C_out, ...)`` weight of the convolution or linear layer.
    bias : torch.Tensor or None
        ``(C_out,)`` bias, or None.
    bn : torch.nn.BatchNorm1d or torch.nn.BatchNorm3d
        The BatchNorm layer with running statistics.

    Returns
    -------
    weight, bias : torch.Tensor
        The folded parameters (float64).
    """
    w = weight.detach().double()
    mean = bn.running_mean.detach().double()
    scale = (bn.running_var.detach().double() + bn.eps).rsqrt()
    shift = torch.zeros_like(mean)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
        shift = bn.bias.detach().double()
    b = torch.zeros_like(mean) if bias is None else bias.detach().double()
    return w * scale.view(-1, *([1] * (w.dim() - 1))), (b - mean) * scale + shift


def trace_layers(
    model: nn.Module,
    x: torch.Tensor,
    run: Callable[[torch.Tensor], torch.Tensor],
    dtype: torch.dtype,
) -> tuple[list[Layer], torch.Tensor]:
    """Record the leaf modules ``run(x)`` calls and return them as a chain of layers.

    Parameters
    ----------
    model : torch.nn.Module
        The network (in eval mode).
    x : torch.Tensor
        A small input batch (one sample is enough).
    run : callable
        Runs the model on ``x`` and returns ``(N, K)`` outputs.
    dtype : torch.dtype
        Dtype of the copied weights.

    Returns
    -------
    layers : list of Layer
        The chain, in forward order.
    output : torch.Tensor
        ``run(x)``, to check the replay of ``layers`` against.

    Raises
    ------
    ConfigError
        On a module type without an LRP rule, a non-sequential topology, or a BatchNorm
        that does not follow a convolution or linear layer.
    """
    traced = trace(model, x, run=run, keep=True)
    if not traced.calls:
        raise ConfigError(
            f"LRP found no layers in {type(model).__name__}: its forward calls no "
            f"sub-modules. LRP needs a network built from modules ({SUPPORTED})."
        )
    return _chain(traced.calls, x, traced.output, dtype), traced.output


def _chain(
    calls: list[Call], x: torch.Tensor, output: torch.Tensor, dtype: torch.dtype
) -> list[Layer]:
    layers: list[Layer] = []
    prev, prev_name = x, "the model input"
    for call in calls:
        module, name, inp, out = call.module, call.name, call.input, call.output
        _check_type(module, name)
        if not isinstance(inp, torch.Tensor) or not isinstance(out, torch.Tensor):
            raise _not_sequential(
                f"module {name!r} ({type(module).__name__}) does not map one tensor to one tensor"
            )
        if not call.follows:
            _check_same_data(inp, prev, f"module {name!r} does not read the output of {prev_name}")
            layers.append(Layer("reshape", f"reshape before {name}", shape=tuple(inp.shape[1:])))
        if isinstance(module, _BATCHNORM):
            layers[-1] = _folded(layers, module, name, call.follows, dtype)
        else:
            layers.append(_layer(module, name, out, dtype))
        prev, prev_name = out, f"module {name!r}"
    if output is not prev:
        _check_same_data(output, prev, f"the model's output is not the output of {prev_name}")
        layers.append(Layer("reshape", "reshape of the output", shape=tuple(output.shape[1:])))
    return layers


def _check_type(module: nn.Module, name: str) -> None:
    known = (nn.Conv3d, nn.Linear, nn.ReLU, nn.MaxPool3d, nn.Flatten, nn.Identity)
    if not isinstance(module, known + DROPOUTS + _AVGPOOL + _BATCHNORM):
        raise ConfigError(
            f"LRP has no rule for module {name!r} of type {type(module).__name__}; the "
            f"supported layers are {SUPPORTED}. Use a model built from these layers or "
            "another attribution method (e.g. integrated_gradients)."
        )
    if isinstance(module, nn.Conv3d) and module.padding_mode != "zeros":
        raise ConfigError(
            f"LRP supports Conv3d with padding_mode='zeros' only; module {name!r} uses "
            f"padding_mode={module.padding_mode!r}. Use zero padding or another method."
        )


def _check_same_data(tensor: torch.Tensor, prev: torch.Tensor, problem: str) -> None:
    """Accept ``tensor`` if it is ``prev`` reshaped (same memory, batch axis kept)."""
    same = (
        tensor.dtype == prev.dtype
        and tensor.numel() == prev.numel()
        and tensor.data_ptr() == prev.data_ptr()
        and tensor.is_contiguous()
        and prev.is_contiguous()
        and tensor.dim() >= 1
        and tensor.shape[0] == prev.shape[0]
    )
    if not same:
        raise _not_sequential(problem)


def _not_sequential(problem: str) -> ConfigError:
    return ConfigError(
        f"LRP needs a sequential network, but {problem}. Networks with skip connections, "
        "branches, or tensor operations between modules other than reshapes (e.g. a "
        "softmax on the output) are not supported; explain the logits of a sequential "
        "model, or use another attribution method (e.g. integrated_gradients)."
    )


def _layer(module: nn.Module, name: str, out: torch.Tensor, dtype: torch.dtype) -> Layer:
    if isinstance(module, nn.Conv3d | nn.Linear):
        weight = module.weight.detach().to(dtype)
        bias = None if module.bias is None else module.bias.detach().to(dtype)
        if isinstance(module, nn.Linear):
            return Layer("linear", name, weight, bias)
        geometry = {k: getattr(module, k) for k in ("stride", "padding", "dilation", "groups")}
        return Layer("conv", name, weight, bias, conv=geometry)
    if isinstance(module, nn.ReLU):
        return Layer("relu", name)
    if isinstance(module, nn.Flatten):
        return Layer("reshape", name, shape=tuple(out.shape[1:]))
    if isinstance(module, nn.MaxPool3d):
        keys = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
        fn = functools.partial(
            F.max_pool3d, **{k: getattr(module, k) for k in keys}, return_indices=True
        )
        return Layer("maxpool", name, fn=fn)
    if isinstance(module, nn.AdaptiveAvgPool3d):
        return Layer(
            "avgpool",
            name,
            fn=functools.partial(F.adaptive_avg_pool3d, output_size=module.output_size),
        )
    if isinstance(module, nn.AvgPool3d):
        keys = (
            "kernel_size",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
            "divisor_override",
        )
        return Layer(
            "avgpool",
            name,
            fn=functools.partial(F.avg_pool3d, **{k: getattr(module, k) for k in keys}),
        )
    return Layer("identity", name)


def _folded(
    layers: list[Layer], bn: nn.Module, name: str, direct: bool, dtype: torch.dtype
) -> Layer:
    wanted = "conv" if isinstance(bn, nn.BatchNorm3d) else "linear"
    last = layers[-1] if layers and direct else None
    if last is None or last.kind != wanted:
        after = "the model input" if not layers else f"{layers[-1].name!r}"
        raise ConfigError(
            f"LRP folds each BatchNorm into the {'Conv3d' if wanted == 'conv' else 'Linear'} "
            f"layer right before it, but {type(bn).__name__} {name!r} follows {after}. Put "
            "the BatchNorm directly after a convolution/linear layer or use another method."
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError(
            f"LRP cannot fold {type(bn).__name__} {name!r}: it has no running statistics "
            "(track_running_stats=False), so its eval-mode output depends on the batch. "
            "Use BatchNorm with track_running_stats=True."
        )
    weight, bias = fold_batchnorm(last.weight, last.bias, bn)
    return Layer(last.kind, f"{last.name}+{name}", weight.to(dtype), bias.to(dtype), conv=last.conv)
