"""The shared flow of every attribution method, and the method registry.

A method is a small class with one verb::

    GradCAM(model, layer="features.block3.relu").attribute(x, target="predicted")

:class:`AttributionMethod` runs the common steps (input checks, eval mode, frozen
parameters, target selection, hook clean-up, restoring the model) and each method
overrides :meth:`AttributionMethod._attribute` only.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from brainmaps.attribution._grid import renamed_option_message
from brainmaps.exceptions import ConfigError, ShapeError

__all__ = [
    "AttributionMethod",
    "create_method",
    "get_method",
    "list_methods",
    "register_method",
]

_METHODS: dict[str, type[AttributionMethod]] = {}
T = TypeVar("T", bound=type)

#: Accepted forms of ``target``.
Target = int | str | Sequence[int] | torch.Tensor


def register_method(name: str) -> Callable[[T], T]:
    """Return a class decorator that registers an attribution method under ``name``.

    Parameters
    ----------
    name : str
        snake_case name, also used by the CLI (``--methods``) and the run folder
        (``maps/<name>/``).
    """

    def decorator(cls: T) -> T:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"attribution method {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorator


def list_methods() -> list[str]:
    """Names of the registered attribution methods, sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> type[AttributionMethod]:
    """Return the class registered under ``name``.

    Raises
    ------
    ConfigError
        If no method has that name (the known names are listed).
    """
    if name not in _METHODS:
        raise ConfigError(
            f"unknown attribution method {name!r}; choose from {', '.join(list_methods())}."
        )
    return _METHODS[name]


def method_options(name: str) -> list[str]:
    """The keyword options accepted by the method registered under ``name``."""
    params = inspect.signature(get_method(name).__init__).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in named and p.name not in ("self", "model")]


def check_options(
    name: str, options: Mapping[str, Any], shape: Sequence[int] | None = None
) -> None:
    """Refuse the options that the method registered under ``name`` does not take.

    A former option in voxels (:attr:`AttributionMethod.renamed_to_mm`) is refused with
    its value converted to mm at the input grid ``shape`` (where the caller knows it);
    any other unknown option with the list of accepted ones.

    Parameters
    ----------
    name : str
        Registry name (see :func:`list_methods`).
    options : mapping
        The method's options, as given to :func:`create_method`.
    shape : sequence of int, optional
        Spatial shape of the inputs (the run's grid), for the conversion in the message;
        by default the paper's 58x70x58.

    Raises
    ------
    ConfigError
        On an unknown name or option.
    """
    for old, new in get_method(name).renamed_to_mm.items():
        if old in options:
            raise ConfigError(renamed_option_message(name, old, new, options[old], shape, options))
    accepted = method_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{name} got unknown option(s) {unknown}; it accepts {', '.join(accepted) or 'none'}."
        )


def create_method(name: str, model: nn.Module, **options: Any) -> AttributionMethod:
    """Build the method registered under ``name`` for ``model``.

    Parameters
    ----------
    name : str
        Registry name (see :func:`list_methods`).
    model : torch.nn.Module
    **options
        The method's options.

    Raises
    ------
    ConfigError
        If the name is unknown or an option is not accepted (the accepted ones are
        listed; a former option in voxels is given in mm, see :func:`check_options`).
    """
    check_options(name, options)
    return get_method(name)(model, **options)


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with parameters frozen; restore both on exit.

    Freezing (``requires_grad=False``) avoids computing parameter gradients that
    attribution never uses; each module's ``training`` flag and each parameter's
    ``requires_grad`` flag are restored exactly, even after an exception.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def hooks() -> Iterator[list]:
    """Collect hook handles in a list; every handle is removed on exit, even on errors.

    Examples
    --------
    >>> with hooks() as handles:  # doctest: +SKIP
    ...     handles.append(layer.register_forward_hook(fn))
    """
    handles: list = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def find_module(model: nn.Module, name: str, parameter: str = "layer") -> nn.Module:
    """Return the sub-module called ``name`` (as in ``model.named_modules()``).

    Raises
    ------
    ConfigError
        If there is no such module; the names of the model's convolution and
        activation layers are listed.
    """
    modules = dict(model.named_modules())
    if name not in modules:
        wanted = (nn.Conv3d, nn.ReLU, nn.BatchNorm3d, nn.MaxPool3d, nn.Sequential)
        choices = [n for n, m in model.named_modules() if n and isinstance(m, wanted)]
        raise ConfigError(
            f"{parameter}={name!r} is not a module of {type(model).__name__}; choose one of "
            f"{', '.join(choices[:30])}."
        )
    return modules[name]


def target_scores(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The output unit ``targets[i]`` of each sample ``i``: shape ``(N,)``."""
    return outputs.gather(1, targets.view(-1, 1).to(outputs.device)).squeeze(1)


class AttributionMethod:
    """Base class of the attribution methods.

    Parameters
    ----------
    model : torch.nn.Module
        A network mapping ``(N, C, X, Y, Z)`` inputs to ``(N, K)`` outputs: class
        logits (``K >= 2``) or one regression output (``K = 1``).
    **options
        Method-specific settings (see each subclass).

    Notes
    -----
    ``attribute`` returns maps of shape ``(N, X, Y, Z)``: the input's batch and
    spatial size, one value per voxel (methods that give one value per input channel
    sum over channels). Methods with :attr:`channel_maps` set (the gradient-type ones)
    can instead keep one map per input channel, ``(N, C, X, Y, Z)``, with
    ``attribute(..., keep_channels=True)``; their sum over channels is the default map.
    Raw values are returned; no normalisation is applied. The model's train/eval mode
    and parameters are left as they were; every hook is removed even if the method
    fails.
    """

    name: ClassVar[str] = ""
    #: Whether ``attribute(..., keep_channels=True)`` gives one map per input channel.
    #: Methods whose maps live on a layer's feature maps (Grad-CAM, CAM) or that perturb
    #: every channel at once (occlusion, Meaningful Perturbations) have none.
    channel_maps: ClassVar[bool] = False
    #: Former options in voxels of the model grid, each with the option in mm that
    #: replaced it (value times mm per voxel); they are refused with that conversion.
    renamed_to_mm: ClassVar[dict[str, str]] = {}
    #: Whether :meth:`_attribute` runs the network over the whole batch itself and takes
    #: ``target="predicted"`` from those outputs (:meth:`_predicted_targets`); it then
    #: gets ``targets=None`` for that target, which spares a separate forward pass.
    predicts_own_targets: ClassVar[bool] = False
    _keep_channels: bool = False

    def __init__(self, model: nn.Module, **options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"{type(self).__name__} needs a torch.nn.Module, got {type(model).__name__}."
            )
        if options:
            raise ConfigError(
                f"{type(self).__name__} got unknown option(s) {sorted(options)}; see its "
                "docstring for the accepted ones."
            )
        self.model = model

    # -- the public verb ---------------------------------------------------------------
    def attribute(
        self,
        inputs: torch.Tensor,
        target: Target = "predicted",
        *,
        labels: torch.Tensor | Sequence[int] | None = None,
        keep_channels: bool = False,
    ) -> torch.Tensor:
        """Attribute the ``target`` output of each input to its voxels.

        Parameters
        ----------
        inputs : torch.Tensor
            ``(N, C, X, Y, Z)`` (or ``(N, X, Y, Z)`` for one channel), on the model's
            device.
        target : int, "predicted", "true", sequence of int or torch.Tensor
            Output unit to explain: a class index for every sample, one index per
            sample, the predicted class, or the true class (give ``labels``). Regression
            models (one output) always explain that output.
        labels : sequence of int or torch.Tensor, optional
            True class per sample, for ``target="true"``.
        keep_channels : bool
            Return one map per input channel instead of their sum (only methods with
            :attr:`channel_maps`).

        Returns
        -------
        torch.Tensor
            ``(N, X, Y, Z)`` float maps on the input's device, detached; ``(N, C, X, Y,
            Z)`` with ``keep_channels``.

        Raises
        ------
        ConfigError
            ``keep_channels`` for a method without per-channel maps.
        """
        if not isinstance(keep_channels, bool):
            raise ConfigError(f"keep_channels must be true or false, got {keep_channels!r}.")
        if keep_channels and not self.channel_maps:
            raise ConfigError(
                f"{type(self).__name__} has no per-channel maps (its maps are not taken at "
                "the input channels); call it with keep_channels=False."
            )
        x = self._check_inputs(inputs)
        self._keep_channels = keep_channels
        try:
            with frozen_eval(self.model):
                own = self.predicts_own_targets and _is_predicted(target)
                targets = None if own else self._resolve_targets(x, target, labels)
                maps = self._attribute(x, targets)
        finally:
            self._keep_channels = False
        expected = (x.shape[0], *x.shape[1 if keep_channels else 2 :])
        if tuple(maps.shape) != expected:
            raise ShapeError(
                f"{type(self).__name__} produced maps of shape {tuple(maps.shape)}, expected "
                f"{expected}; this is a bug, please report it."
            )
        return maps.detach()

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Compute maps ``(N, X, Y, Z)`` for inputs ``x`` and output units ``targets``.

        Called with the model in eval mode and frozen parameters; override in subclasses.
        ``targets`` is ``(N,)``, or None for ``target="predicted"`` in a method with
        :attr:`predicts_own_targets` (which then calls :meth:`_predicted_targets` on the
        outputs of its own forward pass).
        """
        raise NotImplementedError

    # -- shared steps --------------------------------------------------------------------
    def _reduce_channels(self, maps: torch.Tensor, *dims: int) -> torch.Tensor:
        """Sum ``maps`` over ``dims`` and the channel axis 1 (kept with ``keep_channels``).

        The one channel reduction of the methods with :attr:`channel_maps`: ``maps`` is
        ``(N, C, ...)`` (or has extra leading axes named in ``dims``, such as the noisy
        copies of SmoothGrad, given as ``0``).
        """
        axes = tuple(dims) if self._keep_channels else (*dims, 1)
        return maps.sum(dim=axes) if axes else maps

    def _maps_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The shape of the maps of ``x``: ``(N, X, Y, Z)``, or ``(N, C, X, Y, Z)`` kept."""
        return (x.shape[0], *x.shape[1 if self._keep_channels else 2 :])

    def _check_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            raise ShapeError(
                f"{type(self).__name__}.attribute expects a torch.Tensor, got "
                f"{type(inputs).__name__}; convert with torch.as_tensor(volume)[None, None]."
            )
        if inputs.dim() == 4:
            inputs = inputs.unsqueeze(1)
        if inputs.dim() != 5 or inputs.shape[0] == 0:
            raise ShapeError(
                f"{type(self).__name__}.attribute expects inputs of shape (N, C, X, Y, Z) with "
                f"N >= 1, got {tuple(inputs.shape)}."
            )
        if not inputs.is_floating_point():
            inputs = inputs.float()
        return inputs.detach()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model and check that it returns ``(N, K)`` outputs."""
        out = self.model(x)
        if out.dim() == 1:
            out = out.unsqueeze(1)
        if out.dim() != 2 or out.shape[0] != x.shape[0]:
            raise ShapeError(
                f"{type(self).__name__} needs a model returning (N, K) outputs, got "
                f"{tuple(out.shape)} for a batch of {x.shape[0]}."
            )
        return out

    def _resolve_targets(self, x: torch.Tensor, target: Target, labels: Any) -> torch.Tensor:
        n = x.shape[0]
        if _is_predicted(target):
            with torch.no_grad():
                return self._predicted_targets(self._forward(x))
        if isinstance(target, str) and target == "true":
            if labels is None:
                raise ConfigError(
                    "target='true' needs the true classes: pass labels=... (one per input)."
                )
            target = labels
        if isinstance(target, str):
            raise ConfigError(
                f"target must be 'predicted', 'true', a class index or one index per input; "
                f"got {target!r}."
            )
        t = torch.as_tensor(target, dtype=torch.long, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(n).clone()
        if t.numel() != n:
            raise ShapeError(f"target has {t.numel()} entries for {n} inputs; give one per input.")
        n_out = self._n_outputs(x)
        if int(t.min()) < 0 or int(t.max()) >= n_out:
            raise ConfigError(
                f"target {t.tolist()} is out of range: the model has {n_out} output(s), so "
                f"class indices must be in 0..{n_out - 1}."
            )
        return t

    @staticmethod
    def _predicted_targets(outputs: torch.Tensor) -> torch.Tensor:
        """The units ``target="predicted"`` explains, given ``(N, K)`` ``outputs``.

        The highest output of each sample; a regression model's one output (``K = 1``).
        """
        if outputs.shape[1] == 1:
            return torch.zeros(outputs.shape[0], dtype=torch.long, device=outputs.device)
        return outputs.argmax(dim=1)

    def _n_outputs(self, x: torch.Tensor) -> int:
        fc = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        if fc:
            return fc[-1].out_features
        with torch.no_grad():
            return self._forward(x[:1]).shape[1]


def _is_predicted(target: object) -> bool:
    return isinstance(target, str) and target == "predicted"
