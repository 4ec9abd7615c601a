"""Encoder and decoder networks.

Plain :class:`torch.nn.Module` s with no Pyro in them: the Pyro programs in
:mod:`ppl_vae.models` register them with ``pyro.module``, and the deterministic
autoencoders in :mod:`ppl_vae.autoencoders` use them directly, so both families
share one definition of the networks.

Every network acts on the last dimension and broadcasts over any leading ones,
so a decoder called on importance samples ``z: (K, N, d)`` returns ``(K, N, D)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .errors import UserError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def check_sizes(input_dim: int, latent_dim: int, hidden_dims: Sequence[int]) -> tuple[int, ...]:
    """Validate the sizes of an encoder/decoder pair; returns ``hidden_dims`` as a tuple of ints."""
    for arg, value in (("input_dim", input_dim), ("latent_dim", latent_dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{arg} must be a positive integer; got {value!r}")
    hidden = tuple(int(h) for h in hidden_dims)
    if any(h < 1 for h in hidden):
        raise UserError(f"hidden_dims must be positive integers; got {hidden!r}")
    return hidden


def _activation(name: str) -> type[nn.Module]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise UserError(
            f"activation must be one of {sorted(ACTIVATIONS)}; got {name!r}"
        ) from None


def mlp(
    in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "relu"
) -> nn.Sequential:
    """A multilayer perceptron ``in_dim -> hidden_dims... -> out_dim`` (no final activation)."""
    act = _activation(activation)
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden_dims:
        layers += [nn.Linear(width, h), act()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """Amortised diagonal-Gaussian posterior parameters ``x -> (loc, scale)``.

    The scale is ``softplus(raw) + min_scale``: strictly positive, smooth, and
    bounded away from zero so that ``log q`` stays finite.

    Shapes: ``x: (..., D)`` -> ``loc, scale: (..., d)``.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden_dims: Sequence[int] = (256,),
        activation: str = "relu",
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.net = mlp(input_dim, hidden_dims, 2 * latent_dim, activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(x).chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale


class Decoder(nn.Module):
    """Decoder ``z -> raw likelihood parameters`` (logits or means), ``(..., d) -> (..., out_dim)``."""

    def __init__(
        self,
        latent_dim: int,
        out_dim: int,
        hidden_dims: Sequence[int] = (256,),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.net = mlp(latent_dim, tuple(reversed(tuple(hidden_dims))), out_dim, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
