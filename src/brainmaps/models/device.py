"""Where a model runs: one resolver of device names for every stage."""

from __future__ import annotations

import torch

from brainmaps.exceptions import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<n>"`` into a :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` picks CUDA when available, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        If CUDA is requested but not available, or the name is unknown.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name!r} was requested but CUDA is not available (torch "
                f"{torch.__version__}); use --device cpu or auto."
            )
        resolved = torch.device(name)
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) "
                "found; use --device cuda or auto."
            )
        return resolved
    raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}.")
