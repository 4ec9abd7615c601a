r"""Deterministic autoencoders: the baselines the VAE is compared with.

Plain PyTorch (no Pyro), built from the same networks as the VAE
(:func:`ppl_vae.nets.mlp` for the encoder, :class:`ppl_vae.nets.Decoder` for the
decoder) and trained on the same data with the same conventions
(:func:`fit_autoencoder` mirrors :func:`ppl_vae.train.fit`: seeding per epoch,
dynamic binarisation, NaN guard, atomic checkpoints, progress bar).

An autoencoder is an encoder ``f: x -> h`` (the *code*, ``(N, d)``) and a decoder
``g: h -> x_hat``. With the reconstruction error of one point

    BCE:  r(x, x_hat) = - sum_i [x_i log x_hat_i + (1 - x_i) log(1 - x_hat_i)]   (x in [0, 1], on logits)
    MSE:  r(x, x_hat) =   sum_i (x_i - x_hat_i)^2

(both summed over the D coordinates, averaged over points) the four models minimise:

==========================  =============================================================================
:class:`Autoencoder`        E_x r(x, g(f(x)))                                       vanilla
:class:`DenoisingAE`        E_x E_{x~ ~ c(x~|x)} r(x, g(f(x~)))    corruption ``c``: x + sigma eps, or
                            masking each coordinate to 0 with probability p (Vincent et al., 2008)
:class:`SparseAE`           E_x r(x, g(f(x))) + lam sum_j KL(rho || rho_hat_j),   h = sigmoid(.),
                            rho_hat_j = mean activation of unit j over the batch,
                            KL(rho || q) = rho log(rho / q) + (1 - rho) log((1 - rho) / (1 - q))  (Ng, 2011)
:class:`ContractiveAE`      E_x [ r(x, g(f(x))) + lam ||J_f(x)||_F^2 ],  J_f = d h / d x  (Rifai et al., 2011)
==========================  =============================================================================

The contractive penalty is computed exactly. For a one-layer sigmoid encoder
``h = sigmoid(W x + b)`` it has the closed form

    ||J_f(x)||_F^2 = sum_j (h_j (1 - h_j))^2 ||W_j||^2        (W_j: row j of W)

(``(1 - h_j^2)^2`` for tanh); for a deeper encoder it is the sum over the d code
units of the squared norms of the input gradients ``d h_j / d x``, by autograd
(d vector-Jacobian products, with ``create_graph`` so the penalty trains).

None of these models defines a probability distribution over x: there is no
prior on the code and no likelihood, so there is no ``log p(x)`` and no ELBO to
report. Their evaluation (:func:`evaluate_autoencoder`) is the reconstruction
error on the test split; compare it with the VAE's reconstructions, not with its
log-likelihood.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from .errors import UserError
from .likelihoods import check_matrix
from .models import register_model
from .nets import Decoder, check_sizes, mlp

RECONSTRUCTIONS = ("bce", "mse")
CODE_ACTIVATIONS = (None, "sigmoid", "tanh")

#: CLI/run-folder names of the models (``ppl-vae train --model ...``).
AUTOENCODERS: dict[str, str] = {
    "ae": "Autoencoder",
    "dae": "DenoisingAE",
    "sae": "SparseAE",
    "cae": "ContractiveAE",
}


class Autoencoder(nn.Module):
    """Vanilla autoencoder ``x -> h = f(x) -> x_hat = g(h)`` trained on the reconstruction error.

    Args:
        input_dim: D, the size of one flattened observation.
        latent_dim: d, the size of the code.
        hidden_dims: widths of the encoder's hidden layers; the decoder mirrors them (as in the VAE).
        reconstruction: ``"bce"`` (data in [0, 1]; the decoder outputs logits) or ``"mse"``
            (any real data; the decoder outputs means).
        activation: hidden-layer non-linearity (``"relu"``, ``"tanh"``, ...).
        code_activation: None (a linear code), ``"sigmoid"`` or ``"tanh"``.
    """

    short_name = "ae"

    def __init__(
        self,
        input_dim: int,
        latent_dim: int = 2,
        hidden_dims: Sequence[int] = (256,),
        reconstruction: str = "bce",
        activation: str = "relu",
        code_activation: str | None = None,
    ) -> None:
        super().__init__()
        hidden_dims = check_sizes(input_dim, latent_dim, hidden_dims)
        if reconstruction not in RECONSTRUCTIONS:
            raise UserError(
                f"reconstruction must be 'bce' (data in [0, 1]) or 'mse' (real data); got {reconstruction!r}"
            )
        if code_activation not in CODE_ACTIVATIONS:
            raise UserError(
                f"code_activation must be None, 'sigmoid' or 'tanh'; got {code_activation!r}"
            )
        self.input_dim = input_dim
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.reconstruction = reconstruction
        self.activation = activation
        self.code_activation = code_activation
        self.encoder = mlp(input_dim, hidden_dims, latent_dim, activation)
        self.decoder = Decoder(latent_dim, input_dim, hidden_dims, activation)

    # ------------------------------------------------------------------ the maps
    def _squash(self, pre: torch.Tensor) -> torch.Tensor:
        if self.code_activation == "sigmoid":
            return torch.sigmoid(pre)
        if self.code_activation == "tanh":
            return torch.tanh(pre)
        return pre

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``h = f(x)``: ``x: (..., D) -> (..., d)``."""
        return self._squash(self.encoder(x))

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The reconstruction in data space (probabilities for BCE, values for MSE): ``(..., d) -> (..., D)``."""
        out = self.decoder(code)
        return torch.sigmoid(out) if self.reconstruction == "bce" else out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``g(f(x))`` without corruption: ``x: (N, D) -> (N, D)``."""
        return self.decode(self.encode(x))

    def reconstruction_error(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Per-point error ``r(x, g(code))`` summed over D: ``x: (N, D), code: (N, d) -> (N,)``."""
        out = self.decoder(code)
        if self.reconstruction == "bce":
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
        return (out - x).pow(2).sum(-1)

    # ------------------------------------------------------------------ the objective
    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The encoder's input during training (the identity here; see :class:`DenoisingAE`)."""
        return x

    def penalty(self, x_in: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Regulariser: a scalar (batch-level) or ``(N,)`` (per point); zero for the vanilla AE."""
        return code.new_zeros(())

    def loss_terms(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"loss", "reconstruction", "penalty"}``, each a scalar mean over the batch ``x: (N, D)``."""
        x_in = self.corrupt(x, generator)
        code = self.encode(x_in)
        recon = self.reconstruction_error(x, code).mean()
        pen = self.penalty(x_in, code).mean()
        return {"loss": recon + pen, "reconstruction": recon, "penalty": pen}

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training objective, mean per point over the batch ``x: (N, D)`` (a scalar)."""
        return self.loss_terms(x, generator)["loss"]

    # ------------------------------------------------------------------ bookkeeping
    def check_data(self, x: object, arg: str = "x") -> torch.Tensor:
        """Validate a batch: a finite float tensor ``(N, D)``, in [0, 1] for BCE."""
        x = check_matrix(x, self.input_dim, arg)
        if self.reconstruction == "bce" and ((x < 0).any() or (x > 1).any()):
            raise UserError(
                f"reconstruction 'bce' needs {arg} in [0, 1]; got values in "
                f"[{float(x.min()):.4g}, {float(x.max()):.4g}]: use reconstruction='mse' for real-valued data"
            )
        return x

    def _params(self) -> dict[str, Any]:
        """Model-specific hyper-parameters (beyond the base ones) for :attr:`config` and :attr:`spec`."""
        return {}

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (JSON-able); see :func:`ppl_vae.models.build_model`."""
        return {
            "class": type(self).__name__,
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "hidden_dims": list(self.hidden_dims),
            "reconstruction": self.reconstruction,
            "activation": self.activation,
            "code_activation": self.code_activation,
            **self._params(),
        }

    @property
    def spec(self) -> str:
        """A short label such as ``"dae:noise=gaussian,sigma=0.3"`` (used as the run's 'objective')."""
        params = {"reconstruction": self.reconstruction, **self._params()}
        return (
            self.short_name
            + ":"
            + ",".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
            )
        )

    def extra_repr(self) -> str:
        return f"D={self.input_dim}, d={self.latent_dim}, {self.spec}"


class DenoisingAE(Autoencoder):
    """Denoising autoencoder (Vincent et al., 2008): reconstruct clean ``x`` from a corrupted copy.

    Args:
        noise: ``"gaussian"`` (``x + sigma * eps``) or ``"mask"`` (each coordinate set to 0
            with probability ``p``, independently).
        sigma: standard deviation of the Gaussian corruption.
        p: masking probability.

    The other arguments are those of :class:`Autoencoder`.
    """

    short_name = "dae"

    def __init__(
        self,
        input_dim: int,
        latent_dim: int = 2,
        hidden_dims: Sequence[int] = (256,),
        reconstruction: str = "bce",
        activation: str = "relu",
        code_activation: str | None = None,
        noise: str = "gaussian",
        sigma: float = 0.3,
        p: float = 0.25,
    ) -> None:
        super().__init__(
            input_dim, latent_dim, hidden_dims, reconstruction, activation, code_activation
        )
        if noise not in ("gaussian", "mask"):
            raise UserError(
                f"noise must be 'gaussian' (x + sigma * eps) or 'mask' (zero with prob. p); got {noise!r}"
            )
        if not (isinstance(sigma, (int, float)) and sigma >= 0 and math.isfinite(sigma)):
            raise UserError(f"sigma must be a finite number >= 0; got {sigma!r}")
        if not (isinstance(p, (int, float)) and 0 <= p < 1):
            raise UserError(f"p (masking probability) must be in [0, 1); got {p!r}")
        self.noise = noise
        self.sigma = float(sigma)
        self.p = float(p)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x~ ~ c(x~ | x)``: ``(N, D) -> (N, D)``; applied in training (and on request), never in ``reconstruct``."""
        if self.noise == "gaussian":
            return x + self.sigma * torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype
            )
        keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= self.p
        return x * keep

    def _params(self) -> dict[str, Any]:
        return (
            {"noise": self.noise, "sigma": self.sigma}
            if self.noise == "gaussian"
            else {"noise": self.noise, "p": self.p}
        )

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "noise": self.noise, "sigma": self.sigma, "p": self.p}


def bernoulli_kl(rho: float, rho_hat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``KL(Bernoulli(rho) || Bernoulli(rho_hat))`` elementwise (nats); ``rho_hat`` clamped to (eps, 1-eps)."""
    q = rho_hat.clamp(eps, 1.0 - eps)
    return rho * (math.log(rho) - q.log()) + (1.0 - rho) * (math.log1p(-rho) - torch.log1p(-q))


class SparseAE(Autoencoder):
    """Sparse autoencoder (Ng, 2011): a sigmoid code whose mean activations are pulled toward ``rho``.

    Penalty per batch: ``lam * sum_j KL(rho || rho_hat_j)``, ``rho_hat_j = mean_n h_nj``.

    Args:
        rho: target mean activation of each code unit, in (0, 1).
        lam: weight of the penalty (>= 0).

    The other arguments are those of :class:`Autoencoder`; the code activation is always sigmoid.
    """

    short_name = "sae"

    def __init__(
        self,
        input_dim: int,
        latent_dim: int = 2,
        hidden_dims: Sequence[int] = (256,),
        reconstruction: str = "bce",
        activation: str = "relu",
        code_activation: str | None = "sigmoid",
        rho: float = 0.05,
        lam: float = 1.0,
    ) -> None:
        if code_activation != "sigmoid":
            raise UserError(
                f"SparseAE needs code_activation='sigmoid' (activations in (0, 1)); got {code_activation!r}"
            )
        super().__init__(input_dim, latent_dim, hidden_dims, reconstruction, activation, "sigmoid")
        if not (isinstance(rho, (int, float)) and 0 < rho < 1):
            raise UserError(f"rho (target mean activation) must be in (0, 1); got {rho!r}")
        if not (isinstance(lam, (int, float)) and lam >= 0 and math.isfinite(lam)):
            raise UserError(f"lam must be a finite number >= 0; got {lam!r}")
        self.rho = float(rho)
        self.lam = float(lam)

    def penalty(self, x_in: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """``lam * sum_j KL(rho || mean_n code_nj)``: a scalar for the batch ``code: (N, d)``."""
        return self.lam * bernoulli_kl(self.rho, code.mean(0)).sum()

    def _params(self) -> dict[str, Any]:
        return {"rho": self.rho, "lam": self.lam}


class ContractiveAE(Autoencoder):
    """Contractive autoencoder (Rifai et al., 2011): penalise ``lam * ||d f(x) / d x||_F^2`` per point.

    Args:
        lam: weight of the penalty (>= 0).
        code_activation: ``"sigmoid"`` (default) or ``"tanh"``.

    The other arguments are those of :class:`Autoencoder`; with ``hidden_dims=()`` the encoder is one
    layer and the penalty has the closed form, otherwise it is computed by autograd.
    """

    short_name = "cae"

    def __init__(
        self,
        input_dim: int,
        latent_dim: int = 2,
        hidden_dims: Sequence[int] = (256,),
        reconstruction: str = "bce",
        activation: str = "relu",
        code_activation: str | None = "sigmoid",
        lam: float = 0.1,
    ) -> None:
        if code_activation not in ("sigmoid", "tanh"):
            raise UserError(
                f"ContractiveAE needs code_activation 'sigmoid' or 'tanh'; got {code_activation!r}"
            )
        super().__init__(
            input_dim, latent_dim, hidden_dims, reconstruction, activation, code_activation
        )
        if not (isinstance(lam, (int, float)) and lam >= 0 and math.isfinite(lam)):
            raise UserError(f"lam must be a finite number >= 0; got {lam!r}")
        self.lam = float(lam)

    @property
    def has_closed_form(self) -> bool:
        """True for a one-layer encoder ``h = s(W x + b)``, where ``||J||_F^2`` has a closed form."""
        return len(self.hidden_dims) == 0

    def jacobian_norm(self, x: torch.Tensor, method: str = "auto") -> torch.Tensor:
        """``||d f(x) / d x||_F^2`` per point, exactly: ``x: (N, D) -> (N,)``.

        ``method``: ``"closed_form"`` (one-layer encoder only), ``"autograd"``, or ``"auto"``
        (closed form when available). Differentiable in the parameters either way.
        """
        if method not in ("auto", "closed_form", "autograd"):
            raise UserError(f"method must be 'auto', 'closed_form' or 'autograd'; got {method!r}")
        if method == "closed_form" and not self.has_closed_form:
            raise UserError(
                f"the closed form needs a one-layer encoder (hidden_dims=()); this one has hidden_dims={self.hidden_dims}"
            )
        if method != "autograd" and self.has_closed_form:
            return self._closed_form(x, self.encode(x))
        return self._autograd(x)[1]

    def _closed_form(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        w = cast(nn.Linear, self.encoder[0]).weight  # (d, D): a one-layer encoder (checked above)
        slope = (
            code * (1.0 - code) if self.code_activation == "sigmoid" else 1.0 - code.pow(2)
        )  # s'(a), (N, d)
        return (slope.pow(2) * w.pow(2).sum(1)).sum(-1)

    def _autograd(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(code (N, d), ||J||_F^2 (N,))`` from d vector-Jacobian products (rows are per point)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            code = self.encode(x)
            total = x.new_zeros(x.shape[0])
            for j in range(self.latent_dim):
                (grad,) = torch.autograd.grad(code[:, j].sum(), x, create_graph=True)
                total = total + grad.pow(2).sum(-1)
        return code, total

    def loss_terms(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        if self.has_closed_form:
            code = self.encode(x)
            jac = self._closed_form(x, code)
        else:
            code, jac = self._autograd(x)
        recon = self.reconstruction_error(x, code).mean()
        pen = self.lam * jac.mean()
        return {"loss": recon + pen, "reconstruction": recon, "penalty": pen}

    def _params(self) -> dict[str, Any]:
        return {"lam": self.lam}


for _cls in (Autoencoder, DenoisingAE, SparseAE, ContractiveAE):
    register_model(_cls)

_CLASSES: dict[str, type[Autoencoder]] = {
    "ae": Autoencoder,
    "dae": DenoisingAE,
    "sae": SparseAE,
    "cae": ContractiveAE,
}


def make_autoencoder(kind: str, input_dim: int, latent_dim: int = 2, **kwargs: Any) -> Autoencoder:
    """Build an autoencoder by its short name (``"ae"``, ``"dae"``, ``"sae"``, ``"cae"``).

    Keyword arguments that are None are dropped (the class default is used); arguments the
    class does not take raise a ``ValueError`` naming them.

    Examples:
        >>> import ppl_vae as pv
        >>> ae = pv.make_autoencoder("dae", input_dim=6, latent_dim=2, hidden_dims=(8,), sigma=0.2)
        >>> type(ae).__name__
        'DenoisingAE'
    """
    if kind not in _CLASSES:
        raise UserError(
            f"unknown autoencoder {kind!r}; choose one of {sorted(_CLASSES)} (or 'vae' for the VAE)"
        )
    cls = _CLASSES[kind]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    extra = sorted(set(kwargs) - accepted)
    if extra:
        raise UserError(
            f"{cls.__name__} (--model {kind}) takes no option(s) {extra}; it takes {sorted(accepted - {'input_dim', 'latent_dim'})}"
        )
    return cls(input_dim, latent_dim, **kwargs)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def mean_reconstruction_error(ae: Autoencoder, x: torch.Tensor, batch_size: int = 1024) -> float:
    """Mean per-point reconstruction error of clean ``x: (N, D)`` (no corruption, no penalty)."""
    if x is None or len(x) == 0:
        return float("nan")
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        total += float(ae.reconstruction_error(xb, ae.encode(xb)).sum())
    return total / len(x)
