"""Estimators of log p(x) per data point for any Pyro program: importance sampling, the ELBO, quadrature.

See :mod:`.importance` (log weights, IW, ELBO), :mod:`.kernels` (closed-form log-densities),
:mod:`.compiled` (compiled chunks) and :mod:`.quadrature` (dense grids, the exact answer for 1-D/2-D
latents).
"""

from .importance import elbo, iw_log_likelihood, log_weights
from .quadrature import quadrature_log_likelihood

__all__ = ["elbo", "iw_log_likelihood", "log_weights", "quadrature_log_likelihood"]
