"""Estimators of log p(x) per data point for any Pyro program: importance sampling, the ELBO, quadrature, AIS.

See :mod:`.importance` (log weights, IW, ELBO), :mod:`.kernels` (closed-form log-densities),
:mod:`.compiled` (compiled chunks), :mod:`.quadrature` (dense grids, the exact answer for 1-D/2-D
latents) and :mod:`.ais` (annealed importance sampling with HMC, :mod:`.hmc`, and the BDMC sandwich).
"""

from .ais import AISResult, ais_log_likelihood
from .bdmc import bdmc
from .importance import elbo, iw_log_likelihood, log_weights
from .quadrature import quadrature_log_likelihood

__all__ = [
    "AISResult",
    "ais_log_likelihood",
    "bdmc",
    "elbo",
    "iw_log_likelihood",
    "log_weights",
    "quadrature_log_likelihood",
]
