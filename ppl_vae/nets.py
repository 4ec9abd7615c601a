"""Encoder and decoder networks: MLPs, convolutional nets for images, and MADE for flows.

Plain :class:`torch.nn.Module` s with no Pyro in them: the Pyro programs in
:mod:`ppl_vae.models` register them with ``pyro.module``, and the deterministic
autoencoders in :mod:`ppl_vae.autoencoders` use them directly, so both families
share one definition of the networks.

Every network acts on the last dimension and broadcasts over any leading ones,
so a decoder called on importance samples ``z: (K, N, d)`` returns ``(K, N, D)``.
Convolutional nets keep that contract: data stay rows ``(N, D)`` with ``D = C H W``;
the nets reshape to images inside (:func:`image_shape_for`).

* ``nets="mlp"``: :func:`mlp` encoder ``D -> hidden_dims -> out`` and decoder ``d -> reversed(hidden_dims) -> D``.
* ``nets="conv"``: :class:`ConvEncoder` (two stride-2 3x3 convolutions, 32 and 64 channels, then the
  MLP ``hidden_dims``) and :class:`ConvDecoder` (the mirror: MLP, then two stride-2 transposed
  convolutions), for any ``H, W`` (8x8 digits, 28x28 MNIST).
* :class:`MADE` (Germain et al., 2015): the masked autoregressive network of an inverse
  autoregressive flow step (:mod:`ppl_vae.guides`), with a context input seen by every output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

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
        raise UserError(f"activation must be one of {sorted(ACTIVATIONS)}; got {name!r}") from None


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

    Shapes: ``x: (..., D)`` -> ``loc, scale: (..., d)``. ``net`` replaces the MLP
    ``input_dim -> hidden_dims -> 2 d`` (e.g. a :class:`ConvEncoder` with ``2 d`` outputs).
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden_dims: Sequence[int] = (256,),
        activation: str = "relu",
        min_scale: float = 1e-4,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.net = mlp(input_dim, hidden_dims, 2 * latent_dim, activation) if net is None else net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(x).chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale


class Decoder(nn.Module):
    """Decoder ``z -> raw likelihood parameters`` (logits or means), ``(..., d) -> (..., out_dim)``.

    An MLP ``d -> reversed(hidden_dims) -> out_dim``; the convolutional one is :class:`ConvDecoder`.
    """

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


# ============================================================================ images
NETS = ("mlp", "conv")
#: Channels of the two stride-2 convolutions of :class:`ConvEncoder` (mirrored by :class:`ConvDecoder`).
CONV_CHANNELS = (32, 64)


def check_nets(nets: object) -> str:
    if nets not in NETS:
        raise UserError(f"nets must be one of {NETS}; got {nets!r}")
    return str(nets)


def image_shape_for(
    input_dim: int, image_shape: Sequence[int] | None = None
) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of rows of ``input_dim`` values: ``image_shape`` when given (checked against
    ``input_dim``), else one channel of a square image (``input_dim=64 -> (1, 8, 8)``)."""
    if image_shape is not None:
        shape = tuple(image_shape)
        if len(shape) != 3 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
        ):
            raise UserError(
                f"image_shape must be three positive integers (C, H, W); got {image_shape!r}"
            )
        if math.prod(shape) != input_dim:
            raise UserError(
                f"image_shape {shape} holds {math.prod(shape)} values but input_dim is {input_dim}: "
                "rows must be C*H*W values (flattened images)"
            )
        return shape
    side = math.isqrt(input_dim)
    if side * side != input_dim:
        raise UserError(
            f"nets='conv' needs images: input_dim={input_dim} is not a square, so pass "
            "image_shape=(C, H, W) (e.g. (3, 32, 32) for colour images)"
        )
    return (1, side, side)


def _half(n: int) -> int:
    """Output size of a 3x3, stride-2, padding-1 convolution: ceil(n / 2)."""
    return (n + 1) // 2


def _flatten_leading(x: torch.Tensor, trailing: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    lead = tuple(x.shape[: x.dim() - trailing])
    return x.reshape((-1,) + tuple(x.shape[x.dim() - trailing :])), lead


class ConvEncoder(nn.Module):
    """Convolutional encoder body ``x: (..., C*H*W) -> (..., out_dim)``.

    Two 3x3 stride-2 convolutions (``CONV_CHANNELS``; ``H x W -> ceil(H/2) x ceil(W/2) -> ...``) with the
    activation, flattened, then :func:`mlp` ``-> hidden_dims -> out_dim``.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden_dims: Sequence[int],
        out_dim: int,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        act = _activation(activation)
        c, h, w = image_shape
        c1, c2 = CONV_CHANNELS
        self.image_shape = (c, h, w)
        self.conv = nn.Sequential(
            nn.Conv2d(c, c1, 3, 2, 1), act(), nn.Conv2d(c1, c2, 3, 2, 1), act()
        )
        flat = c2 * _half(_half(h)) * _half(_half(w))
        self.head = mlp(flat, hidden_dims, out_dim, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, lead = _flatten_leading(x, 1)
        h = self.conv(rows.reshape((-1,) + self.image_shape)).flatten(1)
        out = self.head(h)
        return out.reshape(lead + (out.shape[-1],))


class ConvDecoder(nn.Module):
    """Convolutional decoder ``z: (..., d) -> (..., out_dim)``, ``out_dim = m C H W`` (m outputs per value).

    :func:`mlp` ``d -> reversed(hidden_dims) -> 64 ceil(ceil(H/2)/2) ...`` with the activation, then two
    3x3 stride-2 transposed convolutions back to ``m C x H x W`` (output padding chosen per size, so odd
    sizes such as 7 -> 14 -> 28 and 2 -> 4 -> 8 both come out exact).
    """

    def __init__(
        self,
        latent_dim: int,
        out_dim: int,
        image_shape: Sequence[int],
        hidden_dims: Sequence[int] = (),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        act = _activation(activation)
        c, h, w = image_shape
        if out_dim % (c * h * w):
            raise UserError(
                f"a convolutional decoder needs out_dim a multiple of C*H*W={c * h * w}; got {out_dim}"
            )
        c1, c2 = CONV_CHANNELS
        h1, w1 = _half(h), _half(w)
        self.start = (c2, _half(h1), _half(w1))
        self.out_channels = out_dim // (h * w)
        self.net = mlp(
            latent_dim, tuple(reversed(tuple(hidden_dims))), math.prod(self.start), activation
        )
        self.act = act()
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 3, 2, 1, output_padding=_pad(h1, w1)),
            act(),
            nn.ConvTranspose2d(c1, self.out_channels, 3, 2, 1, output_padding=_pad(h, w)),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        rows, lead = _flatten_leading(z, 1)
        h = self.act(self.net(rows)).reshape((-1,) + self.start)
        out = self.deconv(h).flatten(1)
        return out.reshape(lead + (out.shape[-1],))


def _pad(h: int, w: int) -> tuple[int, int]:
    """Output padding of a 3x3 stride-2 transposed convolution from ceil(n/2) back to n: 1 for even n."""
    return (1 - h % 2, 1 - w % 2)


def make_encoder_net(
    nets: str,
    input_dim: int,
    hidden_dims: Sequence[int],
    out_dim: int,
    activation: str = "relu",
    image_shape: Sequence[int] | None = None,
) -> nn.Module:
    """An encoder body ``(..., input_dim) -> (..., out_dim)``: an MLP or a :class:`ConvEncoder`."""
    if check_nets(nets) == "conv":
        return ConvEncoder(
            image_shape_for(input_dim, image_shape), hidden_dims, out_dim, activation
        )
    return mlp(input_dim, hidden_dims, out_dim, activation)


def make_decoder(
    nets: str,
    latent_dim: int,
    out_dim: int,
    hidden_dims: Sequence[int],
    activation: str = "relu",
    image_shape: Sequence[int] | None = None,
    input_dim: int | None = None,
) -> nn.Module:
    """A decoder ``(..., latent_dim) -> (..., out_dim)``: :class:`Decoder` (MLP) or :class:`ConvDecoder`."""
    if check_nets(nets) == "conv":
        shape = image_shape_for(out_dim if input_dim is None else input_dim, image_shape)
        return ConvDecoder(latent_dim, out_dim, shape, hidden_dims, activation)
    return Decoder(latent_dim, out_dim, hidden_dims, activation)


# ============================================================================ MADE
class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 mask (a buffer)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    mask: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """A conditional masked autoregressive network (Germain et al., 2015; Paige & Wood, 2016).

    ``forward(z, context) -> (m, s)``, each ``(..., d)``: output ``i`` depends on the context and on the
    inputs that come before ``i`` in ``permutation`` only, so the Jacobian of an affine step
    ``z -> s * z + (1 - s) * m`` is triangular. The masks are Pyro's (:func:`pyro.nn.auto_reg_nn.create_mask`).
    The context ``(..., c)`` broadcasts against ``z``'s leading dimensions (a guide's ``(N, c)`` context
    serves importance samples ``z: (K, N, d)``).
    """

    permutation: torch.Tensor

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int],
        permutation: torch.Tensor | None = None,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        from pyro.nn.auto_reg_nn import create_mask

        hidden = [int(h) for h in hidden_dims]
        if not hidden or any(h < 1 for h in hidden):
            raise UserError(
                f"MADE needs at least one hidden layer of positive width; got {hidden_dims!r}"
            )
        if permutation is None:
            permutation = torch.arange(input_dim)
        self.input_dim, self.context_dim = input_dim, context_dim
        self.register_buffer("permutation", permutation.clone().long())
        masks, _ = create_mask(
            input_dim, context_dim, hidden, cast(torch.LongTensor, self.permutation), 2
        )
        widths = [context_dim + input_dim, *hidden, 2 * input_dim]
        self.layers = nn.ModuleList(
            MaskedLinear(a, b, m) for a, b, m in zip(widths[:-1], widths[1:], masks, strict=True)
        )
        self.act = _activation(activation)()

    def forward(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.context_dim:
            if context is None:
                raise ValueError(f"this MADE takes a context of size {self.context_dim}; got None")
            context = context.expand(tuple(z.shape[:-1]) + (self.context_dim,))
            h = torch.cat([context, z], dim=-1)
        else:
            h = z
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        out = self.layers[-1](h)
        return out[..., : self.input_dim], out[..., self.input_dim :]
