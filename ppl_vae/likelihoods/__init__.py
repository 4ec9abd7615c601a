"""Observation models p(x | z): decoder output -> a Pyro distribution, for whole rows or per table column.

* :mod:`.base`: the :class:`Likelihood` interface (per-row distribution, per-cell log-probabilities in the
  data's original units, masks, encoder features), registration;
* :mod:`.plain`: ``bernoulli``, ``continuous_bernoulli``, ``gaussian`` (images, points, real columns);
* :mod:`.families`: ``lognormal``, ``poisson``, ``negbin``, ``zinb``, ``categorical`` (table columns, or a
  whole homogeneous matrix);
* :mod:`.table`: :class:`TableLikelihood`, one family per column of a table's schema;
* :mod:`.transforms`: a column's model value <-> the standardised variable a family works with.
"""

from .base import (
    CellsDistribution,
    Likelihood,
    available_likelihoods,
    check_matrix,
    make_likelihood,
    register_likelihood,
)
from .families import (
    CategoricalLikelihood,
    LogNormalLikelihood,
    NegBinomialLikelihood,
    PoissonLikelihood,
    ZINBLikelihood,
)
from .plain import BernoulliLikelihood, ContinuousBernoulliLikelihood, GaussianLikelihood
from .table import AUTO, TableLikelihood, column_specs

__all__ = [
    "AUTO",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "CellsDistribution",
    "ContinuousBernoulliLikelihood",
    "GaussianLikelihood",
    "Likelihood",
    "LogNormalLikelihood",
    "NegBinomialLikelihood",
    "PoissonLikelihood",
    "TableLikelihood",
    "ZINBLikelihood",
    "available_likelihoods",
    "check_matrix",
    "column_specs",
    "make_likelihood",
    "register_likelihood",
]

from ..registry import REGISTRY  # noqa: E402

REGISTRY.add_column("likelihood", "support", lambda e: str(e.trait("support", "")))
REGISTRY.add_column(
    "likelihood", "reconstruction error", lambda e: str(e.trait("reconstruction", "mse"))
)
REGISTRY.add_column(
    "likelihood", "table column types", lambda e: ", ".join(e.trait("types", ())) or "-"
)
