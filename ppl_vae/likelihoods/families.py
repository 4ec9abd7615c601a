r"""Column families for positive values, counts and levels: log-normal, Poisson, negative binomial, ZINB, categorical.

=================  ============================================================  ==================  ========
name               p(x | z)                                                      decoder outputs     types
=================  ============================================================  ==================  ========
``lognormal``      log x ~ N(m + s out, (s sigma)^2), sigma learned per column     1 per column        positive
``poisson``        Poisson(x | exp(out + c))                                     1 per column        count
``negbin``         NB(x | mean mu = exp(out + c), inverse dispersion theta)       1 per column        count
``zinb``           pi delta_0 + (1 - pi) NB(x | mu, theta), pi = sigmoid(out')     2 per column        count
``categorical``    Categorical(x | softmax(out_j))                                 K_j per column      categorical
=================  ============================================================  ==================  ========

``c`` is the log of the column's train mean and ``theta`` starts at the moment estimate
``mean^2 / (var - mean)`` (overdispersed columns; else 1e4, close to a Poisson) and is learned per column,
like scVI's per-gene dispersion. ``m, s`` are the train mean and std of ``log x`` (:mod:`.transforms`).

**Numerics.** The count log-probabilities are computed in float64: in float32, ``lgamma(x + theta) -
lgamma(theta)`` loses every digit once ``theta`` reaches ~1e6 (scvi-tools' reported NB precision issue), and
``x log mu - mu - lgamma(x + 1)`` cancels to ~0.1 nats at counts ~1e5. ``theta`` is kept in [1e-4, 1e8]::

    log NB(x | mu, theta) = lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
                            + theta log(theta / (theta + mu)) + x log(mu / (theta + mu))

with ``log(theta + mu) = logaddexp(log theta, log mu)``. Tested against ``scipy.stats`` over x up to 1e5
and theta up to 1e8 (``tests/test_likelihoods.py``). A categorical column's "mean" is its most probable
level (there is no mean of levels); :meth:`CategoricalLikelihood.probs` gives the level probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import DataError, UserError
from ..registry import Param, register
from . import plain as _plain  # noqa: F401  (registered first: bernoulli, continuous_bernoulli, gaussian)
from .base import Likelihood, observed, value_range
from .transforms import ValueMap

__all__ = [
    "CategoricalLikelihood",
    "LogNormalLikelihood",
    "NegBinomialLikelihood",
    "PoissonLikelihood",
    "ZINBLikelihood",
]

LOG_THETA_RANGE = (math.log(1e-4), math.log(1e8))


# ============================================================================ positive values
class LogNormalLikelihood(Likelihood):
    """Log-normal cells: ``log x`` Gaussian, standardised by the column's train log-statistics."""

    log_scale: torch.Tensor

    name = "lognormal"

    def __init__(
        self, input_dim: int, scale: float | None = None, columns: Sequence[Any] | None = None
    ) -> None:
        super().__init__(input_dim, columns)
        if scale is not None and not (scale > 0 and math.isfinite(scale)):
            raise UserError(f"lognormal scale must be a positive finite number; got {scale!r}")
        self.fixed_scale = scale
        init = 0.0 if scale is None else math.log(scale)
        if scale is None:
            self.log_scale = nn.Parameter(torch.full((input_dim,), init))
        else:
            self.register_buffer("log_scale", torch.full((input_dim,), init))
        self.map = ValueMap(input_dim, columns, log_natural=True)

    @property
    def spec(self) -> str:
        return self.name if self.fixed_scale is None else f"lognormal:scale={self.fixed_scale:g}"

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp_min(1e-3)

    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        u = self.map.to_u(x)
        return dist.Normal(out, self.scale().to(out.dtype)).log_prob(u) + self.map.log_jacobian(u)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        sd = self.map.s * self.scale().to(out.dtype)
        return self.map.from_w(self.map.w_of_u(out) + 0.5 * sd.pow(2))

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        return self.map.from_w(self.map.w_of_u(out + self.scale().to(out.dtype) * eps))

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        u = self.map.to_u(x)
        return u if mask is None else u * mask

    def check(self, x: torch.Tensor, arg: str = "x", mask: torch.Tensor | None = None) -> None:
        super().check(x, arg)
        raw = ~(self.map.op == 0)  # columns whose model value is x itself
        seen = observed(x[..., raw], None if mask is None else mask[..., raw])
        if seen.numel() and (seen <= 0).any():
            raise DataError(
                f"likelihood 'lognormal' needs positive {arg}; got values in {value_range(seen)}: "
                "use likelihood='gaussian' for values that can be 0 or negative"
            )


# ============================================================================ counts
def _check_counts(name: str, x: torch.Tensor, arg: str, mask: torch.Tensor | None) -> None:
    seen = observed(x, mask)
    bad = (seen < 0) | (seen != seen.round())
    if bad.any():
        shown = ", ".join(f"{v:g}" for v in seen[bad][:3].tolist())
        raise DataError(
            f"likelihood {name!r} needs non-negative integer counts in {arg}; got {int(bad.sum())} "
            f"other value(s) (e.g. {shown}): use likelihood='gaussian' for real values"
        )


class _CountLikelihood(Likelihood):
    """Shared by the count families: ``log mu = out + c`` and log1p-standardised encoder features."""

    offset: torch.Tensor
    feat_shift: torch.Tensor
    feat_scale: torch.Tensor

    def __init__(self, input_dim: int, columns: Sequence[Any] | None = None) -> None:
        super().__init__(input_dim, columns)
        means = [max(c.mean or 1.0, 1e-3) for c in columns] if columns else [1.0] * input_dim
        self.register_buffer("offset", torch.tensor(means).log(), persistent=False)
        lm = [c.log_mean or 0.0 for c in columns] if columns else [0.0] * input_dim
        ls = [c.log_std or 1.0 for c in columns] if columns else [1.0] * input_dim
        self.register_buffer("feat_shift", torch.tensor(lm), persistent=False)
        self.register_buffer("feat_scale", torch.tensor(ls), persistent=False)

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        f = (torch.log1p(x.clamp_min(0)) - self.feat_shift) / self.feat_scale
        return f if mask is None else f * mask

    def check(self, x: torch.Tensor, arg: str = "x", mask: torch.Tensor | None = None) -> None:
        super().check(x, arg)
        _check_counts(self.name, x, arg, mask)


class PoissonLikelihood(_CountLikelihood):
    """``Poisson(x | exp(out + c))`` per cell."""

    name = "poisson"

    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lr = (out + self.offset).double()
        xd = x.double()
        return (xd * lr - lr.exp() - torch.lgamma(xd + 1)).to(out.dtype)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return (out + self.offset).exp()

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.poisson(self.mean(out), generator=generator)


def _theta_init(columns: Sequence[Any] | None, n: int) -> torch.Tensor:
    thetas = []
    for c in columns or [None] * n:
        mean, var = (c.mean or 1.0, (c.std or 1.0) ** 2) if c is not None else (1.0, 2.0)
        thetas.append(mean * mean / (var - mean) if var > mean * 1.01 else 1e4)
    return torch.tensor(thetas).clamp(1e-2, 1e6).log()


def nb_log_prob(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """``log NB(x | mu, theta)`` in float64 (module docstring), broadcast over the inputs."""
    x, lm, lt = x.double(), log_mu.double(), log_theta.double()
    theta = lt.exp()
    log_sum = torch.logaddexp(lt, lm)
    return (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
        + theta * (lt - log_sum)
        + x * (lm - log_sum)
    )


class NegBinomialLikelihood(_CountLikelihood):
    """Negative binomial cells with mean ``exp(out + c)`` and a learned inverse dispersion per column."""

    name = "negbin"

    def __init__(self, input_dim: int, columns: Sequence[Any] | None = None) -> None:
        super().__init__(input_dim, columns)
        self.log_theta = nn.Parameter(_theta_init(columns, input_dim))

    def theta_log(self) -> torch.Tensor:
        return self.log_theta.clamp(*LOG_THETA_RANGE)

    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return nb_log_prob(x, out + self.offset, self.theta_log()).to(out.dtype)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return (out + self.offset).exp()

    def _nb(self, out: torch.Tensor) -> dist.NegativeBinomial:
        lt = self.theta_log().to(out.dtype)
        return dist.NegativeBinomial(total_count=lt.exp(), logits=out + self.offset - lt)

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return _with_generator(lambda: self._nb(out).sample(), out, generator)


class ZINBLikelihood(NegBinomialLikelihood):
    """Zero-inflated NB: ``pi delta_0 + (1 - pi) NB(mu, theta)``; the decoder gives ``log mu`` and ``logit pi``."""

    name = "zinb"

    def out_dim(self) -> int:
        return 2 * self.input_dim

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.input_dim
        return out[..., :n] + self.offset, out[..., n:] - 2.0  # pi starts near 0.12

    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lm, g = self._split(out)
        nb = nb_log_prob(x, lm, self.theta_log())
        g = g.double()
        zero = torch.logaddexp(F.logsigmoid(g), F.logsigmoid(-g) + nb)
        return torch.where(x.double() == 0, zero, F.logsigmoid(-g) + nb).to(out.dtype)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        lm, g = self._split(out)
        return torch.sigmoid(-g) * lm.exp()

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        lm, g = self._split(out)
        lt = self.theta_log().to(out.dtype)

        def draw() -> torch.Tensor:
            nb = dist.NegativeBinomial(total_count=lt.exp(), logits=lm - lt).sample()
            return torch.where(torch.rand_like(g) < torch.sigmoid(g), torch.zeros_like(nb), nb)

        return _with_generator(draw, out, generator)


def _with_generator(
    draw: Any, out: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Run ``draw()`` seeded from ``generator`` (torch's samplers that take none), restoring the global state."""
    if generator is None:
        return draw()
    with torch.random.fork_rng(devices=[out.device] if out.is_cuda else []):
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
        return draw()


# ============================================================================ levels
class CategoricalLikelihood(Likelihood):
    """One categorical per column, ``K_j`` logits each from the decoder; model values are level codes.

    Columns with different ``K_j`` share one padded ``(..., n, K_max)`` layout (padding at ``-inf``), so a
    table's categorical columns cost one log-softmax. Without columns every value has ``k`` levels.
    """

    pos: torch.Tensor
    valid: torch.Tensor

    name = "categorical"

    def __init__(
        self, input_dim: int, k: int | None = None, columns: Sequence[Any] | None = None
    ) -> None:
        super().__init__(input_dim, columns)
        if columns is not None:
            sizes = [c.num_levels for c in columns]
        elif k is None or k < 2:
            raise UserError(
                f"likelihood 'categorical' on raw values needs the number of levels: 'categorical:k=K' "
                f"with K >= 2; got k={k!r}"
            )
        else:
            sizes = [int(k)] * input_dim
        self.k = k
        self.sizes = tuple(sizes)
        kmax = max(sizes)
        pos = torch.zeros(input_dim, kmax, dtype=torch.long)
        valid = torch.zeros(input_dim, kmax, dtype=torch.bool)
        start = 0
        for j, kj in enumerate(sizes):
            pos[j, :kj] = torch.arange(start, start + kj)
            valid[j, :kj] = True
            start += kj
        self.register_buffer("pos", pos, persistent=False)
        self.register_buffer("valid", valid, persistent=False)

    @property
    def spec(self) -> str:
        return self.name if self.columns is not None else f"categorical:k={self.k}"

    def out_dim(self) -> int:
        return sum(self.sizes)

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """``(..., n, K_max)`` normalised log-probabilities (``-inf`` on padding)."""
        padded = out[..., self.pos].masked_fill(~self.valid, -math.inf)
        return padded.log_softmax(-1)

    def probs(self, out: torch.Tensor) -> torch.Tensor:
        """``(..., n, K_max)`` level probabilities (0 on padding) of each column."""
        return self.logits(out).exp()

    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lp = self.logits(out)
        code = x.long().clamp(0, lp.shape[-1] - 1).expand(lp.shape[:-1])
        return lp.gather(-1, code.unsqueeze(-1)).squeeze(-1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """The most probable level's code (a categorical has no mean)."""
        return self.logits(out).argmax(-1).to(out.dtype)

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.probs(out)
        flat = p.reshape(-1, p.shape[-1])
        codes = torch.multinomial(flat, 1, generator=generator).reshape(p.shape[:-1])
        return codes.to(out.dtype)

    def feature_dim(self) -> int:
        return sum(self.sizes)

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        hot = F.one_hot(x.long().clamp(0, self.pos.shape[1] - 1), self.pos.shape[1]).to(x.dtype)
        if mask is not None:
            hot = hot * mask.unsqueeze(-1)
        return hot[..., self.valid]

    def check(self, x: torch.Tensor, arg: str = "x", mask: torch.Tensor | None = None) -> None:
        super().check(x, arg)
        k = torch.tensor(self.sizes, device=x.device, dtype=x.dtype)
        bad = (x < 0) | (x != x.round()) | (x >= k)
        if mask is not None:
            bad = bad & mask
        if bad.any():
            row, col = (int(v) for v in bad.nonzero()[0])
            raise DataError(
                f"likelihood 'categorical' needs level codes 0..K-1 in {arg}; row {row}, column {col} "
                f"holds {float(x[row, col]):g} (K={self.sizes[col]}): load the table with "
                "ppl_vae.load_dataset, which codes the levels"
            )


register(
    "likelihood",
    "lognormal",
    LogNormalLikelihood,
    params=(
        Param("scale", None, float, "fixed sigma of log x (in its stds); learned when omitted"),
    ),
    doc="log x_j ~ N(out_j, s_j^2): positive values",
    support="(0, inf)",
    reconstruction="nll",
    types=("positive",),
)
register(
    "likelihood",
    "poisson",
    PoissonLikelihood,
    doc="Poisson(x_j | exp(out_j)): counts",
    support="{0, 1, 2, ...}",
    reconstruction="nll",
    types=("count",),
)
register(
    "likelihood",
    "negbin",
    NegBinomialLikelihood,
    doc="negative binomial, mean exp(out_j), learned inverse dispersion per column: counts",
    support="{0, 1, 2, ...}",
    reconstruction="nll",
    types=("count",),
)
register(
    "likelihood",
    "zinb",
    ZINBLikelihood,
    doc="zero-inflated negative binomial (mean, dispersion, zero probability): counts with excess zeros",
    support="{0, 1, 2, ...}",
    reconstruction="nll",
    types=("count",),
)
register(
    "likelihood",
    "categorical",
    CategoricalLikelihood,
    params=(
        Param("k", None, int, "levels per value on raw codes (a table's columns bring their own)"),
    ),
    doc="Categorical(x_j | softmax(out_j)): level codes 0..K-1",
    support="{0, ..., K-1}",
    reconstruction="nll",
    types=("categorical",),
)
